//! The pipeline: decode → normalize → buffer by date → flush as one commit to the events
//! table (`sohoa_storage::events`). Source-agnostic: Kafka and backfill files feed it the
//! same [`Input`]s.
//!
//! It runs on its own thread, one per shard (`shard`), each owning a share of the
//! partitions. The source thread only hands messages on; decoding and encoding happen
//! here, and storage writes start here, so a slow flush applies backpressure instead of
//! stalling the consumer's poll loop.
//!
//! A shard buffers the rows of all its partitions together, one buffer per event date. A
//! flush takes every buffer: it writes one Parquet file per date and commits them in one
//! table commit, with the offset range of each partition it read (`txn` actions). So the
//! file count of a flush grows with the dates in flight, not with partitions times dates.
//! The writes run on the async runtime while this thread goes on decoding into fresh
//! buffers; a shard has at most one flush in flight, and its offsets reach Kafka once the
//! pipeline has settled it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::StructArray;
use bytes::Bytes;
use rayon::prelude::*;
use rustc_hash::FxBuildHasher;
use sohoa_runtime::config::FlushConfig;
use sohoa_schemas::normalize::vn_day;
use sohoa_schemas::{DecodeOutput, Decoder, EventBatchBuilder, Lineage};
use sohoa_storage::events::{Flush, FlushOutcome, SourceRange, Writer};
use sohoa_storage::{DataFile, Operation, StatsPlan, TableError};

use crate::backoff::Backoff;
use crate::dead_letter::{CommitRejects, DeadLetterError, DeadLetters};
use crate::metrics::{now_ms, Metrics};
use crate::write::{FileFormat, WriteError};

/// One source message.
#[derive(Debug)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Broker timestamp, in milliseconds, when the source has one.
    pub timestamp_ms: Option<i64>,
    pub body: Body,
}

/// A message's key and bytes, wherever its source keeps them.
#[derive(Debug)]
pub enum Body {
    Owned {
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    /// Copied out of librdkafka's fetch buffer into a chunk shared with the records polled
    /// next to it: the key's `key_len` bytes, if it has a key, then the payload.
    Copied { data: Bytes, key_len: Option<u32> },
}

impl Record {
    pub fn key(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Owned { key, .. } => key.as_deref(),
            Body::Copied { data, key_len } => key_len.map(|k| &data[..k as usize]),
        }
    }

    pub fn payload(&self) -> &[u8] {
        match &self.body {
            Body::Owned { payload, .. } => payload,
            Body::Copied { data, key_len } => &data[key_len.unwrap_or(0) as usize..],
        }
    }
}

/// What a source tells the pipeline, in order.
pub enum Input {
    /// Records in source order (offsets ascending within each partition).
    Records(Vec<Record>),
    /// Partitions now owned, each with the first offset not yet durable (from storage).
    Assigned(Vec<(Arc<str>, i32, Option<i64>)>),
    /// Partitions taken away: flush (or drop) them, then answer on the channel.
    Revoked(Vec<(Arc<str>, i32)>, SyncSender<()>),
    /// No more input: flush everything before the deadline and stop.
    Drain(Instant),
    /// A partition that lost a commit race now resumes at this offset: every record of it
    /// sent after this one comes from there.
    Rewound(Arc<str>, i32, i64),
}

/// What the pipeline asks of its source.
pub trait OffsetCommitter: Send {
    /// Progress is durable in storage up to each `next_offset` (exclusive). One call per
    /// flush, whatever the number of partitions: one request to the broker, not hundreds.
    fn commit(&self, offsets: &[(Arc<str>, i32, i64)]);
    /// A flush holding this partition was fenced: resume where the table says it stops, or
    /// at `fallback` if it records nothing of it, and announce that with
    /// [`Input::Rewound`]. `false` if the source cannot.
    fn rewind(&self, topic: &str, partition: i32, fallback: Option<i64>) -> bool;
    /// The oldest offset the source still holds for the partition, as of its latest read:
    /// what tells offsets deleted by retention from offsets that never held a message.
    /// `None` when unknown, or for sources that delete nothing.
    fn log_start(&self, topic: &str, partition: i32) -> Option<i64>;
}

/// For sources with nothing to commit to (files).
pub struct NoCommit;

impl OffsetCommitter for NoCommit {
    fn commit(&self, _: &[(Arc<str>, i32, i64)]) {}
    fn rewind(&self, _: &str, _: i32, _: Option<i64>) -> bool {
        false
    }
    fn log_start(&self, _: &str, _: i32) -> Option<i64> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("encoding: {0}")]
    Write(#[from] WriteError),
    #[error("statistics of a file: {0}")]
    Stats(String),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("dead letters not delivered: {0}")]
    DeadLettersPending(String),
    #[error("no decoder for topic {0}")]
    UnknownTopic(String),
    #[error("drain deadline passed with {0} partition(s) not flushed")]
    DrainTimeout(usize),
    #[error("not flushed before the deadline: {0}")]
    NotFlushed(String),
    #[error("storage writes interrupted: {0}")]
    WritesInterrupted(String),
    #[error("starting the worker threads: {0}")]
    Workers(#[from] rayon::ThreadPoolBuildError),
}

impl PipelineError {
    /// Worth retrying: storage or the dead-letter topic may come back.
    fn is_transient(&self) -> bool {
        match self {
            PipelineError::Table(e) => e.is_transient(),
            PipelineError::Store(_) => true,
            PipelineError::DeadLetter(_) | PipelineError::DeadLettersPending(_) => true,
            _ => false,
        }
    }

    fn stage(&self) -> &'static str {
        match self {
            PipelineError::Table(_)
            | PipelineError::Store(_)
            | PipelineError::WritesInterrupted(_) => "storage",
            PipelineError::Write(_) | PipelineError::Stats(_) => "encode",
            PipelineError::DeadLetter(_) | PipelineError::DeadLettersPending(_) => "dead_letter",
            _ => "other",
        }
    }
}

/// Totals for a run, for the command line's summary and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub messages: u64,
    pub events: u64,
    pub dead_lettered: u64,
    pub rejected_records: u64,
    pub files: u64,
    pub skipped_durable: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.messages += o.messages;
        self.events += o.events;
        self.dead_lettered += o.dead_lettered;
        self.rejected_records += o.rejected_records;
        self.files += o.files;
        self.skipped_durable += o.skipped_durable;
    }
}

/// What a partition's records since its last flush came to, for the commit's metadata,
/// the metrics and the totals.
#[derive(Debug, Default, Clone)]
struct Counts {
    messages: u64,
    events: u64,
    dead_lettered: u64,
    rejected_records: u64,
    dead_letters_by_reason: BTreeMap<&'static str, u64>,
    /// Events by date (days since 1970-01-01): what the range put in each date's file.
    by_day: BTreeMap<i64, u64>,
}

/// Offsets `from..=to` of a partition that were expected next and that the broker had
/// already deleted when they were to be consumed: lost upstream, not by the ingestor, and
/// recorded in the commit of the range they fall in, where the range's counts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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

struct PartState {
    topic: Arc<str>,
    partition: i32,
    /// The offset the table records for the partition: the first one not yet durable.
    /// `None` until the table records one.
    durable_next: Option<i64>,
    /// Offsets in the shard's open buffers, and the offset the table recorded when the
    /// range began (what the commit checks it still records).
    open: Option<(i64, i64)>,
    base: Option<i64>,
    counts: Counts,
    /// Offsets of the open range that the source had deleted before they were consumed.
    gaps: Vec<OffsetGap>,
    oldest_ts_ms: Option<i64>,
    /// Lost a commit race: records are dropped until the source says where it resumed.
    fenced: bool,
}

impl PartState {
    fn new(topic: Arc<str>, partition: i32, durable_next: Option<i64>) -> Self {
        PartState {
            topic,
            partition,
            durable_next,
            open: None,
            base: durable_next,
            counts: Counts::default(),
            gaps: Vec::new(),
            oldest_ts_ms: None,
            fenced: false,
        }
    }
}

/// A source partition's part in a flush.
struct GroupRange {
    key: PartKey,
    start: i64,
    end: i64,
    base: Option<i64>,
    counts: Counts,
    gaps: Vec<OffsetGap>,
}

/// An encoded file of a flush.
struct GroupFile {
    date: String,
    /// Relative to the table root.
    path: String,
    data: Bytes,
    rows: u64,
    stats: StructArray,
}

/// A flush taken out of the buffers: its files, encoded, and the ranges they hold. At most
/// one per shard, from the moment it is taken until it is committed or dropped.
struct Group {
    ranges: Vec<GroupRange>,
    files: Vec<GroupFile>,
    /// Backfills keep their rejects in storage, written with the commit.
    rejects: Vec<(PartKey, CommitRejects)>,
    bytes: usize,
    started: Instant,
    /// The files are in storage: a retry only commits.
    written: bool,
    /// Failed tries in a row, and when the next may start (see `backoff`).
    failures: u32,
    retry_at: Option<Instant>,
    /// Why the last try failed.
    error: Option<String>,
}

impl Group {
    fn range(&self, key: &PartKey) -> Option<&GroupRange> {
        self.ranges.iter().find(|r| &r.key == key)
    }
}

/// A source partition: topic and partition number.
type PartKey = (Arc<str>, i32);

/// The decoder of each topic. Both maps are looked up for every message (five hashes of
/// the topic), so they hash with Fx rather than SipHash: the keys are the configured topics
/// and the partitions the broker assigns, not input an attacker chooses.
pub type Decoders = HashMap<Arc<str>, Box<dyn Decoder>, FxBuildHasher>;

/// How the table names a source partition in its `txn` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// Kafka topics: [`sohoa_storage::events::kafka_app_id`].
    Kafka,
    /// Backfill files: the "topic" is `file:<name>#<content hash>`, and offsets are lines.
    Files,
}

impl Sources {
    pub fn app_id(self, topic: &str, partition: i32) -> String {
        match self {
            Sources::Kafka => sohoa_storage::events::kafka_app_id(topic, partition),
            Sources::Files => topic.to_owned(),
        }
    }

    fn operation(self) -> Operation {
        match self {
            Sources::Kafka => Operation::StreamingUpdate,
            Sources::Files => Operation::Write,
        }
    }
}

/// The outcome of a flush's storage writes.
type Written = Result<FlushOutcome, PipelineError>;

/// The storage writes of a flush, owned so they can run on the async runtime: the files,
/// the rejects, then the commit.
struct FlushIo {
    writer: Writer,
    files: Vec<(object_store::path::Path, Bytes)>,
    rejects: Vec<(
        Arc<dyn object_store::ObjectStore>,
        object_store::path::Path,
        Bytes,
    )>,
    flush: Flush,
    commit_seconds: prometheus::Histogram,
}

async fn execute(io: FlushIo) -> Written {
    use object_store::ObjectStoreExt;
    let store = io.writer.table().store().clone();
    for (path, data) in &io.files {
        store
            .put(path, object_store::PutPayload::from_bytes(data.clone()))
            .await?;
        crate::crashpoint::hit("after_stage_file");
    }
    for (store, path, data) in &io.rejects {
        store
            .put(path, object_store::PutPayload::from_bytes(data.clone()))
            .await?;
    }
    crate::crashpoint::hit("before_commit");
    let writer = io.writer.clone();
    let flush = io.flush;
    let committing = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || writer.commit(&flush))
        .await
        .map_err(|e| PipelineError::WritesInterrupted(e.to_string()))??;
    io.commit_seconds
        .observe(committing.elapsed().as_secs_f64());
    crate::crashpoint::hit("after_commit");
    Ok(outcome)
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub flush: FlushConfig,
    /// Cap on buffered bytes across partitions.
    pub buffer_max_bytes: usize,
    /// When failed flushes are tried again.
    pub backoff: Backoff,
    /// The fingerprint of the pseudonym key, written into every file and commit.
    pub key_fingerprint: String,
    /// How the table names the sources.
    pub sources: Sources,
    /// The consumer group, recorded in each commit for whoever reads the log.
    pub group: Option<String>,
}

impl PipelineConfig {
    /// The pipeline's part of the configuration; `key_fingerprint` names the pseudonym
    /// key of the decoders.
    pub fn new(cfg: &sohoa_runtime::Config, key_fingerprint: String, sources: Sources) -> Self {
        PipelineConfig {
            flush: cfg.flush.clone(),
            buffer_max_bytes: cfg.buffer.max_bytes,
            backoff: Backoff {
                initial: Duration::from_millis(cfg.flush.retry_initial_ms),
                max: Duration::from_millis(cfg.flush.retry_max_ms),
            },
            key_fingerprint,
            sources,
            group: (sources == Sources::Kafka).then(|| cfg.kafka.group_id.clone()),
        }
    }
}

/// What the pipelines of one process share: a process runs several (see `shard`), each
/// owning some of the partitions, under one buffer cap and one set of worker threads.
#[derive(Clone)]
pub struct Shared {
    /// Bytes in flight from the source to the pipelines.
    pub buffered: Arc<AtomicUsize>,
    /// Bytes the pipelines hold: decoded rows, and encoded files not yet durable.
    pub held: Arc<AtomicUsize>,
    /// Pipelines waiting for input with none queued. The source holds back once enough
    /// is in flight, but the allowance is shared: one shard busy encoding can hold most
    /// of it while another runs dry, so a starving pipeline lets the source go on.
    pub starving: Arc<AtomicUsize>,
    /// Threads for decoding a batch and for encoding a flush's files, for a lone pipeline;
    /// `None` when the pipelines are the parallelism (several shards, or one core). They
    /// live as long as the process: starting threads per batch cost little in itself, but
    /// each new thread's allocations then came from fresh allocator state.
    pub workers: Option<Arc<rayon::ThreadPool>>,
}

impl Shared {
    /// For `shards` pipelines. Several shards each decode and encode on their own thread:
    /// on two cores, a lone pipeline handing its batches to a pool kept 1.5 cores busy,
    /// two shards 1.7, and two shards sharing a pool spent the difference on hand-offs.
    pub fn new(shards: usize) -> Result<Self, PipelineError> {
        // Respects a container's CPU quota.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let workers = if shards == 1 && cores > 1 {
            Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(cores)
                    .thread_name(|i| format!("sohoa-work-{i}"))
                    .build()?,
            ))
        } else {
            None
        };
        Ok(Shared {
            buffered: Arc::default(),
            held: Arc::default(),
            starving: Arc::default(),
            workers,
        })
    }

    /// Everything buffered: what the buffer cap applies to.
    pub fn level(&self) -> usize {
        self.buffered.load(Ordering::SeqCst) + self.held.load(Ordering::SeqCst)
    }
}

pub struct Pipeline {
    cfg: PipelineConfig,
    decoders: Decoders,
    parts: HashMap<PartKey, PartState, FxBuildHasher>,
    writer: Writer,
    stats: StatsPlan,
    rt: tokio::runtime::Handle,
    format: FileFormat,
    dead: Box<dyn DeadLetters>,
    committer: Box<dyn OffsetCommitter>,
    metrics: Arc<Metrics>,
    shared: Shared,
    /// The open buffers, one per event date, holding the rows of every partition.
    days: BTreeMap<i64, EventBatchBuilder>,
    rows: usize,
    /// What the open buffers hold.
    bytes: usize,
    /// What the largest open buffer holds.
    largest_date: usize,
    /// When the oldest row of the open buffers arrived.
    oldest: Option<Instant>,
    /// The flush taken out of the buffers and not yet committed.
    group: Option<Group>,
    /// Its storage writes, running in the background.
    writing: Option<tokio::task::JoinHandle<Written>>,
    /// Bytes this shard holds, decoded or encoded: its part of `shared.held`.
    own_bytes: usize,
    /// What this shard has added to `shared.held`: `own_bytes` as of the last
    /// [`Pipeline::publish`].
    published: usize,
    /// Partitions this shard has counted in the assigned-partitions gauge.
    counted: usize,
    totals: Totals,
    last_check: Instant,
    /// Makes file names unique across writers: a fenced writer's file must never take the
    /// name of a file another writer committed.
    salt: u64,
    flushes: u64,
}

fn day_string(day: i64) -> String {
    let d = chrono::DateTime::from_timestamp(day * 86_400, 0).expect("a day in range");
    d.format("%Y-%m-%d").to_string()
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: PipelineConfig,
        decoders: Decoders,
        writer: Writer,
        rt: tokio::runtime::Handle,
        dead: Box<dyn DeadLetters>,
        committer: Box<dyn OffsetCommitter>,
        metrics: Arc<Metrics>,
        shared: Shared,
    ) -> Result<Self, PipelineError> {
        let format = FileFormat::new(
            &sohoa_schemas::events_schema(),
            cfg.flush.row_group_rows,
            cfg.flush.zstd_level,
            Some(&cfg.key_fingerprint),
        )?;
        let stats = writer.table().stats_plan(&writer.latest()?)?;
        Ok(Pipeline {
            cfg,
            decoders,
            parts: HashMap::default(),
            writer,
            stats,
            rt,
            format,
            dead,
            committer,
            metrics,
            shared,
            days: BTreeMap::new(),
            rows: 0,
            bytes: 0,
            largest_date: 0,
            oldest: None,
            group: None,
            writing: None,
            own_bytes: 0,
            published: 0,
            counted: 0,
            totals: Totals::default(),
            last_check: Instant::now(),
            salt: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            flushes: 0,
        })
    }

    /// Run until the source sends `Drain` (or hangs up).
    pub fn run(mut self, rx: Receiver<Input>) -> Result<Totals, PipelineError> {
        let waiting = self
            .metrics
            .pipeline_seconds
            .with_label_values(&["waiting"]);
        let decoding = self
            .metrics
            .pipeline_seconds
            .with_label_values(&["decoding"]);
        let writing = self
            .metrics
            .pipeline_seconds
            .with_label_values(&["writing"]);
        loop {
            let wait = Instant::now();
            // Writes in flight are settled (and their offsets committed) between inputs, so
            // an idle stream must not keep them waiting long.
            let timeout = if self.writing.is_none() { 100 } else { 10 };
            // With the buffer near its cap and a flush in flight, the source holds back
            // until it frees memory: the wait is for storage, not for messages.
            let held =
                self.writing.is_some() && self.shared.level() > self.cfg.buffer_max_bytes * 3 / 4;
            let input = match rx.try_recv() {
                Ok(input) => Ok(input),
                Err(TryRecvError::Empty) => {
                    self.shared.starving.fetch_add(1, Ordering::SeqCst);
                    let input = rx.recv_timeout(Duration::from_millis(timeout));
                    self.shared.starving.fetch_sub(1, Ordering::SeqCst);
                    input
                }
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            };
            if held { &writing } else { &waiting }.inc_by(wait.elapsed().as_secs_f64());
            match input {
                Ok(Input::Records(batch)) => {
                    let bytes = batch.iter().map(|r| r.payload().len()).sum();
                    // Per run of one topic, not per record: a label lookup hashes.
                    for run in batch.chunk_by(|a, b| a.topic == b.topic) {
                        self.metrics
                            .received
                            .with_label_values(&[&*run[0].topic])
                            .inc_by(run.len() as u64);
                    }
                    let started = Instant::now();
                    let applied = self.on_batch(&batch);
                    // The batch's bytes move from in flight to held here, together: its
                    // rows were added to `held` as the batch ended, and the payloads are
                    // freed as it is dropped.
                    self.publish();
                    self.shared.buffered.fetch_sub(bytes, Ordering::SeqCst);
                    drop(batch);
                    self.sync_buffered();
                    applied?;
                    decoding.inc_by(started.elapsed().as_secs_f64());
                }
                Ok(Input::Assigned(parts)) => {
                    for (topic, partition, next) in parts {
                        self.metrics
                            .update_lag(&topic, partition, |l| l.durable_next = next);
                        self.metrics.watch_gaps(&topic, partition);
                        self.metrics
                            .flush_backoff_seconds
                            .with_label_values(&[&*topic, &partition.to_string()])
                            .set(0.0);
                        self.parts.insert(
                            (topic.clone(), partition),
                            PartState::new(topic, partition, next),
                        );
                    }
                    self.sync_assigned();
                }
                Ok(Input::Revoked(parts, ack)) => {
                    self.revoke(parts);
                    let _ = ack.send(());
                }
                Ok(Input::Rewound(topic, partition, next)) => {
                    let key = (topic.clone(), partition);
                    if self.parts.get(&key).is_some_and(|st| st.fenced) {
                        tracing::info!(%topic, partition, next, "resuming from the table's offset");
                        self.metrics
                            .update_lag(&topic, partition, |l| l.durable_next = Some(next));
                        self.parts
                            .insert(key, PartState::new(topic, partition, Some(next)));
                    }
                }
                Ok(Input::Drain(deadline)) => return self.drain(deadline),
                Err(RecvTimeoutError::Disconnected) => {
                    return self.drain(Instant::now() + Duration::from_secs(30))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.last_check.elapsed() >= Duration::from_millis(50) {
                self.last_check = Instant::now();
                self.flush_due()?;
            } else if self.writing.is_some() {
                self.reap(false)?;
            }
        }
    }

    /// Partitions taken away: what they hold is flushed first, with everything else the
    /// shard holds (a flush is one commit of every buffer), so the next owner starts where
    /// this one stopped.
    fn revoke(&mut self, parts: Vec<(Arc<str>, i32)>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let holds = parts.iter().any(|(t, p)| {
            let key = (t.clone(), *p);
            self.parts.get(&key).is_some_and(|st| st.open.is_some())
                || self.group.as_ref().is_some_and(|g| g.range(&key).is_some())
        });
        if holds {
            if let Err(e) = self.flush_until(deadline) {
                // Dropping is safe: the table did not record these offsets, so the next
                // owner consumes them again.
                tracing::warn!(error = %e, partitions = parts.len(), "revoked partitions dropped without flushing");
                self.drop_buffers("revoked");
            }
        }
        for (topic, partition) in parts {
            if self.parts.remove(&(topic.clone(), partition)).is_some() {
                // Flushed above, or dropped with the buffers (counted there): nothing of
                // the partition is left to be rejected again.
                self.dead.dropped(&topic, partition, 0, "revoked");
            }
            self.metrics.forget_partition(&topic, partition);
        }
        self.sync_buffered();
        self.sync_assigned();
    }

    /// Decoding is most of the work and each message decodes on its own, so a batch is
    /// decoded on several threads; buffering stays on this thread, in source order.
    fn on_batch(&mut self, batch: &[Record]) -> Result<(), PipelineError> {
        let mut wanted = Vec::with_capacity(batch.len());
        for r in batch {
            let key = (self.own_topic(&r.topic)?, r.partition);
            let skip = self
                .parts
                .get(&key)
                .is_some_and(|st| self.skips(&key, st, r.offset));
            wanted.push(!skip);
        }
        let outputs = decode_batch(
            self.shared.workers.as_deref(),
            &self.decoders,
            batch,
            &wanted,
        );
        // One ingest time for the batch: a clock read per record was 0.6% of a replica's
        // CPU, and the batch's records are buffered within a few milliseconds.
        let ingested_at = now_ms() * 1000;
        for (r, out) in batch.iter().zip(outputs) {
            match out {
                Some(out) => self.apply(r, out, ingested_at)?,
                None => self.totals.skipped_durable += 1,
            }
        }
        Ok(())
    }

    /// The first offset of `key` this shard has not seen: a record below it is a
    /// redelivery.
    fn next_expected(&self, key: &PartKey, st: &PartState) -> Option<i64> {
        match (st.open, self.group.as_ref().and_then(|g| g.range(key))) {
            (Some((_, end)), _) => Some(end + 1),
            (None, Some(r)) => Some(r.end + 1),
            (None, None) => st.durable_next,
        }
    }

    /// Redeliveries (after a restart, a rebalance or a rewind) and a fenced partition's
    /// stale records are already, or about to be, someone's durable range.
    fn skips(&self, key: &PartKey, st: &PartState, offset: i64) -> bool {
        st.fenced || self.next_expected(key, st).is_some_and(|n| offset < n)
    }

    /// The topic as this shard's own `Arc` (its decoder's key), for keys into `parts`.
    /// A record's `Arc` is cloned and dropped by the poll thread and by the other shards
    /// too, and cloning it for each key moved its count's cache line between cores several
    /// times per message.
    fn own_topic(&self, topic: &str) -> Result<Arc<str>, PipelineError> {
        match self.decoders.get_key_value(topic) {
            Some((own, _)) => Ok(own.clone()),
            None => Err(PipelineError::UnknownTopic(topic.to_string())),
        }
    }

    fn apply(
        &mut self,
        r: &Record,
        out: DecodeOutput<'_>,
        ingested_at: i64,
    ) -> Result<(), PipelineError> {
        let key = (self.own_topic(&r.topic)?, r.partition);
        if !self.parts.contains_key(&key) {
            // A source that does not announce assignments (files) starts from the table.
            self.parts.insert(
                key.clone(),
                PartState::new(key.0.clone(), r.partition, None),
            );
        }
        // Checked again: a flush earlier in the batch may have fenced the partition.
        if self.skips(&key, &self.parts[&key], r.offset) {
            self.totals.skipped_durable += 1;
            return Ok(());
        }
        // Past the offset expected next (from the table, or after the last record): the
        // skipped offsets are in this range, which is where a gap is recorded. With nothing
        // in the table yet (a first start) nothing is expected, and nothing can be missed.
        let expected = self.next_expected(&key, &self.parts[&key]);
        if let Some(expected) = expected.filter(|&n| r.offset > n) {
            if let Some(gap) =
                retention_gap(&*self.committer, &r.topic, r.partition, expected, r.offset)
            {
                self.parts
                    .get_mut(&key)
                    .expect("inserted above")
                    .gaps
                    .push(gap);
            }
        }
        // A range starts where the one before it ends, durable or not yet, and builds on
        // what that one will record: starting at `durable_next` under a flush in flight
        // would claim that flush's range again, and fence this one.
        let behind = self
            .group
            .as_ref()
            .and_then(|g| g.range(&key))
            .map(|g| g.end + 1);
        let lineage = Lineage {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            ingested_at,
            // Backfill files have no broker time: their arrival is the ingest.
            arrived_at: r.timestamp_ms.map_or(ingested_at, |ms| ms * 1000),
        };
        let before = self.bytes;
        for e in &out.events {
            let day = vn_day(e.event_time);
            let b = self.days.entry(day).or_default();
            let had = b.allocated_bytes();
            b.append(e, &lineage);
            let has = b.allocated_bytes();
            self.bytes = self.bytes + has - had;
            self.largest_date = self.largest_date.max(has);
        }
        self.rows += out.events.len();
        let st = self.parts.get_mut(&key).expect("inserted above");
        for e in &out.events {
            *st.counts.by_day.entry(vn_day(e.event_time)).or_default() += 1;
        }
        st.counts.events += out.events.len() as u64;
        st.counts.messages += 1;
        if !out.rejects.is_empty() {
            self.dead.send(r, &out.rejects)?;
            st.counts.dead_lettered += 1;
            st.counts.rejected_records += out.rejects.len() as u64;
            for rej in &out.rejects {
                *st.counts
                    .dead_letters_by_reason
                    .entry(rej.kind())
                    .or_default() += 1;
                self.metrics
                    .dead_letters
                    .with_label_values(&[&*r.topic, rej.kind()])
                    .inc();
            }
        }
        for (w, n) in out.warnings.iter() {
            self.metrics
                .warnings
                .with_label_values(&[&*r.topic, w.as_str()])
                .inc_by(n as u64);
        }
        st.open = Some(match st.open {
            None => {
                st.base = behind.or(st.durable_next);
                (behind.or(st.durable_next).unwrap_or(r.offset), r.offset)
            }
            Some((s, _)) => (s, r.offset),
        });
        if st.oldest_ts_ms.is_none() {
            st.oldest_ts_ms = Some(r.timestamp_ms.unwrap_or(ingested_at / 1000));
            let ts = st.oldest_ts_ms;
            self.metrics
                .update_lag(&r.topic, r.partition, |l| l.oldest_pending_ms = ts);
        }
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        // Published once per batch (or at the next hold or release, in a flush), not per
        // message: the counter is shared by the shards and read by the poll thread, and
        // its cache line moving between cores for each message was a fifth of this
        // thread's own samples in `run`.
        self.own_bytes = self.own_bytes + self.bytes - before;
        if self.rows >= self.cfg.flush.max_rows
            || self.bytes >= self.cfg.flush.max_bytes
            || self.largest_date >= self.cfg.flush.date_max_bytes
        {
            self.try_flush()?;
        }
        Ok(())
    }

    fn sync_buffered(&self) {
        self.metrics.buffered_bytes.set(self.shared.level() as i64);
    }

    /// The gauge counts every shard's partitions, so each adds its own change.
    fn sync_assigned(&mut self) {
        let n = self.parts.len();
        self.metrics
            .assigned_partitions
            .add(n as i64 - self.counted as i64);
        self.counted = n;
    }

    fn hold(&mut self, bytes: usize) {
        self.own_bytes += bytes;
        self.publish();
    }

    fn release(&mut self, bytes: usize) {
        self.own_bytes -= bytes;
        self.publish();
    }

    /// Bring `shared.held` up to date with `own_bytes`.
    fn publish(&mut self) {
        if self.own_bytes >= self.published {
            let more = self.own_bytes - self.published;
            self.shared.held.fetch_add(more, Ordering::SeqCst);
        } else {
            let less = self.published - self.own_bytes;
            self.shared.held.fetch_sub(less, Ordering::SeqCst);
        }
        self.published = self.own_bytes;
    }

    /// Age, the buffer cap, and a failed flush's retry.
    fn flush_due(&mut self) -> Result<(), PipelineError> {
        let max_age = Duration::from_millis(self.cfg.flush.max_age_ms);
        let old = self.oldest.is_some_and(|t| t.elapsed() >= max_age);
        // Past three quarters of the cap, so that the level comes down before the source
        // reaches the cap and has to stop; or paused and not yet below half of it (the
        // source resumes only there).
        let level = self.shared.level();
        let paused = self.metrics.paused.get() != 0;
        let pressed = level > self.cfg.buffer_max_bytes * 3 / 4
            || (paused && level >= self.cfg.buffer_max_bytes / 2);
        if old || pressed || self.group.is_some() {
            self.try_flush()?;
        }
        Ok(())
    }

    /// Settle a flush whose writes are done, then start the next: the one waiting for a
    /// retry, or the open buffers. Never waits for storage.
    fn try_flush(&mut self) -> Result<(), PipelineError> {
        self.reap(false)?;
        if self.writing.is_some() {
            return Ok(());
        }
        if self.group.is_none() {
            self.take()?;
        }
        self.start()
    }

    /// Make everything this shard holds durable before `deadline`, trying failed flushes
    /// again on their backoff schedule.
    fn flush_until(&mut self, deadline: Instant) -> Result<(), PipelineError> {
        let mut last: Option<String> = None;
        loop {
            self.reap(true)?;
            if self.group.is_none() {
                if self.rows == 0 && self.parts.values().all(|st| st.open.is_none()) {
                    return Ok(());
                }
                self.take()?;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PipelineError::NotFlushed(
                    last.unwrap_or_else(|| "the deadline passed".into()),
                ));
            }
            let retry_at = self.group.as_ref().and_then(|g| g.retry_at);
            if let Some(at) = retry_at.filter(|at| *at > now) {
                std::thread::sleep(at.min(deadline).saturating_duration_since(now));
                continue;
            }
            self.start()?;
            self.reap(true)?;
            if let Some(e) = self.group.as_ref().and_then(|g| g.error.clone()) {
                last = Some(e);
            }
        }
    }

    /// Flush everything, or say what was not flushed.
    fn drain(mut self, deadline: Instant) -> Result<Totals, PipelineError> {
        if let Err(e) = self.flush_until(deadline) {
            let left: Vec<String> = self
                .parts
                .values()
                .filter(|st| st.open.is_some())
                .map(|st| format!("{}[{}]", st.topic, st.partition))
                .collect();
            tracing::error!(error = %e, partitions = ?left, "not flushed at shutdown; it will be consumed again");
            let n = left.len().max(1);
            self.drop_buffers("not_flushed");
            return Err(match e {
                PipelineError::NotFlushed(_) => PipelineError::DrainTimeout(n),
                e => e,
            });
        }
        Ok(self.totals)
    }

    /// Take the open buffers out as a flush: encode each date's rows into one file, on
    /// several threads, and note each partition's range.
    fn take(&mut self) -> Result<(), PipelineError> {
        if self.rows == 0 && self.parts.values().all(|st| st.open.is_none()) {
            return Ok(());
        }
        let started = Instant::now();
        let mut ranges = Vec::new();
        let mut rejects = Vec::new();
        for (key, st) in self.parts.iter_mut() {
            let Some((start, end)) = st.open.take() else {
                continue;
            };
            // The range's rejects go with it, whatever becomes of it.
            if let Some(r) = self.dead.take_range(&key.0, key.1) {
                rejects.push((key.clone(), r));
            }
            ranges.push(GroupRange {
                key: key.clone(),
                start,
                end,
                base: st.base,
                counts: std::mem::take(&mut st.counts),
                gaps: std::mem::take(&mut st.gaps),
            });
            st.oldest_ts_ms = None;
        }
        ranges.sort_by(|a, b| a.key.cmp(&b.key));
        let days: Vec<(String, EventBatchBuilder)> = std::mem::take(&mut self.days)
            .into_iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(day, b)| (day_string(day), b))
            .collect();
        // Each date's builders are freed as soon as its file is encoded, but they stay
        // counted until every file is: the level only overstates meanwhile.
        let freed = self.bytes;
        self.rows = 0;
        self.bytes = 0;
        self.largest_date = 0;
        self.oldest = None;
        let encoding = Instant::now();
        let encoded = encode_all(
            self.shared.workers.as_deref(),
            &self.format,
            &self.stats,
            days,
        );
        self.metrics
            .pipeline_seconds
            .with_label_values(&["encoding"])
            .inc_by(encoding.elapsed().as_secs_f64());
        self.flushes += 1;
        let mut files = Vec::with_capacity(encoded.len());
        let mut held = 0;
        for e in encoded {
            let e = e?;
            held += e.capacity;
            let path = format!(
                "date={}/part-{:016x}-{:06}.parquet",
                e.date,
                self.salt ^ now_ms() as u64,
                self.flushes
            );
            files.push(GroupFile {
                date: e.date,
                path,
                data: e.data,
                rows: e.rows,
                stats: e.stats,
            });
        }
        let bytes = held;
        self.hold(bytes);
        self.release(freed);
        self.group = Some(Group {
            ranges,
            files,
            rejects,
            bytes,
            started,
            written: false,
            failures: 0,
            retry_at: None,
            error: None,
        });
        // Encoding shrank the buffers: the source, held back at the cap, reads this level.
        self.sync_buffered();
        Ok(())
    }

    /// Start the storage writes of the flush taken out, unless it waits for a retry. The
    /// dead letters of its ranges must be durable before the ranges are committed.
    fn start(&mut self) -> Result<(), PipelineError> {
        let now = Instant::now();
        let Some(g) = self.group.as_mut() else {
            return Ok(());
        };
        if self.writing.is_some() || g.retry_at.is_some_and(|t| t > now) {
            return Ok(());
        }
        let flushed = self.dead.flush(Duration::from_secs(30));
        if let Err(e) = flushed {
            return self.failed(PipelineError::DeadLettersPending(e.to_string()));
        }
        let g = self.group.as_ref().expect("checked above");
        let table = self.writer.table();
        let mut files = Vec::new();
        if !g.written {
            for f in &g.files {
                files.push((table.object_path(&f.path)?, f.data.clone()));
            }
        }
        let mut info = BTreeMap::new();
        info.insert(
            "sohoa.keyFingerprint".to_owned(),
            self.cfg.key_fingerprint.clone(),
        );
        if let Some(group) = &self.cfg.group {
            info.insert("sohoa.group".to_owned(), group.clone());
        }
        info.insert("sohoa.ranges".to_owned(), ranges_json(&g.ranges));
        let flush = Flush {
            files: g
                .files
                .iter()
                .map(|f| DataFile {
                    path: f.path.clone(),
                    date: f.date.clone(),
                    size: f.data.len() as u64,
                    modified_ms: now_ms(),
                    stats: f.stats.clone(),
                    rows: f.rows,
                })
                .collect(),
            ranges: g
                .ranges
                .iter()
                .map(|r| SourceRange {
                    app_id: self.cfg.sources.app_id(&r.key.0, r.key.1),
                    base: r.base,
                    next: r.end + 1,
                })
                .collect(),
            info,
            operation: self.cfg.sources.operation(),
        };
        let rejects = g
            .rejects
            .iter()
            .filter_map(|(key, r)| Some((g.range(key)?, r)))
            .flat_map(|(range, r)| {
                crate::rejects::commit_writes(&range.key.0, range.key.1, range.start, range.end, r)
            })
            .collect();
        let io = FlushIo {
            writer: self.writer.clone(),
            files,
            rejects,
            flush,
            commit_seconds: self.metrics.commit_seconds.clone(),
        };
        self.writing = Some(self.rt.spawn(execute(io)));
        Ok(())
    }

    /// Settle the flush in flight if its writes are done (with `wait`, once they are).
    fn reap(&mut self, wait: bool) -> Result<(), PipelineError> {
        let Some(task) = self.writing.as_ref() else {
            return Ok(());
        };
        if !wait && !task.is_finished() {
            return Ok(());
        }
        let task = self.writing.take().expect("checked above");
        let waiting = Instant::now();
        let result = match self.rt.block_on(task) {
            Ok(written) => written,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels a task: nothing is known of the commit,
            // and the next start of the partitions reads the table.
            Err(e) => Err(PipelineError::WritesInterrupted(e.to_string())),
        };
        self.metrics
            .pipeline_seconds
            .with_label_values(&["writing"])
            .inc_by(waiting.elapsed().as_secs_f64());
        match result {
            Ok(FlushOutcome::Committed { version }) => self.finish(version),
            Ok(FlushOutcome::Fenced { lost }) => self.fenced(lost),
            Err(e) => {
                if let Some(g) = self.group.as_mut() {
                    // Files put before the failure are put again: harmless, they are
                    // nobody's until the commit names them.
                    g.written = false;
                }
                self.failed(e)?
            }
        }
        self.sync_buffered();
        Ok(())
    }

    /// The failure policy: a transient failure schedules a retry of the flush, a fatal one
    /// ends the run.
    fn failed(&mut self, e: PipelineError) -> Result<(), PipelineError> {
        self.metrics
            .flush_failures
            .with_label_values(&[e.stage()])
            .inc();
        let Some(g) = self.group.as_mut().filter(|_| e.is_transient()) else {
            return Err(e);
        };
        g.failures += 1;
        g.error = Some(e.to_string());
        let delay = self.cfg.backoff.delay(g.failures);
        g.retry_at = Some(Instant::now() + delay);
        tracing::warn!(attempt = g.failures, retry_in_ms = delay.as_millis() as u64,
            partitions = g.ranges.len(), error = %e, "flush failed; will retry");
        for r in &g.ranges {
            self.metrics
                .flush_backoff_seconds
                .with_label_values(&[&*r.key.0, &r.key.1.to_string()])
                .set(delay.as_secs_f64());
        }
        Ok(())
    }

    /// Book-keeping once the flush is committed.
    fn finish(&mut self, version: u64) {
        let Some(g) = self.group.take() else {
            return;
        };
        let m = &self.metrics;
        let mut offsets = Vec::with_capacity(g.ranges.len());
        for r in &g.ranges {
            let (t, partition) = (&*r.key.0, r.key.1);
            if g.failures > 0 {
                m.flush_backoff_seconds
                    .with_label_values(&[t, &partition.to_string()])
                    .set(0.0);
            }
            let next = r.end + 1;
            offsets.push((r.key.0.clone(), partition, next));
            if let Some(st) = self.parts.get_mut(&r.key) {
                st.durable_next = Some(next);
                if st.open.is_none() {
                    st.base = Some(next);
                }
            }
            let c = &r.counts;
            m.messages
                .with_label_values(&[t, "written"])
                .inc_by(c.messages - c.dead_lettered);
            m.messages
                .with_label_values(&[t, "dead_lettered"])
                .inc_by(c.dead_lettered);
            m.events.with_label_values(&[t, "written"]).inc_by(c.events);
            m.events
                .with_label_values(&[t, "rejected"])
                .inc_by(c.rejected_records);
            for gap in &r.gaps {
                m.count_gap(t, partition, gap);
            }
            let oldest = self.parts.get(&r.key).and_then(|st| st.oldest_ts_ms);
            m.update_lag(t, partition, |l| {
                l.durable_next = Some(next);
                l.oldest_pending_ms = oldest;
                l.last_progress_ms = now_ms();
            });
            self.totals.messages += c.messages;
            self.totals.events += c.events;
            self.totals.dead_lettered += c.dead_lettered;
            self.totals.rejected_records += c.rejected_records;
        }
        m.files_written.inc_by(g.files.len() as u64);
        m.bytes_written
            .inc_by(g.files.iter().map(|f| f.data.len() as u64).sum());
        m.flush_seconds.observe(g.started.elapsed().as_secs_f64());
        m.last_flush_timestamp.set(now_ms() / 1000);
        m.table_version.set(version as i64);
        self.totals.files += g.files.len() as u64;
        tracing::debug!(
            version,
            partitions = g.ranges.len(),
            files = g.files.len(),
            "flushed"
        );
        self.release(g.bytes);
        self.committer.commit(&offsets);
    }

    /// Another writer committed offsets of partitions of this flush: a replica the group
    /// gave them to while this one was still flushing, or one that started elsewhere.
    /// Nothing of this flush is in the table. Drop it and everything buffered behind it
    /// (the buffers mix partitions), and resume every partition from the table.
    fn fenced(&mut self, lost: Vec<(String, Option<i64>)>) {
        self.metrics
            .flush_failures
            .with_label_values(&["fenced"])
            .inc();
        tracing::warn!(?lost, "another writer committed offsets of this flush first; dropping it and resuming from the table");
        // Where each partition's dropped records began, for a partition the table records
        // nothing of.
        let mut first: HashMap<PartKey, i64> = HashMap::new();
        for (key, st) in &self.parts {
            if let Some((start, _)) = st.open {
                first.insert(key.clone(), start);
            }
        }
        if let Some(g) = &self.group {
            for r in &g.ranges {
                first.insert(r.key.clone(), r.start);
            }
        }
        self.drop_buffers("fenced");
        let keys: Vec<PartKey> = self.parts.keys().cloned().collect();
        for key in keys {
            if self
                .committer
                .rewind(&key.0, key.1, first.get(&key).copied())
            {
                if let Some(st) = self.parts.get_mut(&key) {
                    *st = PartState::new(key.0.clone(), key.1, None);
                    st.fenced = true;
                }
            }
        }
    }

    /// Forget the flush taken out and the open buffers: their offsets were not committed,
    /// and whoever consumes them next rejects their bad records again.
    fn drop_buffers(&mut self, cause: &'static str) {
        let mut freed = self.bytes;
        self.days.clear();
        self.rows = 0;
        self.bytes = 0;
        self.largest_date = 0;
        self.oldest = None;
        let mut sent: HashMap<PartKey, u64> = HashMap::new();
        if let Some(g) = self.group.take() {
            freed += g.bytes;
            for r in g.ranges {
                *sent.entry(r.key).or_default() += r.counts.dead_lettered;
            }
        }
        for (key, st) in self.parts.iter_mut() {
            if st.open.take().is_some() {
                *sent.entry(key.clone()).or_default() += st.counts.dead_lettered;
            }
            st.counts = Counts::default();
            st.gaps.clear();
            st.oldest_ts_ms = None;
            st.base = st.durable_next;
        }
        for (key, n) in sent {
            self.dead.dropped(&key.0, key.1, n, cause);
        }
        self.release(freed);
    }
}

/// The ranges of a flush, for the commit's metadata: what the aggregator's data-quality
/// table reconciles against.
fn ranges_json(ranges: &[GroupRange]) -> String {
    let list: Vec<serde_json::Value> = ranges
        .iter()
        .map(|r| {
            serde_json::json!({
                "topic": &*r.key.0,
                "partition": r.key.1,
                "start": r.start,
                "end": r.end,
                "messages": r.counts.messages,
                "events": r.counts.events,
                "dead_lettered": r.counts.dead_lettered,
                "dead_letters_by_reason": r.counts.dead_letters_by_reason,
                "events_by_date": r
                    .counts
                    .by_day
                    .iter()
                    .map(|(d, n)| (day_string(*d), *n))
                    .collect::<BTreeMap<_, _>>(),
                "gaps": r.gaps,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// The offsets skipped between `expected` and `first`, the record that came instead, if
/// the source had deleted them. Offsets the source still holds but that hold no message
/// (transaction markers, compacted records) are skipped too, and are no loss: only what
/// lies below the source's oldest offset is. That offset is the source's latest knowledge,
/// from the read that delivered `first` or a later one: no round trip per skip, and if
/// retention moved on since, the gap still stops before `first`.
fn retention_gap(
    committer: &dyn OffsetCommitter,
    topic: &str,
    partition: i32,
    expected: i64,
    first: i64,
) -> Option<OffsetGap> {
    let log_start = committer.log_start(topic, partition);
    let gap = OffsetGap::deleted(expected, first, log_start?)?;
    tracing::error!(
        topic,
        partition,
        from = gap.from,
        to = gap.to,
        offsets = gap.offsets(),
        resumed_at = first,
        "offsets deleted by kafka retention before they were ingested; resuming at the oldest \
         offset the broker holds"
    );
    Some(gap)
}

/// Decode a batch on the worker threads, in order. `None` for the records not `wanted`.
fn decode_batch<'a>(
    workers: Option<&rayon::ThreadPool>,
    decoders: &Decoders,
    batch: &'a [Record],
    wanted: &[bool],
) -> Vec<Option<DecodeOutput<'a>>> {
    let decode = |(r, want): (&'a Record, &bool)| {
        let decoder = decoders.get(&r.topic).filter(|_| *want)?;
        let mut out = DecodeOutput::default();
        // No input may stop a partition: a decoder bug that panics on some bytes would
        // otherwise fail this message on every restart. The message goes to the dead
        // letters, whole (none of its events are kept), with the panic as its reason.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoder.decode(r.payload(), &mut out);
        }));
        if let Err(panic) = caught {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            tracing::error!(topic = %r.topic, partition = r.partition, offset = r.offset, panic = %what, "decoder panicked; dead-lettering the message");
            out = DecodeOutput::default();
            out.rejects.push(sohoa_schemas::DecodeError::internal(what));
        }
        Some(out)
    };
    // Below this a hand-off to another thread costs more than it saves.
    const MIN_PER_THREAD: usize = 32;
    let Some(workers) = workers.filter(|_| batch.len() >= 2 * MIN_PER_THREAD) else {
        return batch.iter().zip(wanted).map(decode).collect();
    };
    workers.install(|| {
        batch
            .par_iter()
            .zip(wanted)
            .with_min_len(MIN_PER_THREAD)
            .map(decode)
            .collect()
    })
}

/// One date's file of a flush.
struct Encoded {
    date: String,
    rows: u64,
    data: Bytes,
    /// The bytes the file's buffer holds: its capacity.
    capacity: usize,
    /// The statistics the log keeps of the file.
    stats: StructArray,
}

/// Encode each date's buffers into its file, spreading the dates over the worker threads.
/// A date's builders are dropped once its file is encoded, so a flush never holds every
/// date both as builders and as sorted rows.
fn encode_all(
    workers: Option<&rayon::ThreadPool>,
    format: &FileFormat,
    stats: &StatsPlan,
    days: Vec<(String, EventBatchBuilder)>,
) -> Vec<Result<Encoded, PipelineError>> {
    let encode = |(date, mut builder): (String, EventBatchBuilder)| {
        let rows = builder.len() as u64;
        let batch = builder.finish().map_err(WriteError::from)?;
        drop(builder);
        let stats = stats
            .collect(std::slice::from_ref(&batch))
            .map_err(|e| PipelineError::Stats(e.to_string()))?;
        let (data, capacity) = format.encode_measured(&batch)?;
        Ok(Encoded {
            date,
            rows,
            data,
            capacity,
            stats,
        })
    };
    match workers {
        Some(w) => w.install(|| days.into_par_iter().map(encode).collect()),
        None => days.into_iter().map(encode).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sohoa_schemas::DecoderKind;

    /// A decoder with a bug: it panics on payloads starting with `!`.
    #[derive(Debug)]
    struct Buggy;

    impl Decoder for Buggy {
        fn format(&self) -> DecoderKind {
            DecoderKind::Canonical
        }
        fn decode<'a>(&self, bytes: &'a [u8], out: &mut DecodeOutput<'a>) {
            assert!(!bytes.starts_with(b"!"), "bug on byte {}", bytes[0]);
            out.warnings.add(sohoa_schemas::Warning::UnknownField);
        }
    }

    fn record(offset: i64, payload: &[u8]) -> Record {
        Record {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp_ms: None,
            body: Body::Owned {
                key: None,
                payload: payload.to_vec(),
            },
        }
    }

    #[test]
    fn a_decoder_panic_becomes_a_dead_letter_and_order_is_kept_across_threads() {
        let mut decoders = Decoders::default();
        decoders.insert(Arc::from("t"), Box::new(Buggy));
        let batch: Vec<Record> = (0..200)
            .map(|i| record(i, if i % 7 == 3 { b"!x" } else { b"{}" }))
            .collect();
        let mut wanted = vec![true; batch.len()];
        wanted[10] = false;
        for threads in [1, 2, 4] {
            let workers = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool");
            let outs = decode_batch(Some(&workers), &decoders, &batch, &wanted);
            assert_eq!(outs.len(), 200);
            for (i, out) in outs.iter().enumerate() {
                match out {
                    None => assert_eq!(i, 10),
                    Some(out) if i % 7 == 3 => {
                        assert_eq!(out.rejects.len(), 1, "record {i}");
                        assert_eq!(out.rejects[0].kind(), "internal");
                        assert!(out.rejects[0].to_string().contains("bug on byte 33"));
                        assert_eq!(out.warnings.get(sohoa_schemas::Warning::UnknownField), 0);
                    }
                    Some(out) => {
                        assert!(out.rejects.is_empty(), "record {i}");
                        assert_eq!(out.warnings.get(sohoa_schemas::Warning::UnknownField), 1);
                    }
                }
            }
        }
    }

    /// Dead letters a test does not expect.
    struct NoDeadLetters;

    impl DeadLetters for NoDeadLetters {
        fn send(
            &mut self,
            record: &Record,
            rejects: &[sohoa_schemas::DecodeError],
        ) -> Result<(), DeadLetterError> {
            panic!("offset {} dead-lettered: {rejects:?}", record.offset);
        }
        fn flush(&mut self, _: Duration) -> Result<(), DeadLetterError> {
            Ok(())
        }
        fn dropped(&mut self, _: &str, _: i32, _: u64, _: &'static str) {}
    }

    fn test_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// An events table in `dir`.
    fn table_in(dir: &std::path::Path) -> (sohoa_storage::Table, Writer) {
        let table = sohoa_storage::Table::new(
            Arc::new(object_store::local::LocalFileSystem::new()),
            url::Url::from_directory_path(dir.join("events")).unwrap(),
        )
        .unwrap();
        let snapshot = table
            .create_if_absent(&sohoa_schemas::events_schema(), crate::STATS_COLUMNS, &[])
            .unwrap();
        let writer = Writer::new(table.clone(), snapshot, 100);
        (table, writer)
    }

    fn default_config() -> sohoa_runtime::Config {
        sohoa_runtime::Config::load(None).unwrap()
    }

    /// A pipeline on topic `t` (the national sync format) configured by `cfg`, committing
    /// through `writer`.
    fn dvcqg_pipeline(
        cfg: &sohoa_runtime::Config,
        rt: &tokio::runtime::Runtime,
        writer: Writer,
        committer: Box<dyn OffsetCommitter>,
        metrics: Arc<Metrics>,
        shared: Shared,
    ) -> Pipeline {
        let mut decoders = Decoders::default();
        let pseudonymizer =
            Arc::new(sohoa_schemas::Pseudonymizer::new(b"test-key-0123456789").unwrap());
        let ctx = sohoa_schemas::DecoderContext {
            source_system: Arc::from("dvcqg"),
            pseudonymizer,
        };
        decoders.insert(
            Arc::from("t"),
            sohoa_schemas::build_decoder(DecoderKind::Dvcqg, ctx),
        );
        Pipeline::new(
            PipelineConfig::new(cfg, "0123abcd".into(), Sources::Kafka),
            decoders,
            writer,
            rt.handle().clone(),
            Box::new(NoDeadLetters),
            committer,
            metrics,
            shared,
        )
        .unwrap()
    }

    const PAYLOAD: &[u8] = include_bytes!("../../../tests/fixtures/dvcqg/samples-envelope.json");

    /// The level is published once per batch; it must still count every buffered row, and
    /// come back to nothing once the partitions are written out.
    #[test]
    fn the_level_counts_what_each_batch_leaves_buffered_and_returns_to_zero() {
        let rt = test_runtime();
        let shared = Shared::new(1).unwrap();
        let metrics = Metrics::new();
        let dir = tempfile::tempdir().unwrap();
        let (table, writer) = table_in(dir.path());
        let pipeline = dvcqg_pipeline(
            &default_config(),
            &rt,
            writer,
            Box::new(NoCommit),
            metrics.clone(),
            shared.clone(),
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let worker = std::thread::spawn(move || pipeline.run(rx));
        let t: Arc<str> = Arc::from("t");
        tx.send(Input::Assigned(vec![
            (t.clone(), 0, None),
            (t.clone(), 1, None),
        ]))
        .unwrap();
        let payload = PAYLOAD;
        let mut batch = Vec::new();
        for offset in 0..40 {
            let mut r = record(offset / 2, payload);
            r.partition = (offset % 2) as i32;
            batch.push(r);
        }
        // As the poll thread does, before the pipeline can see the batch.
        shared
            .buffered
            .fetch_add(payload.len() * 40, Ordering::SeqCst);
        tx.send(Input::Records(batch)).unwrap();
        // The batch's rows are counted as held before its bytes leave the in-flight count.
        let deadline = Instant::now() + Duration::from_secs(30);
        while shared.buffered.load(Ordering::SeqCst) != 0 {
            assert!(Instant::now() < deadline, "the batch was not taken");
            std::thread::sleep(Duration::from_millis(1));
        }
        let all = shared.held.load(Ordering::SeqCst);
        assert!(all > 40 * 1000, "{all} bytes held for 40 messages");

        // A revocation is answered after the batch before it. A flush is one commit of
        // every buffer, so revoking partition 1 writes out partition 0's rows too.
        let revoke = |p: i32| {
            let (ack, acked) = std::sync::mpsc::sync_channel(1);
            tx.send(Input::Revoked(vec![(t.clone(), p)], ack)).unwrap();
            acked.recv_timeout(Duration::from_secs(30)).unwrap();
        };
        revoke(1);
        assert_eq!(shared.buffered.load(Ordering::SeqCst), 0);
        assert_eq!(shared.level(), 0);
        assert_eq!(metrics.buffered_bytes.get(), 0);
        let latest = table.latest().unwrap();
        assert_eq!(latest.version(), 1, "one commit for both partitions");
        for p in [0, 1] {
            let id = Sources::Kafka.app_id("t", p);
            assert_eq!(table.app_version(&latest, &id).unwrap(), Some(20));
        }
        revoke(0);
        assert_eq!(shared.level(), 0);

        tx.send(Input::Drain(Instant::now() + Duration::from_secs(10)))
            .unwrap();
        let totals = worker.join().unwrap().unwrap();
        assert_eq!(totals.messages, 40);
        assert_eq!(shared.level(), 0);
    }

    /// One date's buffer past `flush.date_max_bytes` flushes the shard, though its
    /// buffers are far from `flush.max_bytes`, `max_rows` and `max_age_ms`.
    #[test]
    fn a_full_date_flushes_the_shard_before_the_rest_is_full() {
        let rt = test_runtime();
        let shared = Shared::new(1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (table, writer) = table_in(dir.path());
        let mut cfg = default_config();
        cfg.flush.date_max_bytes = 64 << 10;
        cfg.flush.max_age_ms = 3_600_000;
        let pipeline = dvcqg_pipeline(
            &cfg,
            &rt,
            writer,
            Box::new(NoCommit),
            Metrics::new(),
            shared.clone(),
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let worker = std::thread::spawn(move || pipeline.run(rx));
        let t: Arc<str> = Arc::from("t");
        tx.send(Input::Assigned(vec![(t.clone(), 0, None)]))
            .unwrap();
        let batch: Vec<Record> = (0..200).map(|offset| record(offset, PAYLOAD)).collect();
        shared
            .buffered
            .fetch_add(PAYLOAD.len() * 200, Ordering::SeqCst);
        tx.send(Input::Records(batch)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while table.latest().unwrap().version() == 0 {
            assert!(Instant::now() < deadline, "no flush before the drain");
            std::thread::sleep(Duration::from_millis(20));
        }
        tx.send(Input::Drain(Instant::now() + Duration::from_secs(10)))
            .unwrap();
        assert_eq!(worker.join().unwrap().unwrap().messages, 200);
        let latest = table.latest().unwrap();
        let id = Sources::Kafka.app_id("t", 0);
        assert_eq!(table.app_version(&latest, &id).unwrap(), Some(200));
    }

    #[test]
    fn a_gap_is_what_lies_below_the_log_start_and_never_an_ordinary_hole() {
        // The table expected 10; the broker holds 50 on, and 50 came.
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

    /// A source whose oldest offset held is fixed per partition.
    struct LogStarts(Vec<(i32, i64)>);

    impl OffsetCommitter for LogStarts {
        fn commit(&self, _: &[(Arc<str>, i32, i64)]) {}
        fn rewind(&self, _: &str, _: i32, _: Option<i64>) -> bool {
            false
        }
        fn log_start(&self, _: &str, partition: i32) -> Option<i64> {
            self.0
                .iter()
                .find(|(p, _)| *p == partition)
                .map(|(_, o)| *o)
        }
    }

    /// Partition 0 expected 10 and got 50 with the broker holding 50 on (retention): a gap.
    /// Partition 1 expected 10 and got 12 with 10 still held (a transaction marker): none.
    /// Partition 2 had nothing in the table (a first start): none, wherever it starts. Each
    /// partition's range still starts where the table stopped.
    #[test]
    fn offsets_deleted_before_they_were_consumed_are_recorded_as_a_gap_in_the_next_commit() {
        let rt = test_runtime();
        let dir = tempfile::tempdir().unwrap();
        let (table, writer) = table_in(dir.path());
        // The table already holds partitions 0 and 1 up to offset 10.
        let seeded = sohoa_storage::events::Flush {
            ranges: vec![
                SourceRange {
                    app_id: Sources::Kafka.app_id("t", 0),
                    base: None,
                    next: 10,
                },
                SourceRange {
                    app_id: Sources::Kafka.app_id("t", 1),
                    base: None,
                    next: 10,
                },
            ],
            ..Default::default()
        };
        writer.commit(&seeded).unwrap();
        let metrics = Metrics::new();
        let shared = Shared::new(1).unwrap();
        let pipeline = dvcqg_pipeline(
            &default_config(),
            &rt,
            writer,
            Box::new(LogStarts(vec![(0, 50), (1, 0), (2, 100)])),
            metrics.clone(),
            shared.clone(),
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let worker = std::thread::spawn(move || pipeline.run(rx));
        let t: Arc<str> = Arc::from("t");
        tx.send(Input::Assigned(vec![
            (t.clone(), 0, Some(10)),
            (t.clone(), 1, Some(10)),
            (t.clone(), 2, None),
        ]))
        .unwrap();
        let mut batch = Vec::new();
        for (partition, offsets) in [(0, 50..55), (1, 12..15), (2, 100..103)] {
            for offset in offsets {
                let mut r = record(offset, PAYLOAD);
                r.partition = partition;
                batch.push(r);
            }
        }
        // As the poll thread does, before the pipeline can see the batch.
        let bytes = batch.iter().map(|r| r.payload().len()).sum();
        shared.buffered.fetch_add(bytes, Ordering::SeqCst);
        tx.send(Input::Records(batch)).unwrap();
        tx.send(Input::Drain(Instant::now() + Duration::from_secs(10)))
            .unwrap();
        worker.join().unwrap().unwrap();

        let log = std::fs::read_to_string(
            dir.path()
                .join("events/_delta_log/00000000000000000002.json"),
        )
        .unwrap();
        let info = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find_map(|a| a.get("commitInfo").cloned())
            .unwrap();
        let ranges: Vec<serde_json::Value> = serde_json::from_str(
            info["operationParameters"]["sohoa.ranges"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let got: Vec<_> = ranges
            .iter()
            .map(|r| {
                (
                    r["partition"].as_i64().unwrap(),
                    r["start"].as_i64().unwrap(),
                    r["end"].as_i64().unwrap(),
                    r["gaps"].to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, 10, 54, r#"[{"from":10,"to":49}]"#.to_owned()),
                (1, 10, 14, "[]".to_owned()),
                (2, 100, 102, "[]".to_owned()),
            ]
        );
        let snapshot = table.latest().unwrap();
        for (p, next) in [(0, 55), (1, 15), (2, 103)] {
            let id = Sources::Kafka.app_id("t", p);
            assert_eq!(table.app_version(&snapshot, &id).unwrap(), Some(next));
        }
        let count = |c: &prometheus::IntCounterVec, p: &str| c.with_label_values(&["t", p]).get();
        assert_eq!(count(&metrics.offset_gaps, "0"), 1);
        assert_eq!(count(&metrics.offset_gap_messages, "0"), 40);
        for p in ["1", "2"] {
            assert_eq!(count(&metrics.offset_gaps, p), 0);
            assert_eq!(count(&metrics.offset_gap_messages, p), 0);
        }
    }
}
