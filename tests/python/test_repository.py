"""The repository itself: no tracked file carries an unresolved merge."""
import subprocess

from conftest import ROOT

MARKERS = ("<<<<<<< ", ">>>>>>> ")


def test_no_tracked_file_holds_merge_conflict_markers():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    found = []
    for name in filter(None, tracked.decode().split("\0")):
        path = ROOT / name
        if not path.is_file() or path.suffix in (".parquet", ".gz", ".zst", ".png"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if line.startswith(MARKERS) or line == "=======":
                found.append(f"{name}:{n}")
    assert not found, found
