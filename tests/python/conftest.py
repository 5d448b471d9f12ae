"""Shared fixtures for the Python tests: the sohoa binary and the repository paths."""
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
