"""Shared fixtures for the Python tests: the sohoa binary and the repository paths."""
import csv
import html.parser
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def sohoa():
    """Path to the sohoa binary that tests/run built."""
    path = os.environ.get("SOHOA_BIN") or str(ROOT / "target" / "debug" / "sohoa")
    assert os.access(path, os.X_OK), f"{path} is not built: run tests/run, or cargo build"
    return path


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def events_table(root, version=None, storage_options=None):
    """The `events/` Delta table under a storage root, opened by delta-rs (deltalake).

    The table is what a reader must go by: files of a flush that never committed, and files
    a compaction replaced until a vacuum deletes them, stay on disk, so a glob over
    `events/**/*.parquet` counts rows the table does not hold."""
    from deltalake import DeltaTable

    return DeltaTable(f"{root}/events", version=version, storage_options=storage_options)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto():
    """An S3-compatible server on 127.0.0.1: moto in server mode (a fake of S3 itself,
    since no real bucket is reachable here). Yields its endpoint and a boto3 client."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    yield endpoint, client
    proc.terminate()
    proc.wait(timeout=10)


# The ground truth's per-agency counts that the metrics must equal exactly.
TRUTH_FIELDS = ["received", "online_received", "digitized", "e_result_eligible", "e_result", "reused",
                "fee_bearing", "paid_online"]


def _rollups(out, table, year):
    """The year's rows of `metrics/<table>.csv` without a procedure, by view."""
    with open(out / "metrics" / f"{table}.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f)
                if r["period"] == "year" and r["period_start"] == f"{year}-01-01" and r["procedure_code"] == ""]
    return [r for r in rows if r["view"] == "as_was"], [r for r in rows if r["view"] == "restated"]


def assert_metrics_equal_truth(out, truth):
    """`metrics/metrics.csv` under `out`, for every generated year, equals `sohoa generate`'s
    ground truth for every agency as it was (named as the reference names it at the year's
    end) and for the province; the provinces as they were add up to the restated one."""
    for year in truth["years"]:
        t = truth["by_year"][str(year)]
        was, now = _rollups(out, "metrics", year)
        # The field rollups across the province's agencies equal the generator's fields,
        # names included (restated, the region is one province).
        by_field = {r["field_code"]: r for r in now if r["field_code"] and r["agency_code"] == ""}
        assert set(by_field) == set(t["fields"]), year
        for code, f in t["fields"].items():
            got = by_field[code]
            assert (got["field_name"], int(got["received"]), int(got["digitized"])) == \
                (f["name"], f["received"], f["digitized"]), (year, code)
        by_agency = {r["agency_code"]: r for r in was if r["agency_code"] and not r["field_code"]
                     and int(r["received"]) > 0}
        expected = {code: a for code, a in t["agencies"].items() if a["received"] > 0}
        assert set(by_agency) == set(expected), year
        for code, a in expected.items():
            got = {k: int(by_agency[code][k]) for k in TRUTH_FIELDS}
            assert got == {k: a[k] for k in TRUTH_FIELDS}, (year, code)
            assert by_agency[code]["agency_name"] == a["name"], (year, code)
        provinces = [r for r in was if r["agency_code"] == "" and not r["field_code"]]
        province = [r for r in now if r["agency_code"] == "" and not r["field_code"]]
        assert len(province) == 1, province
        for k in TRUTH_FIELDS:
            total = sum(a[k] for a in t["agencies"].values())
            assert int(province[0][k]) == total == sum(int(r[k]) for r in provinces), (year, k)
        assert_progress_equals_truth(out, year, t)


def assert_progress_equals_truth(out, year, t):
    """`metrics/progress.csv` for `year` equals the generator's own count of each dossier's
    outcome (judged by its first due date, moved by its pauses in working time), under
    the agency that received it, then the ones it was handed over to, per agency as it was
    and for the province (restated, where handovers along the successor lines vanish)."""
    was, now = _rollups(out, "progress", year)
    by_agency = {r["agency_code"]: r for r in was if r["agency_code"] and not r["field_code"]}
    fields = list(next(iter(t["agencies"].values()))["progress"])
    expected = {code: a for code, a in t["agencies"].items()
                if a["progress"]["carried_over"] + a["progress"]["received"] + a["progress"]["transferred_in"] > 0}
    assert set(by_agency) == set(expected), year
    for code, a in expected.items():
        got = {k: int(by_agency[code][k]) for k in fields}
        assert got == a["progress"], (year, code)
    province = [r for r in now if r["agency_code"] == "" and not r["field_code"]]
    for k in fields:
        if k.startswith("transferred"):
            assert int(province[0][k]) == 0, (year, k)
        else:
            assert int(province[0][k]) == sum(a["progress"][k] for a in t["agencies"].values()), (year, k)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under tests/run (SOHOA_TESTS_NO_SKIP=1) a skip is a failure: tests/run installs every
    tool the tests look for, so a skip there means a check silently did not happen."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("SOHOA_TESTS_NO_SKIP") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under tests/run, which installs every tool the tests use: {reason}"


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is not installed: tests/run installs Debian's chromium package")


def headless(*args, tmp):
    # Flags from this machine's notes: no sandbox as root, and no background networking,
    # which the closed network would refuse.
    return run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp}", *args], timeout=120)


class Dom(html.parser.HTMLParser):
    """Elements of the rendered DOM: (tag, attributes, ids of the enclosing elements)."""

    def __init__(self):
        super().__init__()
        self.stack, self.elements = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a, [x for x in self.stack if x]))
        if tag not in ("br", "meta", "link", "img", "input", "hr", "col"):
            self.stack.append(a.get("id"))

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()
