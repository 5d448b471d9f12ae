//! The pipeline: decode → normalize → buffer per source partition and date → flush through
//! the exactly-once protocol (`checkpoint`). Source-agnostic: Kafka and backfill files
//! feed it the same [`Input`]s.
//!
//! It runs on its own thread, one per shard (`shard`), each owning a share of the
//! partitions. The source thread only hands messages on; decoding and encoding
//! happen here, and storage writes start here, so a slow flush applies backpressure
//! instead of stalling the consumer's poll loop. The writes run on the async runtime while
//! this thread goes on decoding: they are mostly latency (fsyncs), and waiting on them kept
//! this thread idle for a sixth of its time. A partition has at most one flush in flight;
//! its offsets reach Kafka once the pipeline has settled it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rayon::prelude::*;
use rustc_hash::FxBuildHasher;
use sohoa_runtime::config::FlushConfig;
use sohoa_schemas::normalize::vn_day;
use sohoa_schemas::{DecodeOutput, Decoder, EventBatchBuilder, Lineage};

use crate::backoff::Backoff;
use crate::checkpoint::{
    CheckpointError, Checkpointer, CommittedFile, Marker, OffsetGap, PartitionPaths,
};
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
    /// Still in librdkafka's fetch buffer. Copying each payload out on the poll thread
    /// cost a tenth of a replica's CPU: cold reads of the fetch buffer, and fresh pages
    /// for the copies.
    Fetched(crate::source::Fetched),
}

impl Record {
    pub fn key(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Owned { key, .. } => key.as_deref(),
            Body::Fetched(m) => m.key(),
        }
    }

    pub fn payload(&self) -> &[u8] {
        match &self.body {
            Body::Owned { payload, .. } => payload,
            Body::Fetched(m) => m.payload(),
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
    /// Another writer committed this partition's next range: re-read storage, resume after
    /// it, and announce that with [`Input::Rewound`]. `false` if the source cannot.
    fn rewind(&self, topic: &str, partition: i32) -> bool;
    /// The oldest offset the source still holds for the partition, as of its latest read:
    /// what tells offsets deleted by retention from offsets that never held a message.
    /// `None` when unknown, or for sources that delete nothing.
    fn log_start(&self, topic: &str, partition: i32) -> Option<i64>;
}

/// For sources with nothing to commit to (files).
pub struct NoCommit;

impl OffsetCommitter for NoCommit {
    fn commit(&self, _: &[(Arc<str>, i32, i64)]) {}
    fn rewind(&self, _: &str, _: i32) -> bool {
        false
    }
    fn log_start(&self, _: &str, _: i32) -> Option<i64> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("encoding: {0}")]
    Write(#[from] WriteError),
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
            PipelineError::Checkpoint(e) => e.is_transient(),
            PipelineError::DeadLetter(_) | PipelineError::DeadLettersPending(_) => true,
            _ => false,
        }
    }

    fn stage(&self) -> &'static str {
        match self {
            PipelineError::Checkpoint(CheckpointError::Fenced { .. }) => "fenced",
            PipelineError::Checkpoint(_) | PipelineError::WritesInterrupted(_) => "storage",
            PipelineError::Write(_) => "encode",
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

/// A flush whose files are encoded and whose commit is not done yet.
struct Pending {
    start: i64,
    end: i64,
    files: Vec<(String, Bytes, u64)>,
    messages: u64,
    events: u64,
    dead_lettered: u64,
    rejected_records: u64,
    dead_letters_by_reason: BTreeMap<&'static str, u64>,
    bytes: usize,
    started: Instant,
    /// Its marker is written (the commit point); a failed publish is what is left.
    committed: bool,
    /// Rejects committed with the range, for sinks that keep them so (backfills).
    rejects: Option<CommitRejects>,
    /// Offsets of the range the source had deleted before they were consumed.
    gaps: Vec<OffsetGap>,
}

/// A partition's buffer taken out for encoding, before it becomes a [`Pending`].
struct Unencoded {
    key: PartKey,
    start: i64,
    end: i64,
    batches: Vec<(String, arrow::record_batch::RecordBatch, u64)>,
    started: Instant,
    rejects: Option<CommitRejects>,
}

struct PartState {
    topic: Arc<str>,
    partition: i32,
    paths: PartitionPaths,
    /// First offset not yet durable; `None` until known.
    durable_next: Option<i64>,
    /// Offsets buffered and not yet in a pending flush.
    open: Option<(i64, i64)>,
    days: BTreeMap<i64, EventBatchBuilder>,
    rows: usize,
    bytes: usize,
    oldest: Option<Instant>,
    oldest_ts_ms: Option<i64>,
    messages: u64,
    events: u64,
    dead_lettered: u64,
    rejected_records: u64,
    dead_letters_by_reason: BTreeMap<&'static str, u64>,
    pending: Option<Pending>,
    /// Its pending flush is being written in the background: not to be started again.
    writing: bool,
    /// A failed flush is not tried again before this (see `backoff`).
    retry_at: Option<Instant>,
    /// Failed flushes in a row: the step of the backoff.
    failures: u32,
    /// Lost a commit race: records are dropped until the source says where it resumed.
    fenced: bool,
    /// Offsets of the open range that the source had deleted before they were consumed.
    gaps: Vec<OffsetGap>,
}

impl PartState {
    fn new(topic: Arc<str>, partition: i32, durable_next: Option<i64>) -> Self {
        PartState {
            paths: PartitionPaths::new(&topic, partition),
            topic,
            partition,
            durable_next,
            open: None,
            days: BTreeMap::new(),
            rows: 0,
            bytes: 0,
            oldest: None,
            oldest_ts_ms: None,
            messages: 0,
            events: 0,
            dead_lettered: 0,
            rejected_records: 0,
            dead_letters_by_reason: BTreeMap::new(),
            pending: None,
            writing: false,
            retry_at: None,
            failures: 0,
            fenced: false,
            gaps: Vec::new(),
        }
    }

    /// The first offset this partition has not seen: a record below it is a redelivery.
    fn next_expected(&self) -> Option<i64> {
        match (self.open, &self.pending) {
            (Some((_, end)), _) => Some(end + 1),
            (None, Some(p)) => Some(p.end + 1),
            (None, None) => self.durable_next,
        }
    }

    /// Redeliveries (after a restart, a rebalance or a rewind) and a fenced partition's
    /// stale records are already, or about to be, someone's durable range.
    fn skips(&self, offset: i64) -> bool {
        self.fenced || self.next_expected().is_some_and(|n| offset < n)
    }

    fn buffered_bytes(&self) -> usize {
        self.bytes + self.pending.as_ref().map_or(0, |p| p.bytes)
    }

    /// Dead letters sent for records not yet durable: sent again if those records are
    /// consumed again.
    fn unflushed_dead_letters(&self) -> u64 {
        self.dead_lettered + self.pending.as_ref().map_or(0, |p| p.dead_lettered)
    }

    /// Holds something not yet durable: a pending flush, or an open buffer.
    fn holds(&self) -> bool {
        self.pending.is_some() || self.open.is_some()
    }

    /// Not waiting out a backoff at `now`.
    fn due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| t <= now)
    }
}

/// A source partition: topic and partition number.
type PartKey = (Arc<str>, i32);

/// The decoder of each topic. Both maps are looked up for every message (five hashes of
/// the topic), so they hash with Fx rather than SipHash: the keys are the configured topics
/// and the partitions the broker assigns, not input an attacker chooses.
pub type Decoders = HashMap<Arc<str>, Box<dyn Decoder>, FxBuildHasher>;

/// How many partitions' storage writes run at once, across all flushes in flight.
const FLUSH_CONCURRENCY: usize = 16;

/// A flush's storage writes, started in the background, and the partitions they are for.
struct Writing {
    keys: Vec<PartKey>,
    task: tokio::task::JoinHandle<Written>,
}

/// The outcome of a [`Writing`], one per job, in the jobs' order.
struct Written {
    jobs: Vec<(PartKey, FlushIo)>,
    outcomes: Vec<Result<(), FlushFailure>>,
}

/// Results of flushes, by partition, for the failure policy.
type FlushResults = Vec<(PartKey, Result<(), PipelineError>)>;

/// The storage writes that commit one partition's pending flush, owned so that many can
/// run concurrently.
struct FlushIo {
    paths: PartitionPaths,
    marker: Marker,
    staged: Vec<(object_store::path::Path, Bytes)>,
    /// Raw rejected lines, written to their own store before the commit.
    raw_rejects: Option<(
        Arc<dyn object_store::ObjectStore>,
        object_store::path::Path,
        Bytes,
    )>,
    /// An earlier attempt wrote the marker: only the publish is left to do.
    committed: bool,
}

/// How far a failed flush got: past its commit point or not.
struct FlushFailure {
    committed: bool,
    error: CheckpointError,
}

/// Steps 1, 3 and 4 of the protocol (`checkpoint`); step 2, the dead letters, is done
/// for all partitions before any of them commits.
async fn execute(cp: &Checkpointer, io: &FlushIo) -> Result<(), FlushFailure> {
    let before = |error| FlushFailure {
        committed: false,
        error,
    };
    if !io.committed {
        for (path, data) in &io.staged {
            cp.stage(path, data.clone()).await.map_err(before)?;
            crate::crashpoint::hit("after_stage_file");
        }
        if let Some((store, path, data)) = &io.raw_rejects {
            use object_store::ObjectStoreExt;
            // Overwritten by a re-run of the range; the recovery of a backfill deletes
            // any a crash left of a range that was not committed.
            store
                .put(path, object_store::PutPayload::from_bytes(data.clone()))
                .await
                .map_err(|e| before(e.into()))?;
        }
        cp.commit(&io.paths, &io.marker).await.map_err(before)?;
        crate::crashpoint::hit("after_commit");
    }
    // A publish that fails is retried as a publish alone: staging and committing again
    // would find our own marker and take it for another writer's.
    cp.publish(&io.marker).await.map_err(|error| FlushFailure {
        committed: true,
        error,
    })?;
    crate::crashpoint::hit("after_publish");
    Ok(())
}

/// Every job's storage writes, at most [`FLUSH_CONCURRENCY`] at a time across all flushes.
async fn write_all(
    cp: Checkpointer,
    slots: Arc<tokio::sync::Semaphore>,
    jobs: Vec<(PartKey, FlushIo)>,
) -> Written {
    let outcomes =
        futures::future::join_all(jobs.iter().map(|(_, io)| write_one(&cp, &slots, io))).await;
    Written { jobs, outcomes }
}

async fn write_one(
    cp: &Checkpointer,
    slots: &tokio::sync::Semaphore,
    io: &FlushIo,
) -> Result<(), FlushFailure> {
    // Never closed, so a permit always comes.
    let _slot = slots.acquire().await;
    execute(cp, io).await
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub flush: FlushConfig,
    /// Cap on buffered bytes across partitions.
    pub buffer_max_bytes: usize,
    /// When failed flushes are tried again.
    pub backoff: Backoff,
    /// The fingerprint of the pseudonym key, written into every file.
    pub key_fingerprint: String,
}

impl PipelineConfig {
    /// The pipeline's part of the configuration; `key_fingerprint` names the pseudonym
    /// key of the decoders.
    pub fn new(cfg: &sohoa_runtime::Config, key_fingerprint: String) -> Self {
        PipelineConfig {
            flush: cfg.flush.clone(),
            buffer_max_bytes: cfg.buffer.max_bytes,
            backoff: Backoff {
                initial: Duration::from_millis(cfg.flush.retry_initial_ms),
                max: Duration::from_millis(cfg.flush.retry_max_ms),
            },
            key_fingerprint,
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
    checkpointer: Checkpointer,
    rt: tokio::runtime::Handle,
    format: FileFormat,
    dead: Box<dyn DeadLetters>,
    committer: Box<dyn OffsetCommitter>,
    metrics: Arc<Metrics>,
    shared: Shared,
    /// Bytes this shard holds, decoded or encoded: its part of `shared.held`.
    own_bytes: usize,
    /// What this shard has added to `shared.held`: `own_bytes` as of the last
    /// [`Pipeline::publish`].
    published: usize,
    /// Partitions this shard has counted in the assigned-partitions gauge.
    counted: usize,
    totals: Totals,
    last_check: Instant,
    /// Offsets made durable by the flushes just settled, committed to Kafka together.
    to_commit: Vec<(Arc<str>, i32, i64)>,
    /// Storage writes in flight. They run on `rt`, which must be a multi-threaded runtime.
    writing: Vec<Writing>,
    /// Bounds the storage writes in flight to [`FLUSH_CONCURRENCY`].
    write_slots: Arc<tokio::sync::Semaphore>,
    /// A fatal flush failure found while settling another partition's flush, for the run
    /// loop to return.
    fatal: Option<PipelineError>,
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
        checkpointer: Checkpointer,
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
        Ok(Pipeline {
            cfg,
            decoders,
            parts: HashMap::default(),
            checkpointer,
            rt,
            format,
            dead,
            committer,
            metrics,
            shared,
            own_bytes: 0,
            published: 0,
            counted: 0,
            totals: Totals::default(),
            last_check: Instant::now(),
            to_commit: Vec::new(),
            writing: Vec::new(),
            write_slots: Arc::new(tokio::sync::Semaphore::new(FLUSH_CONCURRENCY)),
            fatal: None,
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
            let timeout = if self.writing.is_empty() { 100 } else { 10 };
            // With the buffer near its cap and flushes in flight, the source holds back
            // until they free memory: the wait is for storage, not for messages.
            let held =
                !self.writing.is_empty() && self.shared.level() > self.cfg.buffer_max_bytes * 3 / 4;
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
                    let deadline = Instant::now() + Duration::from_secs(10);
                    for (topic, partition) in parts {
                        let key = (topic.clone(), partition);
                        if let Err(e) = self.flush_until(&key, deadline) {
                            // Dropping is safe: storage did not commit these offsets, so
                            // the next owner consumes them again.
                            tracing::warn!(%topic, partition, error = %e, "revoked partition dropped without flushing");
                        }
                        if let Some(st) = self.parts.remove(&key) {
                            self.release(st.buffered_bytes());
                            // Whoever consumes these records next rejects them again.
                            self.dead.dropped(
                                &topic,
                                partition,
                                st.unflushed_dead_letters(),
                                "revoked",
                            );
                        }
                        self.metrics.forget_partition(&topic, partition);
                    }
                    self.sync_buffered();
                    self.sync_assigned();
                    let _ = ack.send(());
                }
                Ok(Input::Rewound(topic, partition, next)) => {
                    let key = (topic.clone(), partition);
                    if self.parts.get(&key).is_some_and(|st| st.fenced) {
                        tracing::info!(%topic, partition, next, "resuming after the winning writer's range");
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
            } else if !self.writing.is_empty() {
                let settled = self.reap(false);
                self.absorb(settled);
            }
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
        }
    }

    /// Decoding is most of the work and each message decodes on its own, so a batch is
    /// decoded on several threads; buffering stays on this thread, in source order.
    fn on_batch(&mut self, batch: &[Record]) -> Result<(), PipelineError> {
        let mut wanted = Vec::with_capacity(batch.len());
        for r in batch {
            let st = self.parts.get(&(self.own_topic(&r.topic)?, r.partition));
            wanted.push(st.is_none_or(|st| !st.skips(r.offset)));
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
            // A source that does not announce assignments (files) starts from storage.
            self.parts.insert(
                key.clone(),
                PartState::new(key.0.clone(), r.partition, None),
            );
        }
        let st = self.parts.get_mut(&key).expect("inserted above");
        // Checked again: a flush earlier in the batch may have fenced the partition.
        if st.skips(r.offset) {
            self.totals.skipped_durable += 1;
            return Ok(());
        }
        // Past the offset expected next (from storage, or after the last record): the
        // skipped offsets are in this range, which is where a gap is recorded. With nothing
        // in storage yet (a first start) nothing is expected, and nothing can be missed.
        if let Some(expected) = st.next_expected().filter(|&n| r.offset > n) {
            st.gaps.extend(retention_gap(
                &*self.committer,
                &r.topic,
                r.partition,
                expected,
                r.offset,
            ));
        }
        let lineage = Lineage {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            ingested_at,
            // Backfill files have no broker time: their arrival is the ingest.
            arrived_at: r.timestamp_ms.map_or(ingested_at, |ms| ms * 1000),
        };
        let before = st.bytes;
        for e in &out.events {
            let day = vn_day(e.event_time);
            st.days.entry(day).or_default().append(e, &lineage);
        }
        st.bytes = st
            .days
            .values()
            .map(EventBatchBuilder::estimated_bytes)
            .sum();
        st.rows += out.events.len();
        st.events += out.events.len() as u64;
        st.messages += 1;
        if !out.rejects.is_empty() {
            self.dead.send(r, &out.rejects)?;
            st.dead_lettered += 1;
            st.rejected_records += out.rejects.len() as u64;
            for rej in &out.rejects {
                *st.dead_letters_by_reason.entry(rej.kind()).or_default() += 1;
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
            // A range starts where the one before it ends, durable or not yet: starting at
            // `durable_next` under a pending flush (being written, or retried) would claim
            // that flush's range again, and its own marker would fence it.
            None => (
                st.pending
                    .as_ref()
                    .map(|p| p.end + 1)
                    .or(st.durable_next)
                    .unwrap_or(r.offset),
                r.offset,
            ),
            Some((s, _)) => (s, r.offset),
        });
        if st.oldest.is_none() {
            st.oldest = Some(Instant::now());
            st.oldest_ts_ms = Some(r.timestamp_ms.unwrap_or(ingested_at / 1000));
            let ts = st.oldest_ts_ms;
            self.metrics
                .update_lag(&r.topic, r.partition, |l| l.oldest_pending_ms = ts);
        }
        let (now, full) = (
            st.bytes,
            st.rows >= self.cfg.flush.max_rows || st.bytes >= self.cfg.flush.max_bytes,
        );
        // Published once per batch (or at the next hold or release, in a flush), not per
        // message: the counter is shared by the shards and read by the poll thread, and
        // its cache line moving between cores for each message was a fifth of this
        // thread's own samples in `run`.
        self.own_bytes = self.own_bytes + now - before;
        if full {
            self.try_flush(&key)?;
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

    /// Age triggers, retries, and the global cap.
    fn flush_due(&mut self) -> Result<(), PipelineError> {
        let max_age = Duration::from_millis(self.cfg.flush.max_age_ms);
        let now = Instant::now();
        let due: Vec<_> = self
            .parts
            .iter()
            .filter(|(_, st)| {
                let old = st.oldest.is_some_and(|t| now.duration_since(t) >= max_age);
                st.due(now) && (st.pending.is_some() || old)
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.try_flush_many(&due)?;
        // Past three quarters of the cap, so that the level comes down before the source
        // reaches the cap and has to stop; or paused and not yet below half of it (the
        // source resumes only there, and records already in flight when it paused can keep
        // the level between the two for as long as nothing else flushes): write out the
        // largest buffers, together, until well below half of the cap.
        let level = self.shared.level();
        let paused = self.metrics.paused.get() != 0;
        if level > self.cfg.buffer_max_bytes * 3 / 4
            || (paused && level >= self.cfg.buffer_max_bytes / 2)
        {
            let mut by_size: Vec<_> = self
                .parts
                .iter()
                .filter(|(_, st)| st.bytes > 0 && st.due(now))
                .map(|(k, st)| (st.bytes, k.clone()))
                .collect();
            by_size.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
            let mut freed = 0;
            // Each shard frees its share of the excess, in proportion to what it holds.
            let held = self.shared.held.load(Ordering::SeqCst).max(1);
            let target = (level.saturating_sub(self.cfg.buffer_max_bytes * 3 / 8) as u128
                * self.own_bytes as u128
                / held as u128) as usize;
            let chosen: Vec<_> = by_size
                .into_iter()
                .take_while(|(bytes, _)| {
                    let more = freed < target;
                    freed += bytes;
                    more
                })
                .map(|(_, k)| k)
                .collect();
            self.try_flush_many(&chosen)?;
        }
        Ok(())
    }

    fn try_flush(&mut self, key: &PartKey) -> Result<(), PipelineError> {
        self.try_flush_many(std::slice::from_ref(key))
    }

    /// Start flushing `keys` without waiting for storage, and settle the writes that have
    /// finished. A transient failure schedules a retry instead of failing the run.
    fn try_flush_many(&mut self, keys: &[PartKey]) -> Result<(), PipelineError> {
        let mut results = self.reap(false);
        results.extend(self.dispatch(keys));
        self.absorb(results);
        self.fatal.take().map_or(Ok(()), Err)
    }

    /// The failure policy: a transient failure schedules a retry of the partition, a fatal
    /// one is kept for the run loop to return.
    fn absorb(&mut self, results: FlushResults) {
        for (key, result) in results {
            let Err(e) = result else { continue };
            self.metrics
                .flush_failures
                .with_label_values(&[e.stage()])
                .inc();
            if e.is_transient() {
                let Some(st) = self.parts.get_mut(&key) else {
                    continue;
                };
                st.failures += 1;
                let delay = self.cfg.backoff.delay(st.failures);
                st.retry_at = Some(Instant::now() + delay);
                // One line per step of the backoff, not per record that finds it waiting.
                tracing::warn!(topic = %key.0, partition = key.1, attempt = st.failures,
                    retry_in_ms = delay.as_millis() as u64, error = %e, "flush failed; will retry");
                self.metrics
                    .flush_backoff_seconds
                    .with_label_values(&[&*key.0, &key.1.to_string()])
                    .set(delay.as_secs_f64());
            } else if self.fatal.is_none() {
                self.fatal = Some(e);
            }
        }
    }

    /// Make everything `keys` hold durable: a pending flush and the open buffer behind it,
    /// trying failed flushes again on their backoff schedule until `deadline`. Returns
    /// the partitions still holding something then, with the last error of each.
    fn flush_all_until(
        &mut self,
        keys: &[PartKey],
        deadline: Instant,
    ) -> Vec<(PartKey, Option<String>)> {
        let mut last: HashMap<PartKey, String> = HashMap::new();
        loop {
            let holding: Vec<PartKey> = keys
                .iter()
                .filter(|k| self.parts.get(*k).is_some_and(PartState::holds))
                .cloned()
                .collect();
            let now = Instant::now();
            if holding.is_empty() || self.fatal.is_some() {
                return Vec::new();
            }
            if now >= deadline {
                return holding
                    .into_iter()
                    .map(|k| {
                        let e = last.remove(&k);
                        (k, e)
                    })
                    .collect();
            }
            let due: Vec<PartKey> = holding
                .iter()
                .filter(|k| self.parts[*k].due(now))
                .cloned()
                .collect();
            let failed: FlushResults = self
                .flush_now(&due)
                .into_iter()
                .filter(|(_, r)| r.is_err())
                .collect();
            for (key, result) in &failed {
                if let Err(e) = result {
                    last.insert(key.clone(), e.to_string());
                }
            }
            self.absorb(failed);
            // What is left waits for its next try, unless that comes after the deadline.
            let next = holding
                .iter()
                .filter_map(|k| self.parts.get(k))
                .filter(|st| st.holds())
                .map(|st| st.retry_at.unwrap_or(now))
                .min();
            if let Some(at) = next {
                let wait = at.min(deadline).saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
            }
        }
    }

    fn flush_until(&mut self, key: &PartKey, deadline: Instant) -> Result<(), PipelineError> {
        if let Some((_, error)) = self
            .flush_all_until(std::slice::from_ref(key), deadline)
            .pop()
        {
            return Err(PipelineError::NotFlushed(
                error.unwrap_or_else(|| "the deadline passed".into()),
            ));
        }
        self.fatal.take().map_or(Ok(()), Err)
    }

    /// Flush everything every partition holds, or say which were not flushed: the open
    /// buffer behind a flush waiting for its retry is flushed too, not dropped.
    fn drain(mut self, deadline: Instant) -> Result<Totals, PipelineError> {
        let keys: Vec<_> = self.parts.keys().cloned().collect();
        let left = self.flush_all_until(&keys, deadline);
        for (key, error) in &left {
            let st = &self.parts[key];
            tracing::error!(topic = %key.0, partition = key.1, durable_next = ?st.durable_next,
                error = error.as_deref().unwrap_or("the drain deadline passed"),
                "not flushed at shutdown; it will be consumed again");
            let sent = st.unflushed_dead_letters();
            self.dead.dropped(&key.0, key.1, sent, "not_flushed");
        }
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        if !left.is_empty() {
            return Err(PipelineError::DrainTimeout(left.len()));
        }
        Ok(self.totals)
    }

    /// Flush `keys` and wait for storage: for a revocation and the drain, which must know
    /// what became durable. Writes already in flight finish first; their failures for other
    /// partitions go through the failure policy. One result per partition of `keys` that
    /// had something to flush, the latest.
    fn flush_now(&mut self, keys: &[PartKey]) -> FlushResults {
        let mut results = self.reap(true);
        results.extend(self.dispatch(keys));
        results.extend(self.reap(true));
        let mut latest: HashMap<PartKey, Result<(), PipelineError>> = HashMap::new();
        let mut others = Vec::new();
        for (key, result) in results {
            if keys.contains(&key) {
                latest.insert(key, result);
            } else {
                others.push((key, result));
            }
        }
        self.absorb(others);
        latest.into_iter().collect()
    }

    /// Encode the open buffers of `keys` on several threads, then start their storage
    /// writes in the background. Partitions whose flush is being written are left for
    /// later. Returns the failures known before any write starts.
    fn dispatch(&mut self, keys: &[PartKey]) -> FlushResults {
        // A partition waiting out its backoff is not tried again before its time, however
        // many records find its buffer full meanwhile.
        let now = Instant::now();
        let keys: Vec<PartKey> = keys
            .iter()
            .filter(|k| {
                self.parts
                    .get(*k)
                    .is_some_and(|st| !st.writing && st.holds() && st.due(now))
            })
            .cloned()
            .collect();
        if keys.is_empty() {
            return Vec::new();
        }
        let writing = Instant::now();
        let flushed = self.dead.flush(Duration::from_secs(30));
        self.metrics
            .pipeline_seconds
            .with_label_values(&["writing"])
            .inc_by(writing.elapsed().as_secs_f64());
        // Dead letters of these ranges must be durable before the ranges are committed.
        // Checked before any buffer is taken, so that a failure leaves everything as it was.
        if let Err(e) = flushed {
            let reason = e.to_string();
            return keys
                .into_iter()
                .map(|k| (k, Err(PipelineError::DeadLettersPending(reason.clone()))))
                .collect();
        }
        // Encoded here, on several threads, rather than beside the decoding: on two cores
        // that gained nothing, and the batches waiting for an encoder held 40 MB more.
        let encoding = Instant::now();
        let results = self.encode_open(&keys);
        self.metrics
            .pipeline_seconds
            .with_label_values(&["encoding"])
            .inc_by(encoding.elapsed().as_secs_f64());
        // New flushes and retries alike: a partition with a pending flush starts no new
        // one until that one is done.
        let mut jobs = Vec::new();
        for key in keys {
            if results.iter().any(|(k, _)| *k == key) {
                continue;
            }
            if let Some(io) = self.prepare(&key) {
                jobs.push((key, io));
            }
        }
        if !jobs.is_empty() {
            self.start_writes(jobs);
        }
        // Encoding shrank the buffers: the source, held back at the cap, reads this level.
        self.sync_buffered();
        results
    }

    /// Start the storage writes of encoded flushes in the background: steps 1, 3 and 4 of
    /// the protocol (step 2, the dead letters, is done). Book-keeping and the Kafka commit
    /// of what became durable come when they are settled ([`Self::reap`]).
    fn start_writes(&mut self, jobs: Vec<(PartKey, FlushIo)>) {
        let keys: Vec<PartKey> = jobs.iter().map(|(k, _)| k.clone()).collect();
        for key in &keys {
            if let Some(st) = self.parts.get_mut(key) {
                st.writing = true;
            }
        }
        crate::crashpoint::hit("before_commit");
        let task = self.rt.spawn(write_all(
            self.checkpointer.clone(),
            self.write_slots.clone(),
            jobs,
        ));
        self.writing.push(Writing { keys, task });
    }

    /// Settle the storage writes that have finished (with `wait`, all of them): book-keep
    /// what became durable, commit its offsets to Kafka, and return the outcomes.
    fn reap(&mut self, wait: bool) -> FlushResults {
        if self.writing.is_empty() {
            return Vec::new();
        }
        let waiting = Instant::now();
        let mut results = Vec::new();
        let mut i = 0;
        while i < self.writing.len() {
            if !wait && !self.writing[i].task.is_finished() {
                i += 1;
                continue;
            }
            let Writing { keys, task } = self.writing.swap_remove(i);
            for key in &keys {
                if let Some(st) = self.parts.get_mut(key) {
                    st.writing = false;
                }
            }
            match self.rt.block_on(task) {
                Ok(written) => self.settle(written, &mut results),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Only a runtime shutting down cancels a task. Nothing is known of these
                // writes: the next flush of each partition recovers from storage.
                Err(e) => results.extend(
                    keys.into_iter()
                        .map(|k| (k, Err(PipelineError::WritesInterrupted(e.to_string())))),
                ),
            }
        }
        if !self.to_commit.is_empty() {
            self.committer.commit(&std::mem::take(&mut self.to_commit));
        }
        self.sync_buffered();
        self.metrics
            .pipeline_seconds
            .with_label_values(&["writing"])
            .inc_by(waiting.elapsed().as_secs_f64());
        results
    }

    /// Book-keeping for finished storage writes.
    fn settle(&mut self, written: Written, results: &mut FlushResults) {
        for ((key, io), outcome) in written.jobs.into_iter().zip(written.outcomes) {
            match outcome {
                Ok(()) => {
                    self.finish(&key);
                    results.push((key, Ok(())));
                }
                Err(FlushFailure {
                    committed: false,
                    error: CheckpointError::Fenced { .. },
                }) if self.lost_race(&key, &io) => {
                    results.push((key, Ok(())));
                }
                Err(FlushFailure { committed, error }) => {
                    if committed {
                        if let Some(p) = self.parts.get_mut(&key).and_then(|st| st.pending.as_mut())
                        {
                            p.committed = true;
                        }
                    }
                    results.push((key, Err(error.into())));
                }
            }
        }
    }

    /// Another writer committed the range this partition's flush started at: a replica
    /// that was evicted from the group while still flushing, or the new owner after this
    /// one was. Its range is the durable one. Drop ours (its records are in the winner's
    /// range or will be consumed again), clean up our staged files, and resume after it.
    /// `false` when the source cannot resume, which leaves the error to the caller.
    fn lost_race(&mut self, key: &PartKey, io: &FlushIo) -> bool {
        if !self.committer.rewind(&key.0, key.1) {
            return false;
        }
        self.metrics
            .flush_failures
            .with_label_values(&["fenced"])
            .inc();
        tracing::warn!(topic = %key.0, partition = key.1, start = io.marker.start, end = io.marker.end,
            "another writer committed this range first; dropping ours and resuming after it");
        let staged: Vec<_> = io.staged.iter().map(|(p, _)| p.clone()).collect();
        if let Err(e) = self.rt.block_on(self.checkpointer.settle(
            &io.paths,
            io.marker.start,
            &staged,
        )) {
            // Harmless: the next recovery of the partition deletes them.
            tracing::warn!(topic = %key.0, partition = key.1, error = %e, "could not delete the losing staged files");
        }
        if let Some(st) = self.parts.get_mut(key) {
            let freed = st.buffered_bytes();
            let sent = st.unflushed_dead_letters();
            let (topic, partition) = (st.topic.clone(), st.partition);
            *st = PartState::new(topic, partition, None);
            st.fenced = true;
            self.release(freed);
            self.dead.dropped(&key.0, key.1, sent, "fenced");
        }
        true
    }

    /// Move the open buffers of `keys` into pending flushes, encoding their files on
    /// several threads. Returns the partitions whose encoding failed.
    fn encode_open(&mut self, keys: &[PartKey]) -> FlushResults {
        let mut work = Vec::new();
        let mut failed = Vec::new();
        for key in keys {
            let Some(st) = self.parts.get_mut(key) else {
                continue;
            };
            if st.pending.is_some() {
                continue;
            }
            let Some((start, end)) = st.open.take() else {
                continue;
            };
            // The range's rejects go with it, whatever becomes of it.
            let rejects = self.dead.take_range(&key.0, key.1);
            let started = Instant::now();
            let batches = std::mem::take(&mut st.days)
                .into_iter()
                .filter(|(_, b)| !b.is_empty())
                .map(|(day, mut b)| {
                    let rows = b.len() as u64;
                    Ok((day_string(day), b.finish()?, rows))
                })
                .collect::<Result<Vec<_>, arrow::error::ArrowError>>();
            let freed = st.bytes;
            st.rows = 0;
            st.bytes = 0;
            self.release(freed);
            // Not retried: the buffer is gone and the run stops; the offsets were never
            // committed, so a restart consumes them again.
            let batches = match batches {
                Ok(b) => b,
                Err(e) => {
                    failed.push((key.clone(), Err(WriteError::from(e).into())));
                    continue;
                }
            };
            work.push(Unencoded {
                key: key.clone(),
                start,
                end,
                batches,
                started,
                rejects,
            });
        }
        let encoded = encode_all(self.shared.workers.as_deref(), &self.format, &work);
        for (u, files) in work.into_iter().zip(encoded) {
            let files = match files {
                Ok(files) => files,
                Err(e) => {
                    failed.push((u.key, Err(e.into())));
                    continue;
                }
            };
            let bytes: usize = files.iter().map(|f: &(String, Bytes, u64)| f.1.len()).sum();
            self.hold(bytes);
            let st = self.parts.get_mut(&u.key).expect("taken from above");
            st.pending = Some(Pending {
                start: u.start,
                end: u.end,
                files,
                messages: std::mem::take(&mut st.messages),
                events: std::mem::take(&mut st.events),
                dead_lettered: std::mem::take(&mut st.dead_lettered),
                rejected_records: std::mem::take(&mut st.rejected_records),
                dead_letters_by_reason: std::mem::take(&mut st.dead_letters_by_reason),
                bytes,
                started: u.started,
                committed: false,
                rejects: u.rejects,
                gaps: std::mem::take(&mut st.gaps),
            });
            st.oldest = None;
            st.oldest_ts_ms = None;
        }
        failed
    }

    /// Describe the storage writes that commit a partition's pending flush. `None` when
    /// there is nothing to flush.
    fn prepare(&self, key: &PartKey) -> Option<FlushIo> {
        let st = self.parts.get(key)?;
        let p = st.pending.as_ref()?;
        let paths = st.paths.clone();
        let mut staged = Vec::with_capacity(p.files.len());
        let mut committed = Vec::with_capacity(p.files.len());
        for (day, data, rows) in &p.files {
            let path = paths.staged(p.start, p.end, day);
            committed.push(CommittedFile {
                staged: path.to_string(),
                published: paths.published(p.start, p.end, day).to_string(),
                rows: *rows,
                bytes: data.len() as u64,
            });
            staged.push((path, data.clone()));
        }
        let rejects = p.rejects.as_ref().map(|r| {
            let path = paths.staged_rejects(p.start, p.end);
            let file = CommittedFile {
                staged: path.to_string(),
                published: paths.published_rejects(p.start, p.end).to_string(),
                rows: r.redacted.iter().filter(|&&b| b == b'\n').count() as u64,
                bytes: r.redacted.len() as u64,
            };
            staged.push((path, r.redacted.clone()));
            file
        });
        let raw_rejects = p.rejects.as_ref().and_then(|r| {
            let (store, data) = r.raw.as_ref()?;
            Some((
                store.clone(),
                paths.raw_rejects(p.start, p.end),
                data.clone(),
            ))
        });
        let marker = Marker {
            version: 1,
            topic: st.topic.to_string(),
            partition: st.partition,
            start: p.start,
            end: p.end,
            files: committed,
            messages: p.messages,
            events: p.events,
            dead_lettered: p.dead_lettered,
            dead_letters_by_reason: p
                .dead_letters_by_reason
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            committed_at: sohoa_schemas::event::format_micros(now_ms() * 1000),
            key_fingerprint: Some(self.cfg.key_fingerprint.clone()),
            rejects,
            raw_rejects: raw_rejects.as_ref().map(|(_, path, _)| path.to_string()),
            gaps: p.gaps.clone(),
        };
        Some(FlushIo {
            paths,
            marker,
            staged,
            raw_rejects,
            committed: p.committed,
        })
    }

    /// Book-keeping once a partition's pending flush is committed and published.
    fn finish(&mut self, key: &PartKey) {
        let Some(st) = self.parts.get_mut(key) else {
            return;
        };
        let Some(p) = st.pending.take() else {
            return;
        };
        if st.failures > 0 {
            self.metrics
                .flush_backoff_seconds
                .with_label_values(&[&*st.topic, &st.partition.to_string()])
                .set(0.0);
        }
        st.retry_at = None;
        st.failures = 0;
        st.durable_next = Some(p.end + 1);
        self.to_commit
            .push((st.topic.clone(), st.partition, p.end + 1));

        let t = &*st.topic;
        let m = &self.metrics;
        m.messages
            .with_label_values(&[t, "written"])
            .inc_by(p.messages - p.dead_lettered);
        m.messages
            .with_label_values(&[t, "dead_lettered"])
            .inc_by(p.dead_lettered);
        m.events.with_label_values(&[t, "written"]).inc_by(p.events);
        m.events
            .with_label_values(&[t, "rejected"])
            .inc_by(p.rejected_records);
        for gap in &p.gaps {
            m.count_gap(t, st.partition, gap);
        }
        m.files_written.inc_by(p.files.len() as u64);
        m.bytes_written.inc_by(p.bytes as u64);
        m.flush_seconds.observe(p.started.elapsed().as_secs_f64());
        m.last_flush_timestamp.set(now_ms() / 1000);
        let next = p.end + 1;
        let oldest = st.oldest_ts_ms;
        m.update_lag(t, st.partition, |l| {
            l.durable_next = Some(next);
            l.oldest_pending_ms = oldest;
            l.last_progress_ms = now_ms();
        });
        self.totals.messages += p.messages;
        self.totals.events += p.events;
        self.totals.dead_lettered += p.dead_lettered;
        self.totals.rejected_records += p.rejected_records;
        self.totals.files += p.files.len() as u64;
        tracing::debug!(
            topic = t,
            partition = st.partition,
            start = p.start,
            end = p.end,
            events = p.events,
            files = p.files.len(),
            "flushed"
        );
        self.release(p.bytes);
    }
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

type Encoded = Result<Vec<(String, Bytes, u64)>, WriteError>;

/// Encode every partition's files, spreading the files over the worker threads.
fn encode_all(
    workers: Option<&rayon::ThreadPool>,
    format: &FileFormat,
    work: &[Unencoded],
) -> Vec<Encoded> {
    // One task per file, not per partition: a partition can hold several days.
    let files: Vec<_> = work.iter().flat_map(|u| &u.batches).collect();
    let encode =
        |(_, batch, _): &&(String, arrow::record_batch::RecordBatch, u64)| format.encode(batch);
    let mut encoded = match workers {
        Some(w) => w.install(|| files.par_iter().map(encode).collect::<Vec<_>>()),
        None => files.iter().map(encode).collect(),
    }
    .into_iter();
    // `collect` keeps the order, so the files come back partition by partition.
    work.iter()
        .map(|u| {
            u.batches
                .iter()
                .map(|(day, _, rows)| {
                    let data = encoded.next().expect("one encoding per file")?;
                    Ok((day.clone(), data, *rows))
                })
                .collect()
        })
        .collect()
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

    /// A pipeline on topic `t` (the national sync format), storing into `checkpointer`.
    fn dvcqg_pipeline(
        rt: &tokio::runtime::Runtime,
        checkpointer: Checkpointer,
        committer: Box<dyn OffsetCommitter>,
        metrics: Arc<Metrics>,
        shared: Shared,
    ) -> Pipeline {
        let cfg = sohoa_runtime::Config::load(None).unwrap();
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
            PipelineConfig::new(&cfg, "0123abcd".into()),
            decoders,
            checkpointer,
            rt.handle().clone(),
            Box::new(NoDeadLetters),
            committer,
            metrics,
            shared,
        )
        .unwrap()
    }

    fn test_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
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
        let pipeline = dvcqg_pipeline(
            &rt,
            Checkpointer::new(Arc::new(object_store::memory::InMemory::new())),
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

        // A revocation is answered after the batch before it: partition 1 is written out,
        // partition 0 still buffered.
        let revoke = |p: i32| {
            let (ack, acked) = std::sync::mpsc::sync_channel(1);
            tx.send(Input::Revoked(vec![(t.clone(), p)], ack)).unwrap();
            acked.recv_timeout(Duration::from_secs(30)).unwrap();
        };
        revoke(1);
        assert_eq!(shared.buffered.load(Ordering::SeqCst), 0);
        let held = shared.held.load(Ordering::SeqCst);
        assert!(
            held > 20 * 1000 && held < all,
            "{held} of {all} bytes held for 20 messages"
        );
        assert_eq!(metrics.buffered_bytes.get(), held as i64);
        revoke(0);
        assert_eq!(shared.level(), 0);
        assert_eq!(metrics.buffered_bytes.get(), 0);

        tx.send(Input::Drain(Instant::now() + Duration::from_secs(10)))
            .unwrap();
        let totals = worker.join().unwrap().unwrap();
        assert_eq!(totals.messages, 40);
        assert_eq!(shared.level(), 0);
    }

    /// A source whose oldest offset held is fixed per partition.
    struct LogStarts(Vec<(i32, i64)>);

    impl OffsetCommitter for LogStarts {
        fn commit(&self, _: &[(Arc<str>, i32, i64)]) {}
        fn rewind(&self, _: &str, _: i32) -> bool {
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
    /// Partition 2 had nothing in storage (a first start): none, wherever it starts. Each
    /// partition's marker still starts where storage stopped.
    #[test]
    fn offsets_deleted_before_they_were_consumed_are_recorded_as_a_gap_in_the_next_marker() {
        let rt = test_runtime();
        let store = Arc::new(object_store::memory::InMemory::new());
        let checkpointer = Checkpointer::new(store);
        let metrics = Metrics::new();
        let shared = Shared::new(1).unwrap();
        let pipeline = dvcqg_pipeline(
            &rt,
            checkpointer.clone(),
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

        let markers = |p| {
            rt.block_on(checkpointer.markers(&PartitionPaths::new("t", p)))
                .unwrap()
                .into_iter()
                .map(|m| (m.start, m.end, m.gaps))
                .collect::<Vec<_>>()
        };
        assert_eq!(markers(0), [(10, 54, vec![OffsetGap { from: 10, to: 49 }])]);
        assert_eq!(markers(1), [(10, 14, vec![])]);
        assert_eq!(markers(2), [(100, 102, vec![])]);
        let count = |c: &prometheus::IntCounterVec, p: &str| c.with_label_values(&["t", p]).get();
        assert_eq!(count(&metrics.offset_gaps, "0"), 1);
        assert_eq!(count(&metrics.offset_gap_messages, "0"), 40);
        for p in ["1", "2"] {
            assert_eq!(count(&metrics.offset_gaps, p), 0);
            assert_eq!(count(&metrics.offset_gap_messages, p), 0);
        }
    }
}
