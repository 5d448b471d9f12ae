//! `sohoa lag`: how far a consumer group is behind, per partition, on any Kafka cluster
//! (the same numbers as `kafka-consumer-groups --describe`, plus the age of the oldest
//! unconsumed message).
//!
//! It only reads. The group's offsets are fetched by a consumer that never subscribes, so
//! it never joins the group (no rebalance of the running ingestors) and never commits.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sohoa_runtime::Config;

mod error;
mod first_failure;
pub use error::LagError;
use first_failure::FirstFailure;

/// Exit status of `sohoa lag` when the total lag is above `--fail-above`; distinct from 1
/// (the command failed) and 2 (bad configuration) so probes can tell "behind" from "broken".
pub const EXIT_LAG_ABOVE: u8 = 3;

/// Arguments of `sohoa lag`.
#[derive(clap::Args)]
pub struct LagArgs {
    /// Bootstrap servers (defaults to kafka.brokers from the configuration).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Consumer group (defaults to kafka.group_id).
    #[arg(long)]
    pub group: Option<String>,
    /// Topics, comma-separated (defaults to the configured topics).
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Output format: table (default) or json (one object per partition per line, for
    /// scripts).
    #[arg(long, value_enum, default_value = "table")]
    pub format: LagFormat,
    /// Exit with status 3 when the total lag in messages is above this (for probes/cron).
    #[arg(long, value_name = "MESSAGES")]
    pub fail_above: Option<i64>,
    /// How long to wait for each answer from the cluster.
    #[arg(long, value_name = "SECONDS", default_value = "10")]
    pub timeout: u64,
}

/// How `sohoa lag` prints its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LagFormat {
    /// Aligned columns and a total line, for people.
    Table,
    /// One JSON object per partition per line, for scripts.
    Json,
}

/// Where a consumer group stands on one partition.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: i32,
    /// The group's committed offset (the next message it will read); `None` when the
    /// group has never committed on this partition.
    pub committed: Option<i64>,
    /// The oldest offset the broker still holds.
    pub low: i64,
    /// The high watermark: the offset the next produced message will get.
    pub high: i64,
    /// Messages retained but not yet consumed: `high - max(committed, low)`, never
    /// negative. Without a commit, everything retained counts.
    pub lag_messages: i64,
    /// Age in seconds of the oldest unconsumed message (now minus its timestamp): 0 when
    /// nothing is unconsumed, `None` when it could not be read in time.
    pub lag_seconds: Option<f64>,
}

/// Read the committed offsets of `group` and the watermarks of every partition of
/// `topics`, and the age of each partition's oldest unconsumed message.
///
/// `extra` holds librdkafka properties applied to every client (security.protocol,
/// sasl.*, ssl.*). `timeout` bounds each request to the cluster, and the whole read of
/// message ages. Rows come in the order of `topics`, then by partition.
pub fn describe(
    brokers: &str,
    group: &str,
    topics: &[String],
    extra: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Vec<PartitionLag>, LagError> {
    if group.trim().is_empty() {
        return Err(LagError::Usage(
            "no consumer group: pass --group or set kafka.group_id".into(),
        ));
    }
    let mut wanted: Vec<&str> = Vec::new();
    for t in topics.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if !wanted.contains(&t) {
            wanted.push(t);
        }
    }
    if wanted.is_empty() {
        return Err(LagError::Usage(
            "no topic: pass --topics or configure [[topics]]".into(),
        ));
    }

    let reader = group_reader(brokers, group, extra)?;
    let mut tpl = TopicPartitionList::new();
    for topic in &wanted {
        for partition in partitions(&reader, brokers, topic, timeout)? {
            tpl.add_partition(topic, partition);
        }
    }
    tracing::debug!(group, partitions = tpl.count(), "reading committed offsets");
    let committed = reader
        .committed_offsets(tpl, timeout)
        .map_err(|source| LagError::Kafka {
            what: format!("cannot read the committed offsets of group {group:?}"),
            source,
        })?;

    let mut rows = Vec::with_capacity(committed.count());
    for elem in committed.elements() {
        let (topic, partition) = (elem.topic(), elem.partition());
        elem.error().map_err(|source| LagError::Kafka {
            what: format!(
                "cannot read the committed offset of group {group:?} on {topic}/{partition}"
            ),
            source,
        })?;
        // Anything but a real offset (Invalid, mostly) means the group never committed here.
        let committed = match elem.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        };
        let (low, high) = reader
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|source| LagError::Kafka {
                what: format!("cannot read the watermarks of {topic}/{partition}"),
                source,
            })?;
        // Saturating: a broker answering nonsense must not crash a diagnostic tool.
        let lag_messages = high
            .saturating_sub(committed.unwrap_or(low).max(low))
            .max(0);
        rows.push(PartitionLag {
            topic: topic.to_owned(),
            partition,
            committed,
            low,
            high,
            lag_messages,
            lag_seconds: (lag_messages == 0).then_some(0.0),
        });
    }
    // The group reader has done its part; closing it before the probe keeps at most one
    // extra connection set open at a time.
    drop(reader);

    let ages = oldest_unconsumed_ages(brokers, extra, &rows, timeout)?;
    for row in rows.iter_mut().filter(|r| r.lag_messages > 0) {
        row.lag_seconds = ages.get(&(row.topic.clone(), row.partition)).copied();
    }
    let unknown = rows.iter().filter(|r| r.lag_seconds.is_none()).count();
    if unknown > 0 {
        tracing::warn!(
            partitions = unknown,
            "the age of the oldest unconsumed message could not be read in time on some partitions"
        );
    }
    Ok(rows)
}

/// A consumer carrying the group's id, used only to read; never subscribed, so it never
/// joins the group, and auto-commit is off so closing it commits nothing.
fn group_reader(
    brokers: &str,
    group: &str,
    extra: &BTreeMap<String, String>,
) -> Result<BaseConsumer<FirstFailure>, LagError> {
    let mut c = client_config(brokers, extra);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    c.create_with_context(FirstFailure::default())
        .map_err(LagError::Client)
}

fn client_config(brokers: &str, extra: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in extra {
        c.set(k, v);
    }
    c.set("bootstrap.servers", brokers)
        // Asking about a topic must not create it on clusters that auto-create.
        .set("allow.auto.create.topics", "false");
    c
}

/// The partition ids of `topic`, sorted, from the cluster metadata.
fn partitions(
    reader: &BaseConsumer<FirstFailure>,
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, LagError> {
    let unknown = |code: RDKafkaErrorCode| {
        matches!(
            code,
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
        )
    };
    let md = match reader.fetch_metadata(Some(topic), timeout) {
        Ok(md) => md,
        Err(KafkaError::MetadataFetch(code)) if unknown(code) => {
            return Err(LagError::UnknownTopic {
                topic: topic.to_owned(),
            })
        }
        // The first request is a metadata request, so this is where an unreachable or
        // misconfigured cluster shows up.
        Err(source) => {
            return Err(LagError::Unreachable {
                brokers: brokers.to_owned(),
                source,
                reason: first_failure::reason(reader),
            })
        }
    };
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(LagError::UnknownTopic {
            topic: topic.to_owned(),
        });
    };
    if let Some(err) = t.error() {
        let code = RDKafkaErrorCode::from(err);
        return Err(if unknown(code) {
            LagError::UnknownTopic {
                topic: topic.to_owned(),
            }
        } else {
            LagError::Kafka {
                what: format!("cannot read the metadata of topic {topic:?}"),
                source: KafkaError::MetadataFetch(code),
            }
        });
    }
    // A topic being deleted can briefly answer with no partitions; report it as missing
    // rather than as a topic with no lag.
    if t.partitions().is_empty() {
        return Err(LagError::UnknownTopic {
            topic: topic.to_owned(),
        });
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Seconds since the timestamp of the first unconsumed message of each lagging row.
///
/// One throwaway consumer (its own random group, never committing) is assigned every
/// lagging partition at the group's position and reads until it has one message from
/// each, or `timeout` passes; partitions without an answer are left out.
fn oldest_unconsumed_ages(
    brokers: &str,
    extra: &BTreeMap<String, String>,
    rows: &[PartitionLag],
    timeout: Duration,
) -> Result<HashMap<(String, i32), f64>, LagError> {
    let mut ages = HashMap::new();
    let lagging: Vec<&PartitionLag> = rows.iter().filter(|r| r.lag_messages > 0).collect();
    if lagging.is_empty() {
        return Ok(ages);
    }
    let mut assignment = TopicPartitionList::with_capacity(lagging.len());
    for r in &lagging {
        let start = r.committed.unwrap_or(r.low).max(r.low);
        assignment
            .add_partition_offset(&r.topic, r.partition, Offset::Offset(start))
            .map_err(|source| LagError::Kafka {
                what: format!("cannot position on {}/{}", r.topic, r.partition),
                source,
            })?;
    }

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut c = client_config(brokers, extra);
    c.set(
        "group.id",
        format!("sohoa-lag-probe-{}-{nanos}", std::process::id()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("enable.partition.eof", "false")
    // The committed offset may have been deleted by retention since it was read.
    .set("auto.offset.reset", "earliest")
    // Only the first message of each partition matters: keep prefetching small.
    .set("queued.max.messages.kbytes", "1024");
    let probe: BaseConsumer = c.create().map_err(LagError::Client)?;
    probe
        .assign(&assignment)
        .map_err(|source| LagError::Kafka {
            what: "cannot assign partitions to read message timestamps".into(),
            source,
        })?;

    let deadline = Instant::now() + timeout;
    while ages.len() < lagging.len() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = (deadline - now).min(Duration::from_millis(200));
        let msg = match probe.poll(wait) {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "reading message timestamps");
                continue;
            }
        };
        let key = (msg.topic().to_owned(), msg.partition());
        if ages.contains_key(&key) {
            continue;
        }
        let Some(ts) = msg.timestamp().to_millis() else {
            tracing::debug!(
                topic = key.0,
                partition = key.1,
                "message without a timestamp: age unknown"
            );
            continue;
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        // A producer clock ahead of ours would give a negative age; the message is new.
        let age = (now_ms.saturating_sub(ts)).max(0) as f64 / 1000.0;
        let mut done = TopicPartitionList::new();
        done.add_partition(&key.0, key.1);
        if let Err(e) = probe.pause(&done) {
            tracing::debug!(error = %e, "pausing a partition already read");
        }
        ages.insert(key, age);
    }
    Ok(ages)
}

/// Total lag in messages over `rows` (saturating, so absurd watermarks cannot overflow).
pub fn total_lag(rows: &[PartitionLag]) -> i64 {
    rows.iter()
        .fold(0i64, |acc, r| acc.saturating_add(r.lag_messages))
}

/// A message age for people: under a minute "12.3s", under an hour "4m05s", under a day
/// "2h10m", then "3d04h". Unknown ages are "?".
pub fn format_age(seconds: Option<f64>) -> String {
    let Some(s) = seconds else {
        return "?".into();
    };
    if !s.is_finite() || s < 0.0 {
        return "?".into();
    }
    if s < 60.0 {
        // Round first so 59.96 prints as "1m00s", not "60.0s".
        let tenths = (s * 10.0).round();
        if tenths < 600.0 {
            return format!("{:.1}s", tenths / 10.0);
        }
    }
    let secs = s.round() as u64;
    match secs {
        0..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// The rows as an aligned table with a header and a TOTAL line: the summed lag, and the
/// age of the oldest unconsumed message over all partitions (prefixed ">=" when some
/// lagging partition's age is unknown, so the true oldest may be older). A partition
/// without a committed offset shows "-"; an age that could not be read shows "?".
pub fn render_table(rows: &[PartitionLag]) -> String {
    const HEADER: [&str; 7] = [
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "LOW",
        "HIGH",
        "LAG",
        "LAG_SECONDS",
    ];
    let mut lines: Vec<[String; 7]> = Vec::with_capacity(rows.len() + 2);
    lines.push(HEADER.map(String::from));
    for r in rows {
        lines.push([
            r.topic.clone(),
            r.partition.to_string(),
            r.committed.map_or_else(|| "-".into(), |c| c.to_string()),
            r.low.to_string(),
            r.high.to_string(),
            r.lag_messages.to_string(),
            format_age(r.lag_seconds),
        ]);
    }
    let total = total_lag(rows);
    lines.push([
        "TOTAL".into(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        total.to_string(),
        total_age(rows),
    ]);

    let mut widths = [0usize; 7];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            // Topic names read left to right; numbers line up on their last digit.
            if i == 0 {
                text.push_str(&format!("{cell:<w$}"));
            } else {
                text.push_str(&format!("{cell:>w$}"));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// The TOTAL line's age: the oldest over lagging partitions, a lower bound when some are
/// unknown.
fn total_age(rows: &[PartitionLag]) -> String {
    let lagging = rows.iter().filter(|r| r.lag_messages > 0);
    let (mut oldest, mut unknown) = (None::<f64>, false);
    for r in lagging {
        match r.lag_seconds {
            Some(s) => oldest = Some(oldest.map_or(s, |o| o.max(s))),
            None => unknown = true,
        }
    }
    match (oldest, unknown) {
        (None, false) => format_age(Some(0.0)),
        (None, true) => format_age(None),
        (Some(s), false) => format_age(Some(s)),
        (Some(s), true) => format!(">={}", format_age(Some(s))),
    }
}

/// The rows as JSON lines, one object per partition, each naming `group`. Absent values
/// (no commit, unknown age) are `null`.
pub fn render_json(group: &str, rows: &[PartitionLag]) -> String {
    let mut out = String::new();
    for r in rows {
        let obj = serde_json::json!({
            "group": group,
            "topic": r.topic,
            "partition": r.partition,
            "committed": r.committed,
            "low": r.low,
            "high": r.high,
            "lag_messages": r.lag_messages,
            "lag_seconds": r.lag_seconds,
        });
        out.push_str(&obj.to_string());
        out.push('\n');
    }
    out
}

/// `sohoa lag`: print the group's lag, with unset arguments taken from `cfg` (brokers,
/// group, topics, and kafka.properties for security). Exit status 0, or
/// [`EXIT_LAG_ABOVE`] when the total lag is above `--fail-above`.
pub fn run(cfg: &Config, args: LagArgs) -> anyhow::Result<ExitCode> {
    let brokers = args.brokers.unwrap_or_else(|| cfg.kafka.brokers.clone());
    let group = args.group.unwrap_or_else(|| cfg.kafka.group_id.clone());
    let topics: Vec<String> = if args.topics.is_empty() {
        cfg.topics.iter().map(|t| t.name.clone()).collect()
    } else {
        args.topics
    };
    let rows = describe(
        &brokers,
        &group,
        &topics,
        &cfg.kafka.properties,
        Duration::from_secs(args.timeout),
    )?;
    let text = match args.format {
        LagFormat::Table => render_table(&rows),
        LagFormat::Json => render_json(&group, &rows),
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `sohoa lag | head` closing the pipe early is not a failure of the command.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("writing to standard output")?,
    }

    let total = total_lag(&rows);
    tracing::debug!(group, total, "lag described");
    if let Some(limit) = args.fail_above {
        if total > limit {
            eprintln!("total lag {total} message(s) is above --fail-above {limit}");
            return Ok(ExitCode::from(EXIT_LAG_ABOVE));
        }
    }
    Ok(ExitCode::SUCCESS)
}
