"""The events/ Delta table, as readers that share no code with sohoa see it.

A generated feed is backfilled by the real `sohoa` binary from three files (three sources,
several commits each, one of them first killed between writing a flush's files and
committing them), then compacted with `sohoa compact`. Then:

- deltalake (delta-rs): the table's versions, each source's `txn` version (the next line
  of its file), the rows, time travel to before the compaction, and the history, where
  the compaction is an OPTIMIZE that changes no data;
- Polars' own Delta scan, and DuckDB over deltalake's Arrow dataset: the same rows and the
  same counts per date;
- the log's JSON itself, against the fields the Delta protocol requires of each action
  (protocol, metaData, add, remove, txn, commitInfo), and the checkpoint a compaction
  leaves with its `_last_checkpoint`;
- the files of the killed flush: on disk, in no snapshot, and never counted.
"""
import json
import os
import re
import shutil

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import events_table, run

# Sources, in the order they are loaded: two halves of the same weeks (so most dates get
# files from both, and several per date), then the weeks after, loaded by a run killed at
# its first commit and a run that completes.
SOURCES = ("first.jsonl", "second.jsonl", "killed.jsonl")
FLUSH_ROWS = 60
DATE_PATH = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/[^/]+\.parquet$")


def is_malformed(line):
    try:
        json.loads(line)
        return False
    except ValueError:
        return True


def records(lines):
    """Events a list of feed lines holds: the records of each well-formed message."""
    return sum(len(json.loads(l)["data"]) for l in lines if not is_malformed(l))


def log_dir(root):
    return root / "events" / "_delta_log"


def commit(root, version):
    """The actions of one commit of the log, as JSON objects."""
    text = (log_dir(root) / f"{version:020}.json").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def actions(acts, kind):
    return [a[kind] for a in acts if kind in a]


def data_on_disk(root):
    return sorted(str(p) for p in (root / "events").rglob("*.parquet") if "_delta_log" not in p.parts)


def rows_of(table):
    """Every row of a snapshot by its source coordinates and event id, sorted."""
    t = table.to_pyarrow_dataset().to_table(columns=["source_topic", "source_offset", "event_id"])
    return sorted(zip(*(t.column(c).to_pylist() for c in t.column_names)))


def per_date(table):
    t = table.to_pyarrow_dataset().to_table(columns=["date"]).group_by("date").aggregate([([], "count_all")])
    return dict(zip((str(d) for d in t.column("date").to_pylist()), t.column("count_all").to_pylist()))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, sohoa):
    work = tmp_path_factory.mktemp("table")
    feed = work / "feed.jsonl"
    r = run([sohoa, "generate", "--dossiers", "200", "--seed", "11", "--out", str(feed)])
    assert r.returncode == 0, r.stderr
    lines = feed.read_text(encoding="utf-8").splitlines()
    # Messages are in sync order: the first 400 lines are the year's first weeks.
    parts = {"first.jsonl": lines[:400:2], "second.jsonl": lines[1:400:2], "killed.jsonl": lines[400:520]}
    root = work / "data"
    env = dict(os.environ, SOHOA__PRIVACY__DEVELOPMENT_MODE="true", SOHOA__HTTP__LISTEN="",
               SOHOA__FLUSH__MAX_ROWS=str(FLUSH_ROWS), NO_COLOR="1")
    versions = {}
    for name in SOURCES:
        path = work / name
        path.write_text("\n".join(parts[name]) + "\n", encoding="utf-8")
        if name == "killed.jsonl":
            killed = run([sohoa, "ingest", "--from-file", str(path), "--out", str(root)],
                         env=dict(env, SOHOA_CRASH_AT="before_commit", SOHOA_CRASH_AFTER="1"))
            assert killed.returncode != 0 and "injected crash at before_commit" in killed.stderr, killed.stderr
            versions["killed"] = events_table(root).version()
            strays = set(data_on_disk(root)) - set(events_table(root).file_uris())
        r = run([sohoa, "ingest", "--from-file", str(path), "--out", str(root)], env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "every line is committed" in r.stderr
        versions[name] = events_table(root).version()
    before = events_table(root)
    expected_rows = rows_of(before)
    compacted = run([sohoa, "compact", "--root", str(root), "--min-age-days", "2"], env=env)
    assert compacted.returncode == 0, compacted.stderr[-3000:]
    assert "files before" in compacted.stdout
    return dict(root=root, parts=parts, versions=versions, strays=strays, rows=expected_rows,
                before=before.version(), after=events_table(root).version())


def source_names(table):
    """The source name (`file:<name>#<content hash>`) of each file loaded, by file name."""
    topics = set(table.to_pyarrow_dataset().to_table(columns=["source_topic"]).column("source_topic").to_pylist())
    by_name = {}
    for t in topics:
        m = re.fullmatch(r"file:(.+)#[0-9a-f]+", t)
        assert m, t
        by_name[m.group(1)] = t
    return by_name


def test_deltalake_reads_every_source_to_its_end_once(loaded):
    table = events_table(loaded["root"])
    names = source_names(table)
    assert sorted(names) == sorted(SOURCES)
    # Each source's txn version is the line after the last one committed: all of them.
    for name in SOURCES:
        assert table.transaction_version(names[name]) == len(loaded["parts"][name]), name
    assert table.transaction_version("file:no-such-file.jsonl#00") is None
    rows = rows_of(table)
    assert rows == loaded["rows"], "the compaction kept every row"
    assert len(rows) == sum(records(p) for p in loaded["parts"].values())
    assert len({(topic, offset, event) for topic, offset, event in rows}) == len(rows)
    # Per source: the rows of its well-formed lines, at those lines' numbers.
    for name in SOURCES:
        lines = loaded["parts"][name]
        mine = [r for r in rows if r[0] == names[name]]
        assert len(mine) == records(lines), name
        assert {r[1] for r in mine} == {i for i, l in enumerate(lines) if not is_malformed(l) and json.loads(l)["data"]}


def test_versions_history_and_time_travel(loaded):
    root = loaded["root"]
    table = events_table(root)
    assert table.version() == loaded["after"] > loaded["before"]
    history = table.history()
    assert sorted(h["version"] for h in history) == list(range(table.version() + 1))
    ops = {h["version"]: h["operation"] for h in history}
    assert ops[0] == "CREATE TABLE"
    assert {ops[v] for v in range(1, loaded["before"] + 1)} == {"WRITE"}
    assert {ops[v] for v in range(loaded["before"] + 1, table.version() + 1)} == {"OPTIMIZE"}
    # Several commits per source (version 0 created the table): a flush is cut at
    # FLUSH_ROWS rows.
    assert loaded["versions"]["first.jsonl"] >= 2
    # The compaction changed no data: every OPTIMIZE commit adds and removes with
    # dataChange false, and time travel to before it reads the same rows.
    for v in range(loaded["before"] + 1, table.version() + 1):
        acts = commit(root, v)
        assert actions(acts, "add") and actions(acts, "remove"), v
        assert all(a["dataChange"] is False for a in actions(acts, "add") + actions(acts, "remove")), v
    old = events_table(root, version=loaded["before"])
    assert old.version() == loaded["before"]
    assert rows_of(old) == rows_of(table)
    assert len(old.file_uris()) > len(table.file_uris())
    # Back to when the first source alone was loaded: its rows, and no txn of the others.
    first = events_table(root, version=loaded["versions"]["first.jsonl"])
    names = source_names(table)
    assert len(rows_of(first)) == records(loaded["parts"]["first.jsonl"])
    assert first.transaction_version(names["first.jsonl"]) == len(loaded["parts"]["first.jsonl"])
    assert first.transaction_version(names["second.jsonl"]) is None
    # The killed run committed nothing.
    assert loaded["versions"]["killed"] == loaded["versions"]["second.jsonl"]


def test_polars_and_duckdb_count_what_deltalake_counts(loaded):
    root = loaded["root"]
    table = events_table(root)
    total = len(loaded["rows"])
    dates = per_date(table)
    assert sum(dates.values()) == total and len(dates) > 5
    # Polars' Delta reader replays the log itself.
    scan = pl.scan_delta(str(root / "events"))
    assert scan.select(pl.len()).collect().item() == total
    by_date = scan.group_by("date").agg(pl.len().alias("n")).collect()
    assert {str(d): n for d, n in by_date.iter_rows()} == dates
    assert pl.scan_delta(str(root / "events"), version=loaded["before"]).select(pl.len()).collect().item() == total
    # DuckDB over deltalake's Arrow dataset.
    con = duckdb.connect()
    con.register("events", table.to_pyarrow_dataset())
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == total
    got = con.execute('SELECT CAST("date" AS VARCHAR), count(*) FROM events GROUP BY ALL').fetchall()
    assert dict(got) == dates
    assert con.execute("SELECT count(DISTINCT event_id) FROM events").fetchone()[0] == len({r[2] for r in loaded["rows"]})


def test_files_of_a_killed_flush_are_never_counted(loaded):
    root = loaded["root"]
    table = events_table(root)
    strays = loaded["strays"]
    assert strays, "the killed run wrote its flush's files"
    live = set(table.file_uris())
    assert strays <= set(data_on_disk(root)) and not strays & live
    assert not strays & set(events_table(root, version=loaded["before"]).file_uris())
    # A glob over the folder counts their rows on top of the table's (and, until a vacuum,
    # the files the compaction replaced): only the table's count is right.
    globbed = ds.dataset(str(root / "events"), format="parquet", partitioning="hive").count_rows()
    assert globbed > len(loaded["rows"]) == table.to_pyarrow_dataset().count_rows()
    stray_rows = sum(pq.read_metadata(p).num_rows for p in strays)
    assert stray_rows > 0


def test_the_log_has_the_fields_the_protocol_requires(loaded):
    root = loaded["root"]
    table = events_table(root)
    first = commit(root, 0)
    (protocol,) = actions(first, "protocol")
    assert isinstance(protocol["minReaderVersion"], int) and isinstance(protocol["minWriterVersion"], int)
    if protocol["minReaderVersion"] >= 3:
        assert isinstance(protocol["readerFeatures"], list)
    if protocol["minWriterVersion"] >= 7:
        assert isinstance(protocol["writerFeatures"], list)
    (meta,) = actions(first, "metaData")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", meta["id"])
    assert meta["id"] == table.metadata().id
    assert meta["format"]["provider"] == "parquet"
    assert meta["partitionColumns"] == ["date"]
    schema = json.loads(meta["schemaString"])
    assert schema["type"] == "struct"
    fields = {f["name"]: f for f in schema["fields"]}
    assert fields["date"]["type"] == "date"
    assert fields["event_time"]["type"] == "timestamp" and fields["source_offset"]["type"] == "long"

    added, removed, txns = {}, {}, {}
    for v in range(table.version() + 1):
        acts = commit(root, v)
        (info,) = actions(acts, "commitInfo")
        assert isinstance(info["timestamp"], int) and info["operation"]
        for a in actions(acts, "add"):
            date = DATE_PATH.fullmatch(a["path"])
            assert date, a["path"]
            assert a["partitionValues"] == {"date": date.group(1)}
            assert isinstance(a["modificationTime"], int) and isinstance(a["dataChange"], bool)
            stats = json.loads(a["stats"])
            assert isinstance(stats["numRecords"], int) and stats["numRecords"] > 0
            added[a["path"]] = (a, stats["numRecords"])
        for r in actions(acts, "remove"):
            assert r["path"] in added and r["dataChange"] is False
            assert isinstance(r["deletionTimestamp"], int) and r["deletionTimestamp"] > 0
            removed[r["path"]] = v
        commit_txns = {t["appId"]: t["version"] for t in actions(acts, "txn")}
        assert all(isinstance(n, int) for n in commit_txns.values())
        txns.update(commit_txns)
        if info["operation"] == "WRITE":
            params = info["operationParameters"]
            assert re.fullmatch(r"[0-9a-f]{8}", params["sohoa.keyFingerprint"])
            ranges = json.loads(params["sohoa.ranges"])
            # The ranges this commit describes: one txn each, at the line after the range,
            # and the events it added.
            assert {r["topic"]: r["end"] + 1 for r in ranges} == commit_txns
            assert sum(r["events"] for r in ranges) == sum(
                json.loads(a["stats"])["numRecords"] for a in actions(acts, "add"))
            assert all(a["dataChange"] is True for a in actions(acts, "add"))
    names = source_names(table)
    assert txns == {names[n]: len(loaded["parts"][n]) for n in SOURCES}
    # The live files are those added and not removed; each one's size and row count are
    # those of the file on disk.
    live = {p: added[p] for p in added if p not in removed}
    events = root / "events"
    assert sorted(str(events / p) for p in live) == sorted(table.file_uris())
    for p, (a, n) in live.items():
        assert a["size"] == (events / p).stat().st_size, p
        assert pq.read_metadata(events / p).num_rows == n, p
    assert sum(n for _, n in live.values()) == len(loaded["rows"])


def test_a_compaction_leaves_a_checkpoint(loaded, tmp_path):
    root = loaded["root"]
    table = events_table(root)
    last = json.loads((log_dir(root) / "_last_checkpoint").read_text())
    version = last["version"]
    assert loaded["before"] < version <= table.version()
    checkpoint = log_dir(root) / f"{version:020}.checkpoint.parquet"
    assert checkpoint.exists()
    cp = pq.read_table(checkpoint)
    assert last["size"] == cp.num_rows
    # The checkpoint holds the snapshot: its protocol, its metadata and its live files.
    kinds = {k for k in ("protocol", "metaData", "add", "txn") if cp.column(k).null_count < cp.num_rows}
    assert kinds == {"protocol", "metaData", "add", "txn"}
    paths = {a["path"] for a in cp.column("add").to_pylist() if a}
    at = events_table(root, version=version)
    assert {str(root / "events" / p) for p in paths} == set(at.file_uris())
    assert pa.types.is_struct(cp.schema.field("add").type)
    # A reader needs nothing older than the checkpoint: a copy of the table without the
    # commits before it reads the same snapshot.
    copy = tmp_path / "copy"
    shutil.copytree(root / "events", copy / "events")
    for v in range(version):
        (log_dir(copy) / f"{v:020}.json").unlink()
    alone = events_table(copy)
    assert alone.version() == table.version()
    assert rows_of(alone) == loaded["rows"]
    assert {n: alone.transaction_version(t) for n, t in source_names(table).items()} == \
        {n: len(loaded["parts"][n]) for n in SOURCES}
