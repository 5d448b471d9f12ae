//! The ingestor's metrics, defined in one place; `sohoa_runtime::http` serves them.
//!
//! Labels stay low-cardinality: topic, partition, outcome, reason. Never a dossier or an
//! agency: those belong in the tables, not in Prometheus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::pipeline::OffsetGap;
use prometheus::{
    CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the ingestor exports. Names are part of the operations contract
/// (README, dashboard, alerts): change them only with those.
pub struct Metrics {
    pub registry: Registry,
    /// Messages consumed, by topic and outcome (written, dead_lettered).
    pub messages: IntCounterVec,
    /// Messages taken from the source by the pipeline, by topic, before they are durable:
    /// its rate against `messages` shows how far buffering runs ahead of storage.
    pub received: IntCounterVec,
    /// Events (records) decoded, by topic and outcome (written, rejected).
    pub events: IntCounterVec,
    /// Dead-letter messages produced, by topic and reason.
    pub dead_letters: IntCounterVec,
    /// Dead letters that may reach the dead-letter topic twice, by cause.
    pub dead_letters_repeated: IntCounterVec,
    /// Normalization warnings, by topic and kind.
    pub warnings: IntCounterVec,
    /// Parquet files published.
    pub files_written: IntCounter,
    /// Bytes of Parquet published.
    pub bytes_written: IntCounter,
    /// Time from the start of a flush to its commit, in seconds.
    pub flush_seconds: Histogram,
    /// Flushes that failed and will be retried, by stage.
    pub flush_failures: IntCounterVec,
    /// How long a partition's failed flush waits before it is tried again, in seconds
    /// (0 once it succeeds): the current step of its backoff.
    pub flush_backoff_seconds: GaugeVec,
    /// Rebalance events, by kind (assign, revoke).
    pub rebalances: IntCounterVec,
    /// Partitions currently assigned.
    pub assigned_partitions: IntGauge,
    /// Pipelines this process runs: `pipeline_seconds` counts each one's time.
    pub shards: IntGauge,
    /// Bytes buffered (decoded rows not yet written, and messages in flight).
    pub buffered_bytes: IntGauge,
    /// 1 while consumption is paused for backpressure.
    pub paused: IntGauge,
    /// High watermark minus the next offset to make durable.
    pub lag_messages: IntGaugeVec,
    /// Age of the oldest message not yet durable, in seconds.
    pub lag_seconds: IntGaugeVec,
    /// Next offset to make durable, per partition.
    pub durable_offset: IntGaugeVec,
    /// Unix time of the last successful flush.
    pub last_flush_timestamp: IntGauge,
    /// The events table's version this ingestor last committed.
    pub table_version: IntGauge,
    /// Time a flush's table commit took, conflicts with other writers included.
    pub commit_seconds: Histogram,
    /// Seconds the pipeline thread spent per stage (waiting, decoding, encoding, writing):
    /// where a replica's time goes, to tell a CPU-bound replica from one waiting on the
    /// broker or on storage.
    pub pipeline_seconds: CounterVec,
    /// Errors librdkafka reported, by client (consumer, dead_letters) and error code: every
    /// report, where the log folds repeats (`client_errors`).
    pub kafka_client_errors: IntCounterVec,
    /// Gaps committed: ranges of offsets that Kafka's retention deleted before they were
    /// ingested, by topic and partition.
    pub offset_gaps: IntCounterVec,
    /// Offsets in those gaps: the messages lost, at most.
    pub offset_gap_messages: IntCounterVec,
    lag: Mutex<HashMap<(String, i32), PartitionLag>>,
    /// Started, and not yet stopping.
    ready: AtomicBool,
    /// The consumer has joined its group: it received an assignment (maybe empty).
    joined: AtomicBool,
    /// A broker connection is up, as of the last statistics or error report.
    brokers_up: AtomicBool,
}

/// What the lag gauges are computed from, per partition.
#[derive(Debug, Default, Clone)]
pub struct PartitionLag {
    pub high_watermark: Option<i64>,
    /// The oldest offset the broker holds: where a partition with no stored progress
    /// starts, so its lag is defined before the first flush.
    pub low_watermark: Option<i64>,
    pub durable_next: Option<i64>,
    /// Broker timestamp (ms) of the oldest consumed message not yet durable.
    pub oldest_pending_ms: Option<i64>,
    /// When the partition last made progress durable (ms), for partitions whose next
    /// messages have not even been fetched.
    pub last_progress_ms: i64,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let flush_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sohoa_ingest_flush_duration_seconds",
                "Time from the start of a flush to its commit.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(flush_seconds.clone()))
            .expect("unique metric");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sohoa_ingest_commit_duration_seconds",
                "Time a flush's commit to the events table took: reading the newest \
                 snapshot, the log write, and the retries of a lost log version.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(commit_seconds.clone()))
            .expect("unique metric");
        let pipeline_seconds = CounterVec::new(
            Opts::new(
                "sohoa_ingest_pipeline_seconds_total",
                "Seconds the pipeline thread spent per stage: waiting for messages, decoding, encoding Parquet, writing (held up by storage or the dead-letter topic: storage writes run in the background, and this is the time it waits on them).",
            ),
            &["stage"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(pipeline_seconds.clone()))
            .expect("unique metric");
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(pc));
        }
        Arc::new(Metrics {
            messages: counter_vec(
                "sohoa_ingest_messages_total",
                "Messages consumed, by topic and outcome (written, dead_lettered).",
                &["topic", "outcome"],
            ),
            received: counter_vec(
                "sohoa_ingest_received_messages_total",
                "Messages taken from the source, by topic, before they are made durable \
                 (a partition consumed again after a rebalance or a fence counts again).",
                &["topic"],
            ),
            events: counter_vec(
                "sohoa_ingest_events_total",
                "Records decoded, by topic and outcome (written, rejected).",
                &["topic", "outcome"],
            ),
            dead_letters: counter_vec(
                "sohoa_ingest_dead_letters_total",
                "Records rejected into dead letters, by topic and reason (a message may hold several).",
                &["topic", "reason"],
            ),
            dead_letters_repeated: counter_vec(
                "sohoa_ingest_dead_letters_repeated_total",
                "Dead letters that may reach the dead-letter topic twice, by cause: resent \
                 (refused or timed out, sent again), revoked, fenced or not_flushed (their \
                 records were not committed here and are consumed again).",
                &["cause"],
            ),
            warnings: counter_vec(
                "sohoa_ingest_warnings_total",
                "Normalization warnings, by topic and kind.",
                &["topic", "kind"],
            ),
            files_written: counter(
                "sohoa_ingest_files_written_total",
                "Parquet files published to events/.",
            ),
            bytes_written: counter(
                "sohoa_ingest_bytes_written_total",
                "Bytes of Parquet published to events/.",
            ),
            flush_seconds,
            flush_failures: counter_vec(
                "sohoa_ingest_flush_failures_total",
                "Flushes that failed and will be retried, by stage.",
                &["stage"],
            ),
            flush_backoff_seconds: {
                let g = GaugeVec::new(
                    Opts::new(
                        "sohoa_ingest_flush_backoff_seconds",
                        "Delay before a partition's failed flush is tried again (0 when none \
                         failed), by topic and partition.",
                    ),
                    &["topic", "partition"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            rebalances: counter_vec(
                "sohoa_ingest_rebalances_total",
                "Consumer-group rebalance events, by kind (assign, revoke).",
                &["kind"],
            ),
            assigned_partitions: gauge(
                "sohoa_ingest_assigned_partitions",
                "Partitions currently assigned to this ingestor.",
            ),
            shards: gauge(
                "sohoa_ingest_shards",
                "Pipelines (shards) this ingestor runs, each owning a share of its partitions.",
            ),
            buffered_bytes: gauge(
                "sohoa_ingest_buffered_bytes",
                "Bytes buffered: decoded rows not yet written, and messages in flight.",
            ),
            paused: gauge(
                "sohoa_ingest_paused",
                "1 while consumption is paused for backpressure.",
            ),
            lag_messages: gauge_vec(
                "sohoa_ingest_consumer_lag_messages",
                "High watermark minus the next offset to make durable.",
                &["topic", "partition"],
            ),
            lag_seconds: gauge_vec(
                "sohoa_ingest_consumer_lag_seconds",
                "Age of the oldest message not yet durable, in seconds.",
                &["topic", "partition"],
            ),
            durable_offset: gauge_vec(
                "sohoa_ingest_durable_offset",
                "Next offset to make durable (the committed position in storage).",
                &["topic", "partition"],
            ),
            last_flush_timestamp: gauge(
                "sohoa_ingest_last_flush_timestamp_seconds",
                "Unix time of the last successful flush.",
            ),
            table_version: gauge(
                "sohoa_ingest_table_version",
                "The events table's version this ingestor last committed.",
            ),
            commit_seconds,
            pipeline_seconds,
            kafka_client_errors: counter_vec(
                "sohoa_kafka_client_errors_total",
                "Errors the Kafka clients reported, by client (consumer, dead_letters) and \
                 librdkafka error code (AllBrokersDown, BrokerTransportFailure, ...).",
                &["client", "code"],
            ),
            offset_gaps: counter_vec(
                "sohoa_ingest_offset_gaps_total",
                "Ranges of offsets Kafka deleted (retention) before they were ingested, by \
                 topic and partition; each is recorded in the commit marker of the range \
                 that follows it.",
                &["topic", "partition"],
            ),
            offset_gap_messages: counter_vec(
                "sohoa_ingest_offset_gap_messages_total",
                "Offsets in those ranges, by topic and partition: the messages lost, at most.",
                &["topic", "partition"],
            ),
            registry,
            lag: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
            joined: AtomicBool::new(false),
            brokers_up: AtomicBool::new(false),
        })
    }

    /// Started (`true`) or stopping (`false`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The group gave this consumer an assignment: it is part of the group.
    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::SeqCst);
        // Joining takes a broker: the group coordinator answered.
        self.brokers_up.store(true, Ordering::SeqCst);
    }

    /// Whether any broker connection is up, from librdkafka's statistics and errors.
    pub fn set_brokers_up(&self, up: bool) {
        self.brokers_up.store(up, Ordering::SeqCst);
    }

    /// Ready when started, in the group, and connected to a broker: a replica that cannot
    /// reach Kafka is not doing its job, whatever its process state.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && self.joined.load(Ordering::SeqCst)
            && self.brokers_up.load(Ordering::SeqCst)
    }

    /// Update one partition's lag inputs and recompute its gauges.
    pub fn update_lag(&self, topic: &str, partition: i32, f: impl FnOnce(&mut PartitionLag)) {
        let mut lag = self.lag.lock().expect("lag lock");
        let entry = lag
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| PartitionLag {
                last_progress_ms: now_ms(),
                ..Default::default()
            });
        f(entry);
        self.publish_lag(topic, partition, entry);
    }

    /// A high watermark from librdkafka's statistics, for partitions this ingestor owns.
    pub fn set_watermarks(&self, topic: &str, partition: i32, low: i64, high: i64) {
        let mut lag = self.lag.lock().expect("lag lock");
        if let Some(l) = lag.get_mut(&(topic.to_owned(), partition)) {
            l.high_watermark = Some(high);
            l.low_watermark = Some(low.max(0));
            self.publish_lag(topic, partition, l);
        }
    }

    /// Export a partition's gap counters at 0 from its assignment on: an alert on their
    /// increase needs a sample before the first gap.
    pub fn watch_gaps(&self, topic: &str, partition: i32) {
        let p = partition.to_string();
        self.offset_gaps.with_label_values(&[topic, &p]);
        self.offset_gap_messages.with_label_values(&[topic, &p]);
    }

    /// A gap committed in a partition's marker.
    pub fn count_gap(&self, topic: &str, partition: i32, gap: &OffsetGap) {
        let p = partition.to_string();
        self.offset_gaps.with_label_values(&[topic, &p]).inc();
        self.offset_gap_messages
            .with_label_values(&[topic, &p])
            .inc_by(gap.offsets());
    }

    /// Forget a partition that is no longer assigned, so its gauges do not go stale.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        self.lag
            .lock()
            .expect("lag lock")
            .remove(&(topic.to_owned(), partition));
        let p = partition.to_string();
        for g in [&self.lag_messages, &self.lag_seconds, &self.durable_offset] {
            let _ = g.remove_label_values(&[topic, &p]);
        }
        let _ = self.flush_backoff_seconds.remove_label_values(&[topic, &p]);
    }

    /// Recompute every partition's lag seconds (time passes even without events).
    pub fn refresh_lag(&self) {
        let lag = self.lag.lock().expect("lag lock");
        for ((topic, partition), l) in lag.iter() {
            self.publish_lag(topic, *partition, l);
        }
    }

    fn publish_lag(&self, topic: &str, partition: i32, l: &PartitionLag) {
        let p = partition.to_string();
        let labels = [topic, p.as_str()];
        if let Some(d) = l.durable_next {
            self.durable_offset.with_label_values(&labels).set(d);
        }
        let (Some(hw), Some(next)) = (l.high_watermark, l.durable_next.or(l.low_watermark)) else {
            return;
        };
        let messages = (hw - next).max(0);
        self.lag_messages.with_label_values(&labels).set(messages);
        let seconds = match (messages, l.oldest_pending_ms) {
            (0, _) => 0,
            (_, Some(ts)) => (now_ms() - ts).max(0) / 1000,
            (_, None) => (now_ms() - l.last_progress_ms).max(0) / 1000,
        };
        self.lag_seconds.with_label_values(&labels).set(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.refresh_lag();
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

impl sohoa_runtime::http::Exposition for Metrics {
    fn render(&self) -> String {
        Metrics::render(self)
    }
    fn is_ready(&self) -> bool {
        Metrics::is_ready(self)
    }
}
