#!/usr/bin/env python3
"""Benchmark: `sohoa aggregate` against DuckDB running the equivalent SQL, same data, same run.

    tests/bench/aggregate.py [--dossiers 1000000] [--work DIR]

1. DuckDB generates an `events/` table (Hive-partitioned by local date, the ingestor's
   column types) with about 10 events per dossier: snapshots at each status change, 3%
   repeated, 10% with a supplement, 20% still open.
2. It times `sohoa aggregate` (the release binary) from `events/` to `metrics/`.
3. It times DuckDB doing the same work in SQL: dedupe by event id, fold to one row per
   dossier (latest snapshot, first ending status), working days through a calendar
   table, the on-time classes, and the grouping by period x agency x procedure with
   rollups.
It prints both wall times, the ratio, and each one's peak RSS.
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


# The ingestor's `events` columns, from a temporary table `e` of dossier columns (i,
# dossier_code, agency_code, procedure_code, received_at, k, open, paused, channel) and
# one row per snapshot (j, event_time, due_at, status_code); 3% of the snapshots are
# written twice, as a source that resends does.
EVENTS_SELECT = """
      SELECT
        1::SMALLINT AS schema_version,
        md5(dossier_code || '/' || j) AS event_id,
        'snapshot' AS event_kind,
        'dvcqg' AS source_system,
        dossier_code, procedure_code, 'Thủ tục ' || procedure_code AS procedure_name,
        'LV' AS field_code, NULL::VARCHAR AS field_name, agency_code,
        ['in_person', 'online', 'postal'][channel + 1] AS channel,
        status_code,
        ['registered','received','not_accepted','processing','supplement_requested','payment_requested','withdrawn','stopped','processed','returned'][status_code] AS status,
        event_time,
        received_at - to_hours(12) AS filed_at,
        received_at,
        due_at,
        CASE WHEN status_code >= 9 THEN received_at + to_hours((k - 1) * 7) END AS finished_at,
        CASE WHEN status_code = 10 THEN event_time END AS returned_at,
        NULL::TIMESTAMPTZ AS refused_at,
        CASE WHEN paused AND j >= 2 THEN [{'requested_at': received_at + to_hours(14),
              'completed_at': CASE WHEN j >= 3 THEN received_at + to_hours(20) END,
              'due_before': NULL::TIMESTAMPTZ, 'due_after': NULL::TIMESTAMPTZ}]
             ELSE []::STRUCT(requested_at TIMESTAMPTZ, completed_at TIMESTAMPTZ, due_before TIMESTAMPTZ, due_after TIMESTAMPTZ)[] END AS supplements,
        1 AS document_count,
        (hash(i * 29) % 10) < 8 AS has_submitted_file,
        (hash(i * 31) % 10) < 6 AS has_digitized_component,
        (hash(i * 37) % 10) < 3 AS has_reused_component,
        false AS from_national_warehouse,
        1 AS result_document_count,
        CASE WHEN status_code >= 9 AND (hash(i * 41) % 10) < 7 THEN 1 ELSE 0 END AS result_file_count,
        status_code >= 9 AND (hash(i * 41) % 10) < 7 AS has_e_result,
        (hash(i * 43) % 10) < 4 AS paid_online,
        (hash(i * 47) % 10) < 5 AS fee_bearing,
        'citizen' AS applicant_type,
        md5('p' || i) AS applicant_pseudonym,
        NULL::TIMESTAMPTZ AS step_started_at,
        NULL::TIMESTAMPTZ AS step_due_at,
        'dvcqg.dossiers' AS source_topic,
        (hash(dossier_code) % 12)::INTEGER AS source_partition,
        (i * 16 + j)::BIGINT AS source_offset,
        event_time + to_seconds(30) AS ingested_at,
        strftime(event_time + INTERVAL 7 HOUR, '%Y-%m-%d') AS date
      FROM (SELECT * FROM e UNION ALL SELECT * FROM e WHERE hash(i * 53 + j) % 100 < 3)
      ORDER BY date, agency_code, event_time
"""


def copy_events(con, out, options=""):
    """Write `e` as Hive-partitioned Parquet under `out`, as DuckDB's own writer does."""
    con.execute(f"COPY ({EVENTS_SELECT}) TO '{out}' "
                f"(FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, ROW_GROUP_SIZE 122880{options})")


# Dossiers generated per DuckDB pass: about 10 M events, which DuckDB holds in memory
# comfortably; the 100 M-event base of tests/bench/incremental.py takes ten passes.
CHUNK_DOSSIERS = 1_000_000


def generate(con, root, dossiers):
    """Write `events/` for dossiers 0..dossiers-1, in passes of CHUNK_DOSSIERS; returns the
    number of events before repeats."""
    con.execute("SET enable_progress_bar = false")
    events = 0
    for chunk, lo in enumerate(range(0, dossiers, CHUNK_DOSSIERS)):
        events += generate_chunk(con, root, lo, min(dossiers, lo + CHUNK_DOSSIERS), chunk)
    return events


def generate_chunk(con, root, lo, hi, chunk):
    con.execute("DROP TABLE IF EXISTS d")
    con.execute("DROP TABLE IF EXISTS e")
    con.execute(f"""
    CREATE TEMP TABLE d AS
    SELECT
      i,
      'H55-' || lpad(i::VARCHAR, 9, '0') AS dossier_code,
      '000.' || lpad((hash(i) % 40)::VARCHAR, 2, '0') || '.H55' AS agency_code,
      ['1.001193','1.004227','2.000908','1.000656','1.001612','2.001711','1.000894','3.000181'][1 + (hash(i * 3) % 8)::INT] AS procedure_code,
      TIMESTAMPTZ '2024-01-02 01:00:00+00' + to_seconds((hash(i * 7) % (330 * 86400))::BIGINT) AS received_at,
      6 + (hash(i * 11) % 9)::INT AS k,
      (hash(i * 13) % 10) < 2 AS open,
      (hash(i * 17) % 10) = 0 AS paused,
      (hash(i * 19) % 3)::INT AS channel
    FROM range({lo}, {hi}) t(i)
    """)
    con.execute("""
    CREATE TEMP TABLE e AS
    SELECT
      d.*,
      j,
      d.received_at + to_hours(j * 7) AS event_time,
      d.received_at + to_days(3 + (hash(d.i * 23) % 10)::INT) AS due_at,
      CASE WHEN j = 1 THEN 2 WHEN NOT d.open AND j = d.k THEN 10 WHEN NOT d.open AND j = d.k - 1 THEN 9
           WHEN d.paused AND j = 2 THEN 5 ELSE 4 END::TINYINT AS status_code
    FROM d, range(1, d.k + 1) s(j)
    """)
    copy_events(con, f"{root}/events", f", APPEND, FILENAME_PATTERN 'part{chunk:03}_{{uuid}}'")
    return con.execute("SELECT count(*) FROM e").fetchone()[0]


DUCKDB_SQL = """
PRAGMA threads=2;
SET enable_progress_bar = false;
CREATE TEMP TABLE cal AS
  SELECT day::DATE AS day,
         sum(CASE WHEN dayofweek(day) IN (0, 6) THEN 0 ELSE 1 END) OVER (ORDER BY day) AS cum
  FROM range(DATE '2022-01-01', DATE '2027-01-01', INTERVAL 1 DAY) t(day);
CREATE TEMP TABLE out AS
WITH ev AS (
  SELECT * FROM read_parquet('{root}/events/*/*.parquet')
  QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY source_offset) = 1
),
snap AS (
  SELECT * FROM ev WHERE event_kind = 'snapshot'
  QUALIFY row_number() OVER (PARTITION BY dossier_code ORDER BY event_time DESC, source_partition DESC, source_offset DESC) = 1
),
firsts AS (
  SELECT dossier_code, arg_max(status_code, event_time) AS status,
         min(CASE WHEN status_code = 9 THEN event_time END) AS first9,
         min(CASE WHEN status_code = 10 THEN event_time END) AS first10
  FROM ev GROUP BY 1
),
facts AS (
  SELECT s.*, f.status AS last_status,
         coalesce(s.finished_at, f.first9, s.returned_at, f.first10) AS end_at,
         coalesce(list_sum([epoch(x.completed_at) - epoch(x.requested_at) FOR x IN s.supplements IF x.completed_at IS NOT NULL]), 0) AS paused_s,
         len(s.supplements) AS n_sup
  FROM snap s JOIN firsts f USING (dossier_code)
),
judged AS (
  SELECT facts.*,
         CAST(received_at + INTERVAL 7 HOUR AS DATE) AS rd,
         CAST(end_at - to_seconds(paused_s::BIGINT) + INTERVAL 7 HOUR AS DATE) AS ed,
         CAST(due_at + INTERVAL 7 HOUR AS DATE) AS dd,
         ce.cum - cr.cum AS working_days
  FROM facts
  LEFT JOIN cal cr ON cr.day = CAST(received_at + INTERVAL 7 HOUR AS DATE)
  LEFT JOIN cal ce ON ce.day = CAST(coalesce(end_at, TIMESTAMPTZ '2024-12-31 12:00:00+00') + INTERVAL 7 HOUR AS DATE)
  WHERE last_status NOT IN (1, 3)
),
classed AS (
  SELECT *, CASE WHEN n_sup > 1 THEN 'late' WHEN ed < dd THEN 'early' WHEN ed = dd THEN 'on_time' WHEN ed > dd THEN 'late'
                 WHEN due_at < TIMESTAMPTZ '2024-12-31 12:00:00+00' THEN 'in_progress_overdue' ELSE 'in_progress_in_time' END AS class
  FROM judged
),
contrib AS (
  SELECT p.period, CASE p.period WHEN 'day' THEN rd ELSE CAST(date_trunc(p.period, rd) AS DATE) END AS period_start,
         agency_code, procedure_code, 1 AS received, (channel = 'online')::INT AS online,
         (class LIKE 'in_progress%')::INT AS open_n, (has_submitted_file AND has_e_result)::INT AS digitized,
         has_e_result::INT AS e_result, has_reused_component::INT AS reused, fee_bearing::INT AS fee,
         (fee_bearing AND paid_online)::INT AS paid, 0 AS early, 0 AS on_time, 0 AS late, working_days
  FROM classed, (VALUES ('day'), ('month'), ('quarter'), ('year')) p(period)
  UNION ALL
  SELECT p.period, CASE p.period WHEN 'day' THEN ed ELSE CAST(date_trunc(p.period, ed) AS DATE) END,
         agency_code, procedure_code, 0, 0, 0, 0, 0, 0, 0, 0,
         (class = 'early')::INT, (class = 'on_time')::INT, (class = 'late')::INT, 0
  FROM classed, (VALUES ('day'), ('month'), ('quarter'), ('year')) p(period)
  WHERE end_at IS NOT NULL
)
SELECT period, period_start, agency_code, procedure_code,
       sum(received) AS received, sum(online) AS online_received, sum(early) AS early, sum(on_time) AS on_time,
       sum(late) AS late, sum(open_n) AS open_n, sum(digitized) AS digitized, sum(e_result) AS e_result,
       sum(reused) AS reused, sum(fee) AS fee_bearing, sum(paid) AS paid_online, avg(working_days) AS working_days
FROM contrib
GROUP BY GROUPING SETS ((period, period_start, agency_code, procedure_code), (period, period_start, agency_code), (period, period_start));
COPY out TO '{out}/metrics.csv' (HEADER);
"""


def timed(cmd, **kw):
    """Run a command; return (seconds, peak RSS in MB, completed process)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.monotonic() - start
    out, err = p.stdout.read(), p.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{cmd[0]} failed ({code}):\n{err[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024, (out, err)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dossiers", type=int, default=1_000_000)
    ap.add_argument("--work", help="keep the data here (default: a temporary folder)")
    ap.add_argument("--sohoa", default=str(ROOT / "target" / "release" / "sohoa"))
    args = ap.parse_args()

    if not os.access(args.sohoa, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "--bin", "sohoa"], cwd=ROOT, check=True)
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="sohoa-bench-"))
    root = work / "data"
    if not (root / "events").exists():
        root.mkdir(parents=True, exist_ok=True)
        # In a child process, so this process stays small: a child's peak RSS counts the
        # parent's memory it was forked from.
        t = time.monotonic()
        code = f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r}); import aggregate, duckdb; " \
               f"print(aggregate.generate(duckdb.connect(), {str(root)!r}, {args.dossiers}))"
        events = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()[-1])
        print(f"generated {events:,} events of {args.dossiers:,} dossiers (+3% repeats) in {time.monotonic() - t:.0f} s")
    size = sum(f.stat().st_size for f in (root / "events").rglob("*.parquet"))
    print(f"events/: {size / 1e6:.0f} MB of Parquet")

    env = dict(os.environ, NO_COLOR="1", RUST_LOG="warn")
    t_sohoa, rss_sohoa, (out, err) = timed(
        [args.sohoa, "aggregate", "--root", str(root), "--as-of", "2024-12-31T12:00:00", "--no-report"], env=env)
    print(err.strip().splitlines()[0])
    sql_out = work / "duckdb"
    sql_out.mkdir(exist_ok=True)
    script = DUCKDB_SQL.format(root=root, out=sql_out)
    t_duck, rss_duck, _ = timed([sys.executable, "-c", "import duckdb, sys; duckdb.connect().execute(sys.argv[1])", script])
    print(f"sohoa aggregate: {t_sohoa:6.1f} s, peak RSS {rss_sohoa:6.0f} MB")
    print(f"DuckDB same SQL: {t_duck:6.1f} s, peak RSS {rss_duck:6.0f} MB (2 threads)")
    print(f"ratio sohoa/DuckDB time: {t_sohoa / t_duck:.2f} (goal: <= 1)")


if __name__ == "__main__":
    main()
