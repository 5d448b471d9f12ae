//! Compaction: merge the small files of closed dates into files near a target size,
//! sorted and encoded like the ingestor's own, and vacuum what no snapshot still needs.
//!
//! Merges are committed to the events table together, up to [`MERGES_PER_COMMIT`] at a
//! time: `remove` of their inputs and `add` of the merged files, all with
//! `dataChange = false`, so readers of any snapshot see each row once, and incremental
//! readers know nothing changed. Each merged file is written first, under a name no other
//! compactor uses; the commit is the only step that makes it part of the table. Two
//! compactors that merge the same inputs race for the commit: the loser finds the inputs
//! of those merges removed and leaves them out, and their files, which no commit names,
//! are left to the vacuum. A crash before a commit leaves such files too; a crash after
//! it leaves its merges done. Nothing is deleted at once: a replaced file stays for time
//! travel and for readers still on an older snapshot, until the vacuum finds it older
//! than the retention.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use bytes::Bytes;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sohoa_schemas::pseudonym::KEY_FINGERPRINT_METADATA;
use sohoa_storage::events::Writer;
use sohoa_storage::{
    off_runtime, Commit, DataFile, LiveFile, Operation, Outcome, StatsPlan, TableError,
};

use crate::write::{with_key_fingerprint, FileFormat, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("encoding: {0}")]
    Write(#[from] WriteError),
}

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Dates at least this many days before `today` are closed: late syncs rarely reach
    /// them any more.
    pub min_age_days: i64,
    /// The local Vietnam date today.
    pub today: NaiveDate,
    /// Files smaller than this are merged...
    pub small_bytes: u64,
    /// ...into files of about this size.
    pub target_bytes: u64,
}

/// One date's files before and after, for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReport {
    pub date: String,
    pub files_before: usize,
    pub bytes_before: u64,
    pub files_after: usize,
    pub bytes_after: u64,
}

/// A file's rows, and the fingerprint of the pseudonym key its metadata names.
async fn read_all(
    writer: &Writer,
    rel: &str,
) -> Result<(Option<String>, Vec<RecordBatch>), CompactError> {
    let table = writer.table();
    let data: Bytes = table
        .store()
        .get(&table.object_path(rel)?)
        .await?
        .bytes()
        .await?;
    let err = |e: String| CompactError::File {
        path: rel.to_owned(),
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

/// Merges committed at once. One commit per merge wrote one log entry per date (730 for
/// a two-year table); one per run would lose every merge of a long first compaction to a
/// crash near its end.
pub const MERGES_PER_COMMIT: usize = 64;

/// A merged file written and not yet committed: what it replaces.
struct Merged {
    date: String,
    add: DataFile,
    inputs: Vec<String>,
    removed: u64,
}

/// Compact every closed date of the table's newest snapshot. Returns a report per date
/// touched.
pub async fn compact(
    writer: &Writer,
    format: &FileFormat,
    opts: &CompactOptions,
) -> Result<Vec<PartitionReport>, CompactError> {
    let w = writer.clone();
    let (stats, files) = off_runtime(move || {
        let snapshot = w.latest()?;
        Ok((
            w.table().stats_plan(&snapshot)?,
            w.table().files(&snapshot)?,
        ))
    })
    .await?;
    let mut by_date: BTreeMap<String, Vec<LiveFile>> = BTreeMap::new();
    for f in files {
        by_date.entry(f.date.clone()).or_default().push(f);
    }
    let mut reports: BTreeMap<String, PartitionReport> = BTreeMap::new();
    let mut pending = Vec::new();
    for (date, files) in by_date {
        let Ok(day) = NaiveDate::parse_from_str(&date, "%Y-%m-%d") else {
            continue;
        };
        if (opts.today - day).num_days() < opts.min_age_days {
            continue; // still open: late syncs would keep adding small files
        }
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        let report = PartitionReport {
            date: date.clone(),
            files_before: files.len(),
            bytes_before: bytes,
            files_after: files.len(),
            bytes_after: bytes,
        };
        // Group the small files, in name order, into bins of about the target size.
        let mut groups: Vec<Vec<&LiveFile>> = vec![Vec::new()];
        let mut size = 0;
        for f in files.iter().filter(|f| f.size < opts.small_bytes) {
            if size + f.size > opts.target_bytes && !groups.last().expect("one").is_empty() {
                groups.push(Vec::new());
                size = 0;
            }
            size += f.size;
            groups.last_mut().expect("one").push(f);
        }
        for group in groups.into_iter().filter(|g| g.len() >= 2) {
            if let Some(m) = merge(writer, format, &stats, &date, &group).await? {
                reports
                    .entry(date.clone())
                    .or_insert_with(|| report.clone());
                pending.push(m);
            }
            if pending.len() >= MERGES_PER_COMMIT {
                settle(writer, std::mem::take(&mut pending), &mut reports).await?;
            }
        }
    }
    settle(writer, pending, &mut reports).await?;
    let reports: Vec<PartitionReport> = reports
        .into_values()
        .filter(|r| r.files_after < r.files_before)
        .collect();
    for r in &reports {
        tracing::info!(date = %r.date, files_before = r.files_before, files_after = r.files_after, "date compacted");
    }
    if !reports.is_empty() {
        // Readers replay the log from the newest checkpoint: a compaction is a good time
        // to write one, since it replaced many adds by few.
        let w = writer.clone();
        if let Err(e) = off_runtime(move || w.table().checkpoint(&w.latest()?)).await {
            tracing::warn!(error = %e, "checkpoint after compaction failed");
        }
    }
    Ok(reports)
}

/// Commit `merged` in one commit, leaving out the merges whose inputs another compactor
/// removed first, and count what was committed in `reports`.
async fn settle(
    writer: &Writer,
    merged: Vec<Merged>,
    reports: &mut BTreeMap<String, PartitionReport>,
) -> Result<(), CompactError> {
    if merged.is_empty() {
        return Ok(());
    }
    let w = writer.clone();
    let (merged, version) = off_runtime(move || {
        // A lost race for the log version is tried again on the newer snapshot, with the
        // merges whose inputs are all still in it; an input gone means another compactor
        // merged it.
        let mut merged = merged;
        loop {
            let snapshot = w.latest()?;
            let live: HashSet<String> = w
                .table()
                .files(&snapshot)?
                .into_iter()
                .map(|f| f.path)
                .collect();
            let (keep, lost): (Vec<Merged>, Vec<Merged>) = merged
                .into_iter()
                .partition(|m| m.inputs.iter().all(|i| live.contains(i)));
            for m in &lost {
                tracing::warn!(date = %m.date, output = %m.add.path, "another compaction merged these files first; this merge is left to the vacuum");
            }
            merged = keep;
            if merged.is_empty() {
                return Ok((merged, None));
            }
            let commit = Commit {
                adds: merged.iter().map(|m| m.add.clone()).collect(),
                removes: merged.iter().flat_map(|m| m.inputs.clone()).collect(),
                data_change: false,
                operation: Operation::Optimize,
                ..Commit::default()
            };
            match w.table().commit(&snapshot, commit)? {
                Outcome::Committed { version } => return Ok((merged, Some(version))),
                Outcome::Conflict { .. } => continue,
            }
        }
    })
    .await?;
    let Some(version) = version else {
        return Ok(());
    };
    crate::crashpoint::hit("compact_after_commit");
    tracing::debug!(merges = merged.len(), version, "merges committed");
    for m in merged {
        if let Some(r) = reports.get_mut(&m.date) {
            r.files_after = r.files_after + 1 - m.inputs.len();
            r.bytes_after = r.bytes_after + m.add.size - m.removed;
        }
    }
    Ok(())
}

/// Merge `group` into one file, written but not committed. `None` if the merge was
/// skipped.
async fn merge(
    writer: &Writer,
    format: &FileFormat,
    stats: &StatsPlan,
    date: &str,
    group: &[&LiveFile],
) -> Result<Option<Merged>, CompactError> {
    let mut batches = Vec::new();
    let mut keys = std::collections::BTreeSet::new();
    for f in group {
        let (key, rows) = read_all(writer, &f.path).await?;
        keys.insert(key);
        batches.extend(rows);
    }
    if keys.len() > 1 {
        // Rows of different pseudonym keys stay in files that say which key they used.
        tracing::warn!(date, "files pseudonymized under different keys; not merged");
        return Ok(None);
    }
    let key = keys.into_iter().next().flatten();
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let schema = first.schema();
    if batches.iter().any(|b| b.schema() != schema) {
        // Files of different schema versions stay apart, rather than be cast.
        tracing::warn!(date, "files with different schemas; not merged");
        return Ok(None);
    }
    let merged = arrow::compute::concat_batches(&schema, &batches).map_err(WriteError::from)?;
    let file_stats =
        stats
            .collect(std::slice::from_ref(&merged))
            .map_err(|e| CompactError::File {
                path: date.to_owned(),
                reason: format!("statistics: {e}"),
            })?;
    let data = format.encode(&with_key_fingerprint(&merged, key.as_deref())?)?;
    let size = data.len() as u64;
    // Unique to this attempt: a second compactor of the same inputs must not overwrite a
    // file the first one committed.
    let salt = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let path = format!("date={date}/compacted-{salt:016x}.parquet");
    let table = writer.table();
    table
        .store()
        .put(&table.object_path(&path)?, PutPayload::from_bytes(data))
        .await?;
    crate::crashpoint::hit("compact_after_stage");
    tracing::debug!(date, files = group.len(), rows, output = %path, "merged");
    Ok(Some(Merged {
        date: date.to_owned(),
        add: DataFile {
            path,
            date: date.to_owned(),
            size,
            modified_ms: now_ms(),
            stats: file_stats,
            rows,
        },
        inputs: group.iter().map(|f| f.path.clone()).collect(),
        removed: group.iter().map(|f| f.size).sum(),
    }))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a vacuum deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumReport {
    pub files: usize,
    pub bytes: u64,
}

/// Delete the table's data files that no snapshot of the last `retention` needs: not in
/// the newest snapshot, not removed by a commit within the retention (older snapshots
/// still read those), and themselves older than the retention (a file younger than that
/// may be a flush whose commit is still to come).
pub async fn vacuum(writer: &Writer, retention: Duration) -> Result<VacuumReport, CompactError> {
    let table = writer.table().clone();
    let w = writer.clone();
    let live: HashSet<String> = off_runtime(move || w.table().files(&w.latest()?))
        .await?
        .into_iter()
        .map(|f| f.path)
        .collect();
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let root = table.object_path("")?;
    let log = table.object_path("_delta_log/")?;
    // Files removed by a commit within the retention: a snapshot within it still has them.
    let mut kept: HashSet<String> = HashSet::new();
    let commits: Vec<_> = table.store().list(Some(&log)).try_collect().await?;
    for c in commits {
        if c.location.extension() != Some("json") || c.last_modified < cutoff {
            continue;
        }
        let body = table.store().get(&c.location).await?.bytes().await?;
        for line in body.split(|b| *b == b'\n') {
            if let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) {
                if let Some(p) = action["remove"]["path"].as_str() {
                    kept.insert(p.to_owned());
                }
            }
        }
    }
    let all: Vec<_> = table.store().list(Some(&root)).try_collect().await?;
    let mut report = VacuumReport::default();
    let prefix = format!("{root}/");
    for meta in all {
        let full = meta.location.to_string();
        let Some(rel) = full.strip_prefix(&prefix) else {
            continue;
        };
        if rel.starts_with("_delta_log") || meta.location.extension() != Some("parquet") {
            continue;
        }
        if live.contains(rel) || kept.contains(rel) || meta.last_modified >= cutoff {
            continue;
        }
        match table.store().delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                report.files += 1;
                report.bytes += meta.size;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// Reports as a table for the terminal.
pub fn render(reports: &[PartitionReport]) -> String {
    let mut out = format!(
        "{:<12} {:>12} {:>14} {:>11} {:>13}\n",
        "date", "files before", "bytes before", "files after", "bytes after"
    );
    let mut total = (0, 0, 0, 0);
    for r in reports {
        out.push_str(&format!(
            "{:<12} {:>12} {:>14} {:>11} {:>13}\n",
            r.date, r.files_before, r.bytes_before, r.files_after, r.bytes_after
        ));
        total.0 += r.files_before;
        total.1 += r.bytes_before;
        total.2 += r.files_after;
        total.3 += r.bytes_after;
    }
    if !reports.is_empty() {
        out.push_str(&format!(
            "{:<12} {:>12} {:>14} {:>11} {:>13}\n",
            "total", total.0, total.1, total.2, total.3
        ));
    }
    out
}
