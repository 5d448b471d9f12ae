//! Adoption of a storage root that releases before the events table wrote: Parquet files
//! under `events/date=D/`, published by a commit-marker protocol. Each marker,
//! `_sohoa/commits/<topic>/p<partition>/<start>.json`, names the files of one committed
//! offset range `start..=end`; a compaction marker, `_sohoa/compact/commits/date=D/<id>.json`,
//! names a merged file and the inputs it replaced.
//!
//! Adoption makes `events/` a Delta table in one commit: an `add` for every file that holds
//! committed rows, and a `txn` action per source partition whose version is the end of its
//! newest committed range plus one, so ingestion resumes exactly where the markers stopped.
//! The protocol's unfinished steps are finished first, as its recovery would have: a
//! committed range whose files are still staged is published, and a committed merge whose
//! inputs are still there is completed by leaving those inputs out. The markers' counts
//! become the commit's `sohoa.ranges`, so the data-quality reconciliation carries over.
//! The marker folders are left in place; nothing reads them any more.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;
use sohoa_storage::{off_runtime, Commit, DataFile, Operation, Outcome, Table, TableError};

use crate::pipeline::Sources;

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("events/ is already a Delta table (version {0}): nothing to adopt")]
    AlreadyTable(u64),
    #[error("commit marker {marker} names {file}, which is neither published nor staged")]
    Missing { marker: String, file: String },
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("another writer committed to events/ while it was adopted; run `sohoa adopt` again")]
    Raced,
}

/// What an adoption did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub version: u64,
    pub files: usize,
    pub rows: u64,
    /// Source partitions and the offset each resumes at.
    pub offsets: BTreeMap<String, i64>,
    /// Staged files of committed ranges, published first.
    pub published: usize,
    /// Inputs of a committed merge left out (the merged file holds their rows).
    pub replaced: usize,
}

#[derive(Debug, Deserialize)]
struct Marker {
    topic: String,
    partition: i32,
    start: i64,
    end: i64,
    #[serde(default)]
    files: Vec<MarkerFile>,
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    events: u64,
    #[serde(default)]
    dead_lettered: u64,
    #[serde(default)]
    dead_letters_by_reason: BTreeMap<String, u64>,
    #[serde(default)]
    key_fingerprint: Option<String>,
    #[serde(default)]
    gaps: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct MarkerFile {
    staged: String,
    published: String,
    #[serde(default)]
    rows: u64,
}

#[derive(Debug, Deserialize)]
struct MergeMarker {
    inputs: Vec<String>,
    staged: String,
    output: String,
}

/// Whether the root holds files of the marker protocol and no table: what the ingestor
/// must not start on, since it would take the partitions for new and load them again.
pub async fn needs_adoption(store: &dyn ObjectStore) -> Result<bool, object_store::Error> {
    let mut markers = store.list(Some(&Path::from("_sohoa/commits")));
    let any = markers.try_next().await?.is_some();
    let mut log = store.list(Some(&Path::from("events/_delta_log")));
    Ok(any && log.try_next().await?.is_none())
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    store: &dyn ObjectStore,
    p: &Path,
) -> Result<T, AdoptError> {
    let data = store.get(p).await?.bytes().await?;
    serde_json::from_slice(&data).map_err(|e| AdoptError::Unreadable {
        path: p.to_string(),
        reason: e.to_string(),
    })
}

async fn exists(store: &dyn ObjectStore, p: &Path) -> Result<bool, object_store::Error> {
    match store.head(p).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Adopt the root of `store` (addressed from the root) into `table` (its `events/`).
pub async fn adopt(
    store: Arc<dyn ObjectStore>,
    table: Table,
    schema: arrow::datatypes::SchemaRef,
    stats_columns: &'static [&'static str],
) -> Result<Adopted, AdoptError> {
    let mut adopted = Adopted::default();
    let t = table.clone();
    let snapshot = off_runtime(move || t.create_if_absent(&schema, stats_columns, &[])).await?;
    // A table created by an adoption that stopped before its commit is still empty.
    if snapshot.version() > 0 {
        return Err(AdoptError::AlreadyTable(snapshot.version()));
    }

    // Ingest markers: publish what is committed but still staged.
    let mut markers: Vec<(Path, Marker)> = Vec::new();
    let listed: Vec<_> = store
        .list(Some(&Path::from("_sohoa/commits")))
        .try_collect()
        .await?;
    for meta in listed {
        if meta.location.extension() != Some("json") {
            continue;
        }
        let m: Marker = read_json(store.as_ref(), &meta.location).await?;
        markers.push((meta.location, m));
    }
    markers.sort_by(|a, b| {
        (&a.1.topic, a.1.partition, a.1.start).cmp(&(&b.1.topic, b.1.partition, b.1.start))
    });
    for (path, m) in &markers {
        for f in &m.files {
            let (staged, published) = (
                Path::from(f.staged.as_str()),
                Path::from(f.published.as_str()),
            );
            if exists(store.as_ref(), &published).await? {
                continue;
            }
            if !exists(store.as_ref(), &staged).await? {
                return Err(AdoptError::Missing {
                    marker: path.to_string(),
                    file: f.published.clone(),
                });
            }
            store.rename(&staged, &published).await?;
            adopted.published += 1;
        }
    }

    // Committed merges: their output replaces their inputs.
    let mut replaced: HashSet<String> = HashSet::new();
    let merges: Vec<_> = store
        .list(Some(&Path::from("_sohoa/compact/commits")))
        .try_collect()
        .await?;
    for meta in merges {
        if meta.location.extension() != Some("json") {
            continue;
        }
        let m: MergeMarker = read_json(store.as_ref(), &meta.location).await?;
        let (staged, output) = (Path::from(m.staged.as_str()), Path::from(m.output.as_str()));
        if !exists(store.as_ref(), &output).await? {
            if !exists(store.as_ref(), &staged).await? {
                return Err(AdoptError::Missing {
                    marker: meta.location.to_string(),
                    file: m.output.clone(),
                });
            }
            store.rename(&staged, &output).await?;
            adopted.published += 1;
        }
        replaced.extend(m.inputs);
    }

    // Every file under events/date=D/ holds committed rows (the protocol published nothing
    // else), but for the inputs of a merge.
    let files: Vec<_> = store
        .list(Some(&Path::from("events")))
        .try_collect()
        .await?;
    let (t, s) = (table.clone(), snapshot.clone());
    let stats = off_runtime(move || t.stats_plan(&s)).await?;
    let mut adds = Vec::new();
    for meta in files {
        let full = meta.location.to_string();
        let Some(rel) = full.strip_prefix("events/") else {
            continue;
        };
        if meta.location.extension() != Some("parquet") || rel.starts_with("_delta_log") {
            continue;
        }
        let Some(date) = rel
            .split('/')
            .next()
            .and_then(|d| d.strip_prefix("date="))
            .map(str::to_owned)
        else {
            continue;
        };
        if replaced.contains(&full) {
            adopted.replaced += 1;
            continue;
        }
        let data: Bytes = store.get(&meta.location).await?.bytes().await?;
        let err = |e: String| AdoptError::Unreadable {
            path: full.clone(),
            reason: e,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(data)
            .map_err(|e| err(e.to_string()))?
            .build()
            .map_err(|e| err(e.to_string()))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(e.to_string()))?;
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let file_stats = if batches.is_empty() {
            continue;
        } else {
            stats.collect(&batches).map_err(|e| err(e.to_string()))?
        };
        adopted.rows += rows;
        adds.push(DataFile {
            path: rel.to_owned(),
            date,
            size: meta.size,
            modified_ms: meta.last_modified.timestamp_millis(),
            stats: file_stats,
            rows,
        });
    }
    adopted.files = adds.len();

    // Where each partition resumes, and the counts of every committed range.
    let mut txns: BTreeMap<String, i64> = BTreeMap::new();
    let mut ranges = Vec::new();
    let mut keys = BTreeSet::new();
    for (_, m) in &markers {
        let id = if m.topic.starts_with("file:") {
            Sources::Files.app_id(&m.topic, m.partition)
        } else {
            Sources::Kafka.app_id(&m.topic, m.partition)
        };
        let next = txns.entry(id).or_insert(m.end + 1);
        *next = (*next).max(m.end + 1);
        keys.extend(m.key_fingerprint.clone());
        let mut by_date: BTreeMap<String, u64> = BTreeMap::new();
        for f in &m.files {
            if let Some(d) = f
                .published
                .split('/')
                .find_map(|seg| seg.strip_prefix("date="))
            {
                *by_date.entry(d.to_owned()).or_default() += f.rows;
            }
        }
        ranges.push(serde_json::json!({
            "topic": m.topic,
            "partition": m.partition,
            "start": m.start,
            "end": m.end,
            "messages": m.messages,
            "events": m.events,
            "dead_lettered": m.dead_lettered,
            "dead_letters_by_reason": m.dead_letters_by_reason,
            "events_by_date": by_date,
            "gaps": m.gaps,
        }));
    }
    adopted.offsets = txns.clone();
    let mut info = BTreeMap::new();
    info.insert(
        "sohoa.ranges".to_owned(),
        serde_json::Value::Array(ranges).to_string(),
    );
    info.insert("sohoa.adopted".to_owned(), "commit markers".to_owned());
    if keys.len() == 1 {
        info.insert(
            "sohoa.keyFingerprint".to_owned(),
            keys.into_iter().next().expect("one"),
        );
    }
    let commit = Commit {
        adds,
        removes: Vec::new(),
        txns: txns.into_iter().collect(),
        info,
        data_change: true,
        operation: Operation::Write,
    };
    let t = table.clone();
    let outcome = off_runtime(move || t.commit(&snapshot, commit)).await?;
    match outcome {
        Outcome::Committed { version } => adopted.version = version,
        Outcome::Conflict { .. } => return Err(AdoptError::Raced),
    }
    Ok(adopted)
}
