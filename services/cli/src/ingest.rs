//! `sohoa ingest`: run an ingestor replica on Kafka, or backfill from files.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use sohoa_ingestor::backfill::{Backfill, Layout};
use sohoa_ingestor::Metrics;
use sohoa_runtime::Config;
use sohoa_schemas::DecoderKind;

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Backfill from these files instead of Kafka (newline-delimited JSON, or files that
    /// each hold one envelope). Use - for standard input.
    #[arg(long = "from-file", value_name = "FILE")]
    from_file: Vec<PathBuf>,
    /// Source format of the backfill files.
    #[arg(long, default_value = "dvcqg", requires = "from_file")]
    source: DecoderKind,
    /// How backfill files hold messages: lines, document, or auto.
    #[arg(long, default_value = "auto", requires = "from_file")]
    layout: String,
    /// Storage root (overrides storage.root): a folder or s3://bucket/prefix.
    #[arg(long)]
    out: Option<String>,
}

pub fn run(mut cfg: Config, args: IngestArgs) -> Result<()> {
    if let Some(out) = args.out {
        cfg.storage.root = out;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sohoa-rt")
        .build()?;
    let metrics = Metrics::new();
    if !args.from_file.is_empty() {
        let layout = match args.layout.as_str() {
            "lines" => Layout::Lines,
            "document" => Layout::Document,
            "auto" => Layout::Auto,
            other => anyhow::bail!("--layout {other:?}: expected lines, document or auto"),
        };
        let job = Backfill {
            files: args.from_file,
            decoder: args.source,
            source_system: args.source.as_str().to_owned(),
            layout,
        };
        let t = sohoa_ingestor::backfill::run(&cfg, rt.handle(), metrics, &job)
            .context("backfill failed")?;
        eprintln!(
            "backfill: {} messages, {} events written in {} files, {} messages rejected ({} records){}; every line is committed",
            t.messages,
            t.events,
            t.files,
            t.dead_lettered,
            t.rejected_records,
            if t.skipped_durable > 0 {
                format!("; {} already loaded before, skipped", t.skipped_durable)
            } else {
                String::new()
            }
        );
        return Ok(());
    }
    let shutdown = crate::shutdown_signal();
    let t = sohoa_ingestor::run(&cfg, rt.handle(), Arc::clone(&metrics), shutdown)
        .context("ingestor failed")?;
    tracing::info!(
        messages = t.messages,
        events = t.events,
        dead_lettered = t.dead_lettered,
        files = t.files,
        "drained"
    );
    Ok(())
}
