//! The aggregator's tables: `dossiers/` and `metrics/` in Parquet (and CSV for metrics
//! and scorecards), written whole and atomically (one `put` per file).

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    Int8Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{Field, Schema};
use bytes::Bytes;
use chrono::NaiveDate;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::fold::{Fact, Interner, CHANNEL_IN_PERSON, CHANNEL_ONLINE, CHANNEL_POSTAL};
use crate::fold::{FLAG_NATIONAL_WAREHOUSE, NO_SYM};
use crate::metrics::Base;
use crate::model::{Counts, MetricRow, Period, Scorecard};
use crate::rules::{local_date, DueSource, Judged};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("encoding {table}: {reason}")]
    Encode { table: &'static str, reason: String },
}

/// Rows per row group of the aggregator's tables.
const ROW_GROUP_ROWS: usize = 128 * 1024;

fn writer_props() -> Result<WriterProperties, OutputError> {
    let level = ZstdLevel::try_new(1).map_err(|e| OutputError::Encode {
        table: "any",
        reason: e.to_string(),
    })?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

pub(crate) fn encode(table: &'static str, batch: &RecordBatch) -> Result<Bytes, OutputError> {
    let err = |e: parquet::errors::ParquetError| OutputError::Encode {
        table,
        reason: e.to_string(),
    };
    let mut buf = Vec::new();
    let mut w =
        ArrowWriter::try_new(&mut buf, batch.schema(), Some(writer_props()?)).map_err(err)?;
    w.write(batch).map_err(err)?;
    w.close().map_err(err)?;
    Ok(Bytes::from(buf))
}

pub async fn put(store: &dyn ObjectStore, path: &str, data: Bytes) -> Result<(), OutputError> {
    store
        .put(&Path::from(path), PutPayload::from_bytes(data))
        .await?;
    Ok(())
}

pub(crate) fn batch(
    table: &'static str,
    cols: Vec<(&str, ArrayRef, bool)>,
) -> Result<RecordBatch, OutputError> {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a, nullable)| Field::new(*n, a.data_type().clone(), *nullable))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        cols.into_iter().map(|c| c.1).collect(),
    )
    .map_err(|e| OutputError::Encode {
        table,
        reason: e.to_string(),
    })
}

pub(crate) fn days(d: NaiveDate) -> i32 {
    (chrono::Datelike::num_days_from_ce(&d)) - 719_163
}

fn utc() -> Arc<str> {
    Arc::from("UTC")
}

const STATUS_NAMES: [&str; 11] = [
    "unknown",
    "registered",
    "received",
    "not_accepted",
    "processing",
    "supplement_requested",
    "payment_requested",
    "withdrawn",
    "stopped",
    "processed",
    "returned",
];

/// One judged dossier, ready to write.
pub struct DossierOut<'a> {
    pub code: &'a str,
    pub fact: &'a Fact,
    pub judged: &'a Judged,
    /// The interner of the fold part the fact comes from.
    pub syms: &'a Interner,
}

/// Encode the `dossiers` table, a row group at a time, so the Arrow copy of the table
/// never exists whole.
pub fn dossiers_parquet(rows: &[DossierOut<'_>], as_of: i64) -> Result<Bytes, OutputError> {
    let err = |e: parquet::errors::ParquetError| OutputError::Encode {
        table: "dossiers",
        reason: e.to_string(),
    };
    let mut buf = Vec::new();
    let mut chunks = rows.chunks(ROW_GROUP_ROWS);
    let first = dossiers_batch(chunks.next().unwrap_or(&[]), as_of)?;
    let mut writer =
        ArrowWriter::try_new(&mut buf, first.schema(), Some(writer_props()?)).map_err(err)?;
    writer.write(&first).map_err(err)?;
    for chunk in chunks {
        writer.write(&dossiers_batch(chunk, as_of)?).map_err(err)?;
    }
    writer.close().map_err(err)?;
    Ok(Bytes::from(buf))
}

fn dossiers_batch(rows: &[DossierOut<'_>], as_of: i64) -> Result<RecordBatch, OutputError> {
    let n = rows.len();
    let mut code = StringBuilder::with_capacity(n, n * 24);
    let mut system = StringBuilder::new();
    let mut agency = StringBuilder::new();
    let mut procedure = StringBuilder::new();
    let mut procedure_name = StringBuilder::new();
    let mut channel = StringBuilder::new();
    let mut status_code = Int8Builder::with_capacity(n);
    let mut status = StringBuilder::new();
    let ts = || TimestampMicrosecondBuilder::with_capacity(n).with_timezone(utc());
    let (mut received, mut due, mut end, mut eff_end, mut finished, mut returned, mut last) =
        (ts(), ts(), ts(), ts(), ts(), ts(), ts());
    let mut judged_at = ts();
    let mut judged_date = Date32Builder::with_capacity(n);
    let mut received_date = Date32Builder::with_capacity(n);
    let mut end_date = Date32Builder::with_capacity(n);
    let mut overdue_from = Date32Builder::with_capacity(n);
    let mut due_source = StringBuilder::new();
    let mut end_reason = StringBuilder::new();
    let mut supplements = Int32Builder::with_capacity(n);
    let mut paused = Int64Builder::with_capacity(n);
    let mut subtracted = Int64Builder::with_capacity(n);
    let mut working_days = Float64Builder::with_capacity(n);
    let mut class = StringBuilder::new();
    let bools = || BooleanBuilder::with_capacity(n);
    let (mut counted, mut online, mut digitized, mut eligible, mut e_result) =
        (bools(), bools(), bools(), bools(), bools());
    let (mut reused, mut warehouse, mut fee, mut paid) = (bools(), bools(), bools(), bools());
    let mut events = Int32Builder::with_capacity(n);
    for r in rows {
        let sym = |s| (s != NO_SYM).then(|| r.syms.get(s)).flatten();
        let (f, j) = (r.fact, r.judged);
        code.append_value(r.code);
        system.append_option(sym(f.source_system));
        agency.append_option(sym(f.agency));
        procedure.append_option(sym(f.procedure));
        procedure_name.append_option(sym(f.procedure_name));
        channel.append_option(match f.channel {
            CHANNEL_IN_PERSON => Some("in_person"),
            CHANNEL_ONLINE => Some("online"),
            CHANNEL_POSTAL => Some("postal"),
            _ => None,
        });
        status_code.append_value(f.status);
        status.append_value(
            STATUS_NAMES
                .get(f.status as usize)
                .copied()
                .unwrap_or("unknown"),
        );
        received.append_option(j.received_at);
        received_date.append_option(j.received_at.map(|t| days(local_date(t))));
        due.append_option(j.due_at);
        due_source.append_option(j.due_source.map(|s| match s {
            DueSource::Source => "source",
            DueSource::Catalogue => "catalogue",
        }));
        end.append_option(j.end_at);
        end_date.append_option(j.end_at.map(|t| days(local_date(t))));
        end_reason.append_option(j.end_reason.map(|r| r.as_str()));
        eff_end.append_option(j.effective_end_at);
        finished.append_option(f.finished_at);
        returned.append_option(f.returned_at);
        supplements.append_value(j.supplement_count as i32);
        paused.append_value(j.paused_seconds);
        subtracted.append_value(j.pause_subtracted_seconds);
        working_days.append_option(j.working_days);
        class.append_option(j.on_time.map(|c| c.as_str()));
        overdue_from.append_option(j.overdue_from.map(days));
        counted.append_value(j.counted);
        online.append_value(j.online);
        digitized.append_value(j.digitized);
        eligible.append_value(j.e_result_eligible);
        e_result.append_value(j.e_result);
        reused.append_value(j.reused);
        warehouse.append_value(f.flag(FLAG_NATIONAL_WAREHOUSE));
        fee.append_value(j.fee_bearing);
        paid.append_value(j.paid_online);
        events.append_value(f.events as i32);
        last.append_value(f.last.time);
        judged_at.append_value(as_of);
        judged_date.append_value(days(local_date(as_of)));
    }
    let a = |b: &mut dyn arrow::array::ArrayBuilder| b.finish();
    batch(
        "dossiers",
        vec![
            ("dossier_code", a(&mut code), false),
            ("source_system", a(&mut system), true),
            ("agency_code", a(&mut agency), true),
            ("procedure_code", a(&mut procedure), true),
            ("procedure_name", a(&mut procedure_name), true),
            ("channel", a(&mut channel), true),
            ("status_code", a(&mut status_code), false),
            ("status", a(&mut status), false),
            ("received_at", a(&mut received), true),
            ("received_date", a(&mut received_date), true),
            ("due_at", a(&mut due), true),
            ("due_source", a(&mut due_source), true),
            ("end_at", a(&mut end), true),
            ("end_date", a(&mut end_date), true),
            ("end_reason", a(&mut end_reason), true),
            ("effective_end_at", a(&mut eff_end), true),
            ("finished_at", a(&mut finished), true),
            ("returned_at", a(&mut returned), true),
            ("supplement_count", a(&mut supplements), false),
            ("paused_seconds", a(&mut paused), false),
            ("pause_subtracted_seconds", a(&mut subtracted), false),
            ("working_days", a(&mut working_days), true),
            ("on_time_class", a(&mut class), true),
            ("overdue_from", a(&mut overdue_from), true),
            ("counted", a(&mut counted), false),
            ("online", a(&mut online), false),
            ("digitized", a(&mut digitized), false),
            ("e_result_eligible", a(&mut eligible), false),
            ("e_result", a(&mut e_result), false),
            ("reused", a(&mut reused), false),
            ("from_national_warehouse", a(&mut warehouse), false),
            ("fee_bearing", a(&mut fee), false),
            ("paid_online", a(&mut paid), false),
            ("events", a(&mut events), false),
            ("last_event_at", a(&mut last), false),
            ("judged_at", a(&mut judged_at), false),
            ("judged_date", a(&mut judged_date), false),
        ],
    )
}

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

pub(crate) fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
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

fn strings<'a>(it: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::new();
    for s in it {
        b.append_option(s);
    }
    Arc::new(b.finish())
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

/// The dossier, period and file names: dossiers of shard `i` of `n` go to
/// `dossiers/part-<i>-of-<n>.parquet`.
pub fn dossiers_path(index: u32, count: u32) -> String {
    format!("dossiers/part-{index:05}-of-{count:05}.parquet")
}

pub fn shard_counts_path(index: u32, count: u32) -> String {
    format!("metrics/_shards/{count:05}/part-{index:05}.parquet")
}
