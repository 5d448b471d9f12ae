"""Shared fixtures for the Python tests: the sohoa binary and the repository paths."""
import csv
import os
import pathlib
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


def assert_metrics_equal_truth(out, truth):
    """`metrics/metrics.csv` under `out`, for the generated year, equals `sohoa generate`'s
    ground truth for every agency and for the province."""
    year = f"{truth['year']}-01-01"
    with open(out / "metrics" / "metrics.csv", newline="", encoding="utf-8") as f:
        all_rows = [r for r in csv.DictReader(f)
                    if r["period"] == "year" and r["period_start"] == year and r["procedure_code"] == ""]
    rows = [r for r in all_rows if r["field_code"] == ""]
    # The field rollups across agencies equal the generator's fields, names included.
    by_field = {r["field_code"]: r for r in all_rows if r["field_code"] and r["agency_code"] == ""}
    assert set(by_field) == set(truth["fields"])
    for code, t in truth["fields"].items():
        got = by_field[code]
        assert (got["field_name"], int(got["received"]), int(got["digitized"])) == \
            (t["name"], t["received"], t["digitized"]), code
    by_agency = {r["agency_code"]: r for r in rows if r["agency_code"]}
    expected = {code: t for code, t in truth["agencies"].items() if t["received"] > 0}
    assert set(by_agency) == set(expected)
    for code, t in expected.items():
        got = {k: int(by_agency[code][k]) for k in TRUTH_FIELDS}
        assert got == {k: t[k] for k in TRUTH_FIELDS}, code
    province = next(r for r in rows if r["agency_code"] == "")
    assert int(province["received"]) == sum(t["received"] for t in expected.values())
    assert_progress_equals_truth(out, truth, expected)


def assert_progress_equals_truth(out, truth, expected):
    """`metrics/progress.csv` for the generated year equals the generator's own count of
    each dossier's outcome (judged by its first due date, moved by its pauses in working
    time), per agency and for the province; nothing is carried over into the year."""
    year = f"{truth['year']}-01-01"
    with open(out / "metrics" / "progress.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f)
                if r["period"] == "year" and r["period_start"] == year and r["procedure_code"] == ""
                and r["field_code"] == ""]
    by_agency = {r["agency_code"]: r for r in rows}
    fields = list(next(iter(expected.values()))["progress"])
    assert set(by_agency) == set(expected) | {""}
    for code, t in expected.items():
        got = {k: int(by_agency[code][k]) for k in fields}
        assert got == t["progress"], code
        assert int(by_agency[code]["carried_over"]) == 0
    province = by_agency[""]
    for k in fields:
        assert int(province[k]) == sum(t["progress"][k] for t in expected.values()), k


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
