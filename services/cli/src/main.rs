//! `sohoa`: one binary for every stage of the pipeline.

use std::io::{BufRead, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sohoa_schemas::{build_decoder, DecodeOutput, DecoderContext, DecoderKind, Pseudonymizer};

/// sohoa ("số hóa"): how fast and how digitally Vietnamese provinces process
/// administrative dossiers, computed from their dossier event streams.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file; overrides the embedded defaults (config/default.toml), and
    /// SOHOA__SECTION__KEY environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an ingestor replica: consume the configured topics and commit them to the events
    /// table, <root>/events/, exactly once. With --from-file, backfill from exported files.
    Ingest(ingest::IngestArgs),
    /// Fold <root>/events/ into one row per dossier (dossiers/), compute the 766 metrics by
    /// period, agency and procedure (metrics/), the scorecard, and the HTML report
    /// (report/index.html); print a summary table.
    Aggregate(aggregate::AggregateArgs),
    /// Merge the small files of closed dates of the events table into larger ones (up to
    /// 64 merges a commit), then vacuum the files no snapshot within the retention needs.
    Compact(compact::CompactArgs),
    /// Convert a root an earlier release wrote (Parquet files and commit markers) into an
    /// events table, in one commit, so that ingestion resumes where the markers stopped.
    Adopt(adopt::AdoptArgs),
    /// The whole pipeline on this machine: an embedded Kafka cluster, a generated
    /// province, three ingestors, the aggregator and the report. Nothing to install.
    Demo(demo::DemoArgs),
    /// Generate a realistic province feed (national sync records), to a file, stdout or
    /// a Kafka cluster; deterministic for a seed.
    Generate(generate::GenerateArgs),
    /// Decode source messages into canonical v1 events (JSON lines on stdout).
    ///
    /// Rejected records go to stderr with the JSON path and the reason. Use it to check a
    /// province's export before loading it.
    Decode(DecodeArgs),
    /// Delete raw rejected backfill lines older than the retention
    /// (rejects.raw_retention_days) from the raw rejects store (rejects.raw_root).
    PurgeRejects(purge::PurgeArgs),
    /// Show a consumer group's lag per partition: committed offset, watermarks, lag in
    /// messages and the age of the oldest unconsumed message (like
    /// `kafka-consumer-groups --describe`). Exits with 3 when --fail-above is exceeded.
    Lag(lag::LagArgs),
    /// Print the canonical event's JSON Schema, or the Arrow schema derived from it.
    Schema {
        /// Print the Arrow schema of the `events` table instead of the JSON Schema.
        #[arg(long)]
        arrow: bool,
    },
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// Source format: dvcqg (national sync records) or canonical (v1 JSON).
    #[arg(long, default_value = "dvcqg")]
    format: DecoderKind,
    /// Treat each line as one message (newline-delimited JSON) instead of each file.
    #[arg(long)]
    lines: bool,
    /// Use the public development pseudonym key instead of SOHOA_PSEUDONYM_KEY.
    /// Applicant ID numbers are then NOT protected.
    #[arg(long)]
    dev: bool,
    /// Files to read; standard input when none is given.
    files: Vec<PathBuf>,
}

mod adopt;
mod aggregate;
mod compact;
mod demo;
mod generate;
mod ingest;
mod lag;
mod memory;
mod purge;

/// Exit codes: 0 success; 1 the run failed (for decode: some records were rejected);
/// 2 bad configuration or usage, including a missing pseudonym key; 3 the lag is above
/// `sohoa lag --fail-above`.
const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    memory::tune();
    let cli = Cli::parse();
    let cfg = match sohoa_runtime::Config::load(cli.config.as_deref()) {
        Ok(mut c) => {
            // The demo draws progress bars; the services' routine log lines would break
            // them. SOHOA__LOG__LEVEL still wins.
            // The demo's own first lines say it uses the development pseudonym key, and a
            // re-run's seeks past a new cluster's end are expected.
            if matches!(cli.command, Command::Demo(_))
                && std::env::var_os("SOHOA__LOG__LEVEL").is_none()
            {
                c.log.level = "warn,librdkafka=error,sohoa_schemas::pseudonym=error".into();
            }
            c
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("hint: config/default.toml lists every key with its meaning");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    sohoa_runtime::telemetry::init(&cfg.log);
    match run(cfg, cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let config_error = e.chain().any(|c| {
                c.downcast_ref::<sohoa_schemas::pseudonym::PseudonymError>()
                    .is_some()
                    || c.downcast_ref::<sohoa_runtime::ConfigError>().is_some()
                    || c.downcast_ref::<sohoa_aggregator::AggregateError>()
                        .is_some_and(|e| e.is_config())
                    || matches!(
                        c.downcast_ref::<sohoa_ingestor::IngestError>(),
                        Some(sohoa_ingestor::IngestError::Pseudonym(_))
                    )
            });
            ExitCode::from(if config_error {
                EXIT_CONFIG
            } else {
                EXIT_FAILED
            })
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (Kubernetes, systemd).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stop requested: draining");
}

fn run(cfg: sohoa_runtime::Config, command: Command) -> Result<ExitCode> {
    match command {
        Command::Ingest(args) => ingest::run(cfg, args).map(|()| ExitCode::SUCCESS),
        Command::Aggregate(args) => aggregate::run(cfg, args).map(|()| ExitCode::SUCCESS),
        Command::Demo(args) => demo::run(cfg, args).map(|()| ExitCode::SUCCESS),
        Command::Compact(args) => compact::run(cfg, args).map(|()| ExitCode::SUCCESS),
        Command::Adopt(args) => adopt::run(cfg, args).map(|()| ExitCode::SUCCESS),
        Command::Generate(args) => generate::run(args).map(|()| ExitCode::SUCCESS),
        Command::Lag(args) => lag::run(&cfg, args),
        Command::PurgeRejects(args) => purge::run(&cfg, args).map(|()| ExitCode::SUCCESS),
        Command::Decode(args) => decode(args),
        Command::Schema { arrow } => {
            if arrow {
                for f in sohoa_schemas::events_schema().fields() {
                    let null = if f.is_nullable() { "" } else { " not null" };
                    println!("{}: {}{null}", f.name(), f.data_type());
                }
            } else {
                print!("{}", sohoa_schemas::json_schema::EVENT_SCHEMA_JSON);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn decode(args: DecodeArgs) -> Result<ExitCode> {
    let pseudonymizer =
        Pseudonymizer::configured(args.dev).context("cannot pseudonymize applicant ID numbers")?;
    let decoder = build_decoder(
        args.format,
        DecoderContext {
            source_system: Arc::from(args.format.as_str()),
            pseudonymizer: Arc::new(pseudonymizer),
        },
    );
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    let mut read_one = |name: String, mut r: Box<dyn Read>| -> Result<()> {
        if args.lines {
            for (i, line) in std::io::BufReader::new(r).lines().enumerate() {
                let line = line.with_context(|| format!("reading {name}"))?;
                if !line.trim().is_empty() {
                    messages.push((format!("{name}:{}", i + 1), line.into_bytes()));
                }
            }
        } else {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf)
                .with_context(|| format!("reading {name}"))?;
            messages.push((name, buf));
        }
        Ok(())
    };
    if args.files.is_empty() {
        read_one("stdin".into(), Box::new(std::io::stdin()))?;
    } else {
        for f in &args.files {
            let file =
                std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
            read_one(f.display().to_string(), Box::new(file))?;
        }
    }

    let stdout = std::io::stdout();
    let mut out_w = BufWriter::new(stdout.lock());
    let (mut events, mut rejects) = (0u64, 0u64);
    let mut warnings = sohoa_schemas::Warnings::default();
    let mut out = DecodeOutput::default();
    for (name, bytes) in &messages {
        out.clear();
        decoder.decode(bytes, &mut out);
        for e in &out.events {
            writeln!(out_w, "{}", e.to_json())?;
        }
        for r in &out.rejects {
            eprintln!("{name}: rejected {r}");
        }
        events += out.events.len() as u64;
        rejects += out.rejects.len() as u64;
        warnings.merge(&out.warnings);
    }
    out_w.flush()?;
    let summary: Vec<String> = warnings
        .iter()
        .map(|(w, n)| format!("{}={n}", w.as_str()))
        .collect();
    eprintln!(
        "read {} message(s): {events} events, {rejects} rejected; warnings: {}",
        messages.len(),
        if summary.is_empty() {
            "none".into()
        } else {
            summary.join(" ")
        }
    );
    // Exit 1 when something was rejected, so scripts notice; 0 when all decoded.
    Ok(if rejects > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A runtime and the storage root for a command that writes the events table, the root
/// probed for conditional puts.
fn writer_storage(
    cfg: &sohoa_runtime::Config,
) -> Result<(tokio::runtime::Runtime, sohoa_runtime::Storage)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let storage = sohoa_ingestor::open_storage(cfg, rt.handle())?;
    Ok((rt, storage))
}
