"""`sohoa demo` end to end, checked against the generator's ground truth.

The demo runs the embedded Kafka cluster, three ingestors and the aggregator in one
process. The generator records what it put in the feed, per agency; the metrics must
equal it exactly, the dead-letter count must equal the malformed messages, the events
Delta table must record every message of every partition as consumed (its `txn`
versions), and a second run into the same folder must write nothing twice."""
import json
import os
import re
import struct
import zlib

import duckdb
import pytest
from conftest import Dom, assert_metrics_equal_truth, events_table, headless, run

DOSSIERS = 3000
TOPIC = "dvcqg.dossiers"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sohoa):
    out = tmp_path_factory.mktemp("demo") / "out"
    env = dict(os.environ, NO_COLOR="1")
    first = run([sohoa, "demo", "--dossiers", str(DOSSIERS), "--out", str(out)], env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    return out, first, env


def events(out):
    """Rows of the events table's newest snapshot."""
    return events_table(out).to_pyarrow_dataset().count_rows()


def consumed(table):
    """The next offset the table records for each partition of the input topic, while
    it records one (the demo's partitions are numbered from 0)."""
    offsets = []
    while (v := table.transaction_version(f"kafka:{TOPIC}:{len(offsets)}")) is not None:
        offsets.append(v)
    return offsets


def test_the_table_records_every_message_as_consumed(demo):
    out, first, _ = demo
    truth = json.loads((out / "ground-truth.json").read_text())
    table = events_table(out)
    offsets = consumed(table)
    assert len(offsets) > 1 and sum(offsets) == truth["messages"]
    # Every offset below a partition's recorded one is in a committed range, once: the
    # ranges each commit describes tile the partition from 0.
    ranges = {}
    for h in table.history():
        for r in json.loads(h.get("operationParameters", {}).get("sohoa.ranges", "[]")):
            assert r["topic"] == TOPIC
            ranges.setdefault(r["partition"], []).append((r["start"], r["end"], r["events"], r["dead_lettered"]))
    assert sorted(ranges) == list(range(len(offsets)))
    for p, rs in ranges.items():
        rs.sort()
        assert rs[0][0] == 0 and rs[-1][1] == offsets[p] - 1, p
        assert all(a[1] + 1 == b[0] for a, b in zip(rs, rs[1:])), p
    # The rows are what the ranges say they hold, and the dead letters are the malformed.
    all_ranges = [r for rs in ranges.values() for r in rs]
    assert sum(r[2] for r in all_ranges) == events(out)
    assert sum(r[3] for r in all_ranges) == truth["malformed"]


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
    # The query it prints picks one view: each of today's units once a year, by name.
    query = re.search(r'duckdb -c "(.*)"', first.stdout).group(1)
    rows = duckdb.connect().execute(query).fetchall()
    keys = [(r[0], r[1]) for r in rows]
    assert len(keys) == len(set(keys)) and {r[0] for r in rows} == {"2024", "2025"}, rows
    assert any(name == "UBND phường Mỹ Tho" for _, name in keys)


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
    version, offsets = events_table(out).version(), consumed(events_table(out))
    again = run([sohoa, "demo", "--dossiers", str(DOSSIERS), "--out", str(out)], env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "found a previous demo" in again.stderr
    assert "nothing was written twice" in again.stderr
    stage_times(again.stdout)
    assert events(out) == before
    table = events_table(out)
    assert (table.version(), consumed(table)) == (version, offsets), "nothing committed"
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


def png_pixels(path):
    """An 8-bit RGB or RGBA PNG (what Chromium writes) as rows of (r, g, b) tuples."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + n
    width, height, depth, color = header[:4]
    assert depth == 8 and color in (2, 6), header
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(b"".join(chunks)), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return rows


def test_the_report_shows_the_break_in_a_real_browser(demo, tmp_path):
    """The demo's report, rendered by headless Chromium: the trend marks 1 July 2025, the
    year-on-year table puts 2024 next to 2025 for today's units, and a screenshot of the
    trend shows the dashed line of the break where the chart says it is."""
    out, _, _ = demo
    page = out / "report" / "index.html"
    dump = headless("--dump-dom", page.as_uri(), tmp=tmp_path / "profile")
    assert dump.returncode == 0, dump.stderr
    dom = Dom()
    dom.feed(dump.stdout)
    breaks = {a["data-date"] for t, a, inside in dom.elements
              if t == "g" and a.get("class") == "break" and "trend-monthly" in inside}
    assert breaks == {"2025-03-01", "2025-07-01"}, breaks
    assert "view-note" in {a.get("id") for _, a, _ in dom.elements}
    years = {a["data-year"] for t, a, inside in dom.elements
             if t == "td" and "data-year" in a and "years-compared" in inside}
    assert years == {"2024", "2025"}
    units = [a["data-code"] for t, a, inside in dom.elements
             if t == "tr" and "data-code" in a and "years-compared" in inside]
    # Today's units only: the new wards and communes, the merged province's departments,
    # and the province last; no district, no old Tiền Giang department.
    assert units[-1] == "" and len(units) > 20
    assert not any(u.startswith("000.20.") or u.endswith(".H55") for u in units), units
    assert any(u.startswith("000.40.") for u in units)
    # The trend alone, one SVG unit a pixel, screenshotted: the dashed line of 1 July runs
    # down the plot at its x, and half a month away there is no such line.
    html = page.read_text(encoding="utf-8")
    svg = re.search(r'<figure id="trend-monthly".*?(<svg.*?</svg>)', html, re.S).group(1)
    width, height = (float(v) for v in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())
    july = re.search(r'<g class="break" data-date="2025-07-01"><line x1="([\d.]+)" x2="[\d.]+" y1="([\d.]+)" '
                     r'y2="([\d.]+)"', svg)
    x, top, bottom = (float(v) for v in july.groups())
    alone = tmp_path / "trend.html"
    sized = svg.replace("<svg ", f'<svg width="{width}" height="{height}" ', 1)
    page_text = ('<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{margin:0;background:#fff}'
                 "svg{display:block}</style></head><body>" + sized + "</body></html>")
    alone.write_text(page_text, encoding="utf-8")
    shot = tmp_path / "trend.png"
    r = headless(f"--screenshot={shot}", f"--window-size={int(width)},{int(height) + 100}", alone.as_uri(),
                 tmp=tmp_path / "profile2")
    assert r.returncode == 0, r.stderr
    pixels = png_pixels(shot)

    def dark(at):
        # Share of the plot's height (below the break's labels) where a pixel within one of
        # x is as dark as the break's ink: the 1.5-unit line is antialiased over two
        # columns, and the bars, the grid and the coloured lines are all lighter.
        ys = range(int(top) + 30, int(bottom) - 4)
        cols = (round(at) - 1, round(at), round(at) + 1)
        return sum(1 for y in ys if any(max(pixels[y][col]) < 140 for col in cols)) / len(ys)

    # The middle of July: the month's point on the on-time line.
    middle = float(re.search(r'<circle class="pt pt-ontime" data-month="2025-07" cx="([\d.]+)"', svg).group(1))
    assert middle > x + 20
    # A dash of 5 and a gap of 4: a little over half the height is ink.
    line = dark(x)
    assert 0.4 < line < 0.7, line
    assert dark(middle) < 0.05
