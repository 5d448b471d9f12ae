"""Every run of the aggregator records the version of the events table it read, and
`--events-version` recomputes a published report from that snapshot exactly, while new
events keep arriving in the table."""
import json
import os

import pyarrow.parquet as pq
import pytest
from conftest import events_table, run

AS_OF = "2026-01-01T00:00:00"
# Tables that must be equal between two runs of one version: the CSVs and the rows of
# the Parquet files (their metadata names the moment they were written).
CSVS = ["metrics/metrics.csv", "metrics/progress.csv", "metrics/scorecard.csv", "quality/quality.csv",
        "quality/ingest.csv", "quality/sources.csv", "quality/sync_delay.csv"]
PARQUETS = ["dossiers", "handovers", "metrics/metrics.parquet"]


def tables(out):
    got = {p: (out / p).read_bytes() for p in CSVS}
    for p in PARQUETS:
        path = out / p
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        got[p] = [pq.read_table(f).to_pylist() for f in files]
    return got


@pytest.fixture(scope="module")
def root(tmp_path_factory, sohoa):
    work = tmp_path_factory.mktemp("provenance")
    env = dict(os.environ, SOHOA__PRIVACY__DEVELOPMENT_MODE="true", SOHOA__HTTP__LISTEN="", NO_COLOR="1")
    out = work / "data"
    feeds = []
    for seed, dossiers in [(1, 1500), (2, 400)]:
        feed = work / f"feed-{seed}.jsonl"
        g = run([sohoa, "generate", "--dossiers", str(dossiers), "--seed", str(seed), "--out", str(feed)], env=env)
        assert g.returncode == 0, g.stderr
        feeds.append(feed)
    return out, env, feeds


def aggregate(sohoa, out, env, *extra, as_of=AS_OF):
    textfile = out.parent / "results.prom"
    p = run([sohoa, "aggregate", "--root", str(out), "--as-of", as_of, "--metrics-textfile", str(textfile),
             *extra], env=env)
    return p, textfile


def test_a_run_of_a_recorded_version_gives_the_same_tables_while_events_arrive(root, sohoa):
    out, env, feeds = root
    ingest = run([sohoa, "ingest", "--from-file", str(feeds[0]), "--out", str(out)], env=env)
    assert ingest.returncode == 0, ingest.stderr
    first, textfile = aggregate(sohoa, out, env)
    assert first.returncode == 0, first.stderr
    record = json.loads((out / "metrics" / "run.json").read_text())
    version = record["events_version"]
    assert version == events_table(out).version()
    assert record["as_of"] == AS_OF + "+07:00"  # --as-of without an offset is Vietnam time
    assert record["events_read"] > 1500
    # Said wherever a reader of the run looks: the summary, the report, the results.
    assert f"from version {version} of events/" in first.stderr
    assert f"--events-version {version}" in first.stderr
    assert f"from version {version} of events/" in first.stdout
    assert f"by sohoa from version {version} of events/." in (out / "report" / "index.html").read_text()
    assert f"sohoa_aggregate_events_version {version}\n" in textfile.read_text()
    published = tables(out)

    # New events: another backfill commits to the table, and a run of the newest differs.
    more = run([sohoa, "ingest", "--from-file", str(feeds[1]), "--out", str(out)], env=env)
    assert more.returncode == 0, more.stderr
    newest = events_table(out).version()
    assert newest > version
    latest, _ = aggregate(sohoa, out, env)
    assert latest.returncode == 0, latest.stderr
    assert json.loads((out / "metrics" / "run.json").read_text())["events_version"] == newest
    assert tables(out)["metrics/metrics.csv"] != published["metrics/metrics.csv"]

    # The recorded version and moment, twice: the published tables, table for table.
    for _ in range(2):
        again, textfile = aggregate(sohoa, out, env, "--events-version", str(version), as_of=record["as_of"])
        assert again.returncode == 0, again.stderr
        assert json.loads((out / "metrics" / "run.json").read_text())["events_version"] == version
        assert f"sohoa_aggregate_events_version {version}\n" in textfile.read_text()
        now = tables(out)
        for name in published:
            assert now[name] == published[name], name


def test_a_version_the_table_does_not_have_is_refused_by_name(root, sohoa):
    out, env, feeds = root
    if not (out / "events" / "_delta_log").exists():
        ingest = run([sohoa, "ingest", "--from-file", str(feeds[0]), "--out", str(out)], env=env)
        assert ingest.returncode == 0, ingest.stderr
    newest = events_table(out).version()
    p, _ = aggregate(sohoa, out, env, "--events-version", str(newest + 5))
    assert p.returncode == 2, p.stderr
    assert f"--events-version {newest + 5}" in p.stderr and f"versions 0 to {newest}" in p.stderr
    p, _ = aggregate(sohoa, out, env, "--events-version", "0", "--incremental")
    assert p.returncode == 2, p.stderr
    assert "--events-version" in p.stderr and "--incremental" in p.stderr
