"""Shared fixtures for the Python tests: the sohoa binary and the repository paths."""
import csv
import os
import pathlib
import subprocess

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


# The ground truth's per-agency counts that the metrics must equal exactly.
TRUTH_FIELDS = ["received", "online_received", "digitized", "e_result_eligible", "e_result", "reused",
                "fee_bearing", "paid_online"]


def assert_metrics_equal_truth(out, truth):
    """`metrics/metrics.csv` under `out`, for the generated year, equals `sohoa generate`'s
    ground truth for every agency and for the province."""
    year = f"{truth['year']}-01-01"
    with open(out / "metrics" / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f)
                if r["period"] == "year" and r["period_start"] == year and r["procedure_code"] == ""]
    by_agency = {r["agency_code"]: r for r in rows if r["agency_code"]}
    expected = {code: t for code, t in truth["agencies"].items() if t["received"] > 0}
    assert set(by_agency) == set(expected)
    for code, t in expected.items():
        got = {k: int(by_agency[code][k]) for k in TRUTH_FIELDS}
        assert got == {k: t[k] for k in TRUTH_FIELDS}, code
    province = next(r for r in rows if r["agency_code"] == "")
    assert int(province["received"]) == sum(t["received"] for t in expected.values())


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
