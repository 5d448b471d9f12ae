//! The demo's own stage timings, printed as its last line, so that a run on a slower host
//! shows where its time went instead of only a larger total.

use std::fmt;
use std::time::{Duration, Instant};

/// Wall time of each stage of one demo run.
///
/// Producing and ingesting run at the same time (the mock cluster keeps only a few MB per
/// partition, so the producer waits for the ingestors), so their times overlap: `ingest`
/// runs from the ingestors' start until they have stored every message and stopped, and
/// `ingest_after_produce` is the part of it after the producer finished.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stages {
    /// Generating the feed and its ground truth.
    pub generate: Duration,
    /// Producing every message to the embedded cluster, the flush included.
    pub produce: Duration,
    /// From the ingestors' start until they have stored everything and exited.
    pub ingest: Duration,
    /// The part of `ingest` after the producer's flush: the ingestors' last flushes.
    pub ingest_after_produce: Duration,
    /// Folding the events into dossiers and computing the metrics.
    pub aggregate: Duration,
    /// Rendering and writing the HTML report and the terminal summary.
    pub report: Duration,
    /// The whole run, start to end.
    pub total: Duration,
}

/// Times one stage: `Stage::start()` when it begins, `.stop()` when it ends.
pub struct Stage(Instant);

impl Stage {
    pub fn start() -> Self {
        Stage(Instant::now())
    }

    pub fn stop(&self) -> Duration {
        self.0.elapsed()
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl fmt::Display for Stages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stages: generate {} · produce {} · ingest {} (alongside produce; {} after it) · \
             aggregate {} · report {} · total {}",
            secs(self.generate),
            secs(self.produce),
            secs(self.ingest),
            secs(self.ingest_after_produce),
            secs(self.aggregate),
            secs(self.report),
            secs(self.total),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_stage_with_its_seconds() {
        let ms = Duration::from_millis;
        let s = Stages {
            generate: ms(3_140),
            produce: ms(18_200),
            ingest: ms(21_049),
            ingest_after_produce: ms(2_849),
            aggregate: ms(5_200),
            report: ms(760),
            total: ms(49_000),
        };
        assert_eq!(
            s.to_string(),
            "stages: generate 3.1 s · produce 18.2 s · ingest 21.0 s (alongside produce; \
             2.8 s after it) · aggregate 5.2 s · report 0.8 s · total 49.0 s"
        );
    }
}
