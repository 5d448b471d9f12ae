//! Read `events/` from storage: only the date partitions asked for, only the columns the
//! fold needs.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Table(#[from] sohoa_storage::TableError),
    #[error("--events-version {asked}: the events table has versions 0 to {newest}, or its log no longer holds {asked}")]
    NoVersion { asked: u64, newest: u64 },
}

/// The event dates to read, both ends included; `None` is open-ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DateRange {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl DateRange {
    pub fn contains(&self, d: NaiveDate) -> bool {
        self.from.is_none_or(|f| d >= f) && self.to.is_none_or(|t| d <= t)
    }
}

/// One Parquet file of `events/`, with its partition date.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventFile {
    pub date: NaiveDate,
    pub path: Path,
    pub size: u64,
}

/// The events table's snapshot a run reads: the newest, or `version`. A run records its
/// version, so that it can be read again. Blocking.
pub fn table_snapshot(
    table: &sohoa_storage::Table,
    version: Option<u64>,
) -> Result<sohoa_storage::SnapshotRef, ReadError> {
    let Some(asked) = version else {
        return Ok(table.latest()?);
    };
    table.at_version(asked).map_err(|e| {
        tracing::debug!(error = %e, asked, "reading an older version of events/");
        match table.latest() {
            Ok(newest) => ReadError::NoVersion {
                asked,
                newest: newest.version(),
            },
            Err(_) => ReadError::Table(e),
        }
    })
}

/// The files of `snapshot` of the events table whose date is in `range`: the files the
/// table's log names, not what a folder listing finds (a flush that was never committed,
/// or files a compaction replaced, are not events). Blocking.
pub fn table_event_files(
    table: &sohoa_storage::Table,
    snapshot: &sohoa_storage::SnapshotRef,
    range: DateRange,
) -> Result<Vec<EventFile>, ReadError> {
    let mut out = Vec::new();
    for f in table.files(snapshot)? {
        let Ok(date) = NaiveDate::parse_from_str(&f.date, "%Y-%m-%d") else {
            continue;
        };
        if !range.contains(date) {
            continue;
        }
        out.push(EventFile {
            date,
            path: Path::from(format!("events/{}", f.path)),
            size: f.size,
        });
    }
    out.sort();
    Ok(out)
}

/// The files of the date partitions in `range`, by listing the folders of `events/`: for
/// a root whose events are not a table. Partitions outside the range are never listed.
pub async fn event_files(
    store: &dyn ObjectStore,
    range: DateRange,
) -> Result<Vec<EventFile>, ReadError> {
    let top = store
        .list_with_delimiter(Some(&Path::from("events")))
        .await?;
    let mut out = Vec::new();
    for prefix in top.common_prefixes {
        let Some(date) = prefix
            .filename()
            .and_then(|n| n.strip_prefix("date="))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        else {
            continue; // not a partition of ours
        };
        if !range.contains(date) {
            continue;
        }
        let files: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        out.extend(
            files
                .into_iter()
                .filter(|m| m.location.extension() == Some("parquet"))
                .map(|m| EventFile {
                    date,
                    path: m.location,
                    size: m.size,
                }),
        );
    }
    out.sort();
    Ok(out)
}

/// Fetch one file whole: event files are tens of MB at most, and one GET beats many
/// ranged reads on an object store.
pub async fn fetch(store: &dyn ObjectStore, file: &EventFile) -> Result<Bytes, ReadError> {
    Ok(store.get(&file.path).await?.bytes().await?)
}

/// Decode a file's `columns` into batches. Text columns named in `dictionary` are read as
/// dictionary arrays: codes repeat on almost every row, and keeping them as keys into a
/// small dictionary saves materializing a string per row.
pub fn decode(
    path: &Path,
    data: Bytes,
    columns: &[&str],
    dictionary: &[&str],
    each: impl FnMut(&RecordBatch) -> Result<(), String>,
) -> Result<(), ReadError> {
    decode_with_optional(path, data, columns, &[], dictionary, each)
}

/// [`decode`], also projecting the `optional` columns the file has; a column it lacks is
/// simply absent from the batches (files written before a column existed).
pub fn decode_with_optional(
    path: &Path,
    data: Bytes,
    columns: &[&str],
    optional: &[&str],
    dictionary: &[&str],
    mut each: impl FnMut(&RecordBatch) -> Result<(), String>,
) -> Result<(), ReadError> {
    let err = |reason: String| ReadError::File {
        path: path.to_string(),
        reason,
    };
    let meta = ArrowReaderMetadata::load(&data, ArrowReaderOptions::new())
        .map_err(|e| err(e.to_string()))?;
    let hinted: Vec<Field> = meta
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let text = matches!(f.data_type(), DataType::Utf8);
            if text && dictionary.contains(&f.name().as_str()) {
                let dict =
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
                Field::new(f.name(), dict, f.is_nullable()).with_metadata(f.metadata().clone())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(hinted)));
    let meta = ArrowReaderMetadata::try_new(meta.metadata().clone(), options)
        .map_err(|e| err(e.to_string()))?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(data, meta);
    let schema = builder.schema().clone();
    let mut roots = Vec::with_capacity(columns.len());
    for c in columns {
        let (i, _) = schema
            .column_with_name(c)
            .ok_or_else(|| err(format!("column {c} is missing")))?;
        roots.push(i);
    }
    roots.extend(optional.iter().filter_map(|c| schema.index_of(c).ok()));
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(16 * 1024)
        .build()
        .map_err(|e| err(e.to_string()))?;
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        each(&batch).map_err(err)?;
    }
    Ok(())
}

/// Shared handle, for the reader threads.
pub type Store = Arc<dyn ObjectStore>;
