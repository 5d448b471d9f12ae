//! When a flush that failed on a transient error (storage or the dead-letter topic
//! unreachable) is tried again: exponentially later, with jitter, up to a cap.
//!
//! Without it, every record that filled a partition's buffer during an outage started
//! another attempt: thousands of failed writes, and log lines, a second. The jitter keeps
//! the replicas of a group, and the partitions of one replica, from retrying in step when
//! storage comes back.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The retry schedule of one partition's flush.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The delay after the first failure, before jitter.
    pub initial: Duration,
    /// No delay is longer.
    pub max: Duration,
}

impl Backoff {
    /// The delay after the `failures`-th failure in a row (1 for the first): `initial`
    /// doubled for each failure before it, capped at `max`, of which a random part of up
    /// to half is taken off ("equal jitter": never less than half the step, so the
    /// schedule still backs off).
    pub fn delay(&self, failures: u32) -> Duration {
        self.delay_with(failures, unit_random())
    }

    fn delay_with(&self, failures: u32, random: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let step = self.initial.saturating_mul(1u32 << doublings).min(self.max);
        step.mul_f64(1.0 - random.clamp(0.0, 1.0) / 2.0)
    }
}

/// A number in [0, 1) that differs from call to call: each `RandomState` is seeded anew,
/// which is random enough for spreading retries and needs no extra dependency.
fn unit_random() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(30),
    };

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_takes_at_most_half() {
        let ms = |f, r| B.delay_with(f, r).as_millis();
        assert_eq!(
            [ms(1, 0.0), ms(2, 0.0), ms(3, 0.0), ms(4, 0.0)],
            [500, 1000, 2000, 4000]
        );
        assert_eq!(ms(7, 0.0), 30_000, "32 s is capped at 30 s");
        assert_eq!(ms(200, 0.0), 30_000, "no overflow however long the outage");
        assert_eq!(ms(1, 0.999_999), 250);
        assert_eq!(ms(200, 1.0), 15_000);
        for f in 1..40 {
            let d = B.delay(f);
            let step = B.delay_with(f, 0.0);
            assert!(
                d <= step && d >= step / 2,
                "{f}: {d:?} against a step of {step:?}"
            );
        }
    }

    #[test]
    fn the_random_part_varies() {
        let draws: std::collections::BTreeSet<u64> =
            (0..64).map(|_| (unit_random() * 1e9) as u64).collect();
        assert!(draws.len() > 32, "{} distinct draws of 64", draws.len());
        assert!(draws.iter().all(|&d| d < 1_000_000_000));
    }
}
