//! Kafka client errors: every one counted, the log kept readable.
//!
//! librdkafka reports a client error at every failed connection attempt, and while the
//! brokers are down the consumer's coordinator query retries every 50 ms or so. Logged one
//! by one (rdkafka's default), that was about 25 identical ERROR lines a second per
//! replica for as long as an outage lasted. Here every report still counts in
//! `sohoa_kafka_client_errors_total`; the log gets the first report of each error, then at
//! most one line per error and [`FOLD_INTERVAL`], saying how many reports it stands for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

use crate::metrics::Metrics;

/// Reports of the same error within this time after a logged one are only counted.
pub const FOLD_INTERVAL: Duration = Duration::from_secs(30);

/// Which client reported an error: the `client` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    Consumer,
    DeadLetters,
}

impl Client {
    fn label(self) -> &'static str {
        match self {
            Client::Consumer => "consumer",
            Client::DeadLetters => "dead_letters",
        }
    }
}

/// The error reports of all of a process's Kafka clients, shared by their contexts, so
/// that the dead-letter producers of several shards log an outage once, not once each.
pub struct ClientErrors {
    metrics: Arc<Metrics>,
    log: FoldedLog,
}

impl ClientErrors {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(ClientErrors {
            metrics,
            log: FoldedLog::new(FOLD_INTERVAL),
        })
    }

    /// A client error from librdkafka (a `ClientContext::error` callback).
    pub fn report(&self, client: Client, error: &KafkaError, reason: &str) {
        let code = code(error);
        self.metrics
            .kafka_client_errors
            .with_label_values(&[client.label(), &code])
            .inc();
        if let Some(folded) = self.log.admit((client, code.clone()), Instant::now()) {
            tracing::error!(
                client = client.label(),
                code = %code,
                folded,
                reason,
                "kafka client error (further reports of it within {}s are only counted, in sohoa_kafka_client_errors_total)",
                FOLD_INTERVAL.as_secs()
            );
        }
    }

    /// An error `poll` returned to the consumer loop, logged as a warning and folded the
    /// same way. Most of these are client errors that [`ClientErrors::report`] has just
    /// counted, so they are not counted again; the few about one partition's fetch come
    /// only this way, and the log has them.
    pub fn polled(&self, error: &KafkaError) {
        let code = code(error);
        if let Some(folded) = self
            .log
            .admit((Client::Consumer, format!("poll:{code}")), Instant::now())
        {
            tracing::warn!(error = %error, folded, "consumer error");
        }
    }
}

/// librdkafka's name for the error code (`AllBrokersDown`, `BrokerTransportFailure`, ...):
/// a bounded set, fit for a label.
fn code(error: &KafkaError) -> String {
    error
        .rdkafka_error_code()
        .map_or_else(|| "Other".to_string(), |c| format!("{c:?}"))
}

/// Which reports of a key get a log line: the first, then the first after each interval
/// since the last logged one.
struct FoldedLog {
    interval: Duration,
    seen: Mutex<HashMap<(Client, String), Seen>>,
}

struct Seen {
    logged_at: Instant,
    folded: u64,
}

impl FoldedLog {
    fn new(interval: Duration) -> Self {
        FoldedLog {
            interval,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` if this report is to be logged, `n` being the reports of the same key
    /// since the last logged one that were not; `None` if it is folded into the next.
    fn admit(&self, key: (Client, String), now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(&key) {
            Some(s) if now.duration_since(s.logged_at) < self.interval => {
                s.folded += 1;
                None
            }
            Some(s) => {
                let folded = std::mem::take(&mut s.folded);
                s.logged_at = now;
                Some(folded)
            }
            None => {
                seen.insert(
                    key,
                    Seen {
                        logged_at: now,
                        folded: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    fn key(client: Client, code: &str) -> (Client, String) {
        (client, code.to_string())
    }

    #[test]
    fn the_first_report_is_logged_then_repeats_fold_until_the_interval_passes() {
        let log = FoldedLog::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let down = key(Client::Consumer, "AllBrokersDown");
        assert_eq!(log.admit(down.clone(), t0), Some(0));
        for i in 1..=40 {
            let t = t0 + Duration::from_millis(50 * i);
            assert_eq!(log.admit(down.clone(), t), None, "report {i} is folded");
        }
        // 40 folded reports, told in the next line once the interval has passed.
        assert_eq!(
            log.admit(down.clone(), t0 + Duration::from_secs(30)),
            Some(40)
        );
        assert_eq!(log.admit(down.clone(), t0 + Duration::from_secs(31)), None);
        assert_eq!(log.admit(down, t0 + Duration::from_secs(61)), Some(1));
    }

    #[test]
    fn errors_and_clients_fold_separately() {
        let log = FoldedLog::new(Duration::from_secs(30));
        let t = Instant::now();
        assert_eq!(
            log.admit(key(Client::Consumer, "AllBrokersDown"), t),
            Some(0)
        );
        assert_eq!(
            log.admit(key(Client::Consumer, "BrokerTransportFailure"), t),
            Some(0)
        );
        assert_eq!(
            log.admit(key(Client::DeadLetters, "AllBrokersDown"), t),
            Some(0)
        );
        assert_eq!(log.admit(key(Client::Consumer, "AllBrokersDown"), t), None);
    }

    #[test]
    fn every_report_is_counted_by_client_and_code_even_when_folded() {
        let metrics = Metrics::new();
        let errors = ClientErrors::new(metrics.clone());
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        for _ in 0..5 {
            errors.report(Client::Consumer, &down, "1/1 brokers are down");
        }
        errors.report(Client::DeadLetters, &down, "1/1 brokers are down");
        let count = |client: &str| {
            metrics
                .kafka_client_errors
                .with_label_values(&[client, "AllBrokersDown"])
                .get()
        };
        assert_eq!(count("consumer"), 5);
        assert_eq!(count("dead_letters"), 1);
        let body = metrics.render();
        assert!(
            body.contains(
                "sohoa_kafka_client_errors_total{client=\"consumer\",code=\"AllBrokersDown\"} 5"
            ),
            "{body}"
        );
    }
}
