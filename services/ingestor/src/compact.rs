//! Compaction: merge the small files of closed date partitions into files near a target
//! size, sorted and encoded like the ingestor's own, without breaking exactly-once.
//!
//! The protocol, for one group of input files of a partition `date=D`:
//!
//! 1. **Stage** the merged file under `_sohoa/compact/staging/date=D/<id>.parquet`, where
//!    `<id>` hashes the input names. Its row count must equal the inputs'.
//! 2. **Commit**: create `_sohoa/compact/commits/date=D/<id>.json` listing the inputs and
//!    the output (`PutMode::Create`). This is the commit point.
//! 3. **Publish**: rename the staged file to `events/date=D/compacted-<id>.parquet`.
//! 4. **Retire** the inputs: delete them, then the marker.
//!
//! Recovery, at the start of every compaction: a marker means the merge was committed, so
//! its staged file is published (if not yet) and its remaining inputs are deleted; a staged
//! file without a marker was never committed and is deleted. A crash at any step therefore
//! ends, after the next compaction's recovery, with either the inputs or the merged file,
//! never both and never neither. Between steps 3 and 4 readers can briefly see both; the
//! aggregator's fold is unaffected by repeats (see the README).
//!
//! One compactor runs at a time (a CronJob with `concurrencyPolicy: Forbid`). Ingestors may
//! keep writing late events into the same partitions: compaction only touches the files it
//! listed.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use sohoa_schemas::pseudonym::KEY_FINGERPRINT_METADATA;

use crate::write::{with_key_fingerprint, FileFormat, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("encoding: {0}")]
    Write(#[from] WriteError),
    #[error("compaction marker {path} is unreadable: {reason}")]
    BadMarker { path: String, reason: String },
}

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Partitions whose date is at least this many days before `today` are closed: late
    /// syncs rarely reach them any more.
    pub min_age_days: i64,
    /// The local Vietnam date today.
    pub today: NaiveDate,
    /// Files smaller than this are merged...
    pub small_bytes: u64,
    /// ...into files of about this size.
    pub target_bytes: u64,
}

/// One partition's files before and after, for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReport {
    pub date: String,
    pub files_before: usize,
    pub bytes_before: u64,
    pub files_after: usize,
    pub bytes_after: u64,
}

/// A committed merge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Marker {
    version: u32,
    date: String,
    inputs: Vec<String>,
    staged: String,
    output: String,
    rows: u64,
}

fn commits_dir() -> Path {
    Path::from("_sohoa/compact/commits")
}

fn staging_dir() -> Path {
    Path::from("_sohoa/compact/staging")
}

async fn exists(store: &dyn ObjectStore, p: &Path) -> Result<bool, CompactError> {
    match store.head(p).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn delete_if_present(store: &dyn ObjectStore, p: &Path) -> Result<(), CompactError> {
    match store.delete(p).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Steps 3 and 4 for a committed merge; safe to repeat.
async fn finish(store: &dyn ObjectStore, m: &Marker, marker: &Path) -> Result<(), CompactError> {
    let (staged, output) = (Path::from(m.staged.as_str()), Path::from(m.output.as_str()));
    if exists(store, &staged).await? {
        if exists(store, &output).await? {
            // A copying rename was interrupted: the output is whole, the copy is spare.
            delete_if_present(store, &staged).await?;
        } else {
            store.rename(&staged, &output).await?;
        }
    }
    crate::crashpoint::hit("compact_after_publish");
    for (i, input) in m.inputs.iter().enumerate() {
        delete_if_present(store, &Path::from(input.as_str())).await?;
        if i == 0 {
            crate::crashpoint::hit("compact_mid_retire");
        }
    }
    delete_if_present(store, marker).await
}

/// Finish committed merges and delete uncommitted ones. Returns how many it settled.
pub async fn recover(store: &dyn ObjectStore) -> Result<usize, CompactError> {
    let mut settled = 0;
    let markers: Vec<_> = store.list(Some(&commits_dir())).try_collect().await?;
    let mut committed_staged = Vec::new();
    for meta in markers {
        let bytes = store.get(&meta.location).await?.bytes().await?;
        let m: Marker = serde_json::from_slice(&bytes).map_err(|e| CompactError::BadMarker {
            path: meta.location.to_string(),
            reason: e.to_string(),
        })?;
        committed_staged.push(m.staged.clone());
        finish(store, &m, &meta.location).await?;
        settled += 1;
    }
    let staged: Vec<_> = store.list(Some(&staging_dir())).try_collect().await?;
    for meta in staged {
        if !committed_staged.iter().any(|s| s == meta.location.as_ref()) {
            delete_if_present(store, &meta.location).await?;
            settled += 1;
        }
    }
    Ok(settled)
}

/// A file's rows, and the fingerprint of the pseudonym key its metadata names.
async fn read_all(
    store: &dyn ObjectStore,
    p: &Path,
) -> Result<(Option<String>, Vec<RecordBatch>), CompactError> {
    let data: Bytes = store.get(p).await?.bytes().await?;
    let err = |e: String| CompactError::File {
        path: p.to_string(),
        reason: e,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(data).map_err(|e| err(e.to_string()))?;
    let key = builder
        .schema()
        .metadata()
        .get(KEY_FINGERPRINT_METADATA)
        .cloned();
    let reader = builder.build().map_err(|e| err(e.to_string()))?;
    let batches = reader
        .map(|b| b.map_err(|e| err(e.to_string())))
        .collect::<Result<_, _>>()?;
    Ok((key, batches))
}

/// Recover, then compact every closed partition. Returns a report per partition touched.
pub async fn compact(
    store: Arc<dyn ObjectStore>,
    format: &FileFormat,
    opts: &CompactOptions,
) -> Result<Vec<PartitionReport>, CompactError> {
    let recovered = recover(&*store).await?;
    if recovered > 0 {
        tracing::info!(recovered, "settled interrupted compactions");
    }
    let top = store
        .list_with_delimiter(Some(&Path::from("events")))
        .await?;
    let mut reports = Vec::new();
    for prefix in top.common_prefixes {
        let Some(date) = prefix
            .filename()
            .and_then(|n| n.strip_prefix("date="))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        else {
            continue;
        };
        if (opts.today - date).num_days() < opts.min_age_days {
            continue; // still open: late syncs would keep adding small files
        }
        let mut files: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        files.retain(|m| m.location.extension() == Some("parquet"));
        files.sort_by(|a, b| a.location.cmp(&b.location));
        let mut report = PartitionReport {
            date: date.to_string(),
            files_before: files.len(),
            bytes_before: files.iter().map(|m| m.size).sum(),
            ..Default::default()
        };
        // Group the small files, in name order, into bins of about the target size.
        let mut groups: Vec<Vec<&object_store::ObjectMeta>> = vec![Vec::new()];
        let mut size = 0;
        for f in files.iter().filter(|m| m.size < opts.small_bytes) {
            if size + f.size > opts.target_bytes && !groups.last().expect("one").is_empty() {
                groups.push(Vec::new());
                size = 0;
            }
            size += f.size;
            groups.last_mut().expect("one").push(f);
        }
        let mut merged_any = false;
        for group in groups.into_iter().filter(|g| g.len() >= 2) {
            merge(&*store, format, &date.to_string(), &group).await?;
            merged_any = true;
        }
        if !merged_any {
            continue;
        }
        let after: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        let after: Vec<_> = after
            .into_iter()
            .filter(|m| m.location.extension() == Some("parquet"))
            .collect();
        report.files_after = after.len();
        tracing::info!(date = %date, files_before = report.files_before, files_after = after.len(), "partition compacted");
        report.bytes_after = after.iter().map(|m| m.size).sum();
        reports.push(report);
    }
    Ok(reports)
}

async fn merge(
    store: &dyn ObjectStore,
    format: &FileFormat,
    date: &str,
    group: &[&object_store::ObjectMeta],
) -> Result<(), CompactError> {
    let mut batches = Vec::new();
    let mut keys = std::collections::BTreeSet::new();
    for f in group {
        let (key, rows) = read_all(store, &f.location).await?;
        keys.insert(key);
        batches.extend(rows);
    }
    if keys.len() > 1 {
        // Rows of different pseudonym keys stay in files that say which key they used.
        tracing::warn!(date, "files pseudonymized under different keys; not merged");
        return Ok(());
    }
    let key = keys.into_iter().next().flatten();
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let schema = first.schema();
    if batches.iter().any(|b| b.schema() != schema) {
        // Files of different schema versions stay apart, rather than be cast.
        tracing::warn!(date, "files with different schemas; not merged");
        return Ok(());
    }
    let merged = arrow::compute::concat_batches(&schema, &batches).map_err(WriteError::from)?;
    let data = format.encode(&with_key_fingerprint(&merged, key.as_deref())?)?;
    let inputs: Vec<String> = group.iter().map(|m| m.location.to_string()).collect();
    let mut h = Sha256::new();
    for i in &inputs {
        h.update(i.as_bytes());
        h.update([0]);
    }
    let id: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let marker = Marker {
        version: 1,
        date: date.to_string(),
        staged: format!("{}/date={date}/{id}.parquet", staging_dir()),
        output: format!("events/date={date}/compacted-{id}.parquet"),
        inputs,
        rows,
    };
    store
        .put(
            &Path::from(marker.staged.as_str()),
            PutPayload::from_bytes(data),
        )
        .await?;
    crate::crashpoint::hit("compact_after_stage");
    let marker_path = Path::from(format!("{}/date={date}/{id}.json", commits_dir()));
    let body = serde_json::to_vec_pretty(&marker).expect("markers serialize");
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    store
        .put_opts(&marker_path, PutPayload::from(body), opts)
        .await?;
    crate::crashpoint::hit("compact_after_commit");
    finish(store, &marker, &marker_path).await?;
    tracing::debug!(date, files = group.len(), rows, output = %marker.output, "merged");
    Ok(())
}

/// Reports as a table for the terminal.
pub fn render(reports: &[PartitionReport]) -> String {
    let mut out = format!(
        "{:<12} {:>12} {:>14} {:>11} {:>13}\n",
        "partition", "files before", "bytes before", "files after", "bytes after"
    );
    let mut totals = BTreeMap::<&str, (usize, u64, usize, u64)>::new();
    for r in reports {
        out.push_str(&format!(
            "{:<12} {:>12} {:>14} {:>11} {:>13}\n",
            r.date, r.files_before, r.bytes_before, r.files_after, r.bytes_after
        ));
        let t = totals.entry("total").or_default();
        t.0 += r.files_before;
        t.1 += r.bytes_before;
        t.2 += r.files_after;
        t.3 += r.bytes_after;
    }
    if let Some(t) = totals.get("total") {
        out.push_str(&format!(
            "{:<12} {:>12} {:>14} {:>11} {:>13}\n",
            "total", t.0, t.1, t.2, t.3
        ));
    }
    out
}
