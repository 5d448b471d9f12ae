//! Why the cluster could not be reached, for `sohoa lag`'s one-line error.
//!
//! A metadata request to an unreachable cluster fails with a bare "broker transport
//! failure". The reason (connection refused, a certificate the client does not trust, a
//! SASL failure) comes only as error events on the client's queue, which a command that
//! never polls never sees.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;

/// How long to serve queued events while looking for the reason. librdkafka queues it
/// before it fails the request, so it is normally there at once.
const WAIT: Duration = Duration::from_millis(500);

/// A client context that keeps the first error librdkafka reports.
#[derive(Default)]
pub struct FirstFailure(Mutex<Option<String>>);

impl ClientContext for FirstFailure {
    // Every attempt to reach a down cluster reports again; the reason goes into the
    // command's error once, instead of a line per attempt.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "kafka client error");
        let mut first = self.0.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| reason.to_owned());
    }
}

impl ConsumerContext for FirstFailure {}

/// Serves the events queued on `client` until one gives a reason, and returns it.
pub fn reason(client: &BaseConsumer<FirstFailure>) -> Option<Box<str>> {
    let first = || {
        let first = client.context().0.lock().unwrap_or_else(|e| e.into_inner());
        first.as_deref().map(Box::from)
    };
    let deadline = Instant::now() + WAIT;
    while first().is_none() && Instant::now() < deadline {
        // Log events are served inside the poll; it returns at the first error event.
        let _ = client.poll(Duration::from_millis(10));
    }
    first()
}
