//! Dead letters: messages that cannot become events, kept with the reason.
//!
//! For Kafka sources they go to the dead-letter topic with the original key and bytes, and
//! headers for the error class, the reasons and the source coordinates (the conventions of
//! Kafka Connect's `errors.deadletterqueue.*`, under a `sohoa.` prefix). For backfill files
//! they are committed with their range (`rejects`). Delivery is confirmed before the offsets they cover are
//! committed, so a broker that refuses dead letters stops progress instead of losing them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use sohoa_schemas::DecodeError;

use crate::client_errors::{Client, ClientErrors};
use crate::pipeline::Record;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead-letter topic {topic}: {reason}")]
    Kafka { topic: String, reason: String },
}

/// Where rejected messages go.
pub trait DeadLetters: Send {
    /// Queue one message with its rejections.
    fn send(&mut self, record: &Record, rejects: &[DecodeError]) -> Result<(), DeadLetterError>;
    /// Wait until everything queued is durable; an error means some of it is not.
    fn flush(&mut self, timeout: Duration) -> Result<(), DeadLetterError>;
    /// The rejects sent for a partition since the last call, for sinks that commit them
    /// with the partition's range (`rejects`) rather than deliver them on their own.
    fn take_range(&mut self, _topic: &str, _partition: i32) -> Option<CommitRejects> {
        None
    }
    /// A partition's records since its last flush will not be committed here (`cause`:
    /// revoked, fenced, not_flushed): `sent` dead letters were sent for them, and whoever
    /// consumes them next rejects them again.
    fn dropped(&mut self, topic: &str, partition: i32, sent: u64, cause: &'static str);
}

/// What a range's commit writes of its rejects.
pub struct CommitRejects {
    /// The storage root.
    pub root: Arc<dyn ObjectStore>,
    /// Written under the storage root before the range's commit: no personal data.
    pub redacted: Bytes,
    /// The raw lines, written to the raw store before the commit, if one is configured.
    pub raw: Option<(Arc<dyn ObjectStore>, Bytes)>,
}

impl std::fmt::Debug for CommitRejects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitRejects")
            .field("redacted", &self.redacted.len())
            .field("raw", &self.raw.as_ref().map(|(_, b)| b.len()))
            .finish()
    }
}

/// Header names, shared with the README and the tests.
pub mod headers {
    pub const CLASS: &str = "sohoa.error.class";
    pub const KIND: &str = "sohoa.error.kind";
    pub const REASON: &str = "sohoa.error.reason";
    pub const COUNT: &str = "sohoa.error.count";
    pub const TOPIC: &str = "sohoa.source.topic";
    pub const PARTITION: &str = "sohoa.source.partition";
    pub const OFFSET: &str = "sohoa.source.offset";
    pub const TRUNCATED: &str = "sohoa.payload.truncated";
}

/// All reasons of one message, one per line, bounded so a message with thousands of bad
/// records cannot make a header larger than the broker accepts.
pub fn reasons(rejects: &[DecodeError]) -> String {
    let mut s = String::new();
    for r in rejects {
        if s.len() > 3500 {
            s.push_str(&format!("… and {} more", rejects.len() - s.lines().count()));
            break;
        }
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&r.to_string());
    }
    s
}

/// A dead letter the broker refused, kept whole so it can be sent again.
struct Refused {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Counts delivery failures reported by librdkafka's delivery callback, which runs on the
/// producer's polling thread or in a flush, never on the async runtime.
#[derive(Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
    /// Refused dead letters: librdkafka gives up on a message after a permanent error or
    /// its delivery timeout, so sohoa keeps it and sends it again; the range it belongs
    /// to stays uncommitted until the broker acknowledges it.
    refused: std::sync::Mutex<Vec<Refused>>,
}

/// The producer's context: a handle on the shared tracker, and where its client errors
/// are counted and logged.
#[derive(Clone)]
pub struct Tracked {
    tracker: Arc<DeliveryTracker>,
    errors: Arc<ClientErrors>,
}

impl ClientContext for Tracked {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.report(Client::DeadLetters, &error, reason);
    }
}

impl ProducerContext for Tracked {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        use rdkafka::message::{Headers, Message};
        if let Err((e, m)) = result {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            self.tracker
                .refused
                .lock()
                .expect("refused lock")
                .push(Refused {
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
            self.tracker.failed.fetch_add(1, Ordering::SeqCst);
            *self.tracker.last_error.lock().expect("error lock") = Some(e.to_string());
        }
    }
}

/// The Kafka dead-letter topic.
impl KafkaDeadLetters {
    fn resend(&mut self, r: &Refused) -> Result<(), DeadLetterError> {
        let mut hdrs = OwnedHeaders::new();
        for (k, v) in &r.headers {
            hdrs = hdrs.insert(Header {
                key: k.as_str(),
                value: v.as_deref(),
            });
        }
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic)
            .payload(&r.payload[..])
            .headers(hdrs);
        if let Some(k) = &r.key {
            rec = rec.key(&k[..]);
        }
        produce(&self.producer.producer, &self.topic, rec)?;
        self.pending += 1;
        Ok(())
    }
}

/// The dead-letter producer, with a thread that serves its delivery reports and client
/// errors between flushes (a flush serves them too).
///
/// rdkafka's `ThreadedProducer` did this with 100 ms polls, and each ended in a busy wait:
/// rdkafka 0.39 polls until its deadline but hands librdkafka the time left truncated to
/// whole milliseconds, so the last fraction of a millisecond of every poll is spent
/// asking again without waiting. That was about 1% of a replica's CPU samples, for two
/// producers with nothing to send. This thread takes what is ready without waiting in
/// librdkafka, then sleeps.
struct PolledProducer {
    producer: Arc<BaseProducer<Tracked>>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl PolledProducer {
    /// How often the thread serves what is ready.
    const EVERY: Duration = Duration::from_millis(50);
    /// Events served per round, at most: a delivery report covers many messages, so this
    /// is far more than a dead-letter stream needs, and an idle round costs microseconds.
    const EVENTS_PER_ROUND: usize = 32;

    fn new(producer: BaseProducer<Tracked>) -> std::io::Result<Self> {
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = std::thread::Builder::new()
            .name("sohoa-dlq-poll".into())
            .spawn({
                let (producer, stop) = (producer.clone(), stop.clone());
                move || {
                    while !stop.load(Ordering::SeqCst) {
                        for _ in 0..Self::EVENTS_PER_ROUND {
                            // At most one event, with no wait in librdkafka.
                            producer.poll(Duration::ZERO);
                        }
                        std::thread::park_timeout(Self::EVERY);
                    }
                }
            })?;
        Ok(PolledProducer {
            producer,
            stop,
            poller: Some(poller),
        })
    }
}

impl Drop for PolledProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(poller) = self.poller.take() {
            poller.thread().unpark();
            let _ = poller.join();
        }
    }
}

/// Hand a record to librdkafka, waiting while its queue is full.
fn produce(
    producer: &BaseProducer<Tracked>,
    topic: &str,
    mut rec: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), DeadLetterError> {
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((e, back))
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
            {
                producer.poll(Duration::from_millis(50));
                rec = back;
            }
            Err((e, _)) => {
                return Err(DeadLetterError::Kafka {
                    topic: topic.to_owned(),
                    reason: e.to_string(),
                })
            }
        }
    }
}

pub struct KafkaDeadLetters {
    producer: PolledProducer,
    metrics: Arc<crate::Metrics>,
    tracker: Arc<DeliveryTracker>,
    topic: String,
    pending: u64,
    max_payload: usize,
}

impl KafkaDeadLetters {
    /// `max_bytes` is the largest message the dead-letter topic accepts.
    pub fn new(
        producer_config: &rdkafka::ClientConfig,
        topic: &str,
        max_bytes: usize,
        errors: Arc<ClientErrors>,
        metrics: Arc<crate::Metrics>,
    ) -> Result<Self, DeadLetterError> {
        let tracker = Arc::new(DeliveryTracker::default());
        let err = |reason: String| DeadLetterError::Kafka {
            topic: topic.to_owned(),
            reason,
        };
        let producer: BaseProducer<Tracked> = producer_config
            .create_with_context(Tracked {
                tracker: tracker.clone(),
                errors,
            })
            .map_err(|e| err(e.to_string()))?;
        let producer = PolledProducer::new(producer)
            .map_err(|e| err(format!("cannot start the polling thread: {e}")))?;
        Ok(KafkaDeadLetters {
            producer,
            metrics,
            tracker,
            topic: topic.to_owned(),
            pending: 0,
            // Headers (reasons are capped near 4 KB) and the record framing need room.
            max_payload: max_bytes.saturating_sub(16 * 1024),
        })
    }
}

impl DeadLetters for KafkaDeadLetters {
    /// The topic has them already, so they reach it twice: counted, since a dead letter's
    /// source coordinates (headers) are the key to tell such repeats apart.
    fn dropped(&mut self, _topic: &str, _partition: i32, sent: u64, cause: &'static str) {
        self.metrics
            .dead_letters_repeated
            .with_label_values(&[cause])
            .inc_by(sent);
    }

    fn send(&mut self, record: &Record, rejects: &[DecodeError]) -> Result<(), DeadLetterError> {
        let first = rejects.first();
        let class = first.map_or("permanent", |e| e.class().as_str());
        let kind = first.map_or("unknown", |e| e.kind());
        let reason = reasons(rejects);
        let count = rejects.len().to_string();
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let hdrs = OwnedHeaders::new()
            .insert(Header {
                key: headers::CLASS,
                value: Some(class),
            })
            .insert(Header {
                key: headers::KIND,
                value: Some(kind),
            })
            .insert(Header {
                key: headers::REASON,
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: headers::COUNT,
                value: Some(count.as_str()),
            })
            .insert(Header {
                key: headers::TOPIC,
                value: Some(&*record.topic),
            })
            .insert(Header {
                key: headers::PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: headers::OFFSET,
                value: Some(offset.as_str()),
            });
        // A message larger than the topic accepts would be refused forever and block the
        // partition; keep its head and say how large it was.
        let whole = record.payload();
        let (payload, hdrs) = if whole.len() > self.max_payload {
            let size = whole.len().to_string();
            let h = hdrs.insert(Header {
                key: headers::TRUNCATED,
                value: Some(size.as_str()),
            });
            (&whole[..self.max_payload], h)
        } else {
            (whole, hdrs)
        };
        let mut rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&self.topic).payload(payload).headers(hdrs);
        if let Some(k) = record.key() {
            rec = rec.key(k);
        }
        // A full local queue is transient: wait for room rather than drop the message.
        produce(&self.producer.producer, &self.topic, rec)?;
        self.pending += 1;
        Ok(())
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), DeadLetterError> {
        if self.pending == 0 && self.tracker.failed.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let topic = self.topic.clone();
        let err = |reason: String| DeadLetterError::Kafka {
            topic: topic.clone(),
            reason,
        };
        self.producer
            .producer
            .flush(timeout)
            .map_err(|e| err(format!("not all dead letters delivered: {e}")))?;
        let failed = self.tracker.failed.swap(0, Ordering::SeqCst);
        if failed > 0 {
            let last = self
                .tracker
                .last_error
                .lock()
                .expect("error lock")
                .take()
                .unwrap_or_default();
            // Queue the refused ones again; this flush fails, and a later one succeeds
            // only once they are all acknowledged.
            let refused = std::mem::take(&mut *self.tracker.refused.lock().expect("refused lock"));
            // A message librdkafka gave up on may still have been stored by the broker
            // (its acknowledgement lost): a resend can repeat it.
            self.metrics
                .dead_letters_repeated
                .with_label_values(&["resent"])
                .inc_by(refused.len() as u64);
            for r in &refused {
                self.resend(r)?;
            }
            return Err(err(format!(
                "{failed} dead letters refused, sending them again: {last}"
            )));
        }
        self.pending = 0;
        Ok(())
    }
}
