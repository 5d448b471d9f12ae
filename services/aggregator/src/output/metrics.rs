//! `metrics/`: the counts and rates by period × agency × procedure with their rollups,
//! the scorecard, the periods, and a shard's raw counts.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Builder, Float64Builder, UInt64Builder};
use bytes::Bytes;
use chrono::NaiveDate;

use super::{batch, csv_field, days, encode, strings, OutputError};
use crate::metrics::Base;
use crate::model::{Counts, MetricRow, Period, Scorecard};

/// The CSV header of `metrics/metrics.csv`; the Parquet table has the same columns.
pub const METRIC_COLUMNS: &[&str] = &[
    "period",
    "period_start",
    "period_label",
    "agency_code",
    "procedure_code",
    "procedure_name",
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

/// A count column by name; `ontime_total` is derived.
fn count_of(c: &Counts, name: &str) -> u64 {
    match name {
        "received" => c.received,
        "online_received" => c.online_received,
        "ontime_total" => c.ontime_total(),
        "early" => c.early,
        "on_time" => c.on_time,
        "late" => c.late,
        "in_progress_in_time" => c.in_progress_in_time,
        "in_progress_overdue" => c.in_progress_overdue,
        "digitized" => c.digitized,
        "e_result_eligible" => c.e_result_eligible,
        "e_result" => c.e_result,
        "reused" => c.reused,
        "fee_bearing" => c.fee_bearing,
        "paid_online" => c.paid_online,
        _ => 0,
    }
}

fn rate_of(c: &Counts, name: &str) -> Option<Option<f64>> {
    rate_cols()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f(c))
}

/// `metrics/metrics.csv`: rates as fractions, empty when the denominator is 0; codes
/// empty on rollups.
pub fn metrics_csv(rows: &[MetricRow]) -> String {
    let mut out = METRIC_COLUMNS.join(",");
    out.push('\n');
    for r in rows {
        for (i, col) in METRIC_COLUMNS.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match *col {
                "period" => out.push_str(r.period.as_str()),
                "period_start" => out.push_str(&r.period_start.format("%Y-%m-%d").to_string()),
                "period_label" => out.push_str(&r.period.label(r.period_start)),
                "agency_code" => csv_field(&mut out, r.agency_code.as_deref().unwrap_or("")),
                "procedure_code" => csv_field(&mut out, r.procedure_code.as_deref().unwrap_or("")),
                "procedure_name" => csv_field(&mut out, r.procedure_name.as_deref().unwrap_or("")),
                name => match rate_of(&r.counts, name) {
                    Some(Some(v)) => {
                        let _ = write!(out, "{v}");
                    }
                    Some(None) => {}
                    None => {
                        let _ = write!(out, "{}", count_of(&r.counts, name));
                    }
                },
            }
        }
        out.push('\n');
    }
    out
}

/// `metrics/metrics.parquet`, with the CSV's columns.
pub fn metrics_parquet(rows: &[MetricRow]) -> Result<Bytes, OutputError> {
    let mut cols: Vec<(&str, ArrayRef, bool)> = Vec::new();
    for col in METRIC_COLUMNS {
        let (array, nullable): (ArrayRef, bool) = match *col {
            "period" => (strings(rows.iter().map(|r| Some(r.period.as_str()))), false),
            "period_start" => {
                let mut b = Date32Builder::with_capacity(rows.len());
                rows.iter()
                    .for_each(|r| b.append_value(days(r.period_start)));
                (Arc::new(b.finish()), false)
            }
            "period_label" => {
                let labels: Vec<String> = rows
                    .iter()
                    .map(|r| r.period.label(r.period_start))
                    .collect();
                (strings(labels.iter().map(|s| Some(s.as_str()))), false)
            }
            "agency_code" => (strings(rows.iter().map(|r| r.agency_code.as_deref())), true),
            "procedure_code" => (
                strings(rows.iter().map(|r| r.procedure_code.as_deref())),
                true,
            ),
            "procedure_name" => (
                strings(rows.iter().map(|r| r.procedure_name.as_deref())),
                true,
            ),
            name => match rate_of(&Counts::default(), name) {
                Some(_) => {
                    let mut b = Float64Builder::with_capacity(rows.len());
                    for r in rows {
                        b.append_option(rate_of(&r.counts, name).flatten());
                    }
                    (Arc::new(b.finish()), true)
                }
                None => {
                    let mut b = UInt64Builder::with_capacity(rows.len());
                    for r in rows {
                        b.append_value(count_of(&r.counts, name));
                    }
                    (Arc::new(b.finish()), false)
                }
            },
        };
        cols.push((col, array, nullable));
    }
    encode("metrics", &batch("metrics", cols)?)
}

/// `metrics/scorecard.csv`: one row per agency (or the province) and period, with each
/// indicator's rate and points.
pub fn scorecard_csv(cards: &[Scorecard]) -> String {
    let mut out = String::from("period,period_start,period_label,agency_code");
    if let Some(first) = cards.first() {
        for i in &first.indicators {
            let _ = write!(out, ",rate_{0},points_{0},max_{0}", i.id.replace('.', "_"));
        }
    }
    out.push_str(",total,max_total\n");
    for c in cards {
        let _ = write!(
            out,
            "{},{},{},",
            c.period.as_str(),
            c.period_start.format("%Y-%m-%d"),
            c.period.label(c.period_start)
        );
        csv_field(&mut out, c.agency_code.as_deref().unwrap_or(""));
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
            "period",
            strings(rows.keys().map(|k| Some(k.0.as_str()))),
            false,
        ),
        (
            "period_start",
            {
                let mut b = Date32Builder::new();
                rows.keys().for_each(|k| b.append_value(days(k.1)));
                Arc::new(b.finish())
            },
            false,
        ),
        (
            "agency_code",
            strings(rows.keys().map(|k| k.2.as_deref())),
            true,
        ),
        (
            "procedure_code",
            strings(rows.keys().map(|k| k.3.as_deref())),
            true,
        ),
        (
            "procedure_name",
            strings(rows.keys().map(|k| {
                k.3.as_ref()
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

/// The stored (not derived) counts of [`Counts`], in a fixed order.
pub const BASE_COUNTS: [&str; 13] = [
    "received",
    "online_received",
    "early",
    "on_time",
    "late",
    "in_progress_in_time",
    "in_progress_overdue",
    "digitized",
    "e_result_eligible",
    "e_result",
    "reused",
    "fee_bearing",
    "paid_online",
];

/// Set a stored count by name (the inverse of reading it), for merging shards.
pub fn set_count(c: &mut Counts, name: &str, v: u64) {
    match name {
        "received" => c.received = v,
        "online_received" => c.online_received = v,
        "early" => c.early = v,
        "on_time" => c.on_time = v,
        "late" => c.late = v,
        "in_progress_in_time" => c.in_progress_in_time = v,
        "in_progress_overdue" => c.in_progress_overdue = v,
        "digitized" => c.digitized = v,
        "e_result_eligible" => c.e_result_eligible = v,
        "e_result" => c.e_result = v,
        "reused" => c.reused = v,
        "fee_bearing" => c.fee_bearing = v,
        "paid_online" => c.paid_online = v,
        _ => {}
    }
}
