//! Logging: readable text in development, one JSON object per line in production.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
/// Logs go to stderr so stdout stays free for command output.
pub fn init(cfg: &LogConfig) {
    // The Delta kernel logs at info for every snapshot it loads and every commit, dozens a
    // minute for an ingestor: left at warn unless `log.level` names it.
    let level = if cfg.level.contains("delta_kernel") {
        cfg.level.clone()
    } else {
        format!("{},delta_kernel=warn", cfg.level)
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests, the demo running several services) keeps the first.
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
