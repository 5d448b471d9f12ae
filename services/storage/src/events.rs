//! The commit of a writer's flush to the events table, and the fencing of writers.
//!
//! A flush covers a range of offsets of each source partition it read: from the first
//! offset the table did not hold when the range began (`base`) to the last it consumed.
//! Its commit adds the flush's files and records, for each partition, the offset that
//! follows the range (a `txn` action, whose application id names the source partition).
//!
//! The table is the truth of how far each source was consumed. Before committing, the
//! writer reads the newest snapshot: if a partition's recorded offset is no longer its
//! `base`, another writer (a replica the group gave the partition to, or one that started
//! at another position) committed part of the range, and this flush is *fenced*: nothing of
//! it is committed, and the writer resumes from the table's offsets. When the commit loses
//! the race for the next log version to a writer of other partitions, it is tried again on
//! the newer snapshot. So two writers never commit overlapping ranges of one partition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use delta_kernel::SnapshotRef;

use crate::table::{Commit, DataFile, Operation, Outcome, Table, TableError};

/// The application id of a Kafka partition's `txn` actions. The consumer group is not part
/// of it: the table records which offsets of the topic it holds, whichever group read
/// them, so a renamed group resumes where the table ends instead of loading it again.
pub fn kafka_app_id(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}")
}

/// A source partition's part in a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRange {
    /// The `txn` application id, such as [`kafka_app_id`].
    pub app_id: String,
    /// The offset the table recorded for the source when the range began; `None` when it
    /// recorded none.
    pub base: Option<i64>,
    /// The offset after the range: what the commit records.
    pub next: i64,
}

/// What a writer commits at the end of a flush.
#[derive(Debug, Default)]
pub struct Flush {
    pub files: Vec<DataFile>,
    pub ranges: Vec<SourceRange>,
    /// `commitInfo.operationParameters`.
    pub info: BTreeMap<String, String>,
    pub operation: Operation,
}

/// How a flush's commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushOutcome {
    Committed {
        version: u64,
    },
    /// Another writer committed offsets of these sources since the flush's ranges began:
    /// each with the offset the table now records. Nothing of the flush was committed.
    Fenced {
        lost: Vec<(String, Option<i64>)>,
    },
}

/// The events table as a writer sees it: the newest snapshot it knows, brought up to date
/// before each commit by reading only the commits after it.
#[derive(Debug, Clone)]
pub struct Writer {
    table: Table,
    snapshot: Arc<Mutex<SnapshotRef>>,
    /// A checkpoint is written after every commit whose version is a multiple of this.
    checkpoint_interval: u64,
}

impl Writer {
    /// Blocking.
    pub fn new(table: Table, snapshot: SnapshotRef, checkpoint_interval: u64) -> Self {
        Writer {
            table,
            snapshot: Arc::new(Mutex::new(snapshot)),
            checkpoint_interval: checkpoint_interval.max(1),
        }
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    fn known(&self) -> SnapshotRef {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn remember(&self, snapshot: &SnapshotRef) {
        let mut known = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if snapshot.version() > known.version() {
            *known = snapshot.clone();
        }
    }

    /// The newest snapshot. Blocking.
    pub fn latest(&self) -> Result<SnapshotRef, TableError> {
        let snapshot = self.table.refresh(&self.known())?;
        self.remember(&snapshot);
        Ok(snapshot)
    }

    /// The offset the newest snapshot records for each of `app_ids`. Blocking.
    pub fn offsets(&self, app_ids: &[String]) -> Result<Vec<Option<i64>>, TableError> {
        let snapshot = self.latest()?;
        app_ids
            .iter()
            .map(|a| self.table.app_version(&snapshot, a))
            .collect()
    }

    /// Commits `flush`, or reports it fenced. Blocking.
    pub fn commit(&self, flush: &Flush) -> Result<FlushOutcome, TableError> {
        loop {
            let snapshot = self.latest()?;
            let mut lost = Vec::new();
            for r in &flush.ranges {
                let now = self.table.app_version(&snapshot, &r.app_id)?;
                if now != r.base {
                    lost.push((r.app_id.clone(), now));
                }
            }
            if !lost.is_empty() {
                return Ok(FlushOutcome::Fenced { lost });
            }
            let commit = Commit {
                adds: flush.files.clone(),
                removes: Vec::new(),
                txns: flush
                    .ranges
                    .iter()
                    .map(|r| (r.app_id.clone(), r.next))
                    .collect(),
                info: flush.info.clone(),
                data_change: true,
                operation: flush.operation,
            };
            match self.table.commit(&snapshot, commit)? {
                Outcome::Committed { version } => {
                    self.after_commit(version);
                    return Ok(FlushOutcome::Committed { version });
                }
                // Another writer took the version: read its commit and look again.
                Outcome::Conflict { version } => {
                    tracing::debug!(
                        version,
                        "lost the race for a log version; reading it and trying again"
                    );
                }
            }
        }
    }

    /// A checkpoint every `checkpoint_interval` versions, so that readers and writers
    /// replay a bounded log. Best effort: a failed checkpoint leaves the log as it was.
    fn after_commit(&self, version: u64) {
        if !version.is_multiple_of(self.checkpoint_interval) {
            return;
        }
        let written = self
            .table
            .at_version(version)
            .and_then(|s| self.table.checkpoint(&s));
        match written {
            Ok(_) => tracing::info!(version, "checkpoint written"),
            Err(e) => {
                tracing::warn!(version, error = %e, "checkpoint failed; the log is replayed from the previous one")
            }
        }
    }
}
