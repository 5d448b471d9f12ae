//! Injected crashes, for the exactly-once tests: with `SOHOA_CRASH_AT=<point>` set, the
//! process aborts the `SOHOA_CRASH_AFTER`-th time (default: first) it reaches that point,
//! as abruptly as `kill -9`: no destructors, no flush. Unset, a point costs one load.
//!
//! Points, in protocol order: `after_stage_file` (a flush's data file written),
//! `before_commit` (all written, the events table not yet committed), `after_commit` (the
//! table committed, Kafka's offsets not yet); and compaction's `compact_after_stage` and
//! `compact_after_commit`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn target() -> &'static Option<(String, u64)> {
    static T: OnceLock<Option<(String, u64)>> = OnceLock::new();
    T.get_or_init(|| {
        let point = std::env::var("SOHOA_CRASH_AT").ok()?;
        let after = std::env::var("SOHOA_CRASH_AFTER")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        Some((point, after))
    })
}

pub fn hit(point: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if let Some((p, after)) = target() {
        if p == point && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *after {
            eprintln!("sohoa: injected crash at {point}");
            std::process::abort();
        }
    }
}
