//! The ingestor: Kafka (or backfill files) to Hive-partitioned Parquet, exactly once.
//!
//! One module per pipeline stage: `source` (consume), `shard` (partitions over pipelines),
//! `pipeline` (decode, normalize, buffer, and commit each flush to the events table
//! through `sohoa_storage::events`, the exactly-once protocol), `backoff` (when a failed
//! flush is tried again), `write` (Parquet encoding), `dead_letter`,
//! `metrics`, `client_errors` (librdkafka's error reports, all counted, their log folded),
//! and `backfill` (files instead of Kafka).

pub mod adopt;
pub mod backfill;
pub mod backoff;
pub mod client_errors;
pub mod compact;
pub mod crashpoint;
pub mod dead_letter;
pub mod metrics;
pub mod pipeline;
pub mod redact;
pub mod rejects;
pub mod shard;
pub mod source;
pub mod write;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use sohoa_runtime::{Config, Storage};
use sohoa_schemas::{build_decoder, DecoderContext, Pseudonymizer};
use sohoa_storage::events::Writer;
use sohoa_storage::Table;

pub use metrics::Metrics;
pub use pipeline::Totals;

use client_errors::ClientErrors;
use dead_letter::KafkaDeadLetters;
use pipeline::{Pipeline, PipelineConfig, Shared};
use shard::Shards;
use source::{IngestContext, KafkaCommitter};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Storage(#[from] sohoa_runtime::StorageError),
    #[error(transparent)]
    Pseudonym(#[from] sohoa_schemas::pseudonym::PseudonymError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    DeadLetter(#[from] dead_letter::DeadLetterError),
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    #[error("http.listen {addr:?}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("could not recover partitions from storage; see the log above")]
    Recovery,
    #[error(transparent)]
    Backfill(#[from] backfill::BackfillError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Probe(#[from] sohoa_storage::ProbeError),
    #[error(transparent)]
    Table(#[from] sohoa_storage::TableError),
    #[error(
        "storage.root {0:?} holds events an earlier release wrote (commit markers under \
         _sohoa/commits/, no events table): convert it with `sohoa adopt` before ingesting"
    )]
    Unadopted(String),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
}

/// The columns whose least and greatest values the table's log keeps for each file: what
/// readers skip files by (a time range, one dossier, one agency, one source range).
pub const STATS_COLUMNS: &[&str] = &[
    "event_time",
    "dossier_code",
    "agency_code",
    "procedure_code",
    "source_partition",
    "source_offset",
];

/// A checkpoint of the table's log every this many commits. Readers replay the commits
/// after the newest checkpoint; at one commit per shard and flush (a minute by default),
/// a hundred is under an hour of a few replicas' commits.
pub const CHECKPOINT_INTERVAL: u64 = 100;

/// The `events/` table of the storage root, created if it does not exist yet. Blocking.
/// A root that an earlier release wrote (commit markers, no table) is refused until
/// `sohoa adopt` converted it: taken for an empty table, its partitions would be loaded
/// again from `kafka.start_from`.
pub fn events_writer(
    storage: &Storage,
    rt: &tokio::runtime::Handle,
) -> Result<Writer, IngestError> {
    if rt.block_on(adopt::needs_adoption(storage.store.as_ref()))? {
        return Err(IngestError::Unadopted(storage.root.clone()));
    }
    let table = Table::events(storage)?;
    let snapshot = table.create_if_absent(&sohoa_schemas::events_schema(), STATS_COLUMNS, &[])?;
    Ok(Writer::new(table, snapshot, CHECKPOINT_INTERVAL))
}

/// Opens the storage root and checks that it fences writers: every commit is a put that
/// must fail when its object exists, and a store that ignores that would let two replicas
/// commit the same offsets without a sound.
pub fn open_storage(cfg: &Config, rt: &tokio::runtime::Handle) -> Result<Storage, IngestError> {
    let storage = Storage::open(&cfg.storage)?;
    rt.block_on(sohoa_storage::check_conditional_put(
        storage.store.as_ref(),
        &object_store::path::Path::from("_sohoa/probes"),
    ))?;
    Ok(storage)
}

/// The pseudonymizer the configuration asks for.
pub fn pseudonymizer(cfg: &Config) -> Result<Arc<Pseudonymizer>, IngestError> {
    Ok(Arc::new(Pseudonymizer::configured(
        cfg.privacy.development_mode,
    )?))
}

fn decoders(cfg: &Config, pseudo: &Arc<Pseudonymizer>) -> pipeline::Decoders {
    cfg.topics
        .iter()
        .map(|t| {
            let ctx = DecoderContext {
                source_system: Arc::from(t.source_system()),
                pseudonymizer: pseudo.clone(),
            };
            (Arc::from(t.name.as_str()), build_decoder(t.decoder, ctx))
        })
        .collect()
}

/// librdkafka settings shared by the consumer and the dead-letter producer.
fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    c
}

fn consumer_config(cfg: &Config) -> ClientConfig {
    let mut c = client_config(cfg);
    c.set("group.id", &cfg.kafka.group_id)
        // Storage is the source of truth; offsets are committed by hand after each flush.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "session.timeout.ms",
            cfg.kafka.session_timeout_ms.to_string(),
        )
        .set(
            "statistics.interval.ms",
            cfg.kafka.statistics_interval_ms.to_string(),
        )
        .set("enable.partition.eof", "false")
        // When retention has deleted the offset storage resumes from, go on from the
        // oldest offset the broker holds, not from the end: the pipeline records the
        // offsets in between as a gap. librdkafka's default (`latest`) would skip every
        // message still held, and the next commit would claim them done.
        .set("auto.offset.reset", "earliest");
    // A fetch must hold at least one message of the largest size sources send.
    if !cfg.kafka.properties.contains_key("fetch.message.max.bytes") {
        c.set("fetch.message.max.bytes", "16777216");
    }
    // librdkafka stops fetching a partition whose prefetch queue is full and, by default,
    // waits a whole second before trying again: with the queue bounded (default.toml),
    // the consumer then idles most of the time. The queue drains in milliseconds here.
    if !cfg.kafka.properties.contains_key("fetch.queue.backoff.ms") {
        c.set("fetch.queue.backoff.ms", "10");
    }
    // A broker holds a fetch that finds no new data for `fetch.wait.max.ms` (500 by
    // default), and librdkafka keeps one fetch in flight per broker. Under backpressure
    // the partitions with a backlog are skipped while the queue is full, so the fetch sent
    // then may hold only caught-up partitions: the connection idles for the whole wait
    // while backlogged partitions are fetchable again after 10 ms. In the ingest bench the
    // pipeline waited for input a fifth of its time because of it. The cost of a shorter
    // wait is one empty fetch per broker per interval on an idle stream.
    if !cfg.kafka.properties.contains_key("fetch.wait.max.ms") {
        c.set("fetch.wait.max.ms", "50");
    }
    c
}

/// librdkafka properties that only a consumer reads (scope "C" in librdkafka's
/// CONFIGURATION.md). `[kafka.properties]` is shared, so these reach the dead-letter
/// producer too, where librdkafka would log a CONFWARN for each at every start.
const CONSUMER_ONLY: &[&str] = &[
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "consume.callback.max.messages",
];

fn producer_config(cfg: &Config) -> ClientConfig {
    let mut c = client_config(cfg);
    for key in CONSUMER_ONLY {
        c.remove(key);
    }
    if !cfg.kafka.properties.contains_key("message.max.bytes") {
        c.set(
            "message.max.bytes",
            cfg.kafka.dead_letter_max_bytes.to_string(),
        );
    }
    // librdkafka's own retries of a produce request then never store a dead letter twice
    // (it also implies acks=all). The cases this cannot cover are counted in
    // sohoa_ingest_dead_letters_repeated_total.
    if !cfg.kafka.properties.contains_key("enable.idempotence") {
        c.set("enable.idempotence", "true");
    }
    c
}

/// Run one ingestor replica until `shutdown` resolves, then drain: flush, commit, leave the
/// group. Blocking: it owns its threads and uses `rt` for storage and the HTTP endpoint.
pub fn run(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Totals, IngestError> {
    let storage = open_storage(cfg, rt)?;
    let pseudo = pseudonymizer(cfg)?;
    let writer = events_writer(&storage, rt)?;
    let fatal = Arc::new(AtomicBool::new(false));
    let shard_count = cfg.ingest.shard_count();
    let shared = Shared::new(shard_count)?;
    metrics.shards.set(shard_count as i64);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..shard_count)
        .map(|_| std::sync::mpsc::sync_channel(1024))
        .unzip();
    let tx = Shards::new(txs);

    let client_errors = ClientErrors::new(metrics.clone());
    let ctx = IngestContext {
        errors: client_errors.clone(),
        tx: tx.clone(),
        writer: writer.clone(),
        rt: rt.clone(),
        metrics: metrics.clone(),
        start_from: cfg.kafka.start_from,
        fatal: fatal.clone(),
        batch: std::sync::Mutex::default(),
        buffered: shared.buffered.clone(),
    };
    let consumer: Arc<BaseConsumer<IngestContext>> =
        Arc::new(consumer_config(cfg).create_with_context(ctx)?);
    let topics: Vec<&str> = cfg.topics.iter().map(|t| t.name.as_str()).collect();
    consumer.subscribe(&topics)?;

    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    if !cfg.http.listen.is_empty() {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(&cfg.http.listen))
            .map_err(|source| IngestError::Listen {
                addr: cfg.http.listen.clone(),
                source,
            })?;
        rt.spawn(sohoa_runtime::http::serve(
            listener,
            metrics.clone(),
            async move {
                let _ = stop_http_rx.await;
            },
        ));
    }

    let (rewind_tx, rewind_rx) = std::sync::mpsc::channel();
    let mut shard_threads = Vec::with_capacity(shard_count);
    for (i, rx) in rxs.into_iter().enumerate() {
        // One producer per shard: a shard waits for its own dead letters before it
        // commits, not for the other shards'.
        let dead = KafkaDeadLetters::new(
            &producer_config(cfg),
            &cfg.kafka.dead_letter_topic,
            cfg.kafka.dead_letter_max_bytes,
            client_errors.clone(),
            metrics.clone(),
        )?;
        let pipeline = Pipeline::new(
            PipelineConfig::new(cfg, pseudo.fingerprint(), pipeline::Sources::Kafka),
            decoders(cfg, &pseudo),
            writer.clone(),
            rt.clone(),
            Box::new(dead),
            Box::new(KafkaCommitter {
                consumer: consumer.clone(),
                rewinds: rewind_tx.clone(),
            }),
            metrics.clone(),
            shared.clone(),
        )?;
        shard_threads.push(
            std::thread::Builder::new()
                .name(format!("sohoa-shard-{i}"))
                .spawn(move || pipeline.run(rx))?,
        );
    }
    drop(rewind_tx);
    let stop = Arc::new(AtomicBool::new(false));
    let drain = Duration::from_millis(cfg.shutdown.drain_deadline_ms);
    let poll_thread = {
        let (consumer, stop, metrics, shared) = (
            consumer.clone(),
            stop.clone(),
            metrics.clone(),
            shared.clone(),
        );
        let cap = cfg.buffer.max_bytes;
        std::thread::Builder::new()
            .name("sohoa-kafka-poll".into())
            .spawn(move || {
                source::poll_loop(consumer, tx, rewind_rx, shared, cap, stop, drain, metrics)
            })?
    };
    metrics.set_ready(true);
    tracing::info!(brokers = %cfg.kafka.brokers, group = %cfg.kafka.group_id, topics = ?topics, root = %storage.root, "ingestor started");

    // Wait for the stop signal, a failed pipeline, or a failed recovery.
    rt.block_on(async {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if shard_threads.iter().any(|t| t.is_finished()) || fatal.load(Ordering::SeqCst) {
                        break;
                    }
                }
            }
        }
    });
    let stop_started = Instant::now();
    metrics.set_ready(false);
    stop.store(true, Ordering::SeqCst);
    let _ = poll_thread.join();
    // Bounded by the drain deadline the shards were given. The first error wins; a shard
    // that stopped early stopped the poll loop, and with it the others, which drained.
    let mut result = Ok(Totals::default());
    for t in shard_threads {
        match (
            t.join()
                .unwrap_or_else(|_| Err(pipeline::PipelineError::DrainTimeout(0))),
            &mut result,
        ) {
            (Ok(t), Ok(sum)) => *sum += t,
            (Err(e), Ok(_)) => result = Err(e),
            (_, Err(_)) => {}
        }
    }
    // Leave the group now rather than waiting for the session to time out.
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(100));
    drop(consumer);
    let _ = stop_http_tx.send(());
    tracing::info!(
        elapsed_ms = stop_started.elapsed().as_millis() as u64,
        "ingestor stopped"
    );
    if fatal.load(Ordering::SeqCst) {
        return Err(IngestError::Recovery);
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dead_letter_producer_gets_the_shared_properties_but_not_consumer_only_ones() {
        let mut cfg =
            Config::load_with_env(None, std::iter::empty()).expect("the embedded defaults");
        for (k, v) in [
            ("group.instance.id", "replica-1"),
            ("heartbeat.interval.ms", "500"),
            ("security.protocol", "SASL_SSL"),
        ] {
            cfg.kafka.properties.insert(k.into(), v.into());
        }
        let producer = producer_config(&cfg);
        let consumer = consumer_config(&cfg);
        for key in [
            "group.instance.id",
            "heartbeat.interval.ms",
            "queued.max.messages.kbytes",
        ] {
            assert_eq!(producer.get(key), None, "{key} is not for the producer");
            assert!(
                consumer.get(key).is_some(),
                "{key} still reaches the consumer"
            );
        }
        assert_eq!(producer.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(consumer.get("security.protocol"), Some("SASL_SSL"));
    }

    #[test]
    fn a_deleted_offset_resumes_at_the_oldest_one_held() {
        let cfg = Config::load_with_env(None, std::iter::empty()).expect("the embedded defaults");
        assert_eq!(
            consumer_config(&cfg).get("auto.offset.reset"),
            Some("earliest")
        );
    }

    #[test]
    fn fetch_timings_default_short_and_yield_to_the_properties() {
        let mut cfg =
            Config::load_with_env(None, std::iter::empty()).expect("the embedded defaults");
        let consumer = consumer_config(&cfg);
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("50"));
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("10"));
        for (k, v) in [
            ("fetch.wait.max.ms", "500"),
            ("fetch.queue.backoff.ms", "1000"),
        ] {
            cfg.kafka.properties.insert(k.into(), v.into());
        }
        let consumer = consumer_config(&cfg);
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("1000"));
    }
}
