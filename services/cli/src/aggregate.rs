//! `sohoa aggregate`: events to dossiers, metrics, scorecards and the report.

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use sohoa_aggregator::fold::Shard;
use sohoa_aggregator::model::Period;
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
    /// time) instead of now; makes a run reproducible.
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
    /// Skip the HTML report.
    #[arg(long)]
    no_report: bool,
    /// After a successful run, write its results (finish time, duration, events,
    /// dossiers, newest event time) here in Prometheus' text format, for node-exporter's
    /// textfile collector. Written atomically (a temporary file, then a rename).
    #[arg(long, value_name = "PATH")]
    metrics_textfile: Option<std::path::PathBuf>,
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| format!("{s:?}: {e}; use YYYY-MM-DD"))
}

fn vn() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(sohoa_schemas::normalize::VN_OFFSET_SECS as i32).expect("valid")
}

fn parse_as_of(s: &str) -> Result<i64, String> {
    let local = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| parse_date(s).map(|d| d.and_hms_opt(23, 59, 59).expect("valid")))
        .map_err(|_| format!("{s:?}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS (Vietnam time)"))?;
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
    };
    let summary = sohoa_aggregator::run(&cfg.aggregate, storage.store.clone(), rt.handle(), &opts)
        .context("aggregation failed")?;
    eprintln!(
        "read {} file(s), {} events, {} dossiers in {:.1} s",
        summary.files_read,
        summary.events_read,
        summary.dossiers,
        summary.elapsed_ms as f64 / 1000.0
    );
    if opts.shard.count > 1 {
        eprintln!(
            "shard {}/{} done; merge with: sohoa aggregate --merge-shards {}",
            opts.shard.index, opts.shard.count, opts.shard.count
        );
    } else {
        let names = Default::default();
        let input = ReportInput {
            title: &cfg.aggregate.province,
            generated_at: &format_local(now),
            as_of: &format_local(opts.as_of),
            rows: &summary.metric_rows,
            scorecards: &summary.scorecards,
            agency_names: &names,
            min_dossiers: cfg.aggregate.worst_procedures_min_dossiers,
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
    if let Some(path) = &args.metrics_textfile {
        let tmp = path.with_extension("prom.tmp");
        let text = summary.prometheus_text(chrono::Utc::now().timestamp());
        std::fs::write(&tmp, text)
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
    Ok(())
}
