"""`sohoa demo` end to end, checked against the generator's ground truth.

The demo runs the embedded Kafka cluster, three ingestors and the aggregator in one
process. The generator records what it put in the feed, per agency; the metrics must
equal it exactly, the dead-letter count must equal the malformed messages, and a second
run into the same folder must write nothing twice."""
import json
import os
import re

import duckdb
import pytest
from conftest import assert_metrics_equal_truth, run

DOSSIERS = 3000


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sohoa):
    out = tmp_path_factory.mktemp("demo") / "out"
    env = dict(os.environ, NO_COLOR="1")
    first = run([sohoa, "demo", "--dossiers", str(DOSSIERS), "--out", str(out)], env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    return out, first, env


def events(out):
    return duckdb.connect().execute(
        f"SELECT count(*) FROM read_parquet('{out}/events/*/*.parquet')").fetchall()[0][0]


def test_metrics_equal_the_generators_ground_truth(demo):
    out, first, _ = demo
    truth = json.loads((out / "ground-truth.json").read_text())
    assert truth["dossiers"] == DOSSIERS
    assert_metrics_equal_truth(out, truth)
    # Every malformed message, and nothing else, went to the dead-letter topic.
    assert f"{truth['malformed']:,} dead-lettered" in first.stderr
    assert truth["malformed"] > 0 and truth["repeats"] > 0


def test_the_demo_says_where_everything_is(demo):
    out, first, _ = demo
    for part in ["events/", "dossiers/", "metrics/", "report", "duckdb -c", "polars", "pyarrow"]:
        assert part in first.stdout, part
    assert (out / "report" / "index.html").stat().st_size > 10_000
    assert "Province:" in first.stdout


STAGES = re.compile(
    r"stages: generate (?P<generate>\d+\.\d) s · produce (?P<produce>\d+\.\d) s · "
    r"ingest (?P<ingest>\d+\.\d) s \(alongside produce; (?P<after>\d+\.\d) s after it\) · "
    r"aggregate (?P<aggregate>\d+\.\d) s · report (?P<report>\d+\.\d) s · total (?P<total>\d+\.\d) s")


def stage_times(stdout):
    """The demo's last line: each stage's wall time, in seconds."""
    last = stdout.rstrip().splitlines()[-1]
    match = STAGES.fullmatch(last)
    assert match, f"the last line is not the stage timings: {last!r}"
    return {k: float(v) for k, v in match.groupdict().items()}


def test_the_demo_ends_with_its_stage_timings(demo):
    _, first, _ = demo
    t = stage_times(first.stdout)
    # Producing runs inside the ingest stage; the other stages follow one another, so
    # together they fit in the total (each figure is rounded to a tenth).
    assert t["produce"] <= t["ingest"] + 0.1
    assert t["after"] <= t["ingest"] + 0.1
    assert t["generate"] + t["ingest"] + t["aggregate"] + t["report"] <= t["total"] + 0.4
    assert t["total"] > 0


def test_a_second_run_finds_the_first_and_writes_nothing_twice(demo, sohoa):
    out, _, env = demo
    before = events(out)
    again = run([sohoa, "demo", "--dossiers", str(DOSSIERS), "--out", str(out)], env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "found a previous demo" in again.stderr
    assert "nothing was written twice" in again.stderr
    stage_times(again.stdout)
    assert events(out) == before
    # Another size into the same folder is refused, with the way out.
    other = run([sohoa, "demo", "--dossiers", "10", "--out", str(out)], env=env, timeout=120)
    assert other.returncode == 1
    assert "Use another --out" in other.stderr


def test_generate_is_deterministic_for_a_seed(sohoa, tmp_path):
    a, b, c = (tmp_path / n for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    for path, seed in ((a, 1), (b, 1), (c, 2)):
        r = run([sohoa, "generate", "--dossiers", "200", "--seed", str(seed), "--out", str(path)])
        assert r.returncode == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    lines = a.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 600
    good = [json.loads(l) for l in lines if l.endswith("}")]
    assert all(m["service"] == "DongBoHoSoMC" for m in good)
