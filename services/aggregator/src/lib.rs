//! The batch aggregator: `events/` to one row per dossier (`dossiers/`), the 766 metrics by
//! period, agency and procedure (`metrics/`), a scorecard and a report.
//!
//! One module per stage: `read` (events from storage), `fold` (one fact per dossier),
//! `rules` (the 766 on-time rules), `calendar`, `catalog` and `agencies` (working days,
//! statutory times, the agency reference) and `reference` (loading them as configured),
//! `placement` (which agency each count belongs to, as it was and restated), `metrics`
//! (grouping and rollups), `backlog` (dossiers carried from period to period),
//! `scorecard`, `quality` (data-quality checks and the `quality/` tables), `output`
//! (Parquet and CSV), `summary` (what a run produced) and `report` (HTML and the terminal
//! summary).

pub mod agencies;
pub mod backlog;
pub mod calendar;
pub mod catalog;
pub mod fold;
pub mod incremental;
pub mod metrics;
pub mod model;
pub mod output;
pub mod placement;
pub mod quality;
pub mod read;
mod reference;
pub mod report;
pub mod rules;
pub mod scorecard;
mod summary;

pub use reference::{agency_reference, province_name, reference_data};
pub use summary::Summary;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, UInt64Type};
use chrono::NaiveDate;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sohoa_runtime::config::AggregateConfig;

use agencies::{Agencies, AgencyError};
use calendar::{Calendar, CalendarError};
use catalog::{Catalog, CatalogError};
use fold::{Folder, Part, Shard, NO_SYM};
use metrics::{Base, Grouper};
use model::{MetricRow, Period, View};
use read::DateRange;

#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error("aggregate.office_hours: {0}")]
    OfficeHours(CalendarError),
    // The causes are part of the message, not a `source`, so a printed error chain does
    // not say them twice.
    #[error("aggregate.calendar {path:?}: {cause}")]
    Calendar { path: String, cause: CalendarError },
    #[error("aggregate.catalogue {path:?}: {cause}")]
    Catalogue { path: String, cause: CatalogError },
    #[error("aggregate.agencies {path:?}: {cause}")]
    Agencies {
        path: String,
        cause: Box<AgencyError>,
    },
    /// `aggregate.province` names no province of the reference.
    #[error(transparent)]
    Province(Box<AgencyError>),
    #[error("{key}: cannot read {path}: {cause}")]
    ReadFile {
        key: &'static str,
        path: String,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error(transparent)]
    Fold(#[from] fold::FoldError),
    #[error(transparent)]
    Output(#[from] output::OutputError),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    State(#[from] incremental::StateError),
    #[error("shard counts {path}: {reason}")]
    ShardCounts { path: String, reason: String },
    #[error("events/ holds rows pseudonymized under {} different keys ({}): their pseudonyms cannot be compared, and data made with the public development key must never pass for production data. Load each key's data into its own root, or pass --allow-mixed-keys to aggregate them anyway", .0.len(), describe_keys(.0))]
    MixedKeys(Vec<String>),
    #[error("--events-version: events/ is a folder of files, not a Delta table, so it has no versions to read")]
    NoTableToPin,
}

/// Fingerprints for a message, the public development key named as such.
fn describe_keys(fingerprints: &[String]) -> String {
    let dev = sohoa_schemas::Pseudonymizer::development_fingerprint();
    fingerprints
        .iter()
        .map(|f| {
            if *f == dev {
                format!("{f}, the public development key")
            } else {
                f.clone()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl AggregateError {
    /// A mistake in the configuration or its reference data, not in the run.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            AggregateError::OfficeHours(_)
                | AggregateError::Calendar { .. }
                | AggregateError::Catalogue { .. }
                | AggregateError::Agencies { .. }
                | AggregateError::Province(_)
                | AggregateError::ReadFile { .. }
                | AggregateError::NoTableToPin
                | AggregateError::Read(read::ReadError::NoVersion { .. })
        )
    }
}

/// What one run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Event dates to read.
    pub range: DateRange,
    /// The moment open dossiers are judged at (UTC µs); usually now.
    pub as_of: i64,
    /// This run's share of the dossiers.
    pub shard: Shard,
    /// Instead of reading events, add up the counts the `n` shards wrote.
    pub merge_shards: Option<u32>,
    /// Periods written to `metrics/`.
    pub periods: Vec<Period>,
    /// Aggregate rows pseudonymized under different keys instead of refusing to.
    pub allow_mixed_keys: bool,
    /// The events table, read through its log. `None` for a root whose `events/` is a
    /// plain folder of Parquet files (tests that write files by hand).
    pub events: Option<sohoa_storage::Table>,
    /// The version of the events table to read; `None` reads the newest. A run records
    /// the version it read ([`Summary::events_version`]), and reading it again gives the
    /// same tables however many events arrived since.
    pub events_version: Option<u64>,
}

/// The event files of `range`: those of the table's `snapshot`, or the folder's.
fn event_files(
    store: &dyn ObjectStore,
    rt: &tokio::runtime::Handle,
    opts: &Options,
    snapshot: Option<&sohoa_storage::SnapshotRef>,
    range: DateRange,
) -> Result<Vec<read::EventFile>, AggregateError> {
    Ok(match (&opts.events, snapshot) {
        (Some(table), Some(snapshot)) => read::table_event_files(table, snapshot, range)?,
        _ => rt.block_on(read::event_files(store, range))?,
    })
}

/// The events table's snapshot this run reads: at the version asked for, or the newest.
/// `None` for a root whose events are a plain folder.
fn events_snapshot(opts: &Options) -> Result<Option<sohoa_storage::SnapshotRef>, AggregateError> {
    match &opts.events {
        Some(table) => Ok(Some(read::table_snapshot(table, opts.events_version)?)),
        None if opts.events_version.is_some() => Err(AggregateError::NoTableToPin),
        None => Ok(None),
    }
}

/// Refuse, before any work, a root whose rows were pseudonymized under different keys,
/// unless told otherwise. The events table's commits name each flush's key, and
/// reading them is incremental (the digest of `quality/`), so this costs little.
fn check_keys(
    store: &dyn ObjectStore,
    rt: &tokio::runtime::Handle,
    opts: &Options,
    summary: &mut Summary,
) -> Result<(), AggregateError> {
    let (commits, _) = rt.block_on(quality::read_commits(
        store,
        opts.range,
        summary.events_version,
    ))?;
    let keys: std::collections::BTreeSet<String> = commits
        .into_values()
        .flat_map(|t| t.key_fingerprints)
        .collect();
    let keys: Vec<String> = keys.into_iter().collect();
    if keys.len() > 1 {
        if !opts.allow_mixed_keys {
            return Err(AggregateError::MixedKeys(keys));
        }
        tracing::warn!(keys = %describe_keys(&keys), "aggregating rows pseudonymized under different keys, as asked");
    }
    summary.key_fingerprints = keys;
    Ok(())
}

/// Run the aggregator over `store`: fold, judge, group, and write `dossiers/` and
/// `metrics/` (or, for one shard of several, its dossiers and its counts).
pub fn run(
    cfg: &AggregateConfig,
    store: Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    opts: &Options,
) -> Result<Summary, AggregateError> {
    let started = Instant::now();
    let (cal, catalog) = reference_data(cfg)?;
    let agencies = agency_reference(cfg)?;
    let mut summary = Summary::default();
    summary.calendar.provisional = cal.provisional_years().clone();
    // The base counts, and the quality counts when there are any.
    let (base, quality_counts) = match opts.merge_shards {
        Some(n) => {
            let base = rt.block_on(read_shards(&*store, n))?;
            (base, rt.block_on(read_quality_shards(&*store, n))?)
        }
        None => {
            let snapshot = events_snapshot(opts)?;
            summary.events_version = snapshot.as_ref().map(|s| s.version());
            check_keys(&*store, rt, opts, &mut summary)?;
            let files = event_files(&*store, rt, opts, snapshot.as_ref(), opts.range)?;
            let threads = fold_threads();
            let mut folders: Vec<Folder> = (0..threads as u32)
                .map(|index| {
                    Folder::new(Part {
                        shard: opts.shard,
                        index,
                        count: threads as u32,
                    })
                })
                .collect();
            summary.bytes_read = read_into(&files, &store, rt, &mut folders, None)?;
            summary.files_read = files.len();
            summary.events_read = folders.first().map_or(0, |f| f.events_read);
            let dossiers: usize = folders.iter().map(|f| f.facts.len()).sum();
            tracing::info!(
                files = files.len(),
                events = summary.events_read,
                dossiers,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "events folded"
            );

            // Sorting the event fingerprints (the repeat count) is the costly part of the
            // per-event quality counts: one thread per fold part.
            let mut quality_counts = quality::PartQuality::default();
            let parts: Vec<quality::PartQuality> = std::thread::scope(|scope| {
                let handles: Vec<_> = folders
                    .iter_mut()
                    .map(|f| scope.spawn(move || f.quality.finish(&f.syms)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a quality thread panicked"))
                    .collect()
            });
            for p in parts {
                quality_counts.merge(p);
            }
            let ctx = Context {
                cal: &cal,
                catalog: &catalog,
                agencies: &agencies,
                opts,
                store: &store,
                rt,
                started,
            };
            let (base, quality_counts) =
                judge_and_write_dossiers(&ctx, &folders, quality_counts, &mut summary)?;
            if opts.shard.count > 1 {
                let path = output::shard_counts_path(opts.shard.index, opts.shard.count);
                rt.block_on(output::put(&*store, &path, output::base_parquet(&base)?))?;
                summary.written.push(path);
                // The quality counts add up across shards too (every dossier, and so every
                // event, lives in exactly one shard); the merge builds `quality/`.
                let path = quality::shard_path(opts.shard.index, opts.shard.count);
                let data = bytes::Bytes::from(quality_counts.to_json());
                rt.block_on(output::put(&*store, &path, data))?;
                summary.written.push(path);
                summary.elapsed_ms = started.elapsed().as_millis() as u64;
                return Ok(summary);
            }
            (base, Some(quality_counts))
        }
    };
    let inputs = MetricInputs {
        base,
        quality: quality_counts,
        agencies: &agencies,
    };
    write_metrics(cfg, &*store, rt, opts, inputs, &mut summary)?;
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Fold threads: one per core (at most 8), each owning a disjoint part of the dossiers.
/// The fold is hash-map lookups into a table far larger than the caches, so it is what
/// bounds a run, not decoding.
fn fold_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8)
}

/// What judging and writing need besides the facts.
struct Context<'a> {
    cal: &'a Calendar,
    catalog: &'a Catalog,
    agencies: &'a Agencies,
    opts: &'a Options,
    store: &'a Arc<dyn ObjectStore>,
    rt: &'a tokio::runtime::Handle,
    started: Instant,
}

/// Judge every folded dossier, write `dossiers/`, and return the base counts and the
/// quality counts with the dossier checks added.
fn judge_and_write_dossiers(
    ctx: &Context<'_>,
    folders: &[Folder],
    mut quality_counts: quality::PartQuality,
    summary: &mut Summary,
) -> Result<(Base, quality::PartQuality), AggregateError> {
    let (opts, store, rt) = (ctx.opts, ctx.store, ctx.rt);
    let mut judged: Vec<Judgement> = std::thread::scope(|scope| {
        let handles: Vec<_> = folders
            .iter()
            .map(|f| scope.spawn(|| judge_part(f, ctx, opts)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a judging thread panicked"))
            .collect()
    });
    for part in &mut judged {
        quality_counts.merge(std::mem::take(&mut part.quality));
        for (year, n) in std::mem::take(&mut part.missing_years) {
            *summary.calendar.missing.entry(year).or_default() += n;
        }
    }
    for (year, dossiers) in &summary.calendar.missing {
        tracing::warn!(
            year,
            dossiers,
            "the holiday table has no such year: dossiers whose judgement needs it are set aside (calendar_missing); add its days off from the official notice"
        );
    }
    let dossiers: usize = folders.iter().map(|f| f.facts.len()).sum();
    let mut base = Base::default();
    let mut rows: Vec<output::DossierOut> = Vec::with_capacity(dossiers);
    for (part, folder) in judged.iter().zip(folders) {
        base.merge(part.base.clone());
        rows.extend(part.rows.iter().map(|(code, j, place)| output::DossierOut {
            code,
            fact: &folder.facts[*code],
            judged: j,
            place,
            syms: &folder.syms,
        }));
    }
    rows.sort_unstable_by(|a, b| a.code.cmp(b.code));
    summary.dossiers = rows.len();
    summary.newest_event_us = rows.iter().map(|r| r.fact.last.time).max();
    tracing::info!(
        elapsed_ms = ctx.started.elapsed().as_millis() as u64,
        "dossiers judged and grouped"
    );
    let data = output::dossiers_parquet(&rows, opts.as_of, ctx.agencies)?;
    let path = output::dossiers_path(opts.shard.index, opts.shard.count);
    rt.block_on(output::put(&**store, &path, data))?;
    let handovers = output::handovers_parquet(&rows, ctx.agencies)?;
    let handovers_path = output::handovers_path(opts.shard.index, opts.shard.count);
    rt.block_on(output::put(&**store, &handovers_path, handovers))?;
    // A run with another shard count leaves parts this one does not replace.
    let layout = format!("-of-{:05}.parquet", opts.shard.count);
    rt.block_on(remove_other_layouts(&**store, "dossiers", &layout))?;
    rt.block_on(remove_other_layouts(&**store, "handovers", &layout))?;
    summary.written.push(path);
    summary.written.push(handovers_path);
    tracing::info!(
        elapsed_ms = ctx.started.elapsed().as_millis() as u64,
        "dossiers written"
    );
    Ok((base, quality_counts))
}

/// What `metrics/` is built from.
struct MetricInputs<'a> {
    base: Base,
    /// The quality counts, when the run has them.
    quality: Option<quality::PartQuality>,
    agencies: &'a Agencies,
}

/// What `metrics/` was computed from, beside its tables: a province reproducing a report
/// reads the version, then `sohoa aggregate --events-version`.
pub const RUN_RECORD: &str = "metrics/run.json";

#[derive(serde::Serialize)]
struct RunRecord {
    /// The events table's version read; `null` for a plain folder of files.
    events_version: Option<u64>,
    /// The moment open dossiers were judged at, in Vietnam time with its offset, as
    /// `--as-of` takes it back.
    as_of: String,
    events_read: u64,
}

/// Write `metrics/` (rollups, scorecard, periods, agencies, the run record) and, with
/// quality counts, `quality/`.
fn write_metrics(
    cfg: &AggregateConfig,
    store: &dyn ObjectStore,
    rt: &tokio::runtime::Handle,
    opts: &Options,
    inputs: MetricInputs<'_>,
    summary: &mut Summary,
) -> Result<(), AggregateError> {
    let MetricInputs {
        base,
        quality: quality_counts,
        agencies,
    } = inputs;
    let rollups = base.with_rollups(rules::local_date(opts.as_of), agencies);
    let unknown = base.unknown_agencies(agencies);
    // Rankings compare today's units: the scorecard is the restated view's. The quality
    // table stands next to the feed's own codes, so it takes the as-was view's.
    let of_view = |v: View| -> Vec<MetricRow> {
        rollups
            .rows
            .iter()
            .filter(|r| r.view == v)
            .cloned()
            .collect()
    };
    let cards = scorecard::scorecards(&of_view(View::Restated), &cfg.scorecard);
    let as_was_cards = scorecard::scorecards(&of_view(View::AsWas), &cfg.scorecard);
    // Built one at a time and let go once written: the demo's metrics and progress CSVs
    // alone are 120 and 92 MB, and holding every file at once made this the aggregator's
    // peak.
    type Build<'a> = Box<dyn Fn() -> Result<bytes::Bytes, AggregateError> + 'a>;
    let run = RunRecord {
        events_version: summary.events_version,
        as_of: chrono::DateTime::from_timestamp_micros(opts.as_of)
            .map(|t| {
                t.with_timezone(
                    &chrono::FixedOffset::east_opt(sohoa_schemas::normalize::VN_OFFSET_SECS as i32)
                        .expect("a valid offset"),
                )
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            })
            .unwrap_or_default(),
        events_read: summary.events_read,
    };
    let writes: [(&str, Build); 9] = [
        (
            RUN_RECORD,
            Box::new(|| {
                Ok(bytes::Bytes::from(
                    serde_json::to_vec_pretty(&run).expect("plain data always serializes"),
                ))
            }),
        ),
        (
            "metrics/metrics.csv",
            Box::new(|| Ok(bytes::Bytes::from(output::metrics_csv(&rollups)))),
        ),
        (
            "metrics/metrics.parquet",
            Box::new(|| Ok(output::metrics_parquet(&rollups)?)),
        ),
        (
            "metrics/progress.csv",
            Box::new(|| Ok(bytes::Bytes::from(output::progress_csv(&rollups)))),
        ),
        (
            "metrics/progress.parquet",
            Box::new(|| Ok(output::progress_parquet(&rollups)?)),
        ),
        (
            "metrics/scorecard.csv",
            Box::new(|| Ok(bytes::Bytes::from(output::scorecard_csv(&cards)))),
        ),
        (
            "metrics/periods.parquet",
            Box::new(|| Ok(output::periods_parquet(&rollups.periods)?)),
        ),
        (
            "metrics/agencies.parquet",
            Box::new(|| Ok(output::agencies_parquet(agencies, &unknown)?)),
        ),
        (
            "metrics/agencies.csv",
            Box::new(|| Ok(bytes::Bytes::from(output::agencies_csv(agencies, &unknown)))),
        ),
    ];
    for (path, build) in writes {
        rt.block_on(output::put(store, path, build()?))?;
        summary.written.push(path.to_string());
    }
    if let Some(counts) = quality_counts {
        let (commits, unreadable) = rt.block_on(quality::read_commits(
            store,
            opts.range,
            summary.events_version,
        ))?;
        let report = quality::build(&counts, &opts.periods, &as_was_cards, commits, unreadable);
        for (path, data) in quality::files(&report)? {
            rt.block_on(output::put(store, path, data))?;
            summary.written.push(path.to_string());
        }
        summary.quality = Some(report);
    }
    if !unknown.is_empty() {
        tracing::warn!(
            codes = unknown.len(),
            first = %unknown[0],
            "agency codes the reference lacks: counted under their own codes and in quality/ (unknown_agency); add them to the agency reference"
        );
    }
    summary.metric_rows = rollups.rows;
    summary.field_rows = rollups.fields;
    summary.scorecards = cards;
    summary.province = province_name(agencies);
    summary.agency_names = agencies
        .entries()
        .iter()
        .filter_map(|e| agencies.id(&e.code))
        .map(|id| (agencies.code(id).to_string(), agencies.name(id).to_string()))
        .collect();
    summary.breaks = agencies.breaks();
    summary.unknown_agencies = unknown;
    Ok(())
}

/// One fold part's dossiers, judged and placed, and its counts.
struct Judgement<'a> {
    rows: Vec<(&'a str, rules::Judged, placement::Placement)>,
    base: Base,
    quality: quality::PartQuality,
    /// Dossiers set aside for a year the holiday table lacks, by year.
    missing_years: std::collections::BTreeMap<i32, u64>,
}

fn judge_part<'a>(folder: &'a Folder, ctx: &Context<'_>, opts: &Options) -> Judgement<'a> {
    let (cal, catalog) = (ctx.cal, ctx.catalog);
    let mut placer = placement::Placer::new(ctx.agencies, &folder.syms);
    let mut grouper = Grouper::new(&opts.periods);
    let mut names = Base::default();
    let mut rows = Vec::with_capacity(folder.facts.len());
    let mut issues = quality::DossierGrouper::default();
    let mut missing_years = std::collections::BTreeMap::new();
    let sym = |s| (s != NO_SYM).then(|| folder.syms.get(s)).flatten();
    for (code, fact) in &folder.facts {
        let j = rules::judge(fact, &folder.syms, cal, catalog, opts.as_of);
        if let Some(rules::NotJudged::CalendarMissing { year }) = j.not_judged {
            *missing_years.entry(year).or_default() += 1;
        }
        let codes = metrics::Codes {
            field: fact.field,
            procedure: fact.procedure,
        };
        let place = placer.place(code, fact, &j);
        grouper.add(codes, &j, &place);
        issues.add(
            fact,
            &quality::dossier_issues(fact, &folder.syms, catalog, &j, &place),
        );
        if let (Some(c), Some(n)) = (sym(fact.procedure), sym(fact.procedure_name)) {
            names.add_name(c.to_owned(), n.to_owned());
        }
        if let (Some(c), Some(n)) = (sym(fact.field), sym(fact.field_name)) {
            names.add_field_name(c.to_owned(), n.to_owned());
        }
        rows.push((&**code, j, place));
    }
    let mut base = grouper.base(&folder.syms, ctx.agencies);
    base.names = names.names;
    base.field_names = names.field_names;
    let mut quality = quality::PartQuality::default();
    issues.into_part(&folder.syms, &mut quality);
    Judgement {
        rows,
        base,
        quality,
        missing_years,
    }
}

/// Looks at each decoded batch of file `i` before it is folded, and may replace it (the
/// incremental mode drops rows already folded, and notes which offsets a file holds).
type BatchHook<'a> = &'a (dyn Fn(usize, &RecordBatch) -> Result<RecordBatch, String> + Sync);

/// Fetch and decode the files on worker threads, and fold every batch on each fold
/// thread, each keeping only its own part of the dossiers. The fold does not care about
/// order, so nothing is sorted or merged here.
fn read_into(
    files: &[read::EventFile],
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    folders: &mut [Folder],
    hook: Option<BatchHook<'_>>,
) -> Result<u64, AggregateError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let decoders = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let bytes = AtomicUsize::new(0);
    let error: std::sync::Mutex<Option<AggregateError>> = std::sync::Mutex::new(None);
    let fail = |e: AggregateError| {
        failed.store(true, Ordering::Relaxed);
        error.lock().expect("not poisoned").get_or_insert(e);
    };
    let (txs, rxs): (Vec<_>, Vec<_>) = folders
        .iter()
        .map(|_| std::sync::mpsc::sync_channel::<RecordBatch>(4))
        .unzip();
    std::thread::scope(|scope| {
        for (folder, rx) in folders.iter_mut().zip(rxs) {
            let (failed, fail) = (&failed, &fail);
            scope.spawn(move || {
                for batch in rx {
                    if failed.load(Ordering::Relaxed) {
                        continue; // drain, so no decoder blocks forever
                    }
                    if let Err(e) = folder.add(&batch) {
                        fail(e.into());
                    }
                }
            });
        }
        for _ in 0..decoders {
            let txs = txs.clone();
            let (next, failed, bytes, fail) = (&next, &failed, &bytes, &fail);
            scope.spawn(move || {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = files.get(i) else {
                        return;
                    };
                    let result = rt.block_on(read::fetch(&**store, f)).and_then(|data| {
                        bytes.fetch_add(data.len(), Ordering::Relaxed);
                        let (columns, optional) = (fold::COLUMNS, fold::OPTIONAL_COLUMNS);
                        let dict = fold::DICTIONARY_COLUMNS;
                        read::decode_with_optional(
                            &f.path,
                            data,
                            columns,
                            optional,
                            dict,
                            |b: &RecordBatch| {
                                let b = match hook {
                                    Some(h) => h(i, b)?,
                                    None => b.clone(),
                                };
                                for tx in &txs {
                                    tx.send(b.clone())
                                        .map_err(|_| "a fold thread stopped".to_string())?;
                                }
                                Ok(())
                            },
                        )
                    });
                    if let Err(e) = result {
                        fail(e.into());
                        return;
                    }
                }
            });
        }
        drop(txs);
    });
    match error.into_inner().expect("not poisoned") {
        Some(e) => Err(e),
        None => Ok(bytes.load(Ordering::Relaxed) as u64),
    }
}

/// Delete the parts under `dir` written by a run with another shard count (whose names
/// do not end in `layout`), so the table holds each dossier once.
async fn remove_other_layouts(
    store: &dyn ObjectStore,
    dir: &str,
    layout: &str,
) -> Result<(), AggregateError> {
    use futures::TryStreamExt;
    let metas: Vec<_> = store.list(Some(&Path::from(dir))).try_collect().await?;
    for m in metas {
        let name = m.location.as_ref();
        if name.contains("-of-") && !name.ends_with(layout) {
            store.delete(&m.location).await?;
        }
    }
    Ok(())
}

/// Add up the quality counts `n` shards wrote; `None` when a shard wrote none (a shard
/// run by a version without them), so the merge still writes `metrics/`.
async fn read_quality_shards(
    store: &dyn ObjectStore,
    n: u32,
) -> Result<Option<quality::PartQuality>, AggregateError> {
    let mut all = quality::PartQuality::default();
    for i in 0..n {
        let path = quality::shard_path(i, n);
        let data = match store.get(&Path::from(path.as_str())).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                tracing::warn!(%path, "no quality counts from this shard: quality/ not written");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let part = quality::PartQuality::from_json(&data)
            .map_err(|reason| AggregateError::ShardCounts { path, reason })?;
        all.merge(part);
    }
    Ok(Some(all))
}

/// Add up the counts `n` shards wrote.
async fn read_shards(store: &dyn ObjectStore, n: u32) -> Result<Base, AggregateError> {
    let mut base = Base::default();
    for i in 0..n {
        let path = output::shard_counts_path(i, n);
        let bad = |reason: String| AggregateError::ShardCounts {
            path: path.clone(),
            reason,
        };
        let data = match store.get(&Path::from(path.as_str())).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(bad(format!("missing: run shard {i}/{n} first")))
            }
            Err(e) => return Err(e.into()),
        };
        let mut cols: Vec<&str> = vec![
            "view",
            "period",
            "period_start",
            "agency_code",
            "field_code",
            "field_name",
            "procedure_code",
            "procedure_name",
        ];
        cols.extend(output::BASE_COUNTS);
        read::decode(&Path::from(path.as_str()), data, &cols, &[], |b| {
            merge_batch(&mut base, b)
        })
        .map_err(|e| bad(e.to_string()))?;
    }
    Ok(base)
}

fn merge_batch(base: &mut Base, b: &RecordBatch) -> Result<(), String> {
    let view = b.column(0).as_string::<i32>();
    let period = b.column(1).as_string::<i32>();
    let start = b.column(2).as_primitive::<Date32Type>();
    let agency = b.column(3).as_string::<i32>();
    let field = b.column(4).as_string::<i32>();
    let field_name = b.column(5).as_string::<i32>();
    let procedure = b.column(6).as_string::<i32>();
    let name = b.column(7).as_string::<i32>();
    for i in 0..b.num_rows() {
        let v = View::parse(view.value(i))
            .ok_or_else(|| format!("unknown view {:?}", view.value(i)))?;
        let p = Period::ALL
            .into_iter()
            .find(|p| p.as_str() == period.value(i))
            .ok_or_else(|| format!("unknown period {:?}", period.value(i)))?;
        let d = NaiveDate::from_num_days_from_ce_opt(start.value(i) + 719_163)
            .ok_or("period_start out of range")?;
        let opt = |a: &arrow::array::StringArray| a.is_valid(i).then(|| a.value(i).to_owned());
        let mut c = model::Counts::default();
        for (k, col) in output::BASE_COUNTS.iter().enumerate() {
            output::set_count(
                &mut c,
                col,
                b.column(8 + k).as_primitive::<UInt64Type>().value(i),
            );
        }
        base.rows
            .entry((v, p, d, opt(agency), opt(field), opt(procedure)))
            .or_default()
            .add(&c);
        if let (Some(code), Some(n)) = (opt(procedure), opt(name)) {
            base.add_name(code, n);
        }
        if let (Some(code), Some(n)) = (opt(field), opt(field_name)) {
            base.add_field_name(code, n);
        }
    }
    Ok(())
}

/// The default periods: day, month, quarter and year.
pub fn all_periods() -> Vec<Period> {
    Period::ALL.to_vec()
}
