//! `sohoa adopt`: make a root that an earlier release wrote an events table.

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct AdoptArgs {
    /// Storage root (overrides storage.root): a local path or s3://bucket/prefix.
    #[arg(long)]
    root: Option<String>,
}

pub fn run(mut cfg: sohoa_runtime::Config, args: AdoptArgs) -> Result<()> {
    if let Some(root) = &args.root {
        cfg.storage.root = root.clone();
    }
    let (rt, storage) = crate::writer_storage(&cfg)?;
    let table = sohoa_storage::Table::events(&storage)?;
    let adopted = rt
        .block_on(sohoa_ingestor::adopt::adopt(
            storage.store.clone(),
            table,
            sohoa_schemas::events_schema(),
            sohoa_ingestor::STATS_COLUMNS,
        ))
        .with_context(|| format!("adopting {}", storage.root))?;
    println!(
        "events/ is a Delta table at version {}: {} files, {} rows, {} source partitions \
         ({} staged files published first, {} inputs of merges left out)",
        adopted.version,
        adopted.files,
        adopted.rows,
        adopted.offsets.len(),
        adopted.published,
        adopted.replaced
    );
    for (source, next) in &adopted.offsets {
        println!("  {source} resumes at {next}");
    }
    println!(
        "The commit markers under _sohoa/commits/ and _sohoa/compact/ are no longer read; \
         delete them once the table is checked."
    );
    Ok(())
}
