//! Configuration: `config/default.toml` (embedded), then an optional `--config` file, then
//! `SOHOA__SECTION__KEY` environment variables, each overriding the one before.
//!
//! Every struct denies unknown fields, so a misspelt key fails at startup with its name
//! instead of being silently ignored. Cross-field rules (the drain deadline against the
//! session timeout, for one) are checked in [`Config::validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use sohoa_schemas::DecoderKind;

/// The embedded defaults; the same file users read in `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SOHOA";

/// Prefix of environment variables that set librdkafka properties (secrets, mostly).
pub const KAFKA_PROP_ENV_PREFIX: &str = "SOHOA_KAFKA_PROP_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// Only the variable's name is shown: its value may be a secret.
    #[error("environment variable {name}: {reason}")]
    Environment { name: String, reason: &'static str },
}

/// The whole configuration of every sohoa service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka connection and consumer-group settings.
    pub kafka: KafkaConfig,
    /// The topics to consume and the decoder of each.
    pub topics: Vec<TopicConfig>,
    /// Where the tables are written.
    pub storage: StorageConfig,
    /// When a shard's buffers are written out: one flush takes every buffer of the shard.
    pub flush: FlushConfig,
    /// The global cap on buffered bytes (backpressure).
    pub buffer: BufferConfig,
    /// How the ingestor spreads its work over threads.
    pub ingest: IngestConfig,
    /// Graceful stop.
    pub shutdown: ShutdownConfig,
    /// The metrics and health endpoint.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// Personal-data handling.
    pub privacy: PrivacyConfig,
    /// What is kept of rejected backfill lines.
    pub rejects: RejectsConfig,
    /// The batch aggregator: reference data, periods and the scorecard.
    pub aggregate: AggregateConfig,
}

/// Kafka connection and consumer-group settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated host:port.
    pub brokers: String,
    /// Consumer group shared by every ingestor replica.
    pub group_id: String,
    /// Topic receiving messages that fail decoding or validation.
    pub dead_letter_topic: String,
    /// Consumer group session timeout, in milliseconds.
    pub session_timeout_ms: u64,
    /// Largest dead letter the dead-letter topic accepts; bigger ones are truncated.
    pub dead_letter_max_bytes: usize,
    /// librdkafka statistics interval, in milliseconds (feeds the lag metrics).
    pub statistics_interval_ms: u64,
    /// Where a partition without progress in storage starts.
    pub start_from: StartFrom,
    /// Extra librdkafka properties, passed through as-is. Never logged.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    // Properties may hold credentials: show their names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("dead_letter_max_bytes", &self.dead_letter_max_bytes)
            .field("statistics_interval_ms", &self.statistics_interval_ms)
            .field("start_from", &self.start_from)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Where a partition with no stored progress starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest message the broker still holds.
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

/// One topic to consume.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// The Kafka topic.
    pub name: String,
    /// The source format of its messages.
    pub decoder: DecoderKind,
    /// Written into each event's `source_system`; defaults to the decoder's name.
    #[serde(default)]
    pub source_system: Option<String>,
}

impl TopicConfig {
    pub fn source_system(&self) -> &str {
        self.source_system
            .as_deref()
            .unwrap_or_else(|| self.decoder.as_str())
    }
}

/// Where the tables go.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// A local path, or s3://bucket/prefix.
    pub root: String,
    /// object_store options for s3:// roots (endpoint, region, allow_http...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Local roots: fsync each file and its directory before the protocol's next step
    /// relies on it. Without it a power loss or kernel crash can keep a commit of the
    /// events table and lose the data of the files it names.
    pub fsync: bool,
}

impl fmt::Debug for StorageConfig {
    // Options may carry access keys: show their names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("root", &self.root)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .field("fsync", &self.fsync)
            .finish()
    }
}

/// When a shard's buffers are written out: one flush takes every buffer of the shard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushConfig {
    /// Rows in a shard's buffers that trigger a flush.
    pub max_rows: usize,
    /// Bytes a shard's buffers hold in memory (their columns' capacity) that trigger a
    /// flush.
    pub max_bytes: usize,
    /// Bytes one date's buffer holds in memory that trigger a flush: that date's file is
    /// large enough, and waiting for the shard's other dates would only hold memory.
    pub date_max_bytes: usize,
    /// Age of a buffer's oldest row that triggers a flush, in milliseconds.
    pub max_age_ms: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// zstd level of the Parquet pages.
    pub zstd_level: i32,
    /// Delay before a failed flush is tried again, in milliseconds; doubled after each
    /// failure in a row, with jitter.
    pub retry_initial_ms: u64,
    /// The longest delay between two tries of a failed flush, in milliseconds.
    pub retry_max_ms: u64,
}

/// The global cap on buffered bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Bytes buffered across all partitions before consumption pauses.
    pub max_bytes: usize,
}

/// How the ingestor spreads its work over threads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Pipelines in one process, each owning a share of its assigned partitions; 0 for
    /// one per CPU core the process may use.
    pub shards: usize,
}

impl IngestConfig {
    /// The number of pipelines to run.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_SHARDS)),
            n => n,
        }
    }
}

/// More pipelines than this only add threads: the source feeds them all from one poll loop.
pub const MAX_SHARDS: usize = 16;

/// Graceful stop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Time allowed to flush, commit and leave the group, in milliseconds.
    pub drain_deadline_ms: u64,
}

/// The metrics and health endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; empty disables the server.
    pub listen: String,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// tracing filter directive.
    pub level: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines, for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Personal-data handling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Pseudonymize with the public development key (demo and tests only).
    pub development_mode: bool,
}

/// What is kept of rejected backfill lines. Under the storage root, where analysts
/// read, only a masked excerpt, the reasons and a keyed digest of each line; the raw
/// bytes, which hold personal data, only where `raw_root` says.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectsConfig {
    /// Where the raw bytes of rejected lines go, to replay them once fixed: a local path
    /// or s3://bucket/prefix, apart from the storage root and readable only by those
    /// allowed to see personal data. Empty keeps no raw bytes.
    pub raw_root: String,
    /// object_store options for an s3:// `raw_root` (as `storage.options`).
    #[serde(default)]
    pub raw_options: BTreeMap<String, String>,
    /// Days the raw bytes are kept; `sohoa purge-rejects` deletes older ones.
    pub raw_retention_days: u32,
}

impl fmt::Debug for RejectsConfig {
    // Options may carry access keys: show their names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectsConfig")
            .field("raw_root", &self.raw_root)
            .field("raw_options", &self.raw_options.keys().collect::<Vec<_>>())
            .field("raw_retention_days", &self.raw_retention_days)
            .finish()
    }
}

impl RejectsConfig {
    /// The raw store's settings, as a storage root of its own; `None` when no raw bytes
    /// are kept.
    pub fn raw_storage(&self) -> Option<StorageConfig> {
        (!self.raw_root.is_empty()).then(|| StorageConfig {
            root: self.raw_root.clone(),
            options: self.raw_options.clone(),
            fsync: true,
        })
    }
}

/// The batch aggregator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The code of the province (a province-level entry of the agency reference) whose
    /// name titles the report, and under which agencies missing from the reference are
    /// counted; empty: the reference's only province without successors.
    pub province: String,
    /// The agency reference (codes, names, levels, provinces, validity dates and
    /// successors) as TOML, CSV or Parquet, by the file's extension; empty uses the one
    /// embedded from `config/agencies.toml` (the demo region).
    pub agencies: String,
    /// The holiday table (days off and worked Saturdays per year); empty uses the one
    /// embedded from `config/calendar/vn-public-sector.toml`.
    pub calendar: String,
    /// The procedure catalogue (statutory times, whether the result is a document); empty
    /// uses the one embedded from `config/procedures.toml`.
    pub catalogue: String,
    /// Office hours in Vietnam local time, as "HH:MM-HH:MM" sessions.
    pub office_hours: Vec<String>,
    /// Procedures with fewer judged dossiers than this stay out of the report's "worst
    /// procedures", so one late dossier does not top the list.
    pub worst_procedures_min_dossiers: u64,
    /// Points of each indicator the feed supports.
    pub scorecard: ScorecardConfig,
}

/// The 766 indicators the dossier feed can measure, with their points.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScorecardConfig {
    /// 2.1: processed early or on time.
    pub on_time: IndicatorConfig,
    /// 3.3: submitted online.
    pub online: IndicatorConfig,
    /// 3.6: paid online, of fee-bearing dossiers.
    pub online_payment: IndicatorConfig,
    /// 4.1: electronic results.
    pub e_result: IndicatorConfig,
    /// 4.2: digitized dossiers.
    pub digitization: IndicatorConfig,
    /// 4.3: reused components.
    pub reuse: IndicatorConfig,
}

/// Points of one indicator: `points × min(1, rate ÷ full_at)`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorConfig {
    /// The most points the indicator gives.
    pub points: f64,
    /// The rate (0 to 1] at which it gives them all; below, points are proportional.
    pub full_at: f64,
}

impl ScorecardConfig {
    /// Each indicator with its key, for validation and display.
    pub fn indicators(&self) -> [(&'static str, IndicatorConfig); 6] {
        [
            ("on_time", self.on_time),
            ("online", self.online),
            ("online_payment", self.online_payment),
            ("e_result", self.e_result),
            ("digitization", self.digitization),
            ("reuse", self.reuse),
        ]
    }
}

/// The variables that configure sohoa, out of the whole environment. `std::env::vars`
/// panics on the first value that is not UTF-8, and the panic message prints that value,
/// which may be a secret; so the environment is read as `OsString`s and only sohoa's own
/// variables must be UTF-8. Others (a binary pseudonym key included) are left alone.
pub fn sohoa_environment(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ours = |name: &str| {
        name.starts_with(KAFKA_PROP_ENV_PREFIX) || name.starts_with(&format!("{ENV_PREFIX}__"))
    };
    let mut out = Vec::new();
    for (name, value) in vars {
        let name = match name.into_string() {
            Ok(name) => name,
            Err(name) if ours(&name.to_string_lossy()) => {
                return Err(ConfigError::Environment {
                    name: name.to_string_lossy().into_owned(),
                    reason: "the name is not valid UTF-8",
                })
            }
            Err(_) => continue,
        };
        if !ours(&name) {
            continue;
        }
        match value.into_string() {
            Ok(value) => out.push((name, value)),
            Err(_) => {
                return Err(ConfigError::Environment {
                    name,
                    reason: "the value is not valid UTF-8",
                })
            }
        }
    }
    Ok(out)
}

impl Config {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, sohoa_environment(std::env::vars_os())?)
    }

    /// As [`Config::load`], with the environment passed in (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut overrides = config::Map::new();
        let mut props = Vec::new();
        for (k, v) in env {
            if let Some(name) = k.strip_prefix(KAFKA_PROP_ENV_PREFIX) {
                props.push((name.to_ascii_lowercase().replace('_', "."), v));
            } else if k.starts_with(&format!("{ENV_PREFIX}__")) {
                overrides.insert(k, v);
            }
        }
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        );
        let mut cfg: Config = builder.build()?.try_deserialize()?;
        cfg.kafka.properties.extend(props);
        crate::kafka_tls::trust_system_certificates(&mut cfg.kafka.properties);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rules that span keys; each error names the key to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.shutdown.drain_deadline_ms >= self.kafka.session_timeout_ms {
            return invalid(
                "shutdown.drain_deadline_ms",
                format!(
                    "{} ms must be shorter than kafka.session_timeout_ms ({} ms), or Kafka evicts \
                     the replica before it has drained",
                    self.shutdown.drain_deadline_ms, self.kafka.session_timeout_ms
                ),
            );
        }
        if self.topics.is_empty() {
            return invalid("topics", "at least one topic is needed".into());
        }
        if self.ingest.shards > MAX_SHARDS {
            return invalid(
                "ingest.shards",
                format!("{} is more than {MAX_SHARDS}", self.ingest.shards),
            );
        }
        if self
            .topics
            .iter()
            .any(|t| t.name == self.kafka.dead_letter_topic)
        {
            return invalid(
                "kafka.dead_letter_topic",
                format!("{:?} is also an input topic", self.kafka.dead_letter_topic),
            );
        }
        if self.flush.max_rows == 0 || self.flush.row_group_rows == 0 {
            return invalid("flush.max_rows", "must be positive".into());
        }
        if self.flush.date_max_bytes == 0 {
            return invalid("flush.date_max_bytes", "must be positive".into());
        }
        if self.buffer.max_bytes < self.flush.max_bytes {
            return invalid(
                "buffer.max_bytes",
                format!(
                    "{} is smaller than flush.max_bytes ({}): one partition's buffer could never fill",
                    self.buffer.max_bytes, self.flush.max_bytes
                ),
            );
        }
        if self.kafka.dead_letter_max_bytes < 64 * 1024 {
            return invalid(
                "kafka.dead_letter_max_bytes",
                format!(
                    "{} leaves no room for a dead letter's headers: use at least 65536",
                    self.kafka.dead_letter_max_bytes
                ),
            );
        }
        if self.flush.retry_initial_ms == 0 || self.flush.retry_max_ms < self.flush.retry_initial_ms
        {
            return invalid(
                "flush.retry_initial_ms",
                format!(
                    "{} must be positive and at most flush.retry_max_ms ({})",
                    self.flush.retry_initial_ms, self.flush.retry_max_ms
                ),
            );
        }
        if !self.rejects.raw_root.is_empty()
            && self.rejects.raw_root.trim_end_matches('/')
                == self.storage.root.trim_end_matches('/')
        {
            return invalid(
                "rejects.raw_root",
                "must not be the storage root: analysts read there, and raw rejects hold \
                 personal data"
                    .into(),
            );
        }
        if self.rejects.raw_retention_days == 0 {
            return invalid("rejects.raw_retention_days", "must be at least 1".into());
        }
        if !(1..=22).contains(&self.flush.zstd_level) {
            return invalid(
                "flush.zstd_level",
                format!("{} is not 1 to 22", self.flush.zstd_level),
            );
        }
        for (name, ind) in self.aggregate.scorecard.indicators() {
            if !(ind.points >= 0.0 && ind.full_at > 0.0 && ind.full_at <= 1.0) {
                return Err(ConfigError::Invalid {
                    key: "aggregate.scorecard",
                    reason: format!(
                        "{name}: points must be >= 0 and full_at in (0, 1], got points = {}, full_at = {}",
                        ind.points, ind.full_at
                    ),
                });
            }
        }
        if self.aggregate.office_hours.is_empty() {
            return invalid(
                "aggregate.office_hours",
                "at least one session is needed".into(),
            );
        }
        for key in self.kafka.properties.keys() {
            if matches!(
                key.as_str(),
                "enable.auto.commit" | "group.id" | "bootstrap.servers" | "auto.offset.reset"
            ) {
                return invalid(
                    "kafka.properties",
                    format!("{key} is managed by sohoa and cannot be overridden"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_load_and_validate() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.kafka.group_id, "sohoa-ingestor");
        assert_eq!(c.topics[0].decoder, DecoderKind::Dvcqg);
        assert_eq!(c.topics[0].source_system(), "dvcqg");
        assert_eq!(c.kafka.start_from, StartFrom::Earliest);
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(
            c.storage.fsync,
            "local roots are durable unless told otherwise"
        );
        let c = Config::load_with_env(None, env(&[("SOHOA__STORAGE__FSYNC", "false")])).unwrap();
        assert!(!c.storage.fsync);
        let e = Config::load_with_env(None, env(&[("SOHOA__STORAGE__FSYNC", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fsync"), "{e}");
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[flush]\nmax_rows = 10\nmax_age_ms = 5\n").unwrap();
        let c = Config::load_with_env(
            Some(&file),
            env(&[
                ("SOHOA__FLUSH__MAX_AGE_MS", "7"),
                ("SOHOA__KAFKA__BROKERS", "k1:9092,k2:9092"),
                ("SOHOA_KAFKA_PROP_SASL_PASSWORD", "hunter2"),
                ("SOHOA_PSEUDONYM_KEY", "not a config key"),
            ]),
        )
        .unwrap();
        assert_eq!(c.flush.max_rows, 10);
        assert_eq!(c.flush.max_age_ms, 7);
        assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(c.kafka.properties["sasl.password"], "hunter2");
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn properties_sohoa_manages_are_refused_by_name() {
        for (var, key) in [
            ("SOHOA_KAFKA_PROP_AUTO_OFFSET_RESET", "auto.offset.reset"),
            ("SOHOA_KAFKA_PROP_ENABLE_AUTO_COMMIT", "enable.auto.commit"),
            ("SOHOA_KAFKA_PROP_GROUP_ID", "group.id"),
        ] {
            let e = Config::load_with_env(None, env(&[(var, "latest")]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("kafka.properties"), "{e}");
            assert!(
                e.contains(&format!("{key} is managed by sohoa")),
                "{var}: {e}"
            );
        }
    }

    #[test]
    fn unknown_keys_fail_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[flush]\nmax_rowz = 10\n").unwrap();
        let e = Config::load_with_env(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_rowz"), "{e}");
        let e = Config::load_with_env(None, env(&[("SOHOA__FLUSH__BOGUS", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn drain_deadline_must_be_shorter_than_the_session_timeout() {
        let e = Config::load_with_env(
            None,
            env(&[("SOHOA__SHUTDOWN__DRAIN_DEADLINE_MS", "45000")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("configuration key shutdown.drain_deadline_ms:"),
            "{e}"
        );
    }

    #[test]
    fn shards_default_to_the_cores_and_are_bounded() {
        let cfg = Config::load_with_env(None, std::iter::empty()).unwrap();
        assert_eq!(cfg.ingest.shards, 0);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(cfg.ingest.shard_count(), cores.min(MAX_SHARDS));
        let cfg = Config::load_with_env(None, env(&[("SOHOA__INGEST__SHARDS", "3")])).unwrap();
        assert_eq!(cfg.ingest.shard_count(), 3);
        let e = Config::load_with_env(None, env(&[("SOHOA__INGEST__SHARDS", "17")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("configuration key ingest.shards:"), "{e}");
    }

    #[test]
    fn a_date_buffer_that_could_never_trigger_a_flush_is_refused() {
        let e = Config::load_with_env(None, env(&[("SOHOA__FLUSH__DATE_MAX_BYTES", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("flush.date_max_bytes"), "{e}");
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.flush.date_max_bytes, 16 << 20);
    }

    #[test]
    fn wrong_types_and_bad_decoders_name_the_key() {
        let e = Config::load_with_env(None, env(&[("SOHOA__FLUSH__MAX_ROWS", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_rows"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[[topics]]\nname = \"t\"\ndecoder = \"xml\"\n").unwrap();
        let e = Config::load_with_env(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("xml") && e.contains("decoder"), "{e}");
    }

    #[test]
    fn the_environment_is_read_as_bytes_and_only_sohoa_variables_must_be_utf8() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let secret = b"s3cr\xffet-value".to_vec();
        let os = |k: &str, v: Vec<u8>| (OsString::from(k), OsString::from_vec(v));
        // Another program's binary variable, and a binary pseudonym key: not ours to parse.
        let vars = vec![
            os("LANG", b"C".to_vec()),
            os("OTHER_TOOL", secret.clone()),
            os("SOHOA_PSEUDONYM_KEY", secret.clone()),
            os("SOHOA__FLUSH__MAX_AGE_MS", b"7".to_vec()),
        ];
        let env = sohoa_environment(vars).unwrap();
        assert_eq!(env, [("SOHOA__FLUSH__MAX_AGE_MS".into(), "7".into())]);

        for name in ["SOHOA__KAFKA__BROKERS", "SOHOA_KAFKA_PROP_SASL_PASSWORD"] {
            let e = sohoa_environment(vec![os(name, secret.clone())])
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("environment variable {name}: the value is not valid UTF-8")
            );
            assert!(
                !e.contains("s3cr"),
                "the value stays out of the message: {e}"
            );
        }
        let bad_name = (
            OsString::from_vec(b"SOHOA__FLUSH__\xff".to_vec()),
            OsString::from("1"),
        );
        let e = sohoa_environment(vec![bad_name]).unwrap_err().to_string();
        assert!(e.contains("the name is not valid UTF-8"), "{e}");
    }
}
