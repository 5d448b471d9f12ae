"""`sohoa demo` end to end, checked against the generator's ground truth.

The demo runs the embedded Kafka cluster, three ingestors and the aggregator in one
process. The generator records what it put in the feed, per agency; the metrics must
equal it exactly, the dead-letter count must equal the malformed messages, and a second
run into the same folder must write nothing twice."""
import json
import os

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
    # The feed crosses the reorganization of 1 July 2025: 2024 has only the old units;
    # in 2025 districts hand their open dossiers to the new wards and communes, which
    # receive from July on; departments merged in March hand theirs over too.
    assert truth["years"] == [2024, 2025] and truth["handed_over"] > 0
    y2024, y2025 = truth["by_year"]["2024"]["agencies"], truth["by_year"]["2025"]["agencies"]
    assert not any(c.startswith("000.40.") for c in y2024)
    assert sum(a["progress"]["transferred_out"] for c, a in y2025.items() if c.startswith("000.20.")) > 0
    assert sum(a["progress"]["transferred_in"] for c, a in y2025.items() if c.startswith("000.40.")) > 0
    assert y2025["000.20.10.H55"]["name"] == "UBND thành phố Mỹ Tho"
    # Every malformed message, and nothing else, went to the dead-letter topic.
    assert f"{truth['malformed']:,} dead-lettered" in first.stderr
    assert truth["malformed"] > 0 and truth["repeats"] > 0


def test_the_demo_says_where_everything_is(demo):
    out, first, _ = demo
    for part in ["events/", "dossiers/", "metrics/", "report", "duckdb -c", "polars", "pyarrow"]:
        assert part in first.stdout, part
    assert (out / "report" / "index.html").stat().st_size > 10_000
    assert "Province:" in first.stdout


def test_a_second_run_finds_the_first_and_writes_nothing_twice(demo, sohoa):
    out, _, env = demo
    before = events(out)
    again = run([sohoa, "demo", "--dossiers", str(DOSSIERS), "--out", str(out)], env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "found a previous demo" in again.stderr
    assert "nothing was written twice" in again.stderr
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
