#!/usr/bin/env python3
"""Benchmark: `sohoa aggregate --incremental` on a day of new events against a full
recompute of everything, same data, same run.

    tests/bench/incremental.py [--base-events 100000000] [--new-events 1000000] [--work DIR]

`SOHOA_BENCH_BASE_EVENTS` and `SOHOA_BENCH_NEW_EVENTS` set the defaults of the two sizes.

1. DuckDB generates the base `events/` (tests/bench/aggregate.py's generator: about 10
   events per dossier, the ingestor's column types, 3% repeats), and
   `sohoa aggregate --incremental` folds it all and saves its state
   (`_sohoa/aggregate/state/`).
2. DuckDB writes about `--new-events` new events in new files: the lives of new dossiers
   received in December (the day at national volume), 3% of them repeated, and a late
   "returned" snapshot for some open dossiers of the base, which lands in old date
   partitions.
3. It times the incremental run (load the state, fold the new files, judge every dossier,
   write every table and the new state) and a full recompute over the same storage, and
   checks that both wrote the same metrics.
It prints both wall times, each one's peak RSS, and the ratio.
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent

# The generator's average: 6 to 14 events per dossier, plus 3% repeats.
EVENTS_PER_DOSSIER = 10 * 1.03

NEW_SQL = """
SET enable_progress_bar = false;
CREATE TEMP TABLE d AS
SELECT
  i,
  'H55-' || lpad(i::VARCHAR, 9, '0') AS dossier_code,
  '000.' || lpad((hash(i) % 40)::VARCHAR, 2, '0') || '.H55' AS agency_code,
  ['1.001193','1.004227','2.000908','1.000656','1.001612','2.001711','1.000894','3.000181'][1 + (hash(i * 3) % 8)::INT] AS procedure_code,
  CASE WHEN i >= {base}
       THEN TIMESTAMPTZ '2024-12-02 01:00:00+00' + to_seconds((hash(i * 7) % 86400)::BIGINT)
       ELSE TIMESTAMPTZ '2024-01-02 01:00:00+00' + to_seconds((hash(i * 7) % (330 * 86400))::BIGINT) END AS received_at,
  6 + (hash(i * 11) % 9)::INT AS k,
  (hash(i * 13) % 10) < 2 AS open,
  (hash(i * 17) % 10) = 0 AS paused,
  (hash(i * 19) % 3)::INT AS channel
FROM (SELECT * FROM range({base}, {base} + {new_dossiers}) n(i)
      UNION ALL SELECT * FROM range(0, {base}, {late_step}) o(i)) t(i);
-- New dossiers: their whole life. Open base dossiers: one late snapshot, returned, with
-- offset 15 (the base uses 1 to 14 for each dossier).
CREATE TEMP TABLE e AS
SELECT d.*, j,
  d.received_at + to_hours(j * 7) AS event_time,
  d.received_at + to_days(3 + (hash(d.i * 23) % 10)::INT) AS due_at,
  CASE WHEN j = 1 THEN 2 WHEN NOT d.open AND j = d.k THEN 10 WHEN NOT d.open AND j = d.k - 1 THEN 9
       WHEN d.paused AND j = 2 THEN 5 ELSE 4 END::TINYINT AS status_code
FROM d, range(1, d.k + 1) s(j) WHERE d.i >= {base}
UNION ALL
SELECT d.*, 15 AS j, d.received_at + to_hours(d.k * 7 + 30) AS event_time,
  d.received_at + to_days(3 + (hash(d.i * 23) % 10)::INT) AS due_at, 10::TINYINT AS status_code
FROM d WHERE d.i < {base} AND d.open;
"""


def run_measured(cmd, env):
    """Run a command, wait4() for its own peak RSS (not the sum of every child so far)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # Read the pipes on threads so a chatty child never blocks on a full pipe.
    chunks = {"out": [], "err": []}
    readers = [threading.Thread(target=lambda s=s, k=k: chunks[k].append(s.read()))
               for s, k in ((p.stdout, "out"), (p.stderr, "err"))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(p.pid, 0)
    for r in readers:
        r.join()
    elapsed = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    err = "".join(chunks["err"])
    if code != 0:
        sys.exit(f"{' '.join(cmd[:3])} failed ({code}):\n{err[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024, err


def duckdb_child(code):
    """Run DuckDB in a child process, so this process stays small."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"DuckDB failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-events", type=int, default=int(os.environ.get("SOHOA_BENCH_BASE_EVENTS", 100_000_000)))
    ap.add_argument("--new-events", type=int, default=int(os.environ.get("SOHOA_BENCH_NEW_EVENTS", 1_000_000)))
    ap.add_argument("--work", help="keep the data here (default: a temporary folder, deleted at the end)")
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    ap.add_argument("--sohoa", default=str(pathlib.Path(target) / "release" / "sohoa"))
    args = ap.parse_args()

    if not os.access(args.sohoa, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "--bin", "sohoa"], cwd=ROOT, check=True)
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="sohoa-bench-inc-"))
    root = work / "data"
    if (root / "_sohoa").exists():
        sys.exit(f"{root} already holds a state: use a fresh --work")
    env = dict(os.environ, NO_COLOR="1", RUST_LOG="warn")
    as_of = ["--as-of", "2024-12-31T12:00:00", "--no-report"]
    sohoa = [args.sohoa, "aggregate", "--root", str(root)]

    base_dossiers = max(1, int(args.base_events / EVENTS_PER_DOSSIER))
    if not (root / "events").exists():
        root.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        events = int(duckdb_child(
            f"import sys; sys.path.insert(0, {str(HERE)!r}); import aggregate, duckdb; "
            f"print(aggregate.generate(duckdb.connect(), {str(root)!r}, {base_dossiers}))").split()[-1])
        print(f"base: {events:,} events of {base_dossiers:,} dossiers (+3% repeats) in {time.monotonic() - t:.0f} s")

    # The state: the first incremental run folds everything.
    t_build, rss_build, err = run_measured(sohoa + ["--incremental"] + as_of, env)
    state = sum(f.stat().st_size for f in (root / "_sohoa" / "aggregate" / "state").rglob("*") if f.is_file())
    print(f"state built by the first --incremental run: {t_build:.1f} s, peak RSS {rss_build:.0f} MB, "
          f"{state / 1e6:.0f} MB in storage")

    # About --new-events new events: the lives of new dossiers, and late snapshots of open
    # base dossiers (5% of the budget), in new files next to the old ones.
    late = max(1, int(args.new_events * 0.05))
    late_step = max(1, int(base_dossiers * 0.2 / late))
    new_dossiers = max(1, int((args.new_events - late) / EVENTS_PER_DOSSIER))
    staging = work / "new"
    t = time.monotonic()
    sql = NEW_SQL.format(base=base_dossiers, new_dossiers=new_dossiers, late_step=late_step)
    duckdb_child(f"import sys; sys.path.insert(0, {str(HERE)!r}); import aggregate, duckdb; "
                 f"con = duckdb.connect(); con.execute({sql!r}); aggregate.copy_events(con, {str(staging)!r})")
    new_files = 0
    for f in sorted(staging.rglob("*.parquet")):
        dest = root / "events" / f.parent.name / f"new-{new_files:05}.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(f), dest)
        new_files += 1
    new_events = int(duckdb_child(
        f"import duckdb; print(duckdb.connect().execute(\"SELECT count(*) FROM read_parquet('{root}/events/*/new-*.parquet')\").fetchone()[0])"))
    print(f"new: {new_events:,} events in {new_files} files ({new_dossiers:,} new dossiers, late snapshots of open ones) "
          f"in {time.monotonic() - t:.0f} s")

    t_inc, rss_inc, err_inc = run_measured(sohoa + ["--incremental"] + as_of, env)
    print(f"  {err_inc.strip().splitlines()[0]}")
    inc_metrics = (root / "metrics" / "metrics.csv").read_bytes()
    inc_quality = (root / "quality" / "quality.csv").read_bytes()
    t_full, rss_full, err_full = run_measured(sohoa + as_of, env)
    print(f"  {err_full.strip().splitlines()[0]}")
    same = inc_metrics == (root / "metrics" / "metrics.csv").read_bytes() and \
        inc_quality == (root / "quality" / "quality.csv").read_bytes()
    print(f"incremental run:  {t_inc:7.1f} s, peak RSS {rss_inc:6.0f} MB")
    print(f"full recompute:   {t_full:7.1f} s, peak RSS {rss_full:6.0f} MB")
    print(f"ratio incremental/full time: {t_inc / t_full:.2f}, RSS: {rss_inc / rss_full:.2f}")
    print(f"metrics.csv and quality.csv identical: {'yes' if same else 'NO'} (goal for the incremental run: under 300 s)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
