//! The Kafka source: one consumer in the group, polled on a dedicated OS thread, never on
//! the async runtime. librdkafka's callbacks (rebalances, statistics) run inside `poll`,
//! so they run on that thread too, where blocking is allowed: a revocation waits until
//! the pipeline has flushed or dropped the revoked partitions, then acknowledges.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use sohoa_runtime::config::StartFrom;

use crate::client_errors::{Client, ClientErrors};
use crate::metrics::Metrics;
use crate::pipeline::{Body, Input, OffsetCommitter, Record, Shared};
use crate::shard::Shards;

/// What the consumer's callbacks need.
pub struct IngestContext {
    pub tx: Shards,
    /// The events table: the truth of how far each partition was consumed.
    pub writer: sohoa_storage::events::Writer,
    pub rt: tokio::runtime::Handle,
    pub metrics: Arc<Metrics>,
    pub start_from: StartFrom,
    /// Set when a callback hits an error the process cannot recover from in place.
    pub fatal: Arc<AtomicBool>,
    /// Records polled and not yet handed to the pipeline. It lives here, not in the poll
    /// loop, because a rebalance can fire inside any `poll`: the callbacks send it first,
    /// so the pipeline still sees every record before the assignment change that follows.
    pub batch: Mutex<Polled>,
    /// Bytes in flight to the pipelines (`Shared::buffered`): a batch's bytes are added as
    /// it is sent.
    pub buffered: Arc<AtomicUsize>,
    /// Where the consumer's client errors are counted and logged.
    pub errors: Arc<ClientErrors>,
}

/// The batch being polled, with the size of its payloads.
#[derive(Default)]
pub struct Polled {
    records: Vec<Record>,
    bytes: usize,
    /// Where the batch's keys and payloads are copied.
    chunk: BytesMut,
}

/// Bytes of a chunk that polled messages are copied into. A message's bytes are copied
/// out of librdkafka at once, so that it can free each fetch response as soon as the
/// consumer has polled it: a message handed on in place kept its whole response (up to
/// `fetch.max.bytes`) alive until the pipeline had decoded it, and the responses pinned
/// by messages in flight were as large again as the buffer cap counted. A chunk is freed
/// once every record copied into it is decoded.
const CHUNK_BYTES: usize = 512 << 10;

impl Polled {
    fn push(&mut self, topic: &Arc<str>, m: &BorrowedMessage<'_>) {
        let key = m.key();
        let payload = m.payload().unwrap_or_default();
        let len = key.map_or(0, <[u8]>::len) + payload.len();
        if self.chunk.capacity() - self.chunk.len() < len {
            self.chunk = BytesMut::with_capacity(len.max(CHUNK_BYTES));
        }
        if let Some(key) = key {
            self.chunk.extend_from_slice(key);
        }
        self.chunk.extend_from_slice(payload);
        self.records.push(Record {
            topic: topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            body: Body::Copied {
                data: self.chunk.split().freeze(),
                key_len: key.map(|k| k.len() as u32),
            },
        });
        self.bytes += len;
    }
}

/// Records handed to the pipeline at once: one channel hand-off (and one wake-up of the
/// pipeline thread) per batch instead of per message, and a batch big enough to decode
/// on several threads.
const BATCH_RECORDS: usize = 512;
/// ...or fewer when they are large.
const BATCH_BYTES: usize = 4 << 20;

impl ClientContext for IngestContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.metrics.set_brokers_up(false);
        }
        self.errors.report(Client::Consumer, &error, reason);
    }

    fn stats(&self, stats: Statistics) {
        // Bootstrap entries (node id -1) and the internal broker do not count: only a
        // connection to a real broker of the cluster does.
        self.metrics.set_brokers_up(
            stats
                .brokers
                .values()
                .any(|b| b.nodeid >= 0 && b.source != "internal" && b.state == "UP"),
        );
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.hi_offset >= 0 {
                    self.metrics
                        .set_watermarks(topic, *p, part.lo_offset, part.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}

impl IngestContext {
    /// Hand the polled records to the pipeline; `false` when it has stopped.
    fn send_batch(&self) -> bool {
        let (records, bytes) = {
            let mut pending = self.batch.lock().unwrap_or_else(|e| e.into_inner());
            // The chunk stays for the next batch: a batch of 512 messages (720 KB at
            // 1.4 KB each) left most of its last chunk unused.
            (
                std::mem::take(&mut pending.records),
                std::mem::take(&mut pending.bytes),
            )
        };
        if records.is_empty() {
            return true;
        }
        // Added once per batch, not per message: this counter is shared with the shards,
        // and its cache line moving between cores for each message was a sixth of the poll
        // loop's own time. It is added before the shards can see the batch, and so before
        // they subtract it.
        self.buffered.fetch_add(bytes, Ordering::SeqCst);
        self.tx.send(Input::Records(records)).is_ok()
    }

    /// Start each partition exactly where the events table says it stops.
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        self.metrics.rebalances.with_label_values(&["assign"]).inc();
        self.metrics.set_joined();
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|el| (el.topic().to_owned(), el.partition()))
            .collect();
        let ids: Vec<String> = parts
            .iter()
            .map(|(t, p)| sohoa_storage::events::kafka_app_id(t, *p))
            .collect();
        let mut attempt = 0;
        let offsets = loop {
            match self.writer.offsets(&ids) {
                Ok(o) => break Some(o),
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(partitions = ids.len(), error = %e, attempt, "reading the table's offsets failed; retrying");
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
                Err(e) => {
                    tracing::error!(partitions = ids.len(), error = %e, "reading the table's offsets failed; stopping so a restart can retry");
                    break None;
                }
            }
        };
        let Some(offsets) = offsets else {
            self.fatal.store(true, Ordering::SeqCst);
            let _ = consumer.assign(&TopicPartitionList::new());
            return;
        };
        let assigned: Vec<(String, i32, Option<i64>)> = parts
            .into_iter()
            .zip(offsets)
            .map(|((t, p), o)| (t, p, o))
            .collect();
        for (topic, partition, next) in &assigned {
            let offset = match (next, self.start_from) {
                (Some(n), _) => Offset::Offset(*n),
                (None, StartFrom::Earliest) => Offset::Beginning,
                (None, StartFrom::Latest) => Offset::End,
            };
            let _ = tpl.set_partition_offset(topic, *partition, offset);
            tracing::info!(%topic, partition, next = ?next, "partition assigned");
        }
        let announce = assigned
            .into_iter()
            .map(|(t, p, n)| (Arc::from(t.as_str()), p, n))
            .collect();
        if !self.send_batch() || self.tx.send(Input::Assigned(announce)).is_err() {
            return; // the pipeline has stopped; nothing will be consumed
        }
        if let Err(e) = consumer.assign(tpl) {
            tracing::error!(error = %e, "assign failed");
            self.fatal.store(true, Ordering::SeqCst);
        }
    }

    /// Let the pipeline flush (or drop) the revoked partitions before giving them up, so
    /// the next owner starts from a consistent point in storage.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        self.metrics.rebalances.with_label_values(&["revoke"]).inc();
        let parts: Vec<_> = tpl
            .elements()
            .iter()
            .map(|e| (Arc::from(e.topic()), e.partition()))
            .collect();
        if self.send_batch() {
            // Bounded by the pipeline's own revoke deadline.
            let _ = self.tx.revoke(parts, Duration::from_secs(60));
        }
        let _ = consumer.unassign();
    }
}

/// Commits the storage-durable offsets to the group, for lag tools, and hands rewinds to
/// the poll loop, which owns the consumer's position.
pub struct KafkaCommitter {
    pub consumer: Arc<BaseConsumer<IngestContext>>,
    pub rewinds: Sender<(Arc<str>, i32, Option<i64>)>,
}

impl OffsetCommitter for KafkaCommitter {
    fn rewind(&self, topic: &str, partition: i32, fallback: Option<i64>) -> bool {
        // With the poll loop gone (draining at shutdown) there is nothing to resume: the
        // partition's next owner starts from the table.
        let _ = self.rewinds.send((Arc::from(topic), partition, fallback));
        true
    }

    fn log_start(&self, topic: &str, partition: i32) -> Option<i64> {
        if let Some(low) = cached_log_start(&self.consumer, topic, partition) {
            return Some(low);
        }
        // Brokers older than Kafka 1.0 do not send it with fetches: ask.
        match self
            .consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
        {
            Ok((low, _)) => Some(low),
            Err(e) => {
                tracing::warn!(%topic, partition, error = %e, "log start offset unknown: offsets skipped are not checked for a retention gap");
                None
            }
        }
    }

    fn commit(&self, offsets: &[(Arc<str>, i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in offsets {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::warn!(%topic, partition, error = %e, "offset not committed");
            }
        }
        // Async: the commit is informational (storage is the truth), and a failure here
        // is repaired by the next flush's commit.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(partitions = offsets.len(), error = %e, "offset commit failed");
        }
    }
}

/// The log start offset librdkafka took from the partition's latest fetch response. It
/// reads it before the response's records, so it is current for any record already
/// delivered, and reading it is no round trip. rust-rdkafka does not wrap this call.
fn cached_log_start(
    consumer: &BaseConsumer<IngestContext>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client handle lives as long as `consumer`; librdkafka reads the
    // NUL-terminated topic name and writes the two offsets under the partition's lock.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && low >= 0).then_some(low)
}

/// Seek a partition whose flush was fenced to where the table says it stops (or, if the
/// table records nothing of it, to `fallback`, the first offset the dropped flush held),
/// then tell the pipeline. librdkafka drops messages fetched before a seek, so every
/// record of the partition sent after `Rewound` comes from the new position. `false` to
/// retry later.
fn rewind(
    consumer: &BaseConsumer<IngestContext>,
    tx: &Shards,
    topic: &Arc<str>,
    partition: i32,
    fallback: Option<i64>,
) -> bool {
    let ctx = consumer.context();
    let id = sohoa_storage::events::kafka_app_id(topic, partition);
    let next = match ctx.writer.offsets(std::slice::from_ref(&id)) {
        Ok(o) => match o.first().copied().flatten().or(fallback) {
            Some(n) => n,
            None => return true, // nothing consumed, nothing to go back to
        },
        Err(e) => {
            tracing::warn!(%topic, partition, error = %e, "rewind: the table is unreadable; retrying");
            return false;
        }
    };
    match consumer.seek(
        topic,
        partition,
        Offset::Offset(next),
        Duration::from_secs(5),
    ) {
        Ok(()) => {
            let _ = tx.send(Input::Rewound(topic.clone(), partition, next));
        }
        // No longer ours: the revocation already dropped its state, and the next owner
        // recovers from storage.
        Err(e) => {
            tracing::info!(%topic, partition, error = %e, "rewind: partition not seekable; leaving it to the rebalance")
        }
    }
    true
}

/// The most undecoded bytes in flight to the pipelines, short of a starving one: eight
/// full batches. At four, the shards of a replica on a feed spread over 120 dates waited
/// for input 6 to 10% of the time, against 2%.
const AHEAD_MAX: usize = 8 * BATCH_BYTES;

/// How long the poll loop stops taking messages over the buffer cap before it pauses the
/// partitions.
const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// The poll loop. Returns when `stop` is set, after handing the pipeline a drain.
#[allow(clippy::too_many_arguments)]
pub fn poll_loop(
    consumer: Arc<BaseConsumer<IngestContext>>,
    tx: Shards,
    rewinds: Receiver<(Arc<str>, i32, Option<i64>)>,
    shared: Shared,
    cap: usize,
    stop: Arc<AtomicBool>,
    drain_deadline: Duration,
    metrics: Arc<Metrics>,
) {
    // Messages not yet decoded are held to an eighth of the cap as well. The pipeline
    // needs only a few batches ahead; with more, a backlog filled most of the cap with
    // undecoded messages, and the pipeline, flushing to stay under the cap, wrote its
    // decoded buffers out small (a third of the size, in the ingest bench). Shards get a
    // quarter: one shard busy encoding a flush can hold that much of the in-flight
    // allowance, and at an eighth the others waited for input a sixth of the time.
    //
    // A few batches ahead are enough however large the cap: past `AHEAD_MAX`, undecoded
    // messages only took memory that the buffers then flushed sooner for.
    let ahead_max = if tx.len() > 1 { cap / 4 } else { cap / 8 }.min(AHEAD_MAX);
    let mut paused = false;
    let mut retry: Vec<Rewind> = Vec::new();
    let mut retry_at = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let requested = rewinds_pending(&rewinds, &mut retry);
        if requested || (!retry.is_empty() && Instant::now() >= retry_at) {
            retry.retain(|(t, p, f)| !rewind(&consumer, &tx, t, *p, *f));
            retry_at = Instant::now() + Duration::from_secs(1);
        }
        let level = || shared.level();
        let ahead = || {
            too_far_ahead(
                shared.buffered.load(Ordering::SeqCst),
                ahead_max,
                shared.starving.load(Ordering::SeqCst),
            )
        };
        if !paused && (level() > cap || ahead()) {
            // Over the cap, first just stop taking messages for a moment: the pipeline is
            // usually in the middle of a flush that brings the level well down. librdkafka
            // keeps its prefetch (bounded by `queued.max.messages.kbytes`) meanwhile,
            // whereas pausing discards it and fetches it all again on resume. Pausing is
            // for a flush that takes longer, such as storage being down; the hold is short
            // enough that rebalance callbacks, which run inside `poll`, wait little.
            let hold_until = Instant::now() + PAUSE_AFTER;
            while (level() > cap || ahead())
                && Instant::now() < hold_until
                && !stop.load(Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let level = level();
        if level > cap {
            // Pausing is idempotent; re-pausing also covers partitions assigned meanwhile.
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.pause(&a);
            }
            if !paused {
                tracing::info!(buffered = level, cap, "buffer full: pausing consumption");
                paused = true;
                metrics.paused.set(1);
            }
        } else if paused && level < cap / 2 {
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.resume(&a);
            }
            tracing::info!(buffered = level, "buffer drained: resuming consumption");
            paused = false;
            metrics.paused.set(0);
        }
        // Wait for one message, then take whatever else is already fetched.
        let ctx = consumer.context();
        let mut topic: Arc<str> = Arc::from("");
        let (mut count, mut bytes) = (0, 0);
        let mut polled = consumer.poll(Duration::from_millis(100));
        loop {
            match polled {
                Some(Ok(m)) => {
                    if *topic != *m.topic() {
                        topic = Arc::from(m.topic());
                    }
                    count += 1;
                    bytes += m.payload_len();
                    let mut pending = ctx.batch.lock().unwrap_or_else(|e| e.into_inner());
                    pending.push(&topic, &m);
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => ctx.errors.polled(&e),
                None => break,
            }
            if count >= BATCH_RECORDS || bytes >= BATCH_BYTES {
                break;
            }
            polled = consumer.poll(Duration::ZERO);
        }
        if !ctx.send_batch() {
            // A shard failed; its error is reported by the caller. The others still
            // need their drain, or they would wait for input forever.
            break;
        }
    }
    let _ = tx.send(Input::Drain(Instant::now() + drain_deadline));
}

/// Whether `in_flight` undecoded bytes are enough for now. Past the allowance, a pipeline
/// with nothing queued still gets input, up to twice the allowance: with the shards'
/// shares unbalanced, one shard waited for input 7% of the time while the source held
/// back for the other's backlog.
fn too_far_ahead(in_flight: usize, allowance: usize, starving: usize) -> bool {
    in_flight > 2 * allowance || (in_flight > allowance && starving == 0)
}

/// Move newly requested rewinds into `queue`; `true` if there were any.
type Rewind = (Arc<str>, i32, Option<i64>);

fn rewinds_pending(rx: &Receiver<Rewind>, queue: &mut Vec<Rewind>) -> bool {
    let before = queue.len();
    queue.extend(rx.try_iter());
    queue.len() > before
}

#[cfg(test)]
mod tests {
    use super::too_far_ahead;

    #[test]
    fn a_starving_pipeline_lets_the_source_past_the_allowance_but_not_past_twice_it() {
        assert!(!too_far_ahead(100, 100, 0));
        assert!(too_far_ahead(101, 100, 0));
        assert!(!too_far_ahead(101, 100, 1));
        assert!(!too_far_ahead(200, 100, 2));
        assert!(too_far_ahead(201, 100, 1));
    }
}
