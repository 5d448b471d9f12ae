"""`sohoa compact`: small files of closed dates of the events table merged, exactly once,
even when the process is killed (abort, like kill -9) at every step.

A merge writes one `compacted-*.parquet` file; the run then commits its merges to the
Delta log together with the `remove` of the files they replace (an OPTIMIZE commit,
`dataChange` false). The replaced files, and merged files whose commit never happened,
stay on disk until a vacuum deletes them, so every count here goes through the table
(deltalake), never a glob."""
import json
import os
import pathlib
import shutil

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import events_table, run

CHUNKS = 8
# Where the run is killed, at which hit of that point, and the merged files it leaves
# that no commit names: at the second merged file, the first is written and not yet
# committed; after the run's commit, every merge is done.
POINTS = [("compact_after_stage", 2, 2), ("compact_after_commit", 1, 0)]


def rows(root):
    """Every event of the table's newest snapshot by source coordinates, with how often
    each appears."""
    con = duckdb.connect()
    con.register("events", events_table(root).to_pyarrow_dataset())
    return con.execute(
        "SELECT source_topic, source_partition, source_offset, count(*) FROM events "
        "GROUP BY ALL ORDER BY ALL").fetchall()


def files(root):
    """The data files of the table's newest snapshot."""
    return sorted(pathlib.Path(u) for u in events_table(root).file_uris())


def on_disk(root):
    """Every Parquet file under events/, whether the table holds it or not."""
    return sorted(p for p in (root / "events").rglob("*.parquet") if "_delta_log" not in p.parts)


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
    assert before and all(n == 1 for *_, n in before)
    assert files(root) == on_disk(root), "every file written so far was committed"
    return root, before


def compact(sohoa, root, *args, **env):
    return run([sohoa, "compact", "--root", str(root), "--min-age-days", "2", *args],
               env=dict(os.environ, **env))


def test_small_files_are_merged_sorted_with_statistics(loaded, sohoa, tmp_path):
    base, before = loaded
    root = tmp_path / "data"
    shutil.copytree(base, root)
    replaced = files(root)
    dates = {p.parent.name for p in replaced}
    version = events_table(root).version()
    r = compact(sohoa, root)
    assert r.returncode == 0, r.stderr
    assert "files before" in r.stdout and "total" in r.stdout
    after = files(root)
    # One file per date: every date is closed and all its files are small.
    assert len(after) == len(dates) < len(replaced)
    assert {p.parent.name for p in after} == dates
    # A date of two files or more now has one merged file; a date of one keeps its file.
    merged = {d for d in dates if sum(p.parent.name == d for p in replaced) > 1}
    assert merged
    assert {p.parent.name for p in after if p.name.startswith("compacted-")} == merged
    assert {p for p in after if not p.name.startswith("compacted-")} <= set(replaced)
    assert rows(root) == before
    # The replaced files stay on disk for readers of older snapshots: a glob over-counts.
    assert on_disk(root) == sorted(set(replaced) | set(after))
    gone = set(replaced) - set(after)
    assert events_table(root, version=version).to_pyarrow_dataset().count_rows() == len(before)
    # One merge per date, committed 64 at a time, in OPTIMIZE commits that change no data.
    table = events_table(root)
    merges = [h for h in table.history() if h["version"] > version]
    assert len(merges) == -(-len(merged) // 64) and len(merged) > 64, (len(merged), merges)
    assert all(h["operation"] == "OPTIMIZE" for h in merges)
    actions = [json.loads(line) for h in merges
               for line in (root / "events" / "_delta_log" / f"{h['version']:020}.json").read_text().splitlines()]
    assert all(a[k]["dataChange"] is False for a in actions for k in ("add", "remove") if k in a)
    # The merged files keep the ingestor's layout: sorted by agency then time, with stats.
    big = max(after, key=lambda p: p.stat().st_size)
    t = pq.read_table(big)
    keys = list(zip(t.column("agency_code").to_pylist(), t.column("event_time").to_pylist()))
    assert keys == sorted(keys)
    md = pq.ParquetFile(big).metadata
    assert md.row_group(0).column(0).statistics is not None
    # Compacting again finds nothing to do.
    again = compact(sohoa, root)
    assert again.returncode == 0 and "nothing to compact" in again.stderr
    assert events_table(root).version() == table.version()
    # A vacuum with no retention deletes exactly the replaced files.
    vacuum = compact(sohoa, root, "--retention-hours", "0")
    assert vacuum.returncode == 0, vacuum.stderr
    assert f"vacuum: deleted {len(gone)} file(s)" in vacuum.stderr
    assert on_disk(root) == after
    assert rows(root) == before


@pytest.mark.parametrize("point,after,left", POINTS)
def test_a_crash_at_every_step_is_settled_by_the_next_run(loaded, sohoa, tmp_path, point,
                                                         after, left):
    base, before = loaded
    root = tmp_path / "data"
    shutil.copytree(base, root)
    dates = {p.parent.name for p in files(root)}
    crashed = compact(sohoa, root, SOHOA_CRASH_AT=point, SOHOA_CRASH_AFTER=str(after))
    assert crashed.returncode != 0, "the injected crash happened"
    assert f"injected crash at {point}" in crashed.stderr
    assert rows(root) == before, "a crashed compaction leaves the table whole"
    recovered = compact(sohoa, root)
    assert recovered.returncode == 0, recovered.stderr
    assert rows(root) == before, "every event exactly once"
    live = files(root)
    assert len(live) == len(dates)
    # A merged file whose commit never happened is on disk, in no snapshot.
    strays = [p for p in on_disk(root) if p.name.startswith("compacted-") and p not in live]
    assert len(strays) == left, strays
