//! The exactly-once protocol: storage, not Kafka, is the source of truth for progress.
//!
//! A flush of one source partition covers the offsets `start..=end` it consumed since the
//! last flush. Its steps, in order:
//!
//! 1. **Stage**: each date's rows are written as one Parquet file under
//!    `_sohoa/staging/<topic>/p<partition>/<start>-<end>/date=<day>.parquet`, outside
//!    `events/`, so no reader sees them.
//! 2. **Dead letters**: every dead-letter message of the range must be acknowledged by the
//!    broker before going on.
//! 3. **Commit**: a marker `_sohoa/commits/<topic>/p<partition>/<start>.json` lists the
//!    files. It is created only if absent (`PutMode::Create`): two writers that both think
//!    they own a partition cannot both commit the same range, the second one fails and
//!    re-recovers. This write is the commit point.
//! 4. **Publish**: each staged file is renamed to
//!    `events/date=<day>/<topic>-p<partition>-o<start>-<end>.parquet`. Names are
//!    deterministic, so publishing twice is harmless.
//! 5. **Kafka**: the offset `end + 1` is committed to the consumer group, for lag tools.
//!
//! Recovery, when a partition is assigned: the markers' chain gives the next offset (the
//! largest `end` + 1); staged files a marker lists are published (roll forward), staged
//! files no marker lists are deleted (roll back); consumption resumes at the next offset.
//! A crash at any step therefore leaves either a committed range (published on recovery)
//! or an uncommitted one (discarded and consumed again), never both.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("commit marker {path} is unreadable: {reason}")]
    BadMarker { path: String, reason: String },
    #[error("another writer already committed offsets from {start} of {topic}[{partition}]")]
    Fenced {
        topic: String,
        partition: i32,
        start: i64,
    },
}

impl CheckpointError {
    /// Storage errors may pass (a bucket briefly unreachable); the rest need a recovery.
    pub fn is_transient(&self) -> bool {
        matches!(self, CheckpointError::Store(_))
    }
}

/// One file of a committed range.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommittedFile {
    pub staged: String,
    pub published: String,
    pub rows: u64,
    pub bytes: u64,
}

/// The commit marker of one flushed range.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    pub version: u32,
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    pub files: Vec<CommittedFile>,
    pub messages: u64,
    pub events: u64,
    pub dead_lettered: u64,
    pub committed_at: String,
}

/// A topic name made safe for a path segment.
pub fn safe_topic(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Paths of the protocol for one source partition.
#[derive(Debug, Clone)]
pub struct PartitionPaths {
    topic: String,
    partition: i32,
}

impl PartitionPaths {
    pub fn new(topic: &str, partition: i32) -> Self {
        PartitionPaths {
            topic: safe_topic(topic),
            partition,
        }
    }

    fn commits_dir(&self) -> Path {
        Path::from(format!(
            "_sohoa/commits/{}/p{:05}",
            self.topic, self.partition
        ))
    }

    fn staging_dir(&self) -> Path {
        Path::from(format!(
            "_sohoa/staging/{}/p{:05}",
            self.topic, self.partition
        ))
    }

    pub fn marker(&self, start: i64) -> Path {
        Path::from(format!("{}/{start:020}.json", self.commits_dir()))
    }

    pub fn staged(&self, start: i64, end: i64, day: &str) -> Path {
        Path::from(format!(
            "{}/{start:020}-{end:020}/date={day}.parquet",
            self.staging_dir()
        ))
    }

    pub fn published(&self, start: i64, end: i64, day: &str) -> Path {
        Path::from(format!(
            "events/date={day}/{}-p{:05}-o{start:020}-{end:020}.parquet",
            self.topic, self.partition
        ))
    }
}

/// What recovery found for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The first offset not yet durable: where consumption resumes. `None` when storage
    /// holds nothing for the partition.
    pub next_offset: Option<i64>,
    /// Staged files published by roll-forward.
    pub rolled_forward: usize,
    /// Staged files of uncommitted flushes, deleted.
    pub rolled_back: usize,
}

/// The protocol's storage operations.
#[derive(Clone, Debug)]
pub struct Checkpointer {
    store: Arc<dyn ObjectStore>,
}

impl Checkpointer {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Checkpointer { store }
    }

    /// Step 1: write a staged file.
    pub async fn stage(&self, path: &Path, data: Bytes) -> Result<(), CheckpointError> {
        self.store.put(path, PutPayload::from_bytes(data)).await?;
        Ok(())
    }

    /// Step 3: the commit point. Fails with [`CheckpointError::Fenced`] if a marker for the
    /// same start already exists.
    pub async fn commit(
        &self,
        paths: &PartitionPaths,
        marker: &Marker,
    ) -> Result<(), CheckpointError> {
        let body = serde_json::to_vec_pretty(marker).expect("markers serialize");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&paths.marker(marker.start), PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(CheckpointError::Fenced {
                topic: marker.topic.clone(),
                partition: marker.partition,
                start: marker.start,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Step 4: move a committed range's files into `events/`. Idempotent: a file already
    /// published (staged copy gone, final present) is left alone.
    pub async fn publish(&self, marker: &Marker) -> Result<usize, CheckpointError> {
        let mut moved = 0;
        for f in &marker.files {
            let (from, to) = (
                Path::from(f.staged.as_str()),
                Path::from(f.published.as_str()),
            );
            match self.store.rename(&from, &to).await {
                Ok(()) => {
                    moved += 1;
                    crate::crashpoint::hit("mid_publish");
                }
                Err(object_store::Error::NotFound { .. }) => {
                    // Published before a crash: the final file must then exist.
                    self.store.head(&to).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(moved)
    }

    /// All markers of a partition, oldest first.
    pub async fn markers(&self, paths: &PartitionPaths) -> Result<Vec<Marker>, CheckpointError> {
        let metas: Vec<_> = self
            .store
            .list(Some(&paths.commits_dir()))
            .try_collect()
            .await?;
        let mut markers = Vec::with_capacity(metas.len());
        for meta in metas {
            if meta.location.extension() != Some("json") {
                continue;
            }
            let bytes = self.store.get(&meta.location).await?.bytes().await?;
            let m: Marker =
                serde_json::from_slice(&bytes).map_err(|e| CheckpointError::BadMarker {
                    path: meta.location.to_string(),
                    reason: e.to_string(),
                })?;
            markers.push(m);
        }
        markers.sort_by_key(|m| m.start);
        Ok(markers)
    }

    /// Recovery for one partition: roll forward what was committed, roll back what was not,
    /// and say where to resume.
    pub async fn recover(&self, paths: &PartitionPaths) -> Result<Recovered, CheckpointError> {
        let markers = self.markers(paths).await?;
        let staged: Vec<Path> = self
            .store
            .list(Some(&paths.staging_dir()))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        let mut rolled_forward = 0;
        let mut rolled_back = 0;
        if !staged.is_empty() {
            let committed: BTreeSet<&str> = markers
                .iter()
                .flat_map(|m| m.files.iter().map(|f| f.staged.as_str()))
                .collect();
            for m in &markers {
                if m.files
                    .iter()
                    .any(|f| staged.iter().any(|s| s.as_ref() == f.staged))
                {
                    rolled_forward += self.publish(m).await?;
                }
            }
            for s in &staged {
                if !committed.contains(s.as_ref()) {
                    self.store.delete(s).await?;
                    rolled_back += 1;
                }
            }
        }
        Ok(Recovered {
            next_offset: markers.iter().map(|m| m.end + 1).max(),
            rolled_forward,
            rolled_back,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn marker(start: i64, end: i64, files: Vec<CommittedFile>) -> Marker {
        Marker {
            version: 1,
            topic: "t".into(),
            partition: 3,
            start,
            end,
            files,
            messages: (end - start + 1) as u64,
            events: 0,
            dead_lettered: 0,
            committed_at: String::new(),
        }
    }

    async fn exists(store: &dyn ObjectStore, p: &Path) -> bool {
        store.head(p).await.is_ok()
    }

    #[tokio::test]
    async fn recovery_rolls_committed_forward_and_uncommitted_back() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cp = Checkpointer::new(store.clone());
        let paths = PartitionPaths::new("t", 3);
        assert_eq!(cp.recover(&paths).await.unwrap().next_offset, None);

        // Range 0..=9 committed and published.
        let (s0, p0) = (
            paths.staged(0, 9, "2023-02-24"),
            paths.published(0, 9, "2023-02-24"),
        );
        cp.stage(&s0, Bytes::from_static(b"a")).await.unwrap();
        let m0 = marker(
            0,
            9,
            vec![CommittedFile {
                staged: s0.to_string(),
                published: p0.to_string(),
                rows: 1,
                bytes: 1,
            }],
        );
        cp.commit(&paths, &m0).await.unwrap();
        cp.publish(&m0).await.unwrap();
        // Range 10..=19 committed, crash before publishing.
        let (s1, p1) = (
            paths.staged(10, 19, "2023-02-25"),
            paths.published(10, 19, "2023-02-25"),
        );
        cp.stage(&s1, Bytes::from_static(b"b")).await.unwrap();
        let m1 = marker(
            10,
            19,
            vec![CommittedFile {
                staged: s1.to_string(),
                published: p1.to_string(),
                rows: 1,
                bytes: 1,
            }],
        );
        cp.commit(&paths, &m1).await.unwrap();
        // Range 20..=29 staged, crash before the marker.
        let s2 = paths.staged(20, 29, "2023-02-25");
        cp.stage(&s2, Bytes::from_static(b"c")).await.unwrap();

        let r = cp.recover(&paths).await.unwrap();
        assert_eq!(
            r,
            Recovered {
                next_offset: Some(20),
                rolled_forward: 1,
                rolled_back: 1
            }
        );
        assert!(exists(&*store, &p0).await && exists(&*store, &p1).await);
        assert!(!exists(&*store, &s1).await && !exists(&*store, &s2).await);
        // Recovering again changes nothing.
        let again = cp.recover(&paths).await.unwrap();
        assert_eq!(
            again,
            Recovered {
                next_offset: Some(20),
                rolled_forward: 0,
                rolled_back: 0
            }
        );
    }

    #[tokio::test]
    async fn a_second_writer_of_the_same_range_is_fenced() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cp = Checkpointer::new(store);
        let paths = PartitionPaths::new("t", 3);
        cp.commit(&paths, &marker(0, 9, vec![])).await.unwrap();
        let e = cp.commit(&paths, &marker(0, 7, vec![])).await.unwrap_err();
        assert!(matches!(e, CheckpointError::Fenced { start: 0, .. }), "{e}");
        assert_eq!(cp.recover(&paths).await.unwrap().next_offset, Some(10));
    }

    #[test]
    fn paths_sort_by_offset_and_stay_safe() {
        let p = PartitionPaths::new("dvcqg/dossiers:x", 7);
        assert_eq!(
            p.published(5, 42, "2023-02-24").to_string(),
            "events/date=2023-02-24/dvcqg_dossiers_x-p00007-o00000000000000000005-00000000000000000042.parquet"
        );
        assert!(p.marker(9).to_string() < p.marker(10).to_string());
    }
}
