-- The 766 metrics and the progress report from the dossiers table, as independent SQL.
--
-- Inputs, as tables or views:
--   dossiers: <root>/dossiers/*.parquet (one row per dossier, written by `sohoa aggregate`)
--   periods:  <root>/metrics/periods.parquet (period, period_start, period_last): every
--             period from the first with a dossier to the one holding the judging moment,
--             without gaps
-- Output: one row per period × agency × procedure, per agency, the province, and per field
-- (MaLinhVuc) within each agency and across agencies, with every count of
-- <root>/metrics/metrics.csv and of <root>/metrics/progress.csv. The progress table's
-- `received` (judged dossiers only) is `judged_received` here. `metrics_row` and
-- `progress_row` say which table holds the row: a table leaves out rows with nothing of
-- its own to show. Rates are left to the reader: num / NULLIF(den, 0).
--
-- Written in the SQL that DuckDB and Spark SQL share (no dialect functions), so analysts
-- can run it on either. Dates are local Vietnam dates (UTC+7); a period runs from its
-- first day to its last, whole days.
--
-- Two populations:
-- - received-based counts (received, online, digitization, e-result, reuse, payment):
--   every counted dossier, in the period of its receipt date;
-- - progress counts: the dossiers the rules judged (on_time_class not empty), in every
--   period they are open in: carried over when received before the period and not ended
--   before it; received in it; ended in it (the clock's end, never before the receipt
--   date: resolved early, on time or late, withdrawn, or stopped or refused); still open at
--   its end, overdue when `overdue_from` is on or before the period's last day. The
--   metrics table's early, on time, late and in progress are these.
WITH d AS (
  SELECT
    COALESCE(agency_code, '(none)') AS agency_code,
    COALESCE(procedure_code, '(none)') AS procedure_code,
    COALESCE(field_code, '(none)') AS field_code,
    received_date,
    -- The clock cannot end before it started.
    CASE
      WHEN end_date IS NULL THEN NULL
      WHEN end_date < received_date THEN received_date
      ELSE end_date
    END AS end_day,
    CASE
      WHEN on_time_class IS NULL THEN NULL
      WHEN end_reason = 'withdrawn' THEN 'withdrawn'
      WHEN end_reason IN ('stopped', 'refused') THEN 'stopped_or_refused'
      ELSE on_time_class
    END AS outcome,
    channel,
    overdue_from,
    online,
    digitized,
    e_result_eligible,
    e_result,
    reused,
    fee_bearing,
    paid_online
  FROM dossiers
  WHERE counted AND received_date IS NOT NULL
),
received AS (
  SELECT
    p.period,
    p.period_start,
    d.agency_code,
    d.procedure_code,
    d.field_code,
    1 AS received,
    CASE WHEN d.online THEN 1 ELSE 0 END AS online_received,
    CASE WHEN d.digitized THEN 1 ELSE 0 END AS digitized,
    CASE WHEN d.e_result_eligible THEN 1 ELSE 0 END AS e_result_eligible,
    CASE WHEN d.e_result THEN 1 ELSE 0 END AS e_result,
    CASE WHEN d.reused THEN 1 ELSE 0 END AS reused,
    CASE WHEN d.fee_bearing THEN 1 ELSE 0 END AS fee_bearing,
    CASE WHEN d.paid_online THEN 1 ELSE 0 END AS paid_online,
    0 AS carried_over,
    0 AS received_in_person,
    0 AS received_online,
    0 AS received_postal,
    0 AS received_other,
    0 AS early,
    0 AS on_time,
    0 AS late,
    0 AS withdrawn,
    0 AS stopped_or_refused,
    0 AS in_progress_in_time,
    0 AS in_progress_overdue
  FROM d
  JOIN periods p ON d.received_date BETWEEN p.period_start AND p.period_last
),
progress AS (
  SELECT
    p.period,
    p.period_start,
    d.agency_code,
    d.procedure_code,
    d.field_code,
    0 AS received,
    0 AS online_received,
    0 AS digitized,
    0 AS e_result_eligible,
    0 AS e_result,
    0 AS reused,
    0 AS fee_bearing,
    0 AS paid_online,
    CASE WHEN d.received_date < p.period_start THEN 1 ELSE 0 END AS carried_over,
    CASE WHEN d.received_date >= p.period_start AND d.channel = 'in_person' THEN 1 ELSE 0 END AS received_in_person,
    CASE WHEN d.received_date >= p.period_start AND d.channel = 'online' THEN 1 ELSE 0 END AS received_online,
    CASE WHEN d.received_date >= p.period_start AND d.channel = 'postal' THEN 1 ELSE 0 END AS received_postal,
    CASE WHEN d.received_date >= p.period_start AND (d.channel IS NULL OR d.channel NOT IN ('in_person', 'online', 'postal')) THEN 1 ELSE 0 END AS received_other,
    CASE WHEN d.end_day <= p.period_last AND d.outcome = 'early' THEN 1 ELSE 0 END AS early,
    CASE WHEN d.end_day <= p.period_last AND d.outcome = 'on_time' THEN 1 ELSE 0 END AS on_time,
    CASE WHEN d.end_day <= p.period_last AND d.outcome = 'late' THEN 1 ELSE 0 END AS late,
    CASE WHEN d.end_day <= p.period_last AND d.outcome = 'withdrawn' THEN 1 ELSE 0 END AS withdrawn,
    CASE WHEN d.end_day <= p.period_last AND d.outcome = 'stopped_or_refused' THEN 1 ELSE 0 END AS stopped_or_refused,
    CASE
      WHEN d.end_day IS NOT NULL AND d.end_day <= p.period_last THEN 0
      WHEN d.overdue_from IS NOT NULL AND d.overdue_from <= p.period_last THEN 0
      ELSE 1
    END AS in_progress_in_time,
    CASE
      WHEN d.end_day IS NOT NULL AND d.end_day <= p.period_last THEN 0
      WHEN d.overdue_from IS NOT NULL AND d.overdue_from <= p.period_last THEN 1
      ELSE 0
    END AS in_progress_overdue
  FROM d
  -- Every period the dossier is open in: received by its end, not ended before its start.
  JOIN periods p
    ON d.received_date <= p.period_last
    AND (d.end_day IS NULL OR d.end_day >= p.period_start)
  WHERE d.outcome IS NOT NULL
),
contributions AS (
  SELECT * FROM received
  UNION ALL
  SELECT * FROM progress
),
grouped AS (
  SELECT
    period,
    period_start,
    agency_code,
    procedure_code,
    field_code,
    SUM(received) AS received,
    SUM(online_received) AS online_received,
    SUM(early) + SUM(on_time) + SUM(late) + SUM(in_progress_in_time) + SUM(in_progress_overdue) AS ontime_total,
    SUM(early) AS early,
    SUM(on_time) AS on_time,
    SUM(late) AS late,
    SUM(in_progress_in_time) AS in_progress_in_time,
    SUM(in_progress_overdue) AS in_progress_overdue,
    SUM(digitized) AS digitized,
    SUM(e_result_eligible) AS e_result_eligible,
    SUM(e_result) AS e_result,
    SUM(reused) AS reused,
    SUM(fee_bearing) AS fee_bearing,
    SUM(paid_online) AS paid_online,
    SUM(carried_over) AS carried_over,
    SUM(received_in_person) + SUM(received_online) + SUM(received_postal) + SUM(received_other) AS judged_received,
    SUM(received_in_person) AS received_in_person,
    SUM(received_online) AS received_online,
    SUM(received_postal) AS received_postal,
    SUM(received_other) AS received_other,
    SUM(withdrawn) AS withdrawn,
    SUM(stopped_or_refused) AS stopped_or_refused
  FROM contributions
  GROUP BY GROUPING SETS (
    (period, period_start, agency_code, procedure_code),
    (period, period_start, agency_code),
    (period, period_start),
    (period, period_start, agency_code, field_code),
    (period, period_start, field_code)
  )
)
SELECT
  *,
  received + online_received + ontime_total + digitized + e_result_eligible + e_result
    + reused + fee_bearing + paid_online > 0 AS metrics_row,
  carried_over + judged_received > 0 AS progress_row
FROM grouped
