-- The 766 metrics from the dossiers table, as independent SQL.
--
-- Inputs, as tables or views:
--   dossiers: <root>/dossiers/*.parquet (one row per dossier, written by `sohoa aggregate`)
--   periods:  <root>/metrics/periods.parquet (period, period_start, period_last)
-- Output: the rows of <root>/metrics/metrics.csv, with the same counts: per agency ×
-- procedure, per agency, the province, and per field (MaLinhVuc) within each agency and
-- across agencies. Rates are left to the reader: num / NULLIF(den, 0).
--
-- Written in the SQL that DuckDB and Spark SQL share (no dialect functions), so analysts
-- can run it on either. A dossier counts in a period when it was received in it (the
-- received-based counts, and, if still open at the period's end, in progress judged at
-- that end), or when its clock ended in it (early, on time or late).
WITH received AS (
  SELECT
    d.period,
    d.period_start,
    COALESCE(d.agency_code, '(none)') AS agency_code,
    COALESCE(d.procedure_code, '(none)') AS procedure_code,
    COALESCE(d.field_code, '(none)') AS field_code,
    1 AS received,
    CASE WHEN d.online THEN 1 ELSE 0 END AS online_received,
    0 AS early,
    0 AS on_time,
    0 AS late,
    CASE WHEN open_class = 'in_progress_in_time' THEN 1 ELSE 0 END AS in_progress_in_time,
    CASE WHEN open_class = 'in_progress_overdue' THEN 1 ELSE 0 END AS in_progress_overdue,
    CASE WHEN d.digitized THEN 1 ELSE 0 END AS digitized,
    CASE WHEN d.e_result_eligible THEN 1 ELSE 0 END AS e_result_eligible,
    CASE WHEN d.e_result THEN 1 ELSE 0 END AS e_result,
    CASE WHEN d.reused THEN 1 ELSE 0 END AS reused,
    CASE WHEN d.fee_bearing THEN 1 ELSE 0 END AS fee_bearing,
    CASE WHEN d.paid_online THEN 1 ELSE 0 END AS paid_online
  FROM (
    SELECT
      d.*,
      p.period,
      p.period_start,
      -- Still open at the period's end: judged then, or at the run's moment for a
      -- period not over yet.
      CASE
        WHEN d.on_time_class IS NULL THEN NULL
        WHEN d.end_date IS NOT NULL AND d.end_date <= p.period_last THEN NULL
        WHEN d.supplement_count > 1 THEN 'in_progress_overdue'
        WHEN p.period_last >= d.judged_date THEN d.on_time_class
        WHEN d.overdue_from <= p.period_last THEN 'in_progress_overdue'
        ELSE 'in_progress_in_time'
      END AS open_class
    FROM dossiers d
    JOIN periods p ON d.received_date BETWEEN p.period_start AND p.period_last
    WHERE d.counted
  ) d
),
ended AS (
  SELECT
    p.period,
    p.period_start,
    COALESCE(d.agency_code, '(none)') AS agency_code,
    COALESCE(d.procedure_code, '(none)') AS procedure_code,
    COALESCE(d.field_code, '(none)') AS field_code,
    0 AS received,
    0 AS online_received,
    CASE WHEN d.on_time_class = 'early' THEN 1 ELSE 0 END AS early,
    CASE WHEN d.on_time_class = 'on_time' THEN 1 ELSE 0 END AS on_time,
    CASE WHEN d.on_time_class = 'late' THEN 1 ELSE 0 END AS late,
    0 AS in_progress_in_time,
    0 AS in_progress_overdue,
    0 AS digitized,
    0 AS e_result_eligible,
    0 AS e_result,
    0 AS reused,
    0 AS fee_bearing,
    0 AS paid_online
  FROM dossiers d
  JOIN periods p ON d.end_date BETWEEN p.period_start AND p.period_last
  WHERE d.counted AND d.on_time_class IN ('early', 'on_time', 'late')
),
contributions AS (
  SELECT * FROM received
  UNION ALL
  SELECT * FROM ended
)
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
  SUM(paid_online) AS paid_online
FROM contributions
GROUP BY GROUPING SETS (
  (period, period_start, agency_code, procedure_code),
  (period, period_start, agency_code),
  (period, period_start),
  (period, period_start, agency_code, field_code),
  (period, period_start, field_code)
)
