#!/usr/bin/env python3
"""Benchmark: an analyst's DuckDB query over the demo's events table, before and after
compaction, same data, same run.

    tests/bench/demo_query.py [--root sohoa-demo] [--runs 5]

The query counts each agency's events and dossiers from March to June 2025, with DuckDB
over deltalake's Arrow dataset (the way in that needs no DuckDB extension). It runs on
the table as the ingestors left it, then on a copy compacted by `sohoa compact
--min-age-days 0` (the release binary), and prints each median with the table's files,
the files in the query's range, and the ratio.
"""
import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import time

import deltalake
import duckdb
import pyarrow as pa

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUERY = """SELECT agency_code, count(*) AS events, count(DISTINCT dossier_code) AS dossiers
FROM events WHERE date BETWEEN DATE '2025-03-01' AND DATE '2025-06-30'
GROUP BY agency_code ORDER BY agency_code"""


def measure(events, runs):
    table = deltalake.DeltaTable(str(events))
    dates = pa.table(table.get_add_actions(flatten=True)).column("partition.date").to_pylist()
    in_range = sum(1 for d in dates if "2025-03-01" <= str(d) <= "2025-06-30")
    con = duckdb.connect()
    con.register("events", table.to_pyarrow_dataset())
    times, rows = [], None
    for _ in range(runs):
        started = time.perf_counter()
        rows = con.execute(QUERY).fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(dates), in_range, sum(r[1] for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="sohoa-demo", help="a demo's output folder")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    root = pathlib.Path(args.root).resolve()
    sohoa = ROOT / "target" / "release" / "sohoa"
    if not sohoa.exists():
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "sohoa"], cwd=ROOT, check=True)
    before = measure(root / "events", args.runs)
    with tempfile.TemporaryDirectory() as work:
        copy = pathlib.Path(work) / "root"
        shutil.copytree(root / "events", copy / "events")
        subprocess.run([str(sohoa), "compact", "--root", str(copy), "--min-age-days", "0"], check=True,
                       stdout=subprocess.DEVNULL, env=dict(os.environ, SOHOA__LOG__LEVEL="warn"))
        after = measure(copy / "events", args.runs)
    assert before[3] == after[3], f"compaction changed the rows counted: {before[3]} then {after[3]}"
    for name, (median, files, in_range, events) in [("as ingested", before), ("compacted", after)]:
        print(f"{name:12} {median:.3f} s  (median of {args.runs}), {files} files, {in_range} in range, "
              f"{events} events counted")
    print(f"ratio before/after compaction: {before[0] / after[0]:.1f}")


if __name__ == "__main__":
    main()
