-- The 766 metrics and the progress report from the dossier tables, as independent SQL.
--
-- Inputs, as tables or views:
--   dossiers:  <root>/dossiers/*.parquet (one row per dossier, written by `sohoa aggregate`)
--   handovers: <root>/handovers/*.parquet (one row per change of holder, up to the end)
--   agencies:  <root>/metrics/agencies.parquet (every code's province, the feed's codes
--              the reference lacks included)
--   periods:   <root>/metrics/periods.parquet (period, period_start, period_last): every
--              period from the first with a dossier to the one holding the judging moment,
--              without gaps
-- Output: one row per view × period × agency × procedure, per agency, per province, and
-- per field (MaLinhVuc) within each agency and across a province's agencies, with every
-- count of <root>/metrics/metrics.csv and of <root>/metrics/progress.csv. The progress
-- table's `received` (judged dossiers only) is `judged_received` here. `metrics_row` and
-- `progress_row` say which table holds the row: a table leaves out rows with nothing of
-- its own to show. Rates are left to the reader: num / NULLIF(den, 0).
--
-- Written in the SQL that DuckDB and Spark SQL share (no dialect functions), so analysts
-- can run it on either; the test suite runs it unchanged on both (DuckDB 2, Spark 4). Dates are local Vietnam dates (UTC+7); a period runs from its
-- first day to its last, whole days.
--
-- Two views: `as_was` files a dossier under the agencies of the feed, `restated` under
-- the current units that succeeded them (the restated_* columns). In each, a dossier
-- *stays* with the agency that received it until its first handover, then with each
-- agency it is handed to until the next; the last stay holds it at its end.
--
-- Two populations:
-- - received-based counts (received, online, digitization, e-result, reuse, payment):
--   every counted dossier, in the period of its receipt date, under the agency that
--   received it;
-- - progress counts: the dossiers the rules judged (on_time_class not empty), in every
--   period they are open in, under the agency holding them: carried over when held at
--   the end of the period before; received in it (by the receiving agency); handed over
--   to or away from the agency in it; ended in it (the clock's end, never before the
--   receipt date: resolved early, on time or late, withdrawn, or stopped or refused; by
--   the last holder); still open at its end, overdue when `overdue_from` is on or before
--   the period's last day. The metrics table's early, on time, late and in progress are
--   these.
WITH d AS (
  SELECT
    dossier_code,
    COALESCE(receiving_agency_code, '(none)') AS receiving_as_was,
    COALESCE(restated_receiving_agency_code, '(none)') AS receiving_restated,
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
-- Each dossier once per view, under the agency that received it.
dv AS (
  SELECT 'as_was' AS view, receiving_as_was AS receiving, d.* FROM d
  UNION ALL
  SELECT 'restated' AS view, receiving_restated AS receiving, d.* FROM d
),
-- The stays: the receiving one (seq -1), then one per handover; a restated handover
-- within one current unit is none.
stays0 AS (
  SELECT view, dossier_code, -1 AS seq, receiving AS agency_code, received_date AS from_date
  FROM dv
  UNION ALL
  SELECT 'as_was', dossier_code, handover_seq, COALESCE(to_agency_code, '(none)'), handed_over_date
  FROM handovers
  UNION ALL
  SELECT 'restated', dossier_code, handover_seq, COALESCE(restated_to_agency_code, '(none)'), handed_over_date
  FROM handovers
  WHERE COALESCE(restated_from_agency_code, '(none)') <> COALESCE(restated_to_agency_code, '(none)')
),
stays AS (
  SELECT
    view,
    dossier_code,
    seq,
    agency_code,
    from_date,
    LEAD(from_date) OVER (PARTITION BY view, dossier_code ORDER BY seq) AS to_date
  FROM stays0
),
provinces AS (
  SELECT DISTINCT code, province_code FROM agencies
),
received AS (
  SELECT
    d.view,
    p.period,
    p.period_start,
    d.receiving AS agency_code,
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
    0 AS transferred_in,
    0 AS transferred_out,
    0 AS early,
    0 AS on_time,
    0 AS late,
    0 AS withdrawn,
    0 AS stopped_or_refused,
    0 AS in_progress_in_time,
    0 AS in_progress_overdue
  FROM dv d
  JOIN periods p ON d.received_date BETWEEN p.period_start AND p.period_last
),
progress AS (
  SELECT
    s.view,
    p.period,
    p.period_start,
    s.agency_code,
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
    -- Held at the end of the period before (the dossier is open then: see the join).
    CASE WHEN s.from_date < p.period_start AND (s.to_date IS NULL OR s.to_date >= p.period_start) THEN 1 ELSE 0 END AS carried_over,
    CASE WHEN s.seq = -1 AND d.received_date >= p.period_start AND d.channel = 'in_person' THEN 1 ELSE 0 END AS received_in_person,
    CASE WHEN s.seq = -1 AND d.received_date >= p.period_start AND d.channel = 'online' THEN 1 ELSE 0 END AS received_online,
    CASE WHEN s.seq = -1 AND d.received_date >= p.period_start AND d.channel = 'postal' THEN 1 ELSE 0 END AS received_postal,
    CASE WHEN s.seq = -1 AND d.received_date >= p.period_start AND (d.channel IS NULL OR d.channel NOT IN ('in_person', 'online', 'postal')) THEN 1 ELSE 0 END AS received_other,
    CASE WHEN s.seq >= 0 AND s.from_date >= p.period_start THEN 1 ELSE 0 END AS transferred_in,
    CASE WHEN s.to_date <= p.period_last THEN 1 ELSE 0 END AS transferred_out,
    CASE WHEN s.to_date IS NULL AND d.end_day <= p.period_last AND d.outcome = 'early' THEN 1 ELSE 0 END AS early,
    CASE WHEN s.to_date IS NULL AND d.end_day <= p.period_last AND d.outcome = 'on_time' THEN 1 ELSE 0 END AS on_time,
    CASE WHEN s.to_date IS NULL AND d.end_day <= p.period_last AND d.outcome = 'late' THEN 1 ELSE 0 END AS late,
    CASE WHEN s.to_date IS NULL AND d.end_day <= p.period_last AND d.outcome = 'withdrawn' THEN 1 ELSE 0 END AS withdrawn,
    CASE WHEN s.to_date IS NULL AND d.end_day <= p.period_last AND d.outcome = 'stopped_or_refused' THEN 1 ELSE 0 END AS stopped_or_refused,
    CASE
      WHEN s.to_date IS NOT NULL AND s.to_date <= p.period_last THEN 0
      WHEN d.end_day IS NOT NULL AND d.end_day <= p.period_last THEN 0
      WHEN d.overdue_from IS NOT NULL AND d.overdue_from <= p.period_last THEN 0
      ELSE 1
    END AS in_progress_in_time,
    CASE
      WHEN s.to_date IS NOT NULL AND s.to_date <= p.period_last THEN 0
      WHEN d.end_day IS NOT NULL AND d.end_day <= p.period_last THEN 0
      WHEN d.overdue_from IS NOT NULL AND d.overdue_from <= p.period_last THEN 1
      ELSE 0
    END AS in_progress_overdue
  FROM stays s
  JOIN dv d ON d.view = s.view AND d.dossier_code = s.dossier_code
  -- Every period the stay is in: begun by its end, not over before its start, with the
  -- dossier not ended before its start.
  JOIN periods p
    ON s.from_date <= p.period_last
    AND (s.to_date IS NULL OR s.to_date >= p.period_start)
    AND (d.end_day IS NULL OR d.end_day >= p.period_start)
  WHERE d.outcome IS NOT NULL
),
contributions AS (
  SELECT c.*, v.province_code
  FROM (
    SELECT * FROM received
    UNION ALL
    SELECT * FROM progress
  ) c
  LEFT JOIN provinces v ON v.code = c.agency_code
),
grouped AS (
  SELECT
    view,
    period,
    period_start,
    province_code,
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
    SUM(transferred_in) AS transferred_in,
    SUM(transferred_out) AS transferred_out,
    SUM(withdrawn) AS withdrawn,
    SUM(stopped_or_refused) AS stopped_or_refused
  FROM contributions
  GROUP BY GROUPING SETS (
    (view, period, period_start, province_code, agency_code, procedure_code),
    (view, period, period_start, province_code, agency_code),
    (view, period, period_start, province_code),
    (view, period, period_start, province_code, agency_code, field_code),
    (view, period, period_start, province_code, field_code)
  )
)
SELECT
  *,
  received + online_received + ontime_total + digitized + e_result_eligible + e_result
    + reused + fee_bearing + paid_online > 0 AS metrics_row,
  carried_over + judged_received + transferred_in > 0 AS progress_row
FROM grouped
