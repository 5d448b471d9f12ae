//! Why `sohoa lag` could not describe a group: each message is one line that says what
//! to fix.

use std::fmt;

use rdkafka::error::KafkaError;

/// Why the lag could not be described.
#[derive(Debug)]
pub enum LagError {
    /// Nothing to describe: no group or no topic was given.
    Usage(String),
    /// librdkafka refused the client settings (a misspelt kafka.properties key, say).
    Client(KafkaError),
    /// No broker answered the first request.
    Unreachable {
        /// The bootstrap servers that were tried.
        brokers: String,
        /// What librdkafka reported.
        source: KafkaError,
        /// Why the connections failed, when librdkafka said.
        reason: Option<Box<str>>,
    },
    /// The cluster does not have this topic.
    UnknownTopic {
        /// The topic asked for.
        topic: String,
    },
    /// The cluster answered, with an error.
    Kafka {
        /// What was being read, for the message.
        what: String,
        /// What librdkafka reported.
        source: KafkaError,
    },
}

impl fmt::Display for LagError {
    // Each message is one line that says what to fix: the CLI prints it as is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LagError::Usage(msg) => f.write_str(msg),
            LagError::Client(e) => write!(
                f,
                "cannot create the Kafka client: {e} (check kafka.properties)"
            ),
            LagError::Unreachable {
                brokers,
                source,
                reason,
            } => write!(
                f,
                "cannot reach Kafka at {brokers}: {}; check --brokers or kafka.brokers \
                 (and the security settings in kafka.properties)",
                reason.as_deref().unwrap_or(&source.to_string())
            ),
            LagError::UnknownTopic { topic } => write!(
                f,
                "topic {topic:?} does not exist on this cluster; check --topics or [[topics]]"
            ),
            LagError::Kafka { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for LagError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LagError::Client(e)
            | LagError::Unreachable { source: e, .. }
            | LagError::Kafka { source: e, .. } => Some(e),
            LagError::Usage(_) | LagError::UnknownTopic { .. } => None,
        }
    }
}
