"""`sohoa compact`: small files of closed partitions merged, exactly once, even when the
process is killed (abort, like kill -9) at every step of its protocol."""
import os
import shutil

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import run

CHUNKS = 8
POINTS = ["compact_after_stage", "compact_after_commit", "compact_after_publish", "compact_mid_retire"]


def rows(root):
    """Every stored event's source coordinates, with how often each appears."""
    return duckdb.connect().execute(
        f"SELECT source_topic, source_partition, source_offset, count(*) FROM read_parquet('{root}/events/*/*.parquet') "
        "GROUP BY ALL ORDER BY ALL").fetchall()


def files(root):
    return sorted(p for p in (root / "events").rglob("*.parquet"))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, sohoa):
    work = tmp_path_factory.mktemp("compact")
    feed = work / "feed.jsonl"
    r = run([sohoa, "generate", "--dossiers", "400", "--seed", "3", "--out", str(feed)])
    assert r.returncode == 0, r.stderr
    # The first weeks of the year only (messages are in sync order): a few dozen
    # partitions keep the many compaction runs below quick.
    lines = feed.read_text(encoding="utf-8").splitlines()[:600]
    root = work / "data"
    env = dict(os.environ, SOHOA__PRIVACY__DEVELOPMENT_MODE="true", SOHOA__HTTP__LISTEN="")
    # Eight backfills: eight small files in most date partitions.
    for i in range(CHUNKS):
        chunk = work / f"chunk-{i}.jsonl"
        chunk.write_text("\n".join(lines[i::CHUNKS]) + "\n", encoding="utf-8")
        r = run([sohoa, "ingest", "--from-file", str(chunk), "--out", str(root)], env=env)
        assert r.returncode == 0, r.stderr
    before = rows(root)
    assert all(n == 1 for *_, n in before)
    return root, before


def compact(sohoa, root, **env):
    return run([sohoa, "compact", "--root", str(root), "--min-age-days", "2"], env=dict(os.environ, **env))


def test_small_files_are_merged_sorted_with_statistics(loaded, sohoa, tmp_path):
    base, before = loaded
    root = tmp_path / "data"
    shutil.copytree(base, root)
    n_before, partitions = len(files(root)), len(list((root / "events").iterdir()))
    r = compact(sohoa, root)
    assert r.returncode == 0, r.stderr
    assert "files before" in r.stdout and "total" in r.stdout
    after = files(root)
    assert len(after) == partitions < n_before
    assert rows(root) == before
    # The merged files keep the ingestor's layout: sorted by agency then time, with stats.
    big = max(after, key=lambda p: p.stat().st_size)
    t = pq.read_table(big)
    keys = list(zip(t.column("agency_code").to_pylist(), t.column("event_time").to_pylist()))
    assert keys == sorted(keys)
    md = pq.ParquetFile(big).metadata
    assert md.row_group(0).column(0).statistics is not None
    assert not list((root / "_sohoa" / "compact").rglob("*.*")), "no marker or staged file left"
    # Compacting again finds nothing to do.
    again = compact(sohoa, root)
    assert again.returncode == 0 and "nothing to compact" in again.stderr


@pytest.mark.parametrize("point", POINTS)
def test_a_crash_at_every_step_is_settled_by_the_next_run(loaded, sohoa, tmp_path, point):
    base, before = loaded
    root = tmp_path / "data"
    shutil.copytree(base, root)
    # At the second merge: the first is complete, the second interrupted.
    crashed = compact(sohoa, root, SOHOA_CRASH_AT=point, SOHOA_CRASH_AFTER="2")
    assert crashed.returncode != 0, "the injected crash happened"
    assert f"injected crash at {point}" in crashed.stderr
    recovered = compact(sohoa, root)
    assert recovered.returncode == 0, recovered.stderr
    assert rows(root) == before, "every event exactly once"
    assert not list((root / "_sohoa" / "compact").rglob("*.*"))
