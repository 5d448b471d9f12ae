//! The aggregator's tables: `dossiers/`, `handovers/` and `metrics/` in Parquet (and CSV
//! for metrics, scorecards and agencies), written whole and atomically (one `put` per
//! file).

mod agencies;
mod dossiers;
mod metrics;
mod progress;

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{Field, Schema};
use bytes::Bytes;
use chrono::NaiveDate;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

pub use agencies::{
    agencies_csv, agencies_parquet, handovers_parquet, handovers_path, AGENCY_COLUMNS,
};
pub use dossiers::{dossiers_parquet, DossierOut};
pub use metrics::{
    base_parquet, metrics_csv, metrics_parquet, periods_parquet, scorecard_csv, set_count,
    table_rows, TableRow, BASE_COUNTS, METRIC_COLUMNS,
};
pub use progress::{progress_csv, progress_parquet, PROGRESS_COLUMNS};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("encoding {table}: {reason}")]
    Encode { table: &'static str, reason: String },
}

/// Rows per row group of the aggregator's tables.
pub(crate) const ROW_GROUP_ROWS: usize = 128 * 1024;

pub(crate) fn writer_props() -> Result<WriterProperties, OutputError> {
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

pub(crate) fn utc() -> Arc<str> {
    Arc::from("UTC")
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

pub(crate) fn strings<'a>(it: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::new();
    for s in it {
        b.append_option(s);
    }
    Arc::new(b.finish())
}

/// The dossier, period and file names: dossiers of shard `i` of `n` go to
/// `dossiers/part-<i>-of-<n>.parquet`.
pub fn dossiers_path(index: u32, count: u32) -> String {
    format!("dossiers/part-{index:05}-of-{count:05}.parquet")
}

pub fn shard_counts_path(index: u32, count: u32) -> String {
    format!("metrics/_shards/{count:05}/part-{index:05}.parquet")
}
