//! The exactly-once protocol: storage, not Kafka, is the source of truth for progress.
//!
//! A flush of one source partition covers the offsets `start..=end` it consumed since the
//! last flush. Its steps, in order:
//!
//! 1. **Stage**: each date's rows are written as one Parquet file under
//!    `_sohoa/staging/<topic>/p<partition>/<start>-<end>-<day>.parquet`, outside
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
//! Recovery, when a partition is assigned: the newest marker gives the next offset (its
//! `end` + 1); staged files a marker lists are published (roll forward); staged files of a
//! range whose start has a marker that does not list them lost a commit race and are
//! deleted. Consumption resumes at the next offset. A crash at any step therefore leaves
//! either a committed range (published on recovery) or an uncommitted one (consumed again
//! and superseded), never both.
//!
//! A writer that loses the race (a replica evicted from the group while it was still
//! flushing, say) gets [`CheckpointError::Fenced`]: it drops what it buffered for the
//! partition, deletes its losing staged files and resumes after the winner's range.

use std::collections::BTreeMap;
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
    /// Rejected records of the range by reason (`syntax`, `missing`, ...): what the
    /// aggregator's data-quality table reconciles against. Absent in older markers.
    #[serde(default)]
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    pub committed_at: String,
    /// The fingerprint of the pseudonym key the range's rows were made with (see
    /// `Pseudonymizer::fingerprint`): the aggregator refuses to mix keys. Absent in older
    /// markers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// The range's rejects file (backfills), staged and published with its data files, so
    /// a re-run neither repeats nor loses a reject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<CommittedFile>,
    /// Where the range's rejected lines were kept whole, in the separate raw store
    /// (`rejects.raw_root`), if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_rejects: Option<String>,
    /// Offsets of the range the broker no longer held when they were to be consumed
    /// (retention deleted them first): lost upstream, not by the ingestor, and recorded so
    /// the loss is visible where the range's counts are. Absent when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<OffsetGap>,
}

/// Offsets `from..=to` of a partition that were expected next and that the broker had
/// already deleted when they were to be consumed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct OffsetGap {
    pub from: i64,
    pub to: i64,
}

impl OffsetGap {
    /// The gap when a partition expected at `expected` resumed at `first` while the broker
    /// held offsets from `log_start` on: `expected..` up to whichever comes first. `None`
    /// when `expected` was still held, and the offsets skipped are holes of the log.
    pub fn deleted(expected: i64, first: i64, log_start: i64) -> Option<OffsetGap> {
        (first > expected && log_start > expected).then(|| OffsetGap {
            from: expected,
            to: log_start.min(first) - 1,
        })
    }

    /// Offsets skipped. An offset is not always a message (transaction markers take one),
    /// so this is an upper bound on the messages lost.
    pub fn offsets(&self) -> u64 {
        (self.to - self.from + 1).max(0) as u64
    }
}

impl Marker {
    /// Every file the commit publishes: the data files, then the rejects file.
    pub fn published_files(&self) -> impl Iterator<Item = &CommittedFile> {
        self.files.iter().chain(&self.rejects)
    }
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

    /// Flat in the partition's staging directory: a directory per range would stay behind
    /// on a local file system (`object_store` removes files, never the directories they
    /// leave empty), one per flush, and every recovery would walk them all.
    pub fn staged(&self, start: i64, end: i64, day: &str) -> Path {
        Path::from(format!(
            "{}/{start:020}-{end:020}-{day}.parquet",
            self.staging_dir()
        ))
    }

    pub fn published(&self, start: i64, end: i64, day: &str) -> Path {
        Path::from(format!(
            "events/date={day}/{}-p{:05}-o{start:020}-{end:020}.parquet",
            self.topic, self.partition
        ))
    }

    /// A range's rejects file, staged beside its data files.
    pub fn staged_rejects(&self, start: i64, end: i64) -> Path {
        Path::from(format!(
            "{}/{start:020}-{end:020}-rejects.jsonl",
            self.staging_dir()
        ))
    }

    /// A range's rejects file once committed: one file per committed range.
    pub fn published_rejects(&self, start: i64, end: i64) -> Path {
        Path::from(format!(
            "{}/{start:020}-{end:020}.jsonl",
            self.rejects_dir()
        ))
    }

    fn rejects_dir(&self) -> Path {
        Path::from(format!(
            "_sohoa/rejects/{}/p{:05}",
            self.topic, self.partition
        ))
    }

    /// The folder of a partition's raw rejects, in the raw store.
    pub fn raw_rejects_dir(&self) -> Path {
        Path::from(format!("{}/p{:05}", self.topic, self.partition))
    }

    /// A range's raw rejects, in the raw store.
    pub fn raw_rejects(&self, start: i64, end: i64) -> Path {
        Path::from(format!(
            "{}/{start:020}-{end:020}.jsonl",
            self.raw_rejects_dir()
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
        for f in marker.published_files() {
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

    /// The start offsets of a partition's markers, from their names alone, ascending.
    async fn marker_starts(&self, paths: &PartitionPaths) -> Result<Vec<i64>, CheckpointError> {
        let metas: Vec<_> = self
            .store
            .list(Some(&paths.commits_dir()))
            .try_collect()
            .await?;
        let mut starts: Vec<i64> = metas
            .iter()
            .filter(|m| m.location.extension() == Some("json"))
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
            .collect();
        starts.sort_unstable();
        Ok(starts)
    }

    /// The marker of the range that starts at `start`, if one was committed.
    pub async fn marker_at(
        &self,
        paths: &PartitionPaths,
        start: i64,
    ) -> Result<Option<Marker>, CheckpointError> {
        let path = paths.marker(start);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CheckpointError::BadMarker {
                path: path.to_string(),
                reason: e.to_string(),
            })
    }

    /// All markers of a partition, oldest first.
    pub async fn markers(&self, paths: &PartitionPaths) -> Result<Vec<Marker>, CheckpointError> {
        let mut markers = Vec::new();
        for start in self.marker_starts(paths).await? {
            markers.extend(self.marker_at(paths, start).await?);
        }
        Ok(markers)
    }

    /// The first offset not yet durable, from the newest marker alone: what a writer that
    /// lost a commit race resumes from.
    pub async fn next_offset(
        &self,
        paths: &PartitionPaths,
    ) -> Result<Option<i64>, CheckpointError> {
        let Some(&last) = self.marker_starts(paths).await?.last() else {
            return Ok(None);
        };
        Ok(self.marker_at(paths, last).await?.map(|m| m.end + 1))
    }

    /// Settle staged files of the range that starts at `start`, once a marker is committed
    /// there. A file the marker does not list lost a commit race and can never be
    /// committed: deleted. A file it lists whose published copy already exists is a second
    /// copy of the same offsets (the loser of the race wrote the same range, or a copying
    /// rename was interrupted): deleted too. A file it lists and that is not yet published
    /// is published. Returns (published, deleted).
    pub async fn settle(
        &self,
        paths: &PartitionPaths,
        start: i64,
        staged: &[Path],
    ) -> Result<(usize, usize), CheckpointError> {
        let Some(winner) = self.marker_at(paths, start).await? else {
            return Ok((0, 0));
        };
        let (mut published, mut deleted) = (0, 0);
        for s in staged {
            let listed = winner.published_files().find(|f| f.staged == s.as_ref());
            if let Some(f) = listed {
                let to = Path::from(f.published.as_str());
                match self.store.head(&to).await {
                    Err(object_store::Error::NotFound { .. }) => {
                        match self.store.rename(s, &to).await {
                            Ok(()) => published += 1,
                            // Its writer published it meanwhile.
                            Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(e.into()),
                        }
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                    Ok(_) => {}
                }
            }
            match self.store.delete(s).await {
                Ok(()) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((published, deleted))
    }

    /// Recovery for one partition: roll forward what was committed, delete what lost a
    /// commit race, and say where to resume.
    ///
    /// Only the newest marker and the markers of ranges with staged files are read, so
    /// recovery stays fast however long the partition's history. A staged range with no
    /// marker at its start is left alone: its writer may be a replica that has not yet
    /// noticed it lost the partition, and may still commit it. Deleting it under that
    /// writer would leave a marker naming missing files. Once any marker is committed at
    /// that start, the range is superseded and the next recovery deletes it.
    pub async fn recover(&self, paths: &PartitionPaths) -> Result<Recovered, CheckpointError> {
        let starts = self.marker_starts(paths).await?;
        let next_offset = match starts.last() {
            Some(&last) => self.marker_at(paths, last).await?.map(|m| m.end + 1),
            None => None,
        };
        let staged: Vec<Path> = self
            .store
            .list(Some(&paths.staging_dir()))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        let mut by_start: BTreeMap<i64, Vec<Path>> = BTreeMap::new();
        for s in staged {
            if let Some(start) = staged_start(&s) {
                by_start.entry(start).or_default().push(s);
            }
        }
        let mut rolled_forward = 0;
        let mut rolled_back = 0;
        for (start, files) in by_start {
            if starts.binary_search(&start).is_ok() {
                let (published, deleted) = self.settle(paths, start, &files).await?;
                rolled_forward += published;
                rolled_back += deleted;
            }
        }
        Ok(Recovered {
            next_offset,
            rolled_forward,
            rolled_back,
        })
    }
}

/// The start offset of a staged file's range, from `.../<start>-<end>-<day>.parquet`, or
/// from `.../<start>-<end>/date=<day>.parquet`, the layout of releases before 2026-12,
/// whose staged files a recovery may still find.
fn staged_start(path: &Path) -> Option<i64> {
    let range_start = |name: &str| name.split_once('-')?.0.parse().ok();
    let parts: Vec<_> = path.parts().collect();
    let file = parts.last()?;
    range_start(file.as_ref()).or_else(|| {
        let dir = parts.get(parts.len().checked_sub(2)?)?;
        range_start(dir.as_ref())
    })
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
            dead_letters_by_reason: BTreeMap::new(),
            committed_at: String::new(),
            key_fingerprint: None,
            rejects: None,
            raw_rejects: None,
            gaps: Vec::new(),
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
                rolled_back: 0
            }
        );
        assert!(exists(&*store, &p0).await && exists(&*store, &p1).await);
        assert!(!exists(&*store, &s1).await);
        // The uncommitted range may belong to a writer still at work: it stays.
        assert!(exists(&*store, &s2).await);
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
        // The range is consumed again and committed as 20..=24: the old staged file lost.
        let s3 = paths.staged(20, 24, "2023-02-25");
        cp.stage(&s3, Bytes::from_static(b"d")).await.unwrap();
        let m3 = marker(
            20,
            24,
            vec![CommittedFile {
                staged: s3.to_string(),
                published: paths.published(20, 24, "2023-02-25").to_string(),
                rows: 1,
                bytes: 1,
            }],
        );
        cp.commit(&paths, &m3).await.unwrap();
        let r = cp.recover(&paths).await.unwrap();
        assert_eq!(
            r,
            Recovered {
                next_offset: Some(25),
                rolled_forward: 1,
                rolled_back: 1
            }
        );
        assert!(!exists(&*store, &s2).await && !exists(&*store, &s3).await);
        assert_eq!(cp.next_offset(&paths).await.unwrap(), Some(25));
        assert_eq!(cp.markers(&paths).await.unwrap().len(), 3);
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
    fn a_gap_is_what_lies_below_the_log_start_and_never_an_ordinary_hole() {
        // Storage expected 10; the broker holds 50 on, and 50 came.
        assert_eq!(
            OffsetGap::deleted(10, 50, 50),
            Some(OffsetGap { from: 10, to: 49 })
        );
        assert_eq!(OffsetGap::deleted(10, 50, 50).unwrap().offsets(), 40);
        // 50 and 51 were transaction markers: only what was deleted is the gap.
        assert_eq!(
            OffsetGap::deleted(10, 52, 50),
            Some(OffsetGap { from: 10, to: 49 })
        );
        // Retention moved on after the fetch that delivered 50.
        assert_eq!(
            OffsetGap::deleted(10, 50, 70),
            Some(OffsetGap { from: 10, to: 49 })
        );
        // 10 is still held: 10 and 11 were markers or compacted away.
        assert_eq!(OffsetGap::deleted(10, 12, 0), None);
        assert_eq!(OffsetGap::deleted(10, 12, 10), None);
        // No jump, no gap.
        assert_eq!(OffsetGap::deleted(10, 10, 50), None);
    }

    #[test]
    fn gaps_are_left_out_of_markers_without_any_and_older_markers_still_parse() {
        let mut m = marker(0, 9, vec![]);
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("gaps"), "{json}");
        let back: Marker = serde_json::from_str(&json).unwrap();
        assert!(back.gaps.is_empty());
        m.gaps.push(OffsetGap { from: 0, to: 4 });
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains(r#""gaps":[{"from":0,"to":4}]"#), "{json}");
        assert_eq!(serde_json::from_str::<Marker>(&json).unwrap(), m);
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

    #[tokio::test]
    async fn staged_files_of_the_older_per_range_directory_layout_still_recover() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cp = Checkpointer::new(store.clone());
        let paths = PartitionPaths::new("t", 3);
        let new = paths.staged(10, 19, "2023-02-25");
        assert_eq!(
            new.to_string(),
            "_sohoa/staging/t/p00003/00000000000000000010-00000000000000000019-2023-02-25.parquet"
        );
        let old = Path::from(
            "_sohoa/staging/t/p00003/00000000000000000000-00000000000000000009/date=2023-02-24.parquet",
        );
        assert_eq!(staged_start(&new), Some(10));
        assert_eq!(staged_start(&old), Some(0));
        let published = paths.published(0, 9, "2023-02-24");
        cp.stage(&old, Bytes::from_static(b"a")).await.unwrap();
        let listed = CommittedFile {
            staged: old.to_string(),
            published: published.to_string(),
            rows: 1,
            bytes: 1,
        };
        cp.commit(&paths, &marker(0, 9, vec![listed]))
            .await
            .unwrap();
        let r = cp.recover(&paths).await.unwrap();
        assert_eq!((r.next_offset, r.rolled_forward), (Some(10), 1));
        assert!(exists(&*store, &published).await);
        assert!(!exists(&*store, &old).await);
    }
}
