//! `sohoa purge-rejects`: the raw rejects store's retention.

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct PurgeArgs {
    /// Delete raw rejects older than this many days (default: rejects.raw_retention_days).
    #[arg(long)]
    older_than_days: Option<u32>,
}

pub fn run(cfg: &sohoa_runtime::Config, args: PurgeArgs) -> Result<()> {
    let Some(raw) = cfg.rejects.raw_storage() else {
        bail!("rejects.raw_root is not set: no raw rejects are kept, so none to purge");
    };
    let days = args
        .older_than_days
        .unwrap_or(cfg.rejects.raw_retention_days);
    let store = sohoa_runtime::Storage::open(&raw)?.store;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    let (deleted, kept) = rt
        .block_on(sohoa_ingestor::rejects::purge(&*store, cutoff))
        .with_context(|| format!("purging {}", raw.root))?;
    eprintln!(
        "purge-rejects: deleted {deleted} raw rejects file(s) older than {days} days from {}; {kept} kept",
        raw.root
    );
    Ok(())
}
