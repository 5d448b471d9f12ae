//! `metrics/`: the counts and rates by period × agency × procedure with their rollups,
//! the scorecard, the periods, and a shard's raw counts.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Builder, Float64Builder, UInt64Builder};
use bytes::Bytes;
use chrono::NaiveDate;

use super::{batch, csv_field, days, encode, strings, OutputError};
use crate::metrics::{Base, Rollups};
use crate::model::{Counts, FieldRow, MetricRow, Period, Scorecard, View};

/// The CSV header of `metrics/metrics.csv`; the Parquet table has the same columns.
pub const METRIC_COLUMNS: &[&str] = &[
    "period",
    "period_start",
    "period_label",
    "view",
    "province_code",
    "province_name",
    "agency_code",
    "agency_name",
    "procedure_code",
    "procedure_name",
    "field_code",
    "field_name",
    "received",
    "online_received",
    "online_rate",
    "ontime_total",
    "early",
    "on_time",
    "late",
    "in_progress_in_time",
    "in_progress_overdue",
    "on_time_rate",
    "digitized",
    "digitization_rate",
    "e_result_eligible",
    "e_result",
    "e_result_rate",
    "reused",
    "reuse_rate",
    "fee_bearing",
    "paid_online",
    "online_payment_rate",
];

type RateCol = (&'static str, fn(&Counts) -> Option<f64>);

fn rate_cols() -> [RateCol; 6] {
    [
        ("online_rate", Counts::online_rate),
        ("on_time_rate", Counts::on_time_rate),
        ("digitization_rate", Counts::digitization_rate),
        ("e_result_rate", Counts::e_result_rate),
        ("reuse_rate", Counts::reuse_rate),
        ("online_payment_rate", Counts::online_payment_rate),
    ]
}

/// A count column of `metrics/` by name (`ontime_total` is derived).
fn count_of(c: &Counts, name: &str) -> u64 {
    counts_field(c, name).unwrap_or(0)
}

fn rate_of(c: &Counts, name: &str) -> Option<Option<f64>> {
    rate_cols()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f(c))
}

/// One row of a metrics table: a metric row, and its field when it is a field rollup.
#[derive(Debug, Clone, Copy)]
pub struct TableRow<'a> {
    pub row: &'a MetricRow,
    pub field: Option<&'a FieldRow>,
}

/// The rows of the metrics tables in order: per period and start, the agency × procedure
/// rows with their rollups, then the field rollups.
pub fn table_rows(r: &Rollups) -> Vec<TableRow<'_>> {
    let mut out = Vec::with_capacity(r.rows.len() + r.fields.len());
    let mut fields = r.fields.iter().peekable();
    let key = |m: &MetricRow| (m.view, m.period, m.period_start);
    for row in &r.rows {
        while let Some(f) = fields.next_if(|f| key(&f.row) < key(row)) {
            out.push(TableRow {
                row: &f.row,
                field: Some(f),
            });
        }
        out.push(TableRow { row, field: None });
    }
    out.extend(fields.map(|f| TableRow {
        row: &f.row,
        field: Some(f),
    }));
    out
}

/// What a metrics table writes: its columns (keys first, then counts and rates), and how
/// it reads a count or a rate (`None`: not a count, or not a rate, of this table).
pub(crate) struct Spec {
    pub table: &'static str,
    pub columns: &'static [&'static str],
    pub count: fn(&Counts, &str) -> Option<u64>,
    pub rate: fn(&Counts, &str) -> Option<Option<f64>>,
    /// Rows this table leaves out (nothing of its own to show).
    pub keep: fn(&Counts) -> bool,
}

/// A key column of a row, as text (`None`: empty, or not a key column).
fn key_of(r: &TableRow, col: &str) -> Option<Option<String>> {
    let m = r.row;
    Some(match col {
        "period" => Some(m.period.as_str().to_string()),
        "period_start" => Some(m.period_start.format("%Y-%m-%d").to_string()),
        "period_label" => Some(m.period.label(m.period_start)),
        "view" => Some(m.view.as_str().to_string()),
        "province_code" => m.province_code.clone(),
        "province_name" => m.province_name.clone(),
        "agency_code" => m.agency_code.clone(),
        "agency_name" => m.agency_name.clone(),
        "procedure_code" => m.procedure_code.clone(),
        "procedure_name" => m.procedure_name.clone(),
        "field_code" => r.field.map(|f| f.field_code.clone()),
        "field_name" => r.field.and_then(|f| f.field_name.clone()),
        _ => return None,
    })
}

/// A table as CSV: rates as fractions, empty when the denominator is 0; codes empty on
/// rollups.
pub(crate) fn table_csv(spec: &Spec, rows: &[TableRow]) -> String {
    let mut out = spec.columns.join(",");
    out.push('\n');
    let header = out.len();
    for (n, r) in rows
        .iter()
        .filter(|r| (spec.keep)(&r.row.counts))
        .enumerate()
    {
        if n == 1 {
            // Room for every row at a quarter more than the first: the table runs to a
            // hundred megabytes, and growing by doubling copied it at each step and held
            // twice its size. Room never written takes no memory.
            let first = out.len() - header;
            out.reserve(rows.len() * (first + first / 4));
        }
        for (i, col) in spec.columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if let Some(k) = key_of(r, col) {
                csv_field(&mut out, k.as_deref().unwrap_or(""));
            } else if let Some(rate) = (spec.rate)(&r.row.counts, col) {
                if let Some(v) = rate {
                    let _ = write!(out, "{v}");
                }
            } else {
                let _ = write!(out, "{}", (spec.count)(&r.row.counts, col).unwrap_or(0));
            }
        }
        out.push('\n');
    }
    out
}

/// The same table as Parquet: dates as dates, counts as unsigned integers, rates as
/// nullable doubles.
pub(crate) fn table_parquet(spec: &Spec, rows: &[TableRow]) -> Result<Bytes, OutputError> {
    let rows: Vec<&TableRow> = rows.iter().filter(|r| (spec.keep)(&r.row.counts)).collect();
    let mut cols: Vec<(&str, ArrayRef, bool)> = Vec::new();
    for col in spec.columns {
        let (array, nullable): (ArrayRef, bool) = match *col {
            "period_start" => {
                let mut b = Date32Builder::with_capacity(rows.len());
                rows.iter()
                    .for_each(|r| b.append_value(days(r.row.period_start)));
                (Arc::new(b.finish()), false)
            }
            name if key_of(
                &TableRow {
                    row: &EMPTY,
                    field: None,
                },
                name,
            )
            .is_some() =>
            {
                let values: Vec<Option<String>> =
                    rows.iter().map(|r| key_of(r, name).flatten()).collect();
                let required = matches!(name, "period" | "period_label" | "view");
                (strings(values.iter().map(|v| v.as_deref())), !required)
            }
            name if (spec.rate)(&Counts::default(), name).is_some() => {
                let mut b = Float64Builder::with_capacity(rows.len());
                for r in &rows {
                    b.append_option((spec.rate)(&r.row.counts, name).flatten());
                }
                (Arc::new(b.finish()), true)
            }
            name => {
                let mut b = UInt64Builder::with_capacity(rows.len());
                for r in &rows {
                    b.append_value((spec.count)(&r.row.counts, name).unwrap_or(0));
                }
                (Arc::new(b.finish()), false)
            }
        };
        cols.push((col, array, nullable));
    }
    encode(spec.table, &batch(spec.table, cols)?)
}

/// A row to ask [`key_of`] which columns are keys.
static EMPTY: MetricRow = MetricRow {
    period: Period::Day,
    period_start: NaiveDate::MIN,
    view: View::Restated,
    province_code: None,
    province_name: None,
    agency_code: None,
    agency_name: None,
    procedure_code: None,
    procedure_name: None,
    counts: Counts::ZERO,
};

/// `metrics/metrics.*`.
const METRICS: Spec = Spec {
    table: "metrics",
    columns: METRIC_COLUMNS,
    count: |c, name| Some(count_of(c, name)),
    rate: rate_of,
    keep: |c| METRIC_COLUMNS.iter().any(|col| count_of(c, col) > 0),
};

/// `metrics/metrics.csv`.
pub fn metrics_csv(r: &Rollups) -> String {
    table_csv(&METRICS, &table_rows(r))
}

/// `metrics/metrics.parquet`, with the CSV's columns.
pub fn metrics_parquet(r: &Rollups) -> Result<Bytes, OutputError> {
    table_parquet(&METRICS, &table_rows(r))
}

/// `metrics/scorecard.csv`: one row per agency (or province) and period, with each
/// indicator's rate and points. Scorecards rank today's units, so they are the restated
/// view's, and the `view` column says so.
pub fn scorecard_csv(cards: &[Scorecard]) -> String {
    let mut out = String::from("period,period_start,period_label,view,agency_code,agency_name");
    if let Some(first) = cards.first() {
        for i in &first.indicators {
            let _ = write!(out, ",rate_{0},points_{0},max_{0}", i.id.replace('.', "_"));
        }
    }
    out.push_str(",total,max_total\n");
    for c in cards {
        let _ = write!(
            out,
            "{},{},{},{},",
            c.period.as_str(),
            c.period_start.format("%Y-%m-%d"),
            c.period.label(c.period_start),
            View::Restated.as_str()
        );
        csv_field(&mut out, c.agency_code.as_deref().unwrap_or(""));
        out.push(',');
        csv_field(&mut out, c.agency_name.as_deref().unwrap_or(""));
        for i in &c.indicators {
            out.push(',');
            if let Some(r) = i.rate {
                let _ = write!(out, "{r}");
            }
            let _ = write!(out, ",{:.3},{}", i.points, i.max_points);
        }
        let _ = writeln!(out, ",{:.3},{}", c.total, c.max_total);
    }
    out
}

/// The periods present, for SQL that joins dossiers to periods (`schemas/sql/`).
pub fn periods_parquet(keys: &[(Period, NaiveDate)]) -> Result<Bytes, OutputError> {
    let mut start = Date32Builder::new();
    let mut last = Date32Builder::new();
    for (p, s) in keys {
        start.append_value(days(*s));
        last.append_value(days(p.last_day(*s)));
    }
    let b = batch(
        "periods",
        vec![
            (
                "period",
                strings(keys.iter().map(|(p, _)| Some(p.as_str()))),
                false,
            ),
            ("period_start", Arc::new(start.finish()), false),
            ("period_last", Arc::new(last.finish()), false),
        ],
    )?;
    encode("periods", &b)
}

/// A shard's base counts, before rollups: `merge` adds them up.
pub fn base_parquet(base: &Base) -> Result<Bytes, OutputError> {
    let rows = &base.rows;
    let mut cols: Vec<(&str, ArrayRef, bool)> = vec![
        (
            "view",
            strings(rows.keys().map(|k| Some(k.0.as_str()))),
            false,
        ),
        (
            "period",
            strings(rows.keys().map(|k| Some(k.1.as_str()))),
            false,
        ),
        (
            "period_start",
            {
                let mut b = Date32Builder::new();
                rows.keys().for_each(|k| b.append_value(days(k.2)));
                Arc::new(b.finish())
            },
            false,
        ),
        (
            "agency_code",
            strings(rows.keys().map(|k| k.3.as_deref())),
            true,
        ),
        (
            "field_code",
            strings(rows.keys().map(|k| k.4.as_deref())),
            true,
        ),
        (
            "field_name",
            strings(rows.keys().map(|k| {
                k.4.as_ref()
                    .and_then(|c| base.field_names.get(c))
                    .map(String::as_str)
            })),
            true,
        ),
        (
            "procedure_code",
            strings(rows.keys().map(|k| k.5.as_deref())),
            true,
        ),
        (
            "procedure_name",
            strings(rows.keys().map(|k| {
                k.5.as_ref()
                    .and_then(|c| base.names.get(c))
                    .map(String::as_str)
            })),
            true,
        ),
    ];
    for name in BASE_COUNTS {
        let mut b = UInt64Builder::new();
        rows.values()
            .for_each(|c| b.append_value(count_of(c, name)));
        cols.push((name, Arc::new(b.finish()), false));
    }
    encode("shard counts", &batch("shard counts", cols)?)
}

/// The stored (not derived) counts of [`Counts`], in a fixed order: a shard's flows. The
/// backlog (carried over, in progress) follows from them after the merge.
pub const BASE_COUNTS: [&str; 21] = [
    "received",
    "online_received",
    "received_in_person",
    "received_online",
    "received_postal",
    "received_other",
    "transferred_in",
    "transferred_out",
    "early",
    "on_time",
    "late",
    "withdrawn",
    "stopped_or_refused",
    "overdue_in",
    "overdue_out",
    "digitized",
    "e_result_eligible",
    "e_result",
    "reused",
    "fee_bearing",
    "paid_online",
];

/// A count of [`Counts`] by its field name (the derived `ontime_total` and the progress
/// table's `received` included); `None` for no such count.
pub(crate) fn counts_field(c: &Counts, name: &str) -> Option<u64> {
    Some(match name {
        "received" => c.received,
        "online_received" => c.online_received,
        "ontime_total" => c.ontime_total(),
        "carried_over" => c.carried_over,
        "received_in_person" => c.received_in_person,
        "received_online" => c.received_online,
        "received_postal" => c.received_postal,
        "received_other" => c.received_other,
        "transferred_in" => c.transferred_in,
        "transferred_out" => c.transferred_out,
        "early" => c.early,
        "on_time" => c.on_time,
        "late" => c.late,
        "withdrawn" => c.withdrawn,
        "stopped_or_refused" => c.stopped_or_refused,
        "in_progress_in_time" => c.in_progress_in_time,
        "in_progress_overdue" => c.in_progress_overdue,
        "overdue_in" => c.overdue_in,
        "overdue_out" => c.overdue_out,
        "digitized" => c.digitized,
        "e_result_eligible" => c.e_result_eligible,
        "e_result" => c.e_result,
        "reused" => c.reused,
        "fee_bearing" => c.fee_bearing,
        "paid_online" => c.paid_online,
        _ => return None,
    })
}

/// Set a stored count by name (the inverse of reading it), for merging shards.
pub fn set_count(c: &mut Counts, name: &str, v: u64) {
    let field = match name {
        "received" => &mut c.received,
        "online_received" => &mut c.online_received,
        "received_in_person" => &mut c.received_in_person,
        "received_online" => &mut c.received_online,
        "received_postal" => &mut c.received_postal,
        "received_other" => &mut c.received_other,
        "transferred_in" => &mut c.transferred_in,
        "transferred_out" => &mut c.transferred_out,
        "early" => &mut c.early,
        "on_time" => &mut c.on_time,
        "late" => &mut c.late,
        "withdrawn" => &mut c.withdrawn,
        "stopped_or_refused" => &mut c.stopped_or_refused,
        "overdue_in" => &mut c.overdue_in,
        "overdue_out" => &mut c.overdue_out,
        "digitized" => &mut c.digitized,
        "e_result_eligible" => &mut c.e_result_eligible,
        "e_result" => &mut c.e_result,
        "reused" => &mut c.reused,
        "fee_bearing" => &mut c.fee_bearing,
        "paid_online" => &mut c.paid_online,
        _ => return,
    };
    *field = v;
}
