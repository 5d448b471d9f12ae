//! Incremental aggregation: fold only the event files earlier runs have not folded into
//! the facts they left, then judge and write everything as a full run does.
//!
//! The state lives in storage (`_sohoa/aggregate/state/`), so any replica can run the next
//! step:
//! - `manifests/<generation>.json`, the commit point: the event files folded (path and
//!   size), which source offsets of which date partition they held (the *coverage*), and
//!   the objects below. The newest manifest is the state; it is created only if absent,
//!   so of two runs that loaded the same generation only one commits the next.
//! - `g<generation>-<nonce>/facts-<part>.bin`: one fold part's facts and interned codes;
//!   `fingerprints-<part>.bin`: its distinct event fingerprints and event count per source
//!   (the repeat count); `quality.json`: the per-event counts that add up (sync delays,
//!   rows per topic).
//!
//! A run writes its objects first and its manifest last; objects no manifest names are
//! deleted after a commit. A crash before the manifest leaves the previous state whole, and
//! the next run folds the same files again from it.
//!
//! Facts are a join-semilattice (latest by event key, earliest time), so folding new events
//! into saved facts gives the facts of a full fold. Three things are not idempotent and
//! rely on every stored event being folded exactly once: `Fact::events`, the per-event
//! quality counts, and the repeat count. The manifest gives that for ordinary files; a
//! compacted file holds events of files already folded, which are skipped by their source
//! offset (see [`Coverage`]).

mod codec;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{
    Array, BooleanArray, DictionaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::Int32Type;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sohoa_runtime::config::AggregateConfig;

use crate::fold::{Folder, FxMap, Part, Shard};
use crate::quality::{PartQuality, SourceSets};
use crate::read::{DateRange, EventFile};
use crate::{AggregateError, Options, Summary};
use codec::{decode_facts, decode_sets, encode_facts, encode_sets};

/// Where the state lives.
pub const STATE_DIR: &str = "_sohoa/aggregate/state";

fn manifests_dir() -> Path {
    Path::from(format!("{STATE_DIR}/manifests"))
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("--incremental does not support {flag}: its state covers every date and every dossier; {hint}")]
    Unsupported {
        flag: &'static str,
        hint: &'static str,
    },
    #[error("incremental state {path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("event file {path} changed size since it was folded ({was} to {now} bytes): event files are immutable, so the state no longer matches storage; delete {STATE_DIR}/ to rebuild it")]
    FileChanged { path: String, was: u64, now: u64 },
    #[error("another run committed incremental state generation {generation} first; this run's state is dropped")]
    Conflict { generation: u64 },
    #[error("failure injected before the state manifest was written")]
    Injected,
}

/// How an incremental run behaves beyond [`Options`].
#[derive(Debug, Clone, Default)]
pub struct Incremental {
    /// Fail after writing the new state's objects, before its manifest: the worst moment
    /// to crash, for tests of recovery.
    pub fail_before_commit: bool,
}

/// One fold part's objects.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct PartObjects {
    facts: String,
    fingerprints: String,
}

/// Offsets of one source partition held by folded files of one date partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CoverageEntry {
    date: String,
    topic: String,
    partition: i32,
    ranges: Vec<(i64, i64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Manifest {
    version: u32,
    generation: u64,
    parts: Vec<PartObjects>,
    quality: String,
    /// Event files folded and still present at the last run: path and size.
    files: Vec<(String, u64)>,
    coverage: Vec<CoverageEntry>,
}

/// The source offsets already folded, by (date partition, topic, source partition), as
/// sorted disjoint inclusive ranges.
///
/// An ingestor file `<topic>-p<P>-o<S>-<E>.parquet` of `date=D` holds every event of
/// offsets `S..=E` dated D, so folding it covers that whole range. A compacted file holds
/// whole input files; it covers, per source partition, the offsets from its smallest to
/// its largest: compaction merges runs of consecutive files in name order, so no file
/// outside it has offsets in between that a later compaction could bring (the ranges of
/// one partition never overlap). Rows of a compacted file inside the coverage were folded
/// from its inputs and are skipped; the others (inputs compacted before any run saw them)
/// are folded. A file whose rows lack `source_topic` cannot be matched and is folded whole.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    ranges: BTreeMap<(NaiveDate, String, i32), Vec<(i64, i64)>>,
}

impl Coverage {
    pub fn add(&mut self, date: NaiveDate, topic: &str, partition: i32, lo: i64, hi: i64) {
        let v = self
            .ranges
            .entry((date, topic.to_owned(), partition))
            .or_default();
        v.push((lo, hi));
        v.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(v.len());
        for &(a, b) in v.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *v = merged;
    }

    pub fn contains(&self, date: NaiveDate, topic: &str, partition: i32, offset: i64) -> bool {
        self.ranges
            .get(&(date, topic.to_owned(), partition))
            .is_some_and(|r| covers(r, offset))
    }

    /// The ranges of one date partition, by (topic, partition).
    fn of_date(&self, date: NaiveDate) -> HashMap<(&str, i32), &[(i64, i64)]> {
        self.ranges
            .iter()
            .filter(|((d, _, _), _)| *d == date)
            .map(|((_, t, p), r)| ((t.as_str(), *p), r.as_slice()))
            .collect()
    }
}

fn covers(ranges: &[(i64, i64)], offset: i64) -> bool {
    let i = ranges.partition_point(|r| r.0 <= offset);
    i > 0 && ranges[i - 1].1 >= offset
}

/// Topic, partition and offsets of an ingestor file name
/// (`<topic>-p<partition>-o<start>-<end>.parquet`).
pub fn range_of_name(name: &str) -> Option<(&str, i32, i64, i64)> {
    let stem = name.strip_suffix(".parquet")?;
    let (rest, end) = stem.rsplit_once('-')?;
    let (rest, start) = rest.rsplit_once("-o")?;
    let (topic, partition) = rest.rsplit_once("-p")?;
    Some((
        topic,
        partition.parse().ok()?,
        start.parse().ok()?,
        end.parse().ok()?,
    ))
}

/// The inputs a compaction marker still present lists for `events/date=D/compacted-<id>`.
async fn compaction_inputs(
    store: &dyn ObjectStore,
    file: &EventFile,
) -> Result<Option<Vec<String>>, AggregateError> {
    #[derive(Deserialize)]
    struct Marker {
        inputs: Vec<String>,
    }
    let Some(id) = file
        .path
        .filename()
        .and_then(|n| n.strip_prefix("compacted-"))
        .and_then(|n| n.strip_suffix(".parquet"))
    else {
        return Ok(None);
    };
    let path = Path::from(format!(
        "_sohoa/compact/commits/date={}/{id}.json",
        file.date.format("%Y-%m-%d")
    ));
    match store.get(&path).await {
        Ok(r) => {
            let data = r.bytes().await?;
            // An unreadable marker only costs the shortcut: the file is read and filtered.
            Ok(serde_json::from_slice::<Marker>(&data)
                .ok()
                .map(|m| m.inputs))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// (topic, partition) → the smallest and largest offset seen.
type Offsets = BTreeMap<(String, i32), (i64, i64)>;

/// The offsets seen in each file read.
struct Seen {
    files: Vec<Mutex<Offsets>>,
}

/// A batch's `source_topic` column, dictionary or plain; `None` without one.
enum Topics<'a> {
    Dict(&'a Int32Array, &'a StringArray),
    Plain(&'a StringArray),
}

impl<'a> Topics<'a> {
    fn of(b: &'a RecordBatch) -> Option<Self> {
        let c = b.column_by_name("source_topic")?;
        if let Some(d) = c.as_any().downcast_ref::<DictionaryArray<Int32Type>>() {
            let values = d.values().as_any().downcast_ref::<StringArray>()?;
            return Some(Topics::Dict(d.keys(), values));
        }
        c.as_any().downcast_ref::<StringArray>().map(Topics::Plain)
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Topics::Dict(k, v) => k.is_valid(i).then(|| v.value(k.value(i) as usize)),
            Topics::Plain(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

fn lineage(b: &RecordBatch) -> Result<(&Int32Array, &Int64Array), String> {
    let p = b
        .column_by_name("source_partition")
        .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
        .ok_or("source_partition missing or not int32")?;
    let o = b
        .column_by_name("source_offset")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or("source_offset missing or not int64")?;
    Ok((p, o))
}

impl Seen {
    fn new(n: usize) -> Self {
        Seen {
            files: (0..n).map(|_| Mutex::new(BTreeMap::new())).collect(),
        }
    }

    fn observe(&self, file: usize, b: &RecordBatch) -> Result<(), String> {
        let Some(topics) = Topics::of(b) else {
            return Ok(());
        };
        let (p, o) = lineage(b)?;
        // Per batch first: files hold one or a few source partitions, so this stays tiny.
        let mut local: FxMap<(&str, i32), (i64, i64)> = FxMap::default();
        for i in 0..b.num_rows() {
            let (Some(t), true, true) = (topics.get(i), p.is_valid(i), o.is_valid(i)) else {
                continue;
            };
            let off = o.value(i);
            let e = local.entry((t, p.value(i))).or_insert((off, off));
            e.0 = e.0.min(off);
            e.1 = e.1.max(off);
        }
        let mut m = self.files[file].lock().expect("not poisoned");
        for ((t, p), (lo, hi)) in local {
            let e = m.entry((t.to_owned(), p)).or_insert((lo, hi));
            e.0 = e.0.min(lo);
            e.1 = e.1.max(hi);
        }
        Ok(())
    }

    fn take(&self, file: usize) -> Offsets {
        std::mem::take(&mut *self.files[file].lock().expect("not poisoned"))
    }
}

/// The rows of `b` (of a file of `date`) whose offsets `coverage` does not hold.
fn uncovered(
    b: &RecordBatch,
    ranges: &HashMap<(&str, i32), &[(i64, i64)]>,
) -> Result<RecordBatch, String> {
    let Some(topics) = Topics::of(b) else {
        return Ok(b.clone());
    };
    let (p, o) = lineage(b)?;
    let keep: BooleanArray = (0..b.num_rows())
        .map(|i| {
            let folded = match (topics.get(i), p.is_valid(i), o.is_valid(i)) {
                (Some(t), true, true) => ranges
                    .get(&(t, p.value(i)))
                    .is_some_and(|r| covers(r, o.value(i))),
                _ => false,
            };
            Some(!folded)
        })
        .collect();
    arrow::compute::filter_record_batch(b, &keep).map_err(|e| e.to_string())
}

/// The state a run starts from.
struct Loaded {
    manifest: Manifest,
    folders: Vec<Folder>,
    sets: Vec<SourceSets>,
    /// Sync delays and rows per topic of every event folded so far.
    additive: PartQuality,
    coverage: Coverage,
}

impl Loaded {
    /// No state: every event file is folded. `generation` is the last committed one, so
    /// the next commit supersedes it and cleans its objects.
    fn empty(generation: u64) -> Loaded {
        let n = crate::fold_threads() as u32;
        Loaded {
            manifest: Manifest {
                generation,
                ..Manifest::default()
            },
            folders: (0..n)
                .map(|index| {
                    Folder::new(Part {
                        shard: Shard::ALL,
                        index,
                        count: n,
                    })
                })
                .collect(),
            sets: vec![SourceSets::new(); n as usize],
            additive: PartQuality::default(),
            coverage: Coverage::default(),
        }
    }
}

/// The state's format: a state of another version (its facts lack what this one keeps)
/// is rebuilt from `events/` by folding everything again.
const STATE_VERSION: u32 = 5;

fn corrupt(path: &str, reason: impl ToString) -> AggregateError {
    StateError::Corrupt {
        path: path.to_string(),
        reason: reason.to_string(),
    }
    .into()
}

fn generation_of_manifest(p: &Path) -> Option<u64> {
    p.filename()?.strip_suffix(".json")?.parse().ok()
}

async fn get(store: &dyn ObjectStore, path: &str) -> Result<bytes::Bytes, AggregateError> {
    Ok(store.get(&Path::from(path)).await?.bytes().await?)
}

/// The newest manifest and the objects it names; `None` before the first run.
fn load(
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
) -> Result<Option<Loaded>, AggregateError> {
    let metas: Vec<_> = rt.block_on(store.list(Some(&manifests_dir())).try_collect())?;
    let Some(newest) = metas
        .iter()
        .filter_map(|m| generation_of_manifest(&m.location).map(|g| (g, &m.location)))
        .max()
    else {
        return Ok(None);
    };
    let path = newest.1.to_string();
    let data = rt.block_on(get(&**store, &path))?;
    let manifest: Manifest = serde_json::from_slice(&data).map_err(|e| corrupt(&path, e))?;
    if manifest.version != STATE_VERSION {
        tracing::warn!(
            %path,
            version = manifest.version,
            expected = STATE_VERSION,
            "incremental state of another version: folding every event file again"
        );
        return Ok(Some(Loaded::empty(manifest.generation)));
    }
    let mut coverage = Coverage::default();
    for c in &manifest.coverage {
        let date = NaiveDate::parse_from_str(&c.date, "%Y-%m-%d").map_err(|e| corrupt(&path, e))?;
        for &(lo, hi) in &c.ranges {
            coverage.add(date, &c.topic, c.partition, lo, hi);
        }
    }
    let count = manifest.parts.len() as u32;
    // Fetch every object at once, decode one part per thread.
    let objects: Vec<(bytes::Bytes, bytes::Bytes)> = rt.block_on(futures::future::try_join_all(
        manifest.parts.iter().map(|p| async {
            let facts = get(&**store, &p.facts).await?;
            let fps = get(&**store, &p.fingerprints).await?;
            Ok::<_, AggregateError>((facts, fps))
        }),
    ))?;
    let additive = rt.block_on(get(&**store, &manifest.quality))?;
    let additive = PartQuality::from_json(&additive).map_err(|e| corrupt(&manifest.quality, e))?;
    let decoded: Vec<Result<(Folder, SourceSets), AggregateError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = objects
            .iter()
            .zip(&manifest.parts)
            .enumerate()
            .map(|(i, ((facts, fps), names))| {
                scope.spawn(move || {
                    let part = Part {
                        shard: Shard::ALL,
                        index: i as u32,
                        count,
                    };
                    let folder = decode_facts(facts, part).map_err(|e| corrupt(&names.facts, e))?;
                    let sets = decode_sets(fps).map_err(|e| corrupt(&names.fingerprints, e))?;
                    Ok((folder, sets))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a state decoding thread panicked"))
            .collect()
    });
    let mut folders = Vec::with_capacity(decoded.len());
    let mut sets = Vec::with_capacity(decoded.len());
    for d in decoded {
        let (f, s) = d?;
        folders.push(f);
        sets.push(s);
    }
    Ok(Some(Loaded {
        manifest,
        folders,
        sets,
        additive,
        coverage,
    }))
}

/// The generation of an object under the state directory (`g<generation>-<nonce>/...`).
fn generation_of_object(p: &str) -> Option<u64> {
    let rest = p.strip_prefix(STATE_DIR)?.strip_prefix("/g")?;
    rest.split(['-', '/']).next()?.parse().ok()
}

/// Delete what the committed `manifest` no longer needs: older manifests, and objects of
/// this generation or older that it does not name (earlier states, and a crashed or
/// fenced run's objects). Newer objects may belong to a run still in progress.
async fn clean(store: &dyn ObjectStore, manifest: &Manifest) -> Result<(), AggregateError> {
    let keep: std::collections::HashSet<&str> = manifest
        .parts
        .iter()
        .flat_map(|p| [p.facts.as_str(), p.fingerprints.as_str()])
        .chain([manifest.quality.as_str()])
        .collect();
    let metas: Vec<_> = store
        .list(Some(&Path::from(STATE_DIR)))
        .try_collect()
        .await?;
    let manifests = manifests_dir();
    for m in metas {
        let p = m.location.as_ref();
        let stale = if m.location.prefix_matches(&manifests) {
            generation_of_manifest(&m.location).is_some_and(|g| g < manifest.generation)
        } else {
            generation_of_object(p).is_some_and(|g| g <= manifest.generation) && !keep.contains(p)
        };
        if stale {
            match store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Refuse the options a state over every date and dossier cannot honour.
fn check(opts: &Options) -> Result<(), StateError> {
    let unsupported = |flag, hint| Err(StateError::Unsupported { flag, hint });
    if opts.range.from.is_some() {
        return unsupported("--from", "run without it, or without --incremental");
    }
    if opts.range.to.is_some() {
        return unsupported("--to", "run without it, or without --incremental");
    }
    if opts.shard.count > 1 {
        return unsupported(
            "--shard",
            "one incremental run folds only new events; shard full recomputes instead",
        );
    }
    if opts.merge_shards.is_some() {
        return unsupported("--merge-shards", "merge shards without --incremental");
    }
    if opts.events_version.is_some() {
        return unsupported(
            "--events-version",
            "an incremental run folds up to the newest version; recompute a version in full without --incremental",
        );
    }
    Ok(())
}

/// Run the aggregator incrementally: load the state, fold the event files it has not
/// folded, write every output as [`crate::run`] does, then commit the new state.
pub fn run(
    cfg: &AggregateConfig,
    store: Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    opts: &Options,
    inc: &Incremental,
) -> Result<Summary, AggregateError> {
    check(opts)?;
    let started = Instant::now();
    let (cal, catalog) = crate::reference_data(cfg)?;
    let agencies = crate::agency_reference(cfg)?;
    let snapshot = crate::events_snapshot(opts)?;
    let mut summary = Summary {
        events_version: snapshot.as_ref().map(|s| s.version()),
        ..Summary::default()
    };
    crate::check_keys(&*store, rt, opts, &mut summary)?;
    summary.calendar.provisional = cal.provisional_years().clone();
    let loaded = match load(&store, rt)? {
        Some(l) => l,
        None => Loaded::empty(0),
    };
    let Loaded {
        manifest: old,
        mut folders,
        mut sets,
        additive,
        mut coverage,
    } = loaded;
    tracing::info!(
        generation = old.generation,
        dossiers = folders.iter().map(|f| f.facts.len()).sum::<usize>(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "incremental state loaded"
    );

    // Which files to fold: those the state has not folded. A compacted file whose marker
    // is still there and whose inputs were all folded holds nothing new and is not read.
    let files = crate::event_files(&*store, rt, opts, snapshot.as_ref(), DateRange::default())?;
    let known: HashMap<&str, u64> = old.files.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    let mut present: Vec<(String, u64)> = Vec::new();
    let (mut plain, mut compacted) = (Vec::new(), Vec::new());
    for f in files {
        match known.get(f.path.as_ref()) {
            Some(&was) if was == f.size => present.push((f.path.to_string(), f.size)),
            Some(&was) => {
                return Err(StateError::FileChanged {
                    path: f.path.to_string(),
                    was,
                    now: f.size,
                }
                .into())
            }
            None if f
                .path
                .filename()
                .is_some_and(|n| n.starts_with("compacted-")) =>
            {
                compacted.push(f)
            }
            None => plain.push(f),
        }
    }
    let mut filtered = Vec::new();
    for f in compacted {
        let inputs = rt.block_on(compaction_inputs(&*store, &f))?;
        if inputs.is_some_and(|i| i.iter().all(|p| known.contains_key(p.as_str()))) {
            present.push((f.path.to_string(), f.size));
        } else {
            filtered.push(f);
        }
    }

    // Ordinary files first, whole; then compacted ones without the rows already folded,
    // from earlier runs or from this run's ordinary files (a compacted file and its inputs
    // are both listed between its publication and the inputs' deletion).
    let seen = Seen::new(plain.len());
    let observe = |i: usize, b: &RecordBatch| seen.observe(i, b).map(|()| b.clone());
    summary.bytes_read += crate::read_into(&plain, &store, rt, &mut folders, Some(&observe))?;
    for (i, f) in plain.iter().enumerate() {
        let offsets = seen.take(i);
        let name = f.path.filename().unwrap_or_default();
        if let Some((name_topic, p, lo, hi)) = range_of_name(name) {
            // The rows' topic, as compacted rows will name it; the file name's is encoded.
            let topics: std::collections::BTreeSet<&str> =
                offsets.keys().map(|(t, _)| t.as_str()).collect();
            let topic = match topics.len() {
                1 => topics.into_iter().next().expect("one"),
                _ => name_topic,
            };
            coverage.add(f.date, topic, p, lo, hi);
        }
        for ((t, p), (lo, hi)) in offsets {
            coverage.add(f.date, &t, p, lo, hi);
        }
    }
    // One compacted file at a time, each seeing the coverage of those before it: a file
    // compacted again (with others) may be listed next to its new compacted copy.
    for f in &filtered {
        let seen = Seen::new(1);
        let ranges = coverage.of_date(f.date);
        let skip = |_: usize, b: &RecordBatch| {
            seen.observe(0, b)?;
            uncovered(b, &ranges)
        };
        let one = std::slice::from_ref(f);
        summary.bytes_read += crate::read_into(one, &store, rt, &mut folders, Some(&skip))?;
        drop(ranges);
        for ((t, p), (lo, hi)) in seen.take(0) {
            coverage.add(f.date, &t, p, lo, hi);
        }
    }
    let folded_any = !plain.is_empty() || !filtered.is_empty();
    present.extend(
        plain
            .iter()
            .chain(&filtered)
            .map(|f| (f.path.to_string(), f.size)),
    );
    present.sort();
    summary.files_read = plain.len() + filtered.len();
    summary.events_read = folders.first().map_or(0, |f| f.events_read);
    tracing::info!(
        files = summary.files_read,
        events = summary.events_read,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "new events folded"
    );

    // Per-event quality: this run's counts join the saved ones.
    let parts: Vec<PartQuality> = std::thread::scope(|scope| {
        let handles: Vec<_> = folders
            .iter_mut()
            .zip(sets.iter_mut())
            .map(|(f, s)| scope.spawn(move || f.quality.finish_incremental(&f.syms, s)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a quality thread panicked"))
            .collect()
    });
    let mut additive = additive;
    let mut quality_counts = PartQuality::default();
    for p in parts {
        additive.merge(PartQuality {
            delays: p.delays,
            topic_rows: p.topic_rows,
            ..PartQuality::default()
        });
        quality_counts.merge(PartQuality {
            sources: p.sources,
            ..PartQuality::default()
        });
    }
    quality_counts.merge(additive.clone());

    let ctx = crate::Context {
        cal: &cal,
        catalog: &catalog,
        agencies: &agencies,
        opts,
        store: &store,
        rt,
        started,
    };
    let (base, quality_counts) =
        crate::judge_and_write_dossiers(&ctx, &folders, quality_counts, &mut summary)?;
    let inputs = crate::MetricInputs {
        base,
        quality: Some(quality_counts),
        agencies: &agencies,
    };
    crate::write_metrics(cfg, &*store, rt, opts, inputs, &mut summary)?;

    // The new state: objects first, then the manifest naming them (the commit point).
    // Parts no new event reached keep their objects.
    if folded_any || present != old.files {
        let generation = old.generation + 1;
        let nonce = format!(
            "{:x}{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            std::process::id()
        );
        let dir = format!("{STATE_DIR}/g{generation:020}-{nonce}");
        let put = |path: &str, data: Vec<u8>| -> Result<u64, AggregateError> {
            let n = data.len() as u64;
            rt.block_on(store.put(&Path::from(path), PutPayload::from(data)))?;
            Ok(n)
        };
        // One thread per touched part encodes and writes its objects one at a time, so
        // at most one encoded object per part is held in memory.
        let written: Vec<Result<Option<(PartObjects, u64)>, AggregateError>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = folders
                    .iter()
                    .zip(&sets)
                    .enumerate()
                    .map(|(i, (f, s))| {
                        let touched = f.events_read > f.events_skipped || old.parts.len() <= i;
                        let (dir, put) = (&dir, &put);
                        scope.spawn(move || {
                            if !touched {
                                return Ok(None);
                            }
                            let p = PartObjects {
                                facts: format!("{dir}/facts-{i:05}.bin"),
                                fingerprints: format!("{dir}/fingerprints-{i:05}.bin"),
                            };
                            let n = put(&p.facts, encode_facts(f))?
                                + put(&p.fingerprints, encode_sets(s))?;
                            Ok(Some((p, n)))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a state writing thread panicked"))
                    .collect()
            });
        let mut parts = Vec::with_capacity(folders.len());
        let mut state_bytes = 0;
        for (i, w) in written.into_iter().enumerate() {
            match w? {
                Some((p, n)) => {
                    parts.push(p);
                    state_bytes += n;
                }
                None => parts.push(old.parts[i].clone()),
            }
        }
        let quality = if folded_any {
            let q = format!("{dir}/quality.json");
            state_bytes += put(&q, additive.to_json())?;
            q
        } else {
            old.quality.clone()
        };
        if inc.fail_before_commit {
            return Err(StateError::Injected.into());
        }
        let manifest = Manifest {
            version: STATE_VERSION,
            generation,
            parts,
            quality,
            files: present,
            coverage: coverage
                .ranges
                .iter()
                .map(|((d, t, p), r)| CoverageEntry {
                    date: d.format("%Y-%m-%d").to_string(),
                    topic: t.clone(),
                    partition: *p,
                    ranges: r.clone(),
                })
                .collect(),
        };
        let path = Path::from(format!("{STATE_DIR}/manifests/{generation:020}.json"));
        let body = serde_json::to_vec(&manifest).expect("plain data always serializes");
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match rt.block_on(store.put_opts(&path, PutPayload::from(body), create)) {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(StateError::Conflict { generation }.into())
            }
            Err(e) => return Err(e.into()),
        }
        rt.block_on(clean(&*store, &manifest))?;
        summary.written.push(path.to_string());
        tracing::info!(
            generation,
            state_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "incremental state committed"
        );
    }
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingestor_file_names_give_their_range() {
        assert_eq!(
            range_of_name(
                "dvcqg.dossiers-p00007-o00000000000000000005-00000000000000000042.parquet"
            ),
            Some(("dvcqg.dossiers", 7, 5, 42))
        );
        assert_eq!(range_of_name("compacted-0a1b2c3d4e5f6071.parquet"), None);
        assert_eq!(range_of_name("data_0.parquet"), None);
    }

    #[test]
    fn coverage_merges_adjacent_ranges() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let mut c = Coverage::default();
        c.add(d, "t", 0, 10, 19);
        c.add(d, "t", 0, 0, 9);
        c.add(d, "t", 0, 30, 39);
        assert_eq!(c.ranges[&(d, "t".to_string(), 0)], vec![(0, 19), (30, 39)]);
        assert!(c.contains(d, "t", 0, 19));
        assert!(!c.contains(d, "t", 0, 20));
        assert!(!c.contains(d, "t", 1, 5));
        assert!(!c.contains(d.succ_opt().unwrap(), "t", 0, 5));
    }
}
