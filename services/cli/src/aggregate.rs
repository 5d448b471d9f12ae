//! `sohoa aggregate`: events to dossiers, metrics, scorecards and the report.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use sohoa_aggregator::fold::Shard;
use sohoa_aggregator::model::{Period, View};
use sohoa_aggregator::read::DateRange;
use sohoa_aggregator::report::{self, ReportInput};
use sohoa_aggregator::Options;

#[derive(clap::Args)]
pub struct AggregateArgs {
    /// Storage root to read events/ from and write to (overrides storage.root): a local
    /// path or s3://bucket/prefix.
    #[arg(long)]
    root: Option<String>,
    /// First event date to read (YYYY-MM-DD, Vietnam local date of the events).
    #[arg(long, value_parser = parse_date)]
    from: Option<NaiveDate>,
    /// Last event date to read, included.
    #[arg(long, value_parser = parse_date)]
    to: Option<NaiveDate>,
    /// Judge open dossiers at this moment (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, Vietnam local
    /// time, or RFC 3339 with an offset as `metrics/run.json` records it) instead of now;
    /// makes a run reproducible.
    #[arg(long, value_parser = parse_as_of)]
    as_of: Option<i64>,
    /// Run shard I of N (dossiers split by a hash of their code): writes its dossiers and
    /// its counts; `--merge-shards N` then adds the counts up into metrics/.
    #[arg(long, value_parser = parse_shard, conflicts_with = "merge_shards")]
    shard: Option<Shard>,
    /// Add up the counts of N shards into metrics/, the scorecard and the report.
    #[arg(long, value_name = "N")]
    merge_shards: Option<u32>,
    /// Periods to compute, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "day,month,quarter,year", value_parser = parse_period)]
    periods: Vec<Period>,
    /// Fold only the event files not folded yet into the state the last run left in
    /// storage (`_sohoa/aggregate/state/`), then judge every dossier and write every table
    /// as a full run does. The first run builds the state from all of `events/`. Works with
    /// `--every`; not with `--from`, `--to`, `--shard` or `--merge-shards`.
    #[arg(long)]
    incremental: bool,
    /// Read this version of the events table instead of the newest: every run prints the
    /// version it read, and reading it again gives the same tables while new events keep
    /// arriving. Not with `--incremental`, which folds up to the newest.
    #[arg(long, value_name = "N", conflicts_with = "incremental")]
    events_version: Option<u64>,
    /// Aggregate rows pseudonymized under different keys (the ingestors' commits name
    /// each range's key) instead of refusing to: their pseudonyms cannot be compared.
    #[arg(long)]
    allow_mixed_keys: bool,
    /// Skip the HTML report.
    #[arg(long)]
    no_report: bool,
    /// After a successful run, write its results (finish time, duration, events,
    /// dossiers, newest event time) here in Prometheus' text format, for node-exporter's
    /// textfile collector. Written atomically (a temporary file, then a rename).
    #[arg(long, value_name = "PATH")]
    metrics_textfile: Option<std::path::PathBuf>,
    /// Continuous mode: run again this long after each run starts (`30s`, `1m`, `1h`)
    /// until SIGTERM or SIGINT, judging open dossiers as of each run's start. A failed
    /// run is logged and counted, and the next one is tried on schedule.
    #[arg(long, value_parser = parse_every, conflicts_with_all = ["as_of", "shard", "merge_shards"])]
    every: Option<Duration>,
    /// With `--every`: serve `/metrics` (the last run's results, including the newest
    /// event time the metrics include, and runs by outcome), `/healthz` and `/readyz`
    /// (ready once a run succeeded) on this address, e.g. `0.0.0.0:9899`.
    #[arg(long, value_name = "ADDR", requires = "every")]
    listen: Option<String>,
}

fn parse_every(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: use a number and a unit, like 30s, 1m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("--every must be longer than 0".into());
    }
    Ok(Duration::from_secs(secs))
}

/// What a continuous aggregator serves on `/metrics`.
#[derive(Default)]
struct Status {
    /// The last successful run's results, in Prometheus' text format.
    last: Mutex<Option<String>>,
    succeeded: AtomicU64,
    failed: AtomicU64,
    last_failure_s: AtomicI64,
}

impl sohoa_runtime::http::Exposition for Status {
    fn render(&self) -> String {
        let mut text = self
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        text.push_str(&format!(
            "# HELP sohoa_aggregate_runs_total Aggregation runs since the process started, by outcome.\n\
             # TYPE sohoa_aggregate_runs_total counter\n\
             sohoa_aggregate_runs_total{{outcome=\"success\"}} {}\n\
             sohoa_aggregate_runs_total{{outcome=\"failure\"}} {}\n\
             # HELP sohoa_aggregate_last_failure_timestamp_seconds Unix time the last failed run ended (0: none yet).\n\
             # TYPE sohoa_aggregate_last_failure_timestamp_seconds gauge\n\
             sohoa_aggregate_last_failure_timestamp_seconds {}\n",
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.last_failure_s.load(Ordering::Relaxed),
        ));
        text
    }

    fn is_ready(&self) -> bool {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| format!("{s:?}: {e}; use YYYY-MM-DD"))
}

fn vn() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(sohoa_schemas::normalize::VN_OFFSET_SECS as i32).expect("valid")
}

fn parse_as_of(s: &str) -> Result<i64, String> {
    // With an offset, as `metrics/run.json` records it, the moment is exact anywhere.
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    let local = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| parse_date(s).map(|d| d.and_hms_opt(23, 59, 59).expect("valid")))
        .map_err(|_| format!("{s:?}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS (Vietnam time), or RFC 3339 with an offset"))?;
    Ok(vn()
        .from_local_datetime(&local)
        .single()
        .ok_or("ambiguous time")?
        .timestamp_micros())
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or(format!("{s:?}: use I/N, for example 0/4"))?;
    let (index, count): (u32, u32) = (
        i.parse().map_err(|_| format!("{i:?} is not a number"))?,
        n.parse().map_err(|_| format!("{n:?} is not a number"))?,
    );
    if count == 0 || index >= count {
        return Err(format!("{s:?}: need 0 <= I < N"));
    }
    Ok(Shard { index, count })
}

fn parse_period(s: &str) -> Result<Period, String> {
    Period::ALL
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or(format!("{s:?}: one of day, month, quarter, year"))
}

fn format_local(us: i64) -> String {
    vn().timestamp_micros(us)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M ICT").to_string())
        .unwrap_or_default()
}

/// The root's events table, if its `events/` is one.
pub fn events_table(
    storage: &sohoa_runtime::Storage,
    rt: &tokio::runtime::Runtime,
) -> Result<Option<sohoa_storage::Table>> {
    let table = sohoa_storage::Table::events(storage)?;
    Ok(rt.block_on(table.exists())?.then_some(table))
}

pub fn run(mut cfg: sohoa_runtime::Config, args: AggregateArgs) -> Result<()> {
    if let Some(root) = &args.root {
        cfg.storage.root = root.clone();
    }
    if args.merge_shards == Some(0) {
        bail!("--merge-shards needs at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let storage = sohoa_runtime::Storage::open(&cfg.storage)?;
    let Some(every) = args.every else {
        return run_once(&cfg, &args, &storage, &rt).map(|_| ());
    };
    let status = Arc::new(Status::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = stop.clone();
    rt.spawn(async move {
        crate::shutdown_signal().await;
        // A permit: the wait below returns even if it starts after the signal.
        stopping.notify_one();
    });
    if let Some(addr) = &args.listen {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("--listen {addr}"))?;
        rt.spawn(sohoa_runtime::http::serve(
            listener,
            status.clone(),
            std::future::pending(),
        ));
    }
    tracing::info!(every_s = every.as_secs(), "continuous mode");
    loop {
        let started = Instant::now();
        match run_once(&cfg, &args, &storage, &rt) {
            Ok(text) => {
                *status.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
                status.succeeded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "aggregation failed; the next run is on schedule"
                );
                status.failed.fetch_add(1, Ordering::Relaxed);
                status
                    .last_failure_s
                    .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
            }
        }
        let next = every.saturating_sub(started.elapsed());
        let stopped = rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(next) => false,
                _ = stop.notified() => true,
            }
        });
        if stopped {
            tracing::info!("stopping: signal received");
            return Ok(());
        }
    }
}

/// One aggregation: the tables, the report and the summary. Returns the run's results in
/// Prometheus' text format.
fn run_once(
    cfg: &sohoa_runtime::Config,
    args: &AggregateArgs,
    storage: &sohoa_runtime::Storage,
    rt: &tokio::runtime::Runtime,
) -> Result<String> {
    let now = chrono::Utc::now().timestamp_micros();
    let opts = Options {
        range: DateRange {
            from: args.from,
            to: args.to,
        },
        as_of: args.as_of.unwrap_or(now),
        shard: args.shard.unwrap_or(Shard::ALL),
        merge_shards: args.merge_shards,
        periods: args.periods.clone(),
        allow_mixed_keys: args.allow_mixed_keys,
        events: events_table(storage, rt)?,
        events_version: args.events_version,
    };
    let summary = if args.incremental {
        sohoa_aggregator::incremental::run(
            &cfg.aggregate,
            storage.store.clone(),
            rt.handle(),
            &opts,
            &Default::default(),
        )
    } else {
        sohoa_aggregator::run(&cfg.aggregate, storage.store.clone(), rt.handle(), &opts)
    }
    .context("aggregation failed")?;
    eprintln!(
        "read {} file(s), {} events, {} dossiers in {:.1} s{}",
        summary.files_read,
        summary.events_read,
        summary.dossiers,
        summary.elapsed_ms as f64 / 1000.0,
        summary
            .events_version
            .map(|v| format!(", from version {v} of events/ (--events-version {v} reads it again)"))
            .unwrap_or_default()
    );
    let dev = sohoa_schemas::Pseudonymizer::development_fingerprint();
    if summary.key_fingerprints.contains(&dev) {
        eprintln!(
            "warning: rows pseudonymized with the public development key (fingerprint {dev}): \
             applicant IDs in them are not protected, and these are not production figures"
        );
    }
    if opts.shard.count > 1 {
        eprintln!(
            "shard {}/{} done; merge with: sohoa aggregate --merge-shards {}",
            opts.shard.index, opts.shard.count, opts.shard.count
        );
    } else {
        // The report ranks today's units: the restated view, named from the reference.
        let rows = summary.rows_of(View::Restated);
        let fields = summary.fields_of(View::Restated);
        let input = ReportInput {
            title: &summary.province,
            generated_at: &format_local(now),
            as_of: &format_local(opts.as_of),
            rows: &rows,
            scorecards: &summary.scorecards,
            agency_names: &summary.agency_names,
            min_dossiers: cfg.aggregate.worst_procedures_min_dossiers,
            calendar: &summary.calendar,
            fields: &fields,
            breaks: &summary.breaks,
            events_version: summary.events_version,
        };
        if !args.no_report {
            let html = report::render_html_with_quality(&input, summary.quality.as_ref());
            rt.block_on(sohoa_aggregator::output::put(
                &*storage.store,
                "report/index.html",
                html.into(),
            ))?;
        }
        let color = std::io::stdout().is_terminal();
        print!("{}", report::terminal_summary(&input, color));
        if let Some(q) = &summary.quality {
            print!("\n{}", report::terminal_quality(q, color));
        }
    }
    let text = summary.prometheus_text(chrono::Utc::now().timestamp());
    if let Some(path) = &args.metrics_textfile {
        let tmp = path.with_extension("prom.tmp");
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing --metrics-textfile {}", path.display()))?;
    }
    let root = storage.root.trim_end_matches('/');
    for path in &summary.written {
        eprintln!("wrote {root}/{path}");
    }
    if opts.shard.count == 1 && !args.no_report {
        eprintln!("wrote {root}/report/index.html");
    }
    Ok(text)
}
