//! `sohoa compact`: merge the small files of closed dates of the events table, then vacuum
//! the files no snapshot within the retention needs.

use std::time::Duration;

use anyhow::{Context, Result};
use sohoa_ingestor::compact::{self, CompactOptions};
use sohoa_ingestor::write::FileFormat;

#[derive(clap::Args)]
pub struct CompactArgs {
    /// Storage root (overrides storage.root): a local path or s3://bucket/prefix.
    #[arg(long)]
    root: Option<String>,
    /// Only dates at least this many days old (Vietnam dates) are compacted: younger ones
    /// still receive late syncs.
    #[arg(long, default_value_t = 2)]
    min_age_days: i64,
    /// Files smaller than this many MB are merged...
    #[arg(long, default_value_t = 32)]
    small_mb: u64,
    /// ...into files of about this many MB.
    #[arg(long, default_value_t = 128)]
    target_mb: u64,
    /// Files that compaction replaced (and files of flushes never committed) are deleted
    /// once they are this many hours old: until then, readers of older snapshots and time
    /// travel still read them.
    #[arg(long, default_value_t = 168)]
    retention_hours: u64,
}

pub fn run(mut cfg: sohoa_runtime::Config, args: CompactArgs) -> Result<()> {
    if let Some(root) = &args.root {
        cfg.storage.root = root.clone();
    }
    let (rt, storage) = crate::writer_storage(&cfg)?;
    let writer = sohoa_ingestor::events_writer(&storage, rt.handle())?;
    let format = FileFormat::new(
        &sohoa_schemas::events_schema(),
        cfg.flush.row_group_rows,
        cfg.flush.zstd_level,
        // Merged files keep the key fingerprint of their inputs (files of different keys
        // are never merged: their schemas' metadata differ).
        None,
    )?;
    let now = chrono::Utc::now().timestamp_micros();
    let today = sohoa_aggregator::rules::local_date(now);
    let opts = CompactOptions {
        min_age_days: args.min_age_days,
        today,
        small_bytes: args.small_mb << 20,
        target_bytes: args.target_mb << 20,
    };
    let reports = rt
        .block_on(compact::compact(&writer, &format, &opts))
        .context("compaction failed")?;
    if reports.is_empty() {
        eprintln!("nothing to compact: no closed date has two small files");
    } else {
        print!("{}", compact::render(&reports));
    }
    let retention = Duration::from_secs(args.retention_hours * 3600);
    let vacuumed = rt
        .block_on(compact::vacuum(&writer, retention))
        .context("vacuum failed")?;
    eprintln!(
        "vacuum: deleted {} file(s), {} bytes, older than {} h and in no snapshot since",
        vacuumed.files, vacuumed.bytes, args.retention_hours
    );
    Ok(())
}
