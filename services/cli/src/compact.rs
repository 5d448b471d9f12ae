//! `sohoa compact`: merge the small files of closed date partitions.

use anyhow::{Context, Result};
use sohoa_ingestor::compact::{self, CompactOptions};
use sohoa_ingestor::write::FileFormat;

#[derive(clap::Args)]
pub struct CompactArgs {
    /// Storage root (overrides storage.root): a local path or s3://bucket/prefix.
    #[arg(long)]
    root: Option<String>,
    /// Only partitions at least this many days old (Vietnam dates) are compacted: younger
    /// ones still receive late syncs.
    #[arg(long, default_value_t = 2)]
    min_age_days: i64,
    /// Files smaller than this many MB are merged...
    #[arg(long, default_value_t = 32)]
    small_mb: u64,
    /// ...into files of about this many MB.
    #[arg(long, default_value_t = 128)]
    target_mb: u64,
}

pub fn run(mut cfg: sohoa_runtime::Config, args: CompactArgs) -> Result<()> {
    if let Some(root) = &args.root {
        cfg.storage.root = root.clone();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let storage = sohoa_ingestor::open_storage(&cfg, rt.handle())?;
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
        .block_on(compact::compact(storage.store.clone(), &format, &opts))
        .context("compaction failed")?;
    if reports.is_empty() {
        eprintln!("nothing to compact: no closed partition has two small files");
    } else {
        print!("{}", compact::render(&reports));
    }
    Ok(())
}
