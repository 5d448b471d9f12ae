//! Data quality: how late changes reach us, what the feed leaves out, what contradicts
//! itself, what arrives twice or not at all. The complaints of the provinces' reviews of
//! their one-stop shops, measured per agency and period next to the 766 score.
//!
//! Three sources, each cheap where the fold is hot:
//! - **per event** (in the fold threads, [`FoldQuality`]): the sync delay into a fixed
//!   log-bucket histogram per (agency, status, local day), a 64-bit fingerprint per event
//!   for the repeat count, and rows per topic for the reconciliation;
//! - **per dossier** (after the fold, [`dossier_issues`]): completeness and consistency
//!   checks on the folded fact, which holds only a few extra bytes for them
//!   (`peak_stage`, `peak_at`, `snapshot_status`) besides the agencies it keeps anyway;
//! - **per commit** of the events table (`sohoa.ranges` in its log): messages, dead
//!   letters by reason and the rows the ingestor says it wrote.
//!
//! Everything is rolled up to the metrics' periods at the end, so the fold keeps days, not
//! periods.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::hash::Hasher;
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Builder, Float64Builder, Int64Builder, UInt64Builder};
use bytes::Bytes;
use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;

use crate::catalog::Catalog;
use crate::fold::FLAG_HAS_RESULT_DOCUMENT;
use crate::fold::{Fact, FxHasher, FxMap, Interner, Sym, FLAG_E_RESULT, NO_SYM};
use crate::metrics::MISSING_CODE;
use crate::model::{rate, Period, Scorecard};
use crate::output::{self, OutputError};
use crate::placement::Placement;
use crate::read::DateRange;
use crate::rules::{Judged, NotJudged};

/// A status's stage in a dossier's life: 1 registered, 2 received, 3 being processed
/// (4 processing, 5 supplement and 6 payment requested go back and forth legitimately),
/// 4 processed, 5 closed (3 not accepted, 7 withdrawn, 8 stopped, 10 returned). 0 for
/// anything else. A dossier never moves to a lower stage; when its latest event shows
/// one, the source regressed (see [`dossier_issues`]).
pub fn stage(status: i8) -> u8 {
    match status {
        1 => 1,
        2 => 2,
        4..=6 => 3,
        9 => 4,
        3 | 7 | 8 | 10 => 5,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------
// Sync delay histograms
// ---------------------------------------------------------------------------------------

/// Buckets of the delay histogram. Bucket 0 holds delays under one second (and negative
/// ones); bucket k ≥ 1 holds [2^((k−1)/2), 2^(k/2)) seconds, half an octave each, so the
/// last one starts at 2^31 s (68 years). A quantile is reported as its bucket's geometric
/// middle, 2^((k−½)/2) s rounded to the second: within a factor 2^¼ (19%) of the truth.
pub const BUCKETS: usize = 64;

const DAY_US: i64 = 86_400 * 1_000_000;

/// The bucket of a delay in µs.
pub fn bucket_of(delay_us: i64) -> usize {
    let s = delay_us / 1_000_000;
    if s < 1 {
        return 0;
    }
    (((s as f64).log2() * 2.0).floor() as usize + 1).min(BUCKETS - 1)
}

/// The value reported for bucket `k`, in seconds.
pub fn bucket_value(k: usize) -> i64 {
    if k == 0 {
        0
    } else {
        2f64.powf((k as f64 - 0.5) / 2.0).round() as i64
    }
}

/// The delays of one (agency, status, day) in the fold: counts fit in u32 there.
#[derive(Debug, Clone)]
pub struct DayHist {
    buckets: [u32; BUCKETS],
    within_24h: u32,
    before_event: u32,
    untimed: u32,
}

impl Default for DayHist {
    fn default() -> Self {
        DayHist {
            buckets: [0; BUCKETS],
            within_24h: 0,
            before_event: 0,
            untimed: 0,
        }
    }
}

/// Delays summed over days, agencies or statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hist {
    pub buckets: [u64; BUCKETS],
    /// Events that arrived at most 24 hours after their event time (early ones included).
    pub within_24h: u64,
    /// Events that arrived before their event time (clock skew, or dates in the future).
    pub before_event: u64,
    /// Events with neither `arrived_at` nor `ingested_at`: no delay to measure.
    pub untimed: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            buckets: [0; BUCKETS],
            within_24h: 0,
            before_event: 0,
            untimed: 0,
        }
    }
}

impl Hist {
    fn add_day(&mut self, d: &DayHist) {
        for (a, b) in self.buckets.iter_mut().zip(d.buckets.iter()) {
            *a += u64::from(*b);
        }
        self.within_24h += u64::from(d.within_24h);
        self.before_event += u64::from(d.before_event);
        self.untimed += u64::from(d.untimed);
    }

    fn add(&mut self, o: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += *b;
        }
        self.within_24h += o.within_24h;
        self.before_event += o.before_event;
        self.untimed += o.untimed;
    }

    /// Events with a measured delay.
    pub fn timed(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The nearest-rank quantile `q` (0 < q ≤ 1), as its bucket's value, in seconds.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let n = self.timed();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (k, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_value(k));
            }
        }
        None
    }
}

/// One event, as the quality counts see it.
pub struct EventQ<'a> {
    pub dossier: &'a str,
    pub kind: Sym,
    pub source: Sym,
    pub topic: Sym,
    /// The agency on the event itself: progress events carry none...
    pub agency: Sym,
    /// ...and its code: part of what makes an event a repeat, since a successor's
    /// software re-syncing a dossier it took over can repeat everything else.
    pub agency_code: Option<&'a str>,
    pub status: i8,
    pub time: i64,
    /// `arrived_at`, else `ingested_at`.
    pub arrival: Option<i64>,
}

type DelayKey = (Sym, i8, i32);

/// The per-event counts of one fold thread.
#[derive(Debug, Default)]
pub struct FoldQuality {
    index: FxMap<DelayKey, u32>,
    hists: Vec<(DelayKey, DayHist)>,
    /// The last key seen with each status, and its index: rows of a file come grouped by
    /// day and agency, with statuses mixed, so this saves most lookups.
    last: [Option<(DelayKey, u32)>; 11],
    /// Sources by fingerprint index (at most 255; the rest share the last index).
    sources: Vec<Sym>,
    source_events: Vec<u64>,
    /// One per event: the source index in the top 8 bits, 56 bits of a hash of what
    /// identifies an event (dossier, kind, status, event time) below. Sorted once at the
    /// end: 8 bytes an event, far less than a set of event ids.
    fingerprints: Vec<u64>,
    topics: Vec<(Sym, u64)>,
}

/// A 64-bit finalizer (MurmurHash3's), so FxHash's weak low bits do not make repeats of
/// different events collide.
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl FoldQuality {
    pub fn event(&mut self, e: EventQ<'_>) {
        let day = sohoa_schemas::normalize::vn_day(e.time) as i32;
        let key = (e.agency, e.status, day);
        let slot = (e.status as usize).min(10);
        let idx = match self.last[slot] {
            Some((k, i)) if k == key => i,
            _ => {
                let next = self.hists.len() as u32;
                let i = *self.index.entry(key).or_insert(next);
                if i == next {
                    self.hists.push((key, DayHist::default()));
                }
                self.last[slot] = Some((key, i));
                i
            }
        };
        let h = &mut self.hists[idx as usize].1;
        match e.arrival {
            None => h.untimed += 1,
            Some(a) => {
                // Saturating: a corrupt timestamp must not panic a debug build.
                let d = a.saturating_sub(e.time);
                h.buckets[bucket_of(d)] += 1;
                h.within_24h += u32::from(d <= DAY_US);
                h.before_event += u32::from(d < 0);
            }
        }

        let si = match self.sources.iter().position(|&s| s == e.source) {
            Some(i) => i,
            None if self.sources.len() < 255 => {
                self.sources.push(e.source);
                self.source_events.push(0);
                self.sources.len() - 1
            }
            None => 254,
        };
        self.source_events[si] += 1;
        let mut hasher = FxHasher::default();
        hasher.write(e.dossier.as_bytes());
        hasher.write_u32(e.kind);
        hasher.write_u8(e.status as u8);
        hasher.write_u64(e.time as u64);
        if let Some(a) = e.agency_code {
            hasher.write(a.as_bytes());
        }
        let fp = (fmix(hasher.finish()) >> 8) | ((si as u64) << 56);
        self.fingerprints.push(fp);

        match self.topics.iter_mut().find(|(t, _)| *t == e.topic) {
            Some((_, n)) => *n += 1,
            None => self.topics.push((e.topic, 1)),
        }
    }

    /// The thread's counts with codes resolved; frees the fingerprints.
    pub fn finish(&mut self, syms: &Interner) -> PartQuality {
        let mut out = self.additive(syms);
        let name = |s: Sym| symbol_name(syms, s);
        let mut fps = std::mem::take(&mut self.fingerprints);
        fps.sort_unstable();
        let mut dups = vec![0u64; self.sources.len()];
        for w in fps.windows(2) {
            if w[0] == w[1] {
                dups[(w[1] >> 56) as usize] += 1;
            }
        }
        for (i, s) in self.sources.iter().enumerate() {
            let e = out.sources.entry(name(*s)).or_default();
            e.0 += self.source_events[i];
            e.1 += dups[i];
        }
        out
    }

    /// [`Self::finish`] for an incremental run: this run's events' fingerprints join the
    /// distinct ones earlier runs saw (`sets`, by source), so an event repeating one
    /// folded before counts as a repeat. A source's repeats are its events minus its
    /// distinct fingerprints, which is what the sorted-neighbours count of a full run
    /// gives too. The returned sources are the totals, over `sets`, not this run's.
    pub fn finish_incremental(&mut self, syms: &Interner, sets: &mut SourceSets) -> PartQuality {
        let mut out = self.additive(syms);
        let mut by_source: Vec<Vec<u64>> = vec![Vec::new(); self.sources.len()];
        for fp in std::mem::take(&mut self.fingerprints) {
            by_source[(fp >> 56) as usize].push(fp & FP_MASK);
        }
        for (i, mut new) in by_source.into_iter().enumerate() {
            new.sort_unstable();
            new.dedup();
            let set = sets.entry(symbol_name(syms, self.sources[i])).or_default();
            set.events += self.source_events[i];
            set.fingerprints = union_sorted(&set.fingerprints, &new);
        }
        for (s, set) in sets.iter() {
            out.sources.insert(
                s.clone(),
                (set.events, set.events - set.fingerprints.len() as u64),
            );
        }
        out
    }

    /// The counts that add up across runs: sync delays and rows per topic.
    fn additive(&self, syms: &Interner) -> PartQuality {
        let name = |s: Sym| symbol_name(syms, s);
        let mut out = PartQuality::default();
        for ((agency, status, day), h) in &self.hists {
            let d = NaiveDate::from_num_days_from_ce_opt(day + 719_163).expect("in range");
            out.delays
                .entry((name(*agency), *status, d))
                .or_default()
                .add_day(h);
        }
        for (t, n) in &self.topics {
            *out.topic_rows.entry(name(*t)).or_default() += n;
        }
        out
    }
}

fn symbol_name(syms: &Interner, s: Sym) -> String {
    (s != NO_SYM)
        .then(|| syms.get(s))
        .flatten()
        .unwrap_or(MISSING_CODE)
        .to_owned()
}

/// The event-identifying bits of a fingerprint (the top 8 are the fold thread's source
/// index, which means nothing outside the thread).
pub const FP_MASK: u64 = (1 << 56) - 1;

/// The events of one source an incremental state has folded in a fold part, and the
/// distinct fingerprints among them (sorted, [`FP_MASK`] bits).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceSet {
    pub events: u64,
    pub fingerprints: Vec<u64>,
}

/// Source system → its [`SourceSet`].
pub type SourceSets = BTreeMap<String, SourceSet>;

fn union_sorted(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

// ---------------------------------------------------------------------------------------
// Dossier checks
// ---------------------------------------------------------------------------------------

/// The dossier columns of the quality table, in order; `DossierCounts` indexes them.
pub const DOSSIER_COLUMNS: [&str; N_DOSSIER] = [
    "dossiers",
    "no_snapshot",
    "missing_required_date",
    "missing_received_at",
    "missing_finished_at",
    "missing_returned_at",
    "missing_refused_at",
    "no_due_date",
    "result_without_file",
    "unknown_procedure",
    "status_regression",
    "due_before_receipt",
    "finish_before_receipt",
    "two_agencies",
    "dossiers_with_issue",
    "due_date_reset",
    "calendar_missing",
    "unknown_agency",
    "handed_over",
];

/// How many dossier columns there are.
const N_DOSSIER: usize = 19;

const I_DOSSIERS: usize = 0;
const I_NO_SNAPSHOT: usize = 1;
const I_MISSING_DATE: usize = 2;
const I_MISSING_RECEIVED: usize = 3;
const I_MISSING_FINISHED: usize = 4;
const I_MISSING_RETURNED: usize = 5;
const I_MISSING_REFUSED: usize = 6;
const I_NO_DUE: usize = 7;
const I_RESULT_NO_FILE: usize = 8;
const I_UNKNOWN_PROCEDURE: usize = 9;
const I_REGRESSION: usize = 10;
const I_DUE_BEFORE: usize = 11;
const I_FINISH_BEFORE: usize = 12;
const I_TWO_AGENCIES: usize = 13;
const I_WITH_ISSUE: usize = 14;
// Not data-quality issues, so after `dossiers_with_issue` and outside it: how the agencies
// handled the dossiers, what the holiday table could not judge, agencies the reference
// lacks (a gap in the reference, not in the feed), and handovers (along a successor line
// they are expected; any other is `two_agencies`).
const I_DUE_RESET: usize = 15;
const I_CALENDAR_MISSING: usize = 16;
const I_UNKNOWN_AGENCY: usize = 17;
const I_HANDED_OVER: usize = 18;

/// Dossier counts, by [`DOSSIER_COLUMNS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DossierCounts(pub [u64; N_DOSSIER]);

impl DossierCounts {
    pub fn add(&mut self, o: &DossierCounts) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }

    pub fn get(&self, column: &str) -> u64 {
        DOSSIER_COLUMNS
            .iter()
            .position(|c| *c == column)
            .map_or(0, |i| self.0[i])
    }

    pub fn dossiers(&self) -> u64 {
        self.0[I_DOSSIERS]
    }

    pub fn with_issue(&self) -> u64 {
        self.0[I_WITH_ISSUE]
    }

    /// 100 × the share of dossiers without any issue; `None` without dossiers.
    pub fn score(&self) -> Option<f64> {
        rate(self.dossiers() - self.with_issue(), self.dossiers()).map(|r| r * 100.0)
    }
}

/// Statuses that mean the dossier was received: the receipt date is required, and so is a
/// due date.
fn needs_receipt(status: i8) -> bool {
    matches!(status, 2 | 4 | 5 | 6 | 8 | 9 | 10)
}

/// The checks one dossier fails, as a [`DossierCounts`] of zeros and ones. Dates and
/// codes are the latest snapshot's; the regression looks at every event; `j` is the
/// dossier as the rules judged it, `place` where its agencies put it.
pub fn dossier_issues(
    f: &Fact,
    syms: &Interner,
    catalog: &Catalog,
    j: &Judged,
    place: &Placement,
) -> DossierCounts {
    let mut c = [0u64; N_DOSSIER];
    c[I_DOSSIERS] = 1;
    // The latest event (of any kind) is at an earlier stage than one an earlier event had
    // already reached. A stale snapshot cannot trigger it: arriving late, it is not the
    // latest by event time, and its own time is before the peak's.
    let st = stage(f.status);
    c[I_REGRESSION] = u64::from(st > 0 && st < f.peak_stage && f.last.time > f.peak_at);
    if f.snapshot.is_none() {
        c[I_NO_SNAPSHOT] = 1;
    } else {
        let s = f.snapshot_status;
        c[I_MISSING_RECEIVED] = u64::from(needs_receipt(s) && f.received_at.is_none());
        c[I_MISSING_FINISHED] = u64::from(matches!(s, 9 | 10) && f.finished_at.is_none());
        c[I_MISSING_RETURNED] = u64::from(s == 10 && f.returned_at.is_none());
        c[I_MISSING_REFUSED] = u64::from(s == 3 && f.refused_at.is_none());
        c[I_MISSING_DATE] = u64::from(c[I_MISSING_RECEIVED..=I_MISSING_REFUSED].contains(&1));
        c[I_NO_DUE] = u64::from(needs_receipt(s) && f.due_at.is_none());
        let code = (f.procedure != NO_SYM)
            .then(|| syms.get(f.procedure))
            .flatten();
        let procedure = code.and_then(|c| catalog.get(c));
        c[I_UNKNOWN_PROCEDURE] = u64::from(procedure.is_none());
        let result_is_document = procedure
            .map(|p| p.result_is_document)
            .unwrap_or(f.flag(FLAG_HAS_RESULT_DOCUMENT));
        c[I_RESULT_NO_FILE] =
            u64::from(matches!(s, 9 | 10) && result_is_document && !f.flag(FLAG_E_RESULT));
        if let Some(r) = f.received_at {
            c[I_DUE_BEFORE] = u64::from(f.due_at.is_some_and(|d| d < r));
            c[I_FINISH_BEFORE] = u64::from(
                f.finished_at.is_some_and(|t| t < r) || f.returned_at.is_some_and(|t| t < r),
            );
        }
        // A handover along a known successor line is the reorganization at work.
        c[I_TWO_AGENCIES] = u64::from(place.off_line);
    }
    c[I_WITH_ISSUE] = u64::from(c[I_NO_SNAPSHOT..I_WITH_ISSUE].contains(&1));
    c[I_DUE_RESET] = u64::from(j.due_resets > 0);
    c[I_CALENDAR_MISSING] = u64::from(matches!(
        j.not_judged,
        Some(NotJudged::CalendarMissing { .. })
    ));
    c[I_UNKNOWN_AGENCY] = u64::from(place.unknown);
    c[I_HANDED_OVER] = u64::from(place.handed_over);
    DossierCounts(c)
}

/// Dossier counts of one fold part by (agency, local day), before periods.
#[derive(Debug, Default)]
pub struct DossierGrouper {
    groups: FxMap<(Sym, i32), DossierCounts>,
}

impl DossierGrouper {
    /// A dossier counts on its receipt day, or without one on the day of its latest event;
    /// under its latest snapshot's agency.
    pub fn add(&mut self, f: &Fact, issues: &DossierCounts) {
        let agency = if f.snapshot.is_some() {
            f.agency
        } else {
            NO_SYM
        };
        let when = f.received_at.unwrap_or(f.last.time);
        let day = sohoa_schemas::normalize::vn_day(when) as i32;
        self.groups.entry((agency, day)).or_default().add(issues);
    }

    pub fn into_part(self, syms: &Interner, part: &mut PartQuality) {
        for ((agency, day), c) in self.groups {
            let name = (agency != NO_SYM)
                .then(|| syms.get(agency))
                .flatten()
                .unwrap_or(MISSING_CODE)
                .to_owned();
            let d = NaiveDate::from_num_days_from_ce_opt(day + 719_163).expect("in range");
            part.dossiers.entry((name, d)).or_default().add(&c);
        }
    }
}

/// One fold part's quality counts, codes as text: parts add up.
#[derive(Debug, Default, Clone)]
pub struct PartQuality {
    pub dossiers: BTreeMap<(String, NaiveDate), DossierCounts>,
    pub delays: BTreeMap<(String, i8, NaiveDate), Hist>,
    /// Source system → (events, repeats).
    pub sources: BTreeMap<String, (u64, u64)>,
    /// Topic → rows read.
    pub topic_rows: BTreeMap<String, u64>,
}

impl PartQuality {
    pub fn merge(&mut self, o: PartQuality) {
        for (k, c) in o.dossiers {
            self.dossiers.entry(k).or_default().add(&c);
        }
        for (k, h) in o.delays {
            self.delays.entry(k).or_default().add(&h);
        }
        for (k, (e, d)) in o.sources {
            let s = self.sources.entry(k).or_default();
            s.0 += e;
            s.1 += d;
        }
        for (k, n) in o.topic_rows {
            *self.topic_rows.entry(k).or_default() += n;
        }
    }
}

/// Where shard `index` of `count` writes its quality counts for the merge.
pub fn shard_path(index: u32, count: u32) -> String {
    format!("quality/_shards/{count:05}/part-{index:05}.json")
}

/// (agency, status, day, buckets, within 24 h, before the event, untimed)
type DelayEntry = (String, i8, i32, Vec<u64>, u64, u64, u64);

/// A shard's quality counts as JSON: entries as arrays, dates as days since 1970-01-01.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct PartFile {
    dossiers: Vec<(String, i32, Vec<u64>)>,
    delays: Vec<DelayEntry>,
    sources: Vec<(String, u64, u64)>,
    topic_rows: Vec<(String, u64)>,
}

fn day_number(d: NaiveDate) -> i32 {
    output::days(d)
}

fn from_day_number(n: i32) -> Result<NaiveDate, String> {
    NaiveDate::from_num_days_from_ce_opt(n + 719_163).ok_or(format!("day {n} out of range"))
}

impl PartQuality {
    pub fn to_json(&self) -> Vec<u8> {
        let f = PartFile {
            dossiers: self
                .dossiers
                .iter()
                .map(|((a, d), c)| (a.clone(), day_number(*d), c.0.to_vec()))
                .collect(),
            delays: self
                .delays
                .iter()
                .map(|((a, st, d), h)| {
                    (
                        a.clone(),
                        *st,
                        day_number(*d),
                        h.buckets.to_vec(),
                        h.within_24h,
                        h.before_event,
                        h.untimed,
                    )
                })
                .collect(),
            sources: self
                .sources
                .iter()
                .map(|(s, (e, d))| (s.clone(), *e, *d))
                .collect(),
            topic_rows: self
                .topic_rows
                .iter()
                .map(|(t, n)| (t.clone(), *n))
                .collect(),
        };
        serde_json::to_vec(&f).expect("plain data always serializes")
    }

    pub fn from_json(data: &[u8]) -> Result<PartQuality, String> {
        let f: PartFile = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        let mut out = PartQuality::default();
        for (a, d, c) in f.dossiers {
            let counts: [u64; N_DOSSIER] = c
                .try_into()
                .map_err(|c: Vec<u64>| format!("{} dossier counts, not {N_DOSSIER}", c.len()))?;
            out.dossiers
                .entry((a, from_day_number(d)?))
                .or_default()
                .add(&DossierCounts(counts));
        }
        for (a, st, d, b, within, before, untimed) in f.delays {
            let buckets: [u64; BUCKETS] = b
                .try_into()
                .map_err(|b: Vec<u64>| format!("{} buckets, not {BUCKETS}", b.len()))?;
            out.delays
                .entry((a, st, from_day_number(d)?))
                .or_default()
                .add(&Hist {
                    buckets,
                    within_24h: within,
                    before_event: before,
                    untimed,
                });
        }
        for (s, e, d) in f.sources {
            let x = out.sources.entry(s).or_default();
            x.0 += e;
            x.1 += d;
        }
        for (t, n) in f.topic_rows {
            *out.topic_rows.entry(t).or_default() += n;
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// The events table's commits
// ---------------------------------------------------------------------------------------

/// What the commits of one topic say: each commit of a flush records, per source range,
/// the messages, events and dead letters it read (`sohoa.ranges` in the commit's
/// `commitInfo.operationParameters`), and the pseudonym key of its rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TopicCommits {
    /// Source ranges committed.
    pub ranges: u64,
    pub messages: u64,
    pub events: u64,
    /// Events of the committed ranges whose date is in the run's range.
    pub rows_in_range: u64,
    pub dead_lettered: u64,
    /// Dead letters by reason; those a range does not break down are `(unknown)`.
    pub by_reason: BTreeMap<String, u64>,
    /// The pseudonym keys the topic's rows were made with, by fingerprint.
    pub key_fingerprints: BTreeSet<String>,
}

/// Where the commits already read are summed up: commits are immutable, so a run reads
/// only the log's commits after the last one it summed. Without this, every run would
/// read every commit ever written (one a minute per replica).
pub const COMMIT_DIGEST: &str = "quality/_commits.json";

/// The sums of the commits read so far.
#[derive(Debug, Default, Clone, serde::Serialize, Deserialize)]
struct CommitDigest {
    /// The last commit version summed.
    last: Option<u64>,
    topics: BTreeMap<String, TopicDigest>,
    unreadable: u64,
}

#[derive(Debug, Default, Clone, serde::Serialize, Deserialize)]
struct TopicDigest {
    /// Source ranges committed.
    #[serde(alias = "markers")]
    ranges: u64,
    messages: u64,
    events: u64,
    dead_lettered: u64,
    by_reason: BTreeMap<String, u64>,
    /// Events by date (`YYYY-MM-DD`).
    events_by_date: BTreeMap<String, u64>,
    key_fingerprints: BTreeSet<String>,
}

/// The fields of a source range in a commit this reads; a field an older ingestor did not
/// write reads as empty.
#[derive(Debug, Deserialize)]
struct RangeDoc {
    topic: String,
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    events: u64,
    #[serde(default)]
    dead_lettered: u64,
    #[serde(default)]
    dead_letters_by_reason: BTreeMap<String, u64>,
    #[serde(default)]
    events_by_date: BTreeMap<String, u64>,
}

impl CommitDigest {
    /// Sum one commit file of the log.
    fn add(&mut self, path: &Path, data: &[u8]) {
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                tracing::warn!(%path, "unreadable line in the events table's log");
                self.unreadable += 1;
                continue;
            };
            let params = &action["commitInfo"]["operationParameters"];
            let Some(ranges) = params["sohoa.ranges"].as_str() else {
                continue;
            };
            let ranges: Vec<RangeDoc> = match serde_json::from_str(ranges) {
                Ok(r) => r,
                Err(e) => {
                    // A commit the ingestor cannot have written: count it, say which, and
                    // go on; the quality numbers are not worth failing the 766 run over.
                    tracing::warn!(%path, error = %e, "unreadable source ranges in a commit");
                    self.unreadable += 1;
                    continue;
                }
            };
            let key = params["sohoa.keyFingerprint"].as_str().map(str::to_owned);
            for r in ranges {
                let t = self.topics.entry(r.topic).or_default();
                t.key_fingerprints.extend(key.clone());
                t.ranges += 1;
                t.messages += r.messages;
                t.events += r.events;
                t.dead_lettered += r.dead_lettered;
                let mut explained = 0;
                for (reason, n) in r.dead_letters_by_reason {
                    explained += n;
                    *t.by_reason.entry(reason).or_default() += n;
                }
                if r.dead_lettered > explained {
                    *t.by_reason.entry("(unknown)".into()).or_default() +=
                        r.dead_lettered - explained;
                }
                for (date, n) in r.events_by_date {
                    *t.events_by_date.entry(date).or_default() += n;
                }
            }
        }
    }
}

/// The commit version of a log file's name, `<version:020>.json`.
fn commit_version(p: &Path) -> Option<u64> {
    p.filename()?.strip_suffix(".json")?.parse().ok()
}

/// What the events table's commits say, by topic, and how many commits could not be read:
/// the digest of the commits earlier runs read ([`COMMIT_DIGEST`]) plus the new ones,
/// whose sum is written back as the new digest.
///
/// With `up_to`, only the commits up to that version of the table count: the digest is
/// a sum, so for a version older than the digest's the log is read again from the
/// start, and that sum is not written back.
pub async fn read_commits(
    store: &dyn ObjectStore,
    range: DateRange,
    up_to: Option<u64>,
) -> Result<(BTreeMap<String, TopicCommits>, u64), object_store::Error> {
    let digest_path = Path::from(COMMIT_DIGEST);
    let mut digest: CommitDigest = match store.get(&digest_path).await {
        Ok(r) => {
            let data = r.bytes().await?;
            serde_json::from_slice(&data).unwrap_or_else(|e| {
                // Rebuilt from the log itself, at the cost of reading all of it.
                tracing::warn!(error = %e, "unreadable {COMMIT_DIGEST}: reading the whole log");
                CommitDigest::default()
            })
        }
        Err(object_store::Error::NotFound { .. }) => CommitDigest::default(),
        Err(e) => return Err(e),
    };
    let older = digest
        .last
        .zip(up_to)
        .is_some_and(|(last, up_to)| last > up_to);
    if older {
        digest = CommitDigest::default();
    }
    let log = Path::from("events/_delta_log");
    let after = digest
        .last
        .map(|v| Path::from(format!("events/_delta_log/{v:020}.json")));
    let listing = match &after {
        Some(last) => store.list_with_offset(Some(&log), last),
        None => store.list(Some(&log)),
    };
    let mut paths: Vec<(u64, Path)> = listing
        .map_ok(|m| m.location)
        .try_filter_map(|p| futures::future::ready(Ok(commit_version(&p).map(|v| (v, p)))))
        .try_collect()
        .await?;
    paths.retain(|(v, _)| {
        digest.last.is_none_or(|last| *v > last) && up_to.is_none_or(|up_to| *v <= up_to)
    });
    paths.sort();
    if !paths.is_empty() {
        // Commits are small: fetch a few at a time, sum in version order.
        let docs: Vec<(u64, Path, Bytes)> = futures::stream::iter(paths)
            .map(|(v, p)| async move {
                let data = store.get(&p).await?.bytes().await?;
                Ok::<_, object_store::Error>((v, p, data))
            })
            .buffered(16)
            .try_collect()
            .await?;
        for (v, path, data) in &docs {
            digest.add(path, data);
            digest.last = Some(*v);
        }
        if !older {
            let data = serde_json::to_vec(&digest).expect("plain data always serializes");
            store
                .put(&digest_path, object_store::PutPayload::from(data))
                .await?;
        }
    }
    let mut out: BTreeMap<String, TopicCommits> = BTreeMap::new();
    for (topic, d) in &digest.topics {
        let t = out.entry(topic.clone()).or_default();
        t.ranges += d.ranges;
        t.messages += d.messages;
        t.events += d.events;
        t.dead_lettered += d.dead_lettered;
        for (r, n) in &d.by_reason {
            *t.by_reason.entry(r.clone()).or_default() += n;
        }
        t.key_fingerprints
            .extend(d.key_fingerprints.iter().cloned());
        for (date, rows) in &d.events_by_date {
            let in_range =
                NaiveDate::parse_from_str(date, "%Y-%m-%d").map_or(true, |d| range.contains(d));
            if in_range {
                t.rows_in_range += rows;
            }
        }
    }
    Ok((out, digest.unreadable))
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

/// Delay figures of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayStats {
    pub events: u64,
    pub timed: u64,
    pub p50_seconds: Option<i64>,
    pub p95_seconds: Option<i64>,
    pub within_24h: u64,
    pub before_event: u64,
}

impl DelayStats {
    fn of(h: &Hist) -> DelayStats {
        DelayStats {
            events: h.timed() + h.untimed,
            timed: h.timed(),
            p50_seconds: h.quantile(0.5),
            p95_seconds: h.quantile(0.95),
            within_24h: h.within_24h,
            before_event: h.before_event,
        }
    }

    pub fn within_24h_rate(&self) -> Option<f64> {
        rate(self.within_24h, self.timed)
    }
}

/// One row of `quality/quality`: an agency (or the province, `agency_code` None) in a
/// period.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityRow {
    pub period: Period,
    pub period_start: NaiveDate,
    pub agency_code: Option<String>,
    pub counts: DossierCounts,
    pub delay: DelayStats,
    /// The 766 scorecard's total and maximum for the same agency and period.
    pub score_766: Option<(f64, f64)>,
    /// Rank among the period's agencies by quality score (1 = best), and by 766 score.
    pub quality_rank: Option<u64>,
    pub score_766_rank: Option<u64>,
}

impl QualityRow {
    pub fn quality_score(&self) -> Option<f64> {
        self.counts.score()
    }

    pub fn score_766_pct(&self) -> Option<f64> {
        self.score_766
            .and_then(|(t, m)| (m > 0.0).then(|| 100.0 * t / m))
    }
}

/// One row of `quality/sync_delay`: the delay of one status's events.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayRow {
    pub period: Period,
    pub period_start: NaiveDate,
    pub agency_code: Option<String>,
    pub status_code: i8,
    pub delay: DelayStats,
}

/// One row of `quality/sources`: repeats of a source system.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRow {
    pub source_system: String,
    pub events: u64,
    pub duplicates: u64,
}

impl SourceRow {
    pub fn duplicate_rate(&self) -> Option<f64> {
        rate(self.duplicates, self.events)
    }
}

/// One row of `quality/ingest`: a topic (`reason` None), or its dead letters of one
/// reason.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestRow {
    pub topic: String,
    pub reason: Option<String>,
    /// Source ranges committed.
    pub ranges: u64,
    pub messages: u64,
    pub dead_lettered: u64,
    pub committed_events: u64,
    pub committed_rows_in_range: u64,
    pub storage_rows: u64,
}

impl IngestRow {
    pub fn dead_letter_rate(&self) -> Option<f64> {
        rate(self.dead_lettered, self.messages)
    }

    /// Rows read from storage minus rows the commits say were written (topic rows only).
    pub fn difference(&self) -> Option<i64> {
        self.reason
            .is_none()
            .then(|| self.storage_rows as i64 - self.committed_rows_in_range as i64)
    }
}

/// Everything the quality tables, the report section and the terminal block show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualityReport {
    pub rows: Vec<QualityRow>,
    pub delays: Vec<DelayRow>,
    pub sources: Vec<SourceRow>,
    pub ingest: Vec<IngestRow>,
    pub unreadable_commits: u64,
}

impl QualityReport {
    /// Topics whose storage rows differ from what their commits say.
    pub fn mismatches(&self) -> impl Iterator<Item = &IngestRow> {
        self.ingest
            .iter()
            .filter(|r| r.difference().is_some_and(|d| d != 0))
    }
}

/// Roll the parts' counts up to `periods`, add the province, the 766 scores and the ranks,
/// and reconcile with the commits.
pub fn build(
    part: &PartQuality,
    periods: &[Period],
    cards: &[Scorecard],
    commits: BTreeMap<String, TopicCommits>,
    unreadable_commits: u64,
) -> QualityReport {
    // (period, start, agency: None = province)
    type Key = (Period, NaiveDate, Option<String>);
    let mut dossiers: BTreeMap<Key, DossierCounts> = BTreeMap::new();
    let mut delays: BTreeMap<(Period, NaiveDate, Option<String>, i8), Hist> = BTreeMap::new();
    for &p in periods {
        for ((agency, day), c) in &part.dossiers {
            let start = p.start_of(*day);
            for a in [Some(agency.clone()), None] {
                dossiers.entry((p, start, a)).or_default().add(c);
            }
        }
        for ((agency, status, day), h) in &part.delays {
            let start = p.start_of(*day);
            for a in [Some(agency.clone()), None] {
                delays.entry((p, start, a, *status)).or_default().add(h);
            }
        }
    }
    let mut overall: BTreeMap<Key, Hist> = BTreeMap::new();
    for ((p, s, a, _), h) in &delays {
        overall.entry((*p, *s, a.clone())).or_default().add(h);
    }
    let keys: std::collections::BTreeSet<Key> =
        dossiers.keys().chain(overall.keys()).cloned().collect();
    let card = |p: Period, s: NaiveDate, a: &Option<String>| {
        cards
            .iter()
            .find(|c| c.period == p && c.period_start == s && c.agency_code == *a)
            .map(|c| (c.total, c.max_total))
    };
    let empty = Hist::default();
    let mut rows: Vec<QualityRow> = keys
        .into_iter()
        .map(|(p, s, a)| QualityRow {
            period: p,
            period_start: s,
            counts: dossiers
                .get(&(p, s, a.clone()))
                .copied()
                .unwrap_or_default(),
            delay: DelayStats::of(overall.get(&(p, s, a.clone())).unwrap_or(&empty)),
            score_766: card(p, s, &a),
            agency_code: a,
            quality_rank: None,
            score_766_rank: None,
        })
        .collect();
    rank(&mut rows);
    let delays = delays
        .into_iter()
        .map(|((p, s, a, st), h)| DelayRow {
            period: p,
            period_start: s,
            agency_code: a,
            status_code: st,
            delay: DelayStats::of(&h),
        })
        .collect();
    let sources = part
        .sources
        .iter()
        .map(|(s, (e, d))| SourceRow {
            source_system: s.clone(),
            events: *e,
            duplicates: *d,
        })
        .collect();
    let mut topics: std::collections::BTreeSet<&String> = part.topic_rows.keys().collect();
    topics.extend(commits.keys());
    let mut ingest = Vec::new();
    for t in topics {
        let m = commits.get(t).cloned().unwrap_or_default();
        let total = IngestRow {
            topic: t.clone(),
            reason: None,
            ranges: m.ranges,
            messages: m.messages,
            dead_lettered: m.dead_lettered,
            committed_events: m.events,
            committed_rows_in_range: m.rows_in_range,
            storage_rows: part.topic_rows.get(t).copied().unwrap_or(0),
        };
        for (reason, n) in &m.by_reason {
            ingest.push(IngestRow {
                reason: Some(reason.clone()),
                dead_lettered: *n,
                ..total.clone()
            });
        }
        ingest.insert(ingest.len() - m.by_reason.len(), total);
    }
    QualityReport {
        rows,
        delays,
        sources,
        ingest,
        unreadable_commits,
    }
}

/// Rank the agencies of each period: by quality score (highest first), and by the 766
/// score's share of its maximum; ties by agency code. The province is not ranked.
fn rank(rows: &mut [QualityRow]) {
    let mut groups: BTreeMap<(Period, NaiveDate), Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        if r.agency_code.is_some() {
            groups
                .entry((r.period, r.period_start))
                .or_default()
                .push(i);
        }
    }
    for idx in groups.values() {
        let by = |f: &dyn Fn(&QualityRow) -> Option<f64>| {
            let mut v: Vec<(usize, f64)> = idx
                .iter()
                .filter_map(|&i| f(&rows[i]).map(|s| (i, s)))
                .collect();
            v.sort_by(|a, b| {
                b.1.total_cmp(&a.1)
                    .then_with(|| rows[a.0].agency_code.cmp(&rows[b.0].agency_code))
            });
            v.into_iter().map(|(i, _)| i).collect::<Vec<_>>()
        };
        let q = by(&QualityRow::quality_score);
        let s = by(&QualityRow::score_766_pct);
        for (r, i) in q.into_iter().enumerate() {
            rows[i].quality_rank = Some(r as u64 + 1);
        }
        for (r, i) in s.into_iter().enumerate() {
            rows[i].score_766_rank = Some(r as u64 + 1);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------

/// A column of a quality table, written both as Parquet and as CSV.
enum Col {
    Text(Vec<Option<String>>),
    Date(Vec<NaiveDate>),
    Count(Vec<u64>),
    Int(Vec<Option<i64>>),
    Rate(Vec<Option<f64>>),
}

impl Col {
    fn csv(&self, i: usize, out: &mut String) {
        match self {
            Col::Text(v) => output::csv_field(out, v[i].as_deref().unwrap_or("")),
            Col::Date(v) => {
                let _ = write!(out, "{}", v[i].format("%Y-%m-%d"));
            }
            Col::Count(v) => {
                let _ = write!(out, "{}", v[i]);
            }
            Col::Int(v) => {
                if let Some(x) = v[i] {
                    let _ = write!(out, "{x}");
                }
            }
            Col::Rate(v) => {
                if let Some(x) = v[i] {
                    let _ = write!(out, "{x}");
                }
            }
        }
    }

    fn array(&self) -> (ArrayRef, bool) {
        match self {
            Col::Text(v) => {
                let mut b = arrow::array::StringBuilder::new();
                v.iter().for_each(|s| b.append_option(s.as_deref()));
                (Arc::new(b.finish()), true)
            }
            Col::Date(v) => {
                let mut b = Date32Builder::with_capacity(v.len());
                v.iter().for_each(|d| b.append_value(output::days(*d)));
                (Arc::new(b.finish()), false)
            }
            Col::Count(v) => {
                let mut b = UInt64Builder::with_capacity(v.len());
                v.iter().for_each(|x| b.append_value(*x));
                (Arc::new(b.finish()), false)
            }
            Col::Int(v) => {
                let mut b = Int64Builder::with_capacity(v.len());
                v.iter().for_each(|x| b.append_option(*x));
                (Arc::new(b.finish()), true)
            }
            Col::Rate(v) => {
                let mut b = Float64Builder::with_capacity(v.len());
                v.iter().for_each(|x| b.append_option(*x));
                (Arc::new(b.finish()), true)
            }
        }
    }
}

type Table = Vec<(&'static str, Col)>;

fn csv(table: &Table, rows: usize) -> String {
    let mut out = table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(",");
    out.push('\n');
    for i in 0..rows {
        for (j, (_, c)) in table.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            c.csv(i, &mut out);
        }
        out.push('\n');
    }
    out
}

fn parquet(name: &'static str, table: &Table) -> Result<Bytes, OutputError> {
    let cols = table
        .iter()
        .map(|(n, c)| {
            let (a, nullable) = c.array();
            (*n, a, nullable)
        })
        .collect();
    output::encode(name, &output::batch(name, cols)?)
}

fn period_cols<'a, T: 'a>(
    rows: &'a [T],
    key: impl Fn(&T) -> (Period, NaiveDate, Option<String>),
) -> Table {
    let keys: Vec<_> = rows.iter().map(key).collect();
    vec![
        (
            "period",
            Col::Text(keys.iter().map(|k| Some(k.0.as_str().into())).collect()),
        ),
        (
            "period_start",
            Col::Date(keys.iter().map(|k| k.1).collect()),
        ),
        (
            "period_label",
            Col::Text(keys.iter().map(|k| Some(k.0.label(k.1))).collect()),
        ),
        (
            "agency_code",
            Col::Text(keys.into_iter().map(|k| k.2).collect()),
        ),
    ]
}

fn delay_cols<T>(t: &mut Table, rows: &[T], d: impl Fn(&T) -> &DelayStats, prefix: bool) {
    let name = |plain: &'static str, prefixed: &'static str| if prefix { prefixed } else { plain };
    t.push((
        name("events", "sync_events"),
        Col::Count(rows.iter().map(|r| d(r).events).collect()),
    ));
    t.push((
        name("timed_events", "sync_timed_events"),
        Col::Count(rows.iter().map(|r| d(r).timed).collect()),
    ));
    t.push((
        name("p50_seconds", "sync_p50_seconds"),
        Col::Int(rows.iter().map(|r| d(r).p50_seconds).collect()),
    ));
    t.push((
        name("p95_seconds", "sync_p95_seconds"),
        Col::Int(rows.iter().map(|r| d(r).p95_seconds).collect()),
    ));
    t.push((
        name("within_24h", "sync_within_24h"),
        Col::Count(rows.iter().map(|r| d(r).within_24h).collect()),
    ));
    t.push((
        name("within_24h_rate", "sync_within_24h_rate"),
        Col::Rate(rows.iter().map(|r| d(r).within_24h_rate()).collect()),
    ));
    t.push((
        name("arrived_before_event", "sync_arrived_before_event"),
        Col::Count(rows.iter().map(|r| d(r).before_event).collect()),
    ));
}

fn quality_table(rows: &[QualityRow]) -> Table {
    let mut t = period_cols(rows, |r| (r.period, r.period_start, r.agency_code.clone()));
    for (i, name) in DOSSIER_COLUMNS.iter().enumerate() {
        t.push((
            name,
            Col::Count(rows.iter().map(|r| r.counts.0[i]).collect()),
        ));
    }
    t.push((
        "quality_score",
        Col::Rate(rows.iter().map(QualityRow::quality_score).collect()),
    ));
    delay_cols(&mut t, rows, |r| &r.delay, true);
    t.push((
        "score_766",
        Col::Rate(rows.iter().map(|r| r.score_766.map(|s| s.0)).collect()),
    ));
    t.push((
        "score_766_max",
        Col::Rate(rows.iter().map(|r| r.score_766.map(|s| s.1)).collect()),
    ));
    t.push((
        "score_766_pct",
        Col::Rate(rows.iter().map(QualityRow::score_766_pct).collect()),
    ));
    t.push((
        "quality_rank",
        Col::Int(
            rows.iter()
                .map(|r| r.quality_rank.map(|x| x as i64))
                .collect(),
        ),
    ));
    t.push((
        "score_766_rank",
        Col::Int(
            rows.iter()
                .map(|r| r.score_766_rank.map(|x| x as i64))
                .collect(),
        ),
    ));
    t
}

fn delay_table(rows: &[DelayRow]) -> Table {
    let mut t = period_cols(rows, |r| (r.period, r.period_start, r.agency_code.clone()));
    t.push((
        "status_code",
        Col::Int(
            rows.iter()
                .map(|r| Some(i64::from(r.status_code)))
                .collect(),
        ),
    ));
    delay_cols(&mut t, rows, |r| &r.delay, false);
    t
}

fn sources_table(rows: &[SourceRow]) -> Table {
    vec![
        (
            "source_system",
            Col::Text(rows.iter().map(|r| Some(r.source_system.clone())).collect()),
        ),
        (
            "events",
            Col::Count(rows.iter().map(|r| r.events).collect()),
        ),
        (
            "duplicates",
            Col::Count(rows.iter().map(|r| r.duplicates).collect()),
        ),
        (
            "duplicate_rate",
            Col::Rate(rows.iter().map(SourceRow::duplicate_rate).collect()),
        ),
    ]
}

fn ingest_table(rows: &[IngestRow]) -> Table {
    vec![
        (
            "topic",
            Col::Text(rows.iter().map(|r| Some(r.topic.clone())).collect()),
        ),
        (
            "reason",
            Col::Text(rows.iter().map(|r| r.reason.clone()).collect()),
        ),
        (
            "committed_ranges",
            Col::Count(rows.iter().map(|r| r.ranges).collect()),
        ),
        (
            "messages",
            Col::Count(rows.iter().map(|r| r.messages).collect()),
        ),
        (
            "dead_lettered",
            Col::Count(rows.iter().map(|r| r.dead_lettered).collect()),
        ),
        (
            "dead_letter_rate",
            Col::Rate(rows.iter().map(IngestRow::dead_letter_rate).collect()),
        ),
        (
            "committed_events",
            Col::Count(rows.iter().map(|r| r.committed_events).collect()),
        ),
        (
            "committed_rows_in_range",
            Col::Count(rows.iter().map(|r| r.committed_rows_in_range).collect()),
        ),
        (
            "storage_rows",
            Col::Count(rows.iter().map(|r| r.storage_rows).collect()),
        ),
        (
            "difference",
            Col::Int(rows.iter().map(IngestRow::difference).collect()),
        ),
    ]
}

/// The files of `quality/`: path and contents, each table as Parquet and as CSV.
pub fn files(q: &QualityReport) -> Result<Vec<(&'static str, Bytes)>, OutputError> {
    let tables: [(&'static str, [&'static str; 2], Table, usize); 4] = [
        (
            "quality",
            ["quality/quality.parquet", "quality/quality.csv"],
            quality_table(&q.rows),
            q.rows.len(),
        ),
        (
            "sync_delay",
            ["quality/sync_delay.parquet", "quality/sync_delay.csv"],
            delay_table(&q.delays),
            q.delays.len(),
        ),
        (
            "sources",
            ["quality/sources.parquet", "quality/sources.csv"],
            sources_table(&q.sources),
            q.sources.len(),
        ),
        (
            "ingest",
            ["quality/ingest.parquet", "quality/ingest.csv"],
            ingest_table(&q.ingest),
            q.ingest.len(),
        ),
    ];
    let mut out = Vec::new();
    for (name, [pq, csv_path], table, n) in tables {
        out.push((pq, parquet(name, &table)?));
        out.push((csv_path, Bytes::from(csv(&table, n))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_half_octaves_reported_at_their_geometric_middle() {
        let s = 1_000_000;
        assert_eq!(bucket_of(-5 * s), 0);
        assert_eq!(bucket_of(999_999), 0);
        assert_eq!(bucket_of(s), 1); // [1, 1.41) s
        assert_eq!(bucket_of(2 * s), 3); // [2, 2.83) s
        assert_eq!(bucket_of(3600 * s), 24); // [2896, 4096) s
        assert_eq!(bucket_of(4096 * s), 25);
        assert_eq!(bucket_of(i64::MAX), BUCKETS - 1);
        assert_eq!(bucket_value(0), 0);
        assert_eq!(bucket_value(24), 3444);
        // Every value within 19% of every delay its bucket holds.
        for k in 1..BUCKETS - 1 {
            let (lo, hi) = (2f64.powf((k as f64 - 1.0) / 2.0), 2f64.powf(k as f64 / 2.0));
            let v = 2f64.powf((k as f64 - 0.5) / 2.0);
            assert!(v / lo <= 1.19 && hi / v <= 1.19, "bucket {k}");
        }
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut h = Hist::default();
        assert_eq!(h.quantile(0.5), None);
        h.buckets[1] = 1;
        h.buckets[24] = 2;
        h.buckets[40] = 1;
        assert_eq!(h.quantile(0.5), Some(bucket_value(24)));
        assert_eq!(h.quantile(0.25), Some(bucket_value(1)));
        assert_eq!(h.quantile(0.95), Some(bucket_value(40)));
    }

    #[test]
    fn stages_put_back_and_forth_statuses_together() {
        assert_eq!([1, 2, 4, 5, 6, 9, 10].map(stage), [1, 2, 3, 3, 3, 4, 5]);
        assert_eq!([3, 7, 8].map(stage), [5, 5, 5]);
        assert_eq!(stage(0), 0);
    }
}
