//! The report: one self-contained HTML page for the provincial review (headline tiles, the
//! agency rankings, the monthly trend, the worst procedures and the scorecard; every chart
//! is inline SVG drawn here, nothing is fetched) and a compact table for the terminal.
//!
//! Both read the same selection:
//!
//! - The *reference period* is the latest year with data; without yearly rows, the latest
//!   quarter, then month, then day (and, without any metric rows, the latest scorecard).
//! - Province figures come from the province rollup row (no agency, no procedure); where a
//!   period has none, from the sum of its agency rollups.
//! - Agency figures come from the agency rollups (procedure None); an agency with only
//!   agency × procedure rows gets their sum.
//! - The monthly trend shows the months of the reference year (the twelve months up to the
//!   reference period otherwise), trimmed to the months with data.
//! - The worst procedures sum the agency × procedure rows of the reference period per
//!   procedure code, keep those with at least `min_dossiers` judged dossiers and at least
//!   one late or overdue dossier, and show the ten lowest on-time rates.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{Months, NaiveDate};

use crate::model::{CalendarNotes, Counts, FieldRow, MetricRow, Period, Scorecard};
use crate::quality::{QualityReport, QualityRow};

mod calendar;
mod fields;
mod progress;
mod trend;
mod years;

/// Everything the report shows.
pub struct ReportInput<'a> {
    /// e.g. "Tiền Giang" or the configured province name.
    pub title: &'a str,
    /// When the report was generated, already formatted (e.g. "2026-11-25 14:00 ICT").
    pub generated_at: &'a str,
    /// The moment in-progress dossiers were judged, already formatted.
    pub as_of: &'a str,
    /// Every metric row of the run (all periods; agency×procedure rows, agency rollups with
    /// procedure_code None, the province rollup with both None).
    pub rows: &'a [MetricRow],
    /// Scorecards per agency (and the province, agency_code None) and period.
    pub scorecards: &'a [Scorecard],
    /// Agency code -> display name, where known (may be empty; fall back to the code).
    pub agency_names: &'a BTreeMap<String, String>,
    /// Procedures with fewer judged dossiers than this are left out of "worst procedures".
    pub min_dossiers: u64,
    /// Provisional and missing years of the holiday table, flagged at the top.
    pub calendar: &'a CalendarNotes,
    /// The field rollups, ranked by on-time and digitization rate.
    pub fields: &'a [FieldRow],
    /// The days agencies of the reference ended and handed their dossiers over, with how
    /// many ended then: the trend marks them.
    pub breaks: &'a [(NaiveDate, usize)],
    /// The version of the events table the figures come from, when it is a table:
    /// `sohoa aggregate --events-version` recomputes them from it.
    pub events_version: Option<u64>,
}

/// What the report's agencies are: the restated view, ranked as today's units.
const VIEW_NOTE_HTML: &str = "<p class=\"view-note\" id=\"view-note\">Agencies are today's units: an agency that ended is restated into the unit that succeeded it, in the rankings, the scorecard and every table below (the restated view; <code>metrics/</code> also holds the agencies as they were, <code>view = as_was</code>).</p>\n";
const VIEW_NOTE_TERMINAL: &str =
    "Agencies as today's units (restated view; metrics/ also holds them as they were)\n";

/// Rates at or above this (in percent, as printed) are green.
const GOOD_AT: f64 = 95.0;
/// Rates at or above this (in percent, as printed) are amber; below, red.
const WARN_AT: f64 = 80.0;
/// How many procedures the "worst procedures" chart shows.
const WORST_LIMIT: usize = 10;

const COLOR_GOOD: &str = "#1a7f37";
const COLOR_WARN: &str = "#d4a72c";
const COLOR_BAD: &str = "#cf222e";
const COLOR_NONE: &str = "#8c959f";
const COLOR_INK: &str = "#1f2328";
const COLOR_MUTED: &str = "#57606a";
const COLOR_GRID: &str = "#e1e4e8";
const COLOR_ONTIME: &str = "#0b5cad";
const COLOR_DIGIT: &str = "#8250df";
const COLOR_VOLUME: &str = "#d8dee4";
const COLOR_OK: &str = "#5b8fc7";
const COLOR_LATE: &str = "#f0883e";
const COLOR_OVERDUE: &str = "#a40e26";

/// Thin space between thousands in the HTML (unambiguous for Vietnamese and English readers).
const HTML_THOUSANDS: &str = "\u{202f}";

macro_rules! put {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = write!($dst, $($arg)*);
    }};
}

// ---------------------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------------------

struct AgencyLine<'a> {
    code: String,
    name: String,
    counts: Option<Counts>,
    score: Option<&'a Scorecard>,
}

struct ProcLine {
    code: String,
    name: String,
    counts: Counts,
    agencies: usize,
}

struct Prepared<'a> {
    key: Option<(Period, NaiveDate)>,
    /// "2026", "2026-Q3", ... or "no data".
    label: String,
    province: Option<Counts>,
    /// The period before the reference period: its label and province counts.
    previous: Option<(String, Counts)>,
    province_score: Option<&'a Scorecard>,
    agencies: Vec<AgencyLine<'a>>,
    months: Vec<(NaiveDate, Option<Counts>)>,
    worst: Vec<ProcLine>,
    /// Procedures with judged dossiers below the threshold (left out).
    below_threshold: usize,
}

fn has_data(c: &Counts) -> bool {
    *c != Counts::default()
}

/// Coarsest first: the report prefers the latest year.
const GRANULARITY: [Period; 4] = [Period::Year, Period::Quarter, Period::Month, Period::Day];

fn reference_key(input: &ReportInput) -> Option<(Period, NaiveDate)> {
    for p in GRANULARITY {
        let latest = input
            .rows
            .iter()
            .filter(|r| r.period == p && has_data(&r.counts))
            .map(|r| p.start_of(r.period_start))
            .max();
        if let Some(d) = latest {
            return Some((p, d));
        }
    }
    for p in GRANULARITY {
        let latest = input
            .scorecards
            .iter()
            .filter(|s| s.period == p)
            .map(|s| p.start_of(s.period_start))
            .max();
        if let Some(d) = latest {
            return Some((p, d));
        }
    }
    None
}

fn previous_start(p: Period, start: NaiveDate) -> Option<NaiveDate> {
    match p {
        Period::Day => start.pred_opt(),
        Period::Month => start.checked_sub_months(Months::new(1)),
        Period::Quarter => start.checked_sub_months(Months::new(3)),
        Period::Year => start.checked_sub_months(Months::new(12)),
    }
}

/// The last day of the period starting at `start`, without panicking at the calendar's end.
fn period_end(p: Period, start: NaiveDate) -> NaiveDate {
    let months = match p {
        Period::Day => return start,
        Period::Month => 1,
        Period::Quarter => 3,
        Period::Year => 12,
    };
    start
        .checked_add_months(Months::new(months))
        .and_then(|d| d.pred_opt())
        .unwrap_or(start)
}

/// Agency counts in one period: each agency's rollup, or the sum of its
/// agency × procedure rows when it has no rollup.
fn agency_counts(rows: &[MetricRow], p: Period, start: NaiveDate) -> BTreeMap<String, Counts> {
    let mut rollup: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut detail: BTreeMap<&str, Counts> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.period == p && p.start_of(r.period_start) == start)
    {
        let Some(agency) = r.agency_code.as_deref() else {
            continue;
        };
        let map = if r.procedure_code.is_none() {
            &mut rollup
        } else {
            &mut detail
        };
        map.entry(agency).or_default().add(&r.counts);
    }
    for (agency, c) in detail {
        rollup.entry(agency).or_insert(c);
    }
    rollup
        .into_iter()
        .map(|(a, c)| (a.to_string(), c))
        .collect()
}

/// Province counts per period start for one granularity: the province rollup, or where a
/// period has none, the sum of its agencies (see [`agency_counts`]), or of its
/// province × procedure rows.
fn province_by_start(rows: &[MetricRow], p: Period) -> BTreeMap<NaiveDate, Counts> {
    let mut province: BTreeMap<NaiveDate, Counts> = BTreeMap::new();
    let mut rollup: BTreeMap<(NaiveDate, &str), Counts> = BTreeMap::new();
    let mut detail: BTreeMap<(NaiveDate, &str), Counts> = BTreeMap::new();
    let mut by_procedure: BTreeMap<NaiveDate, Counts> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.period == p) {
        let start = p.start_of(r.period_start);
        match (r.agency_code.as_deref(), r.procedure_code.is_some()) {
            (None, false) => province.entry(start).or_default().add(&r.counts),
            (None, true) => by_procedure.entry(start).or_default().add(&r.counts),
            (Some(a), false) => rollup.entry((start, a)).or_default().add(&r.counts),
            (Some(a), true) => detail.entry((start, a)).or_default().add(&r.counts),
        }
    }
    for (key, c) in detail {
        rollup.entry(key).or_insert(c);
    }
    let mut from_agencies: BTreeMap<NaiveDate, Counts> = BTreeMap::new();
    for ((start, _), c) in rollup {
        from_agencies.entry(start).or_default().add(&c);
    }
    for (start, c) in from_agencies.into_iter().chain(by_procedure) {
        province.entry(start).or_insert(c);
    }
    province
}

fn trend_months(
    p: Period,
    start: NaiveDate,
    monthly: &BTreeMap<NaiveDate, Counts>,
) -> Vec<(NaiveDate, Option<Counts>)> {
    let end = period_end(p, start);
    let from = if p == Period::Year {
        start
    } else {
        let last = Period::Month.start_of(end);
        last.checked_sub_months(Months::new(11)).unwrap_or(last)
    };
    let with_data: Vec<NaiveDate> = monthly
        .range(from..=end)
        .filter(|(_, c)| has_data(c))
        .map(|(d, _)| *d)
        .collect();
    let (Some(&first), Some(&last)) = (with_data.first(), with_data.last()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut m = first;
    while m <= last && out.len() < 240 {
        out.push((m, monthly.get(&m).copied().filter(has_data)));
        match m.checked_add_months(Months::new(1)) {
            Some(next) => m = next,
            None => break,
        }
    }
    out
}

/// The worst procedures of one period and how many were below the threshold.
fn worst_procedures(
    rows: &[MetricRow],
    p: Period,
    start: NaiveDate,
    min_dossiers: u64,
) -> (Vec<ProcLine>, usize) {
    struct Acc<'r> {
        counts: Counts,
        name: Option<&'r str>,
        agencies: BTreeSet<&'r str>,
    }
    let in_period = |r: &&MetricRow| r.period == p && p.start_of(r.period_start) == start;
    let mut acc: BTreeMap<&str, Acc> = BTreeMap::new();
    // Agency × procedure rows; a feed with only province × procedure rows uses those.
    let mut any_agency_rows = false;
    for r in rows.iter().filter(in_period) {
        if let (Some(a), Some(code)) = (r.agency_code.as_deref(), r.procedure_code.as_deref()) {
            any_agency_rows = true;
            let e = acc.entry(code).or_insert_with(|| Acc {
                counts: Counts::default(),
                name: None,
                agencies: BTreeSet::new(),
            });
            e.counts.add(&r.counts);
            e.agencies.insert(a);
            if e.name.is_none() {
                e.name = r.procedure_name.as_deref().filter(|n| !n.trim().is_empty());
            }
        }
    }
    if !any_agency_rows {
        for r in rows.iter().filter(in_period) {
            if let (None, Some(code)) = (r.agency_code.as_deref(), r.procedure_code.as_deref()) {
                let e = acc.entry(code).or_insert_with(|| Acc {
                    counts: Counts::default(),
                    name: None,
                    agencies: BTreeSet::new(),
                });
                e.counts.add(&r.counts);
                if e.name.is_none() {
                    e.name = r.procedure_name.as_deref().filter(|n| !n.trim().is_empty());
                }
            }
        }
    }
    let mut below = 0;
    let mut out: Vec<ProcLine> = Vec::new();
    for (code, a) in acc {
        let judged = a.counts.ontime_total();
        if judged == 0 {
            continue;
        }
        if judged < min_dossiers {
            below += 1;
            continue;
        }
        if a.counts.late + a.counts.in_progress_overdue == 0 {
            continue;
        }
        out.push(ProcLine {
            code: code.to_string(),
            name: a.name.map(|n| n.trim().to_string()).unwrap_or_default(),
            counts: a.counts,
            agencies: a.agencies.len(),
        });
    }
    out.sort_by(|x, y| {
        let rx = x.counts.on_time_rate().unwrap_or(0.0);
        let ry = y.counts.on_time_rate().unwrap_or(0.0);
        rx.total_cmp(&ry)
            .then_with(|| bad(&y.counts).cmp(&bad(&x.counts)))
            .then_with(|| x.code.cmp(&y.code))
    });
    out.truncate(WORST_LIMIT);
    (out, below)
}

fn bad(c: &Counts) -> u64 {
    c.late + c.in_progress_overdue
}

fn display_name(names: &BTreeMap<String, String>, code: &str) -> String {
    match names.get(code).map(|n| n.trim()) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ if !code.trim().is_empty() => code.trim().to_string(),
        _ => "(no code)".to_string(),
    }
}

fn prepare<'a>(input: &ReportInput<'a>) -> Prepared<'a> {
    let Some((period, start)) = reference_key(input) else {
        return Prepared {
            key: None,
            label: "no data".into(),
            province: None,
            previous: None,
            province_score: None,
            agencies: Vec::new(),
            months: Vec::new(),
            worst: Vec::new(),
            below_threshold: 0,
        };
    };
    let by_start = province_by_start(input.rows, period);
    let province = by_start.get(&start).copied();
    let previous =
        previous_start(period, start).and_then(|s| by_start.get(&s).map(|c| (period.label(s), *c)));

    let scorecards: &'a [Scorecard] = input.scorecards;
    let in_key = |s: &Scorecard| s.period == period && period.start_of(s.period_start) == start;
    let province_score = scorecards
        .iter()
        .find(|s| s.agency_code.is_none() && in_key(s));
    let mut scores: BTreeMap<&'a str, &'a Scorecard> = BTreeMap::new();
    for s in scorecards.iter().filter(|s| in_key(s)) {
        if let Some(a) = s.agency_code.as_deref() {
            scores.entry(a).or_insert(s);
        }
    }
    let counts = agency_counts(input.rows, period, start);
    let codes: BTreeSet<&str> = counts
        .keys()
        .map(String::as_str)
        .chain(scores.keys().copied())
        .collect();
    let agencies = codes
        .into_iter()
        .map(|code| AgencyLine {
            code: code.to_string(),
            name: display_name(input.agency_names, code),
            counts: counts.get(code).copied(),
            score: scores.get(code).copied(),
        })
        .collect();

    let monthly = province_by_start(input.rows, Period::Month);
    let months = trend_months(period, start, &monthly);
    let (worst, below_threshold) = worst_procedures(input.rows, period, start, input.min_dossiers);
    Prepared {
        key: Some((period, start)),
        label: period.label(start),
        province,
        previous,
        province_score,
        agencies,
        months,
        worst,
        below_threshold,
    }
}

// ---------------------------------------------------------------------------------------
// Formatting helpers
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Band {
    Good,
    Warn,
    Bad,
    None,
}

impl Band {
    fn of(rate: Option<f64>) -> Band {
        // Judge the value as printed, so "95.0%" is never shown in amber.
        match rate.filter(|r| r.is_finite()) {
            None => Band::None,
            Some(r) => {
                let shown: f64 = format!("{:.1}", r * 100.0).parse().unwrap_or(0.0);
                if shown >= GOOD_AT {
                    Band::Good
                } else if shown >= WARN_AT {
                    Band::Warn
                } else {
                    Band::Bad
                }
            }
        }
    }

    fn class(self) -> &'static str {
        match self {
            Band::Good => "band-good",
            Band::Warn => "band-warn",
            Band::Bad => "band-bad",
            Band::None => "band-none",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Band::Good => COLOR_GOOD,
            Band::Warn => COLOR_WARN,
            Band::Bad => COLOR_BAD,
            Band::None => COLOR_NONE,
        }
    }

    fn ansi(self) -> Option<&'static str> {
        match self {
            Band::Good => Some("\x1b[32m"),
            Band::Warn => Some("\x1b[33m"),
            Band::Bad => Some("\x1b[31m"),
            Band::None => None,
        }
    }
}

/// A rate as a percentage with one decimal, or an em dash.
fn pct(rate: Option<f64>) -> String {
    match rate {
        Some(r) if r.is_finite() => format!("{:.1}%", r * 100.0),
        _ => "—".to_string(),
    }
}

/// Points: up to two decimals, trailing zeros dropped.
fn pts(x: f64) -> String {
    if !x.is_finite() {
        return "—".to_string();
    }
    let x = if x == 0.0 { 0.0 } else { x };
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// An SVG coordinate: one decimal, never NaN.
fn c(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "0".to_string()
    }
}

fn clamp01(r: f64) -> f64 {
    if r.is_finite() {
        r.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn group(n: u64, sep: &str) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * sep.len());
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(sep);
        }
        out.push(ch);
    }
    out
}

fn num(n: u64) -> String {
    group(n, HTML_THOUSANDS)
}

/// Escapes text for HTML content and attribute values; control characters become spaces.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\n' | '\t' => o.push(ch),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Text for a terminal: no control characters (no escape sequences smuggled in through
/// data) and no bidirectional overrides.
fn clean_terminal(s: &str) -> String {
    s.chars()
        .map(|ch| {
            if ch.is_control() || matches!(ch as u32, 0x202A..=0x202E | 0x2066..=0x2069) {
                ' '
            } else {
                ch
            }
        })
        .collect()
}

/// Columns a character takes in a terminal: 0 for combining marks (Vietnamese text in NFD
/// carries its tones as combining marks) and zero-width characters, 2 for wide East Asian
/// characters, 1 otherwise.
fn char_width(ch: char) -> usize {
    let u = ch as u32;
    if ch.is_control()
        || matches!(u, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF
            | 0xFE20..=0xFE2F | 0xFE00..=0xFE0F | 0x200B..=0x200F | 0x2060..=0x2064 | 0xFEFF)
    {
        0
    } else if matches!(u, 0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF | 0x20000..=0x3FFFD)
    {
        2
    } else {
        1
    }
}

/// Display width in terminal columns (characters, not bytes).
fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Cuts `s` to at most `max` columns, ending with "…" when cut; combining marks stay with
/// their base character.
fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for ch in s.chars() {
        let w = char_width(ch);
        if used + w > max.saturating_sub(1) {
            break;
        }
        used += w;
        out.push(ch);
    }
    let trimmed = out.trim_end().to_string();
    format!("{trimmed}…")
}

fn pad_right(s: &str, w: usize) -> String {
    let n = width(s);
    format!("{s}{}", " ".repeat(w.saturating_sub(n)))
}

fn pad_left(s: &str, w: usize) -> String {
    let n = width(s);
    format!("{}{s}", " ".repeat(w.saturating_sub(n)))
}

fn score_text(s: &Scorecard) -> String {
    format!("{}/{}", pts(s.total), pts(s.max_total))
}

fn score_fraction(s: &Scorecard) -> Option<f64> {
    (s.max_total > 0.0 && s.total.is_finite() && s.max_total.is_finite())
        .then(|| s.total / s.max_total)
}

/// Orders agencies by score (none last), then on-time rate, then name.
fn by_score(a: &AgencyLine, b: &AgencyLine) -> std::cmp::Ordering {
    let score = |l: &AgencyLine| l.score.map(|s| s.total).filter(|t| t.is_finite());
    let ontime = |l: &AgencyLine| l.counts.and_then(|c| c.on_time_rate());
    match (score(a), score(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
    .then_with(|| match (ontime(a), ontime(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    })
    .then_with(|| a.name.cmp(&b.name))
    .then_with(|| a.code.cmp(&b.code))
}

// ---------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------

const CSS: &str = r#"
:root { --ink:#1f2328; --muted:#57606a; --line:#d0d7de; --good:#1a7f37; --warn:#d4a72c; --bad:#cf222e; --accent:#0b5cad; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: #fff; color: var(--ink); font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", Arial, sans-serif; font-size: 14px; line-height: 1.45; }
main { max-width: 1160px; margin: 0 auto; padding: 24px 28px 40px; }
.report-header { border-bottom: 3px solid var(--accent); padding-bottom: 10px; margin-bottom: 18px; }
.report-header h1 { font-size: 28px; margin: 0 0 2px; letter-spacing: -0.01em; }
.report-header .kicker { text-transform: uppercase; letter-spacing: .08em; font-size: 11px; color: var(--accent); font-weight: 700; margin: 0; }
.subtitle { color: var(--muted); margin: 0; }
h2 { font-size: 17px; margin: 0 0 2px; }
.figure-note { color: var(--muted); font-size: 12px; margin: 0 0 8px; }
.view-note { font-size: 13px; margin: 0 0 16px; padding: 8px 12px; border-left: 3px solid var(--accent); background: #f6f8fa; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(142px, 1fr)); gap: 10px; margin: 0 0 22px; }
.tile { border: 1px solid var(--line); border-left: 5px solid var(--line); border-radius: 6px; padding: 10px 12px; break-inside: avoid; }
.tile .label { font-size: 12px; color: var(--muted); }
.tile .value { font-size: 26px; font-weight: 700; font-variant-numeric: tabular-nums; line-height: 1.2; }
.tile .sub { font-size: 11.5px; color: var(--muted); }
.tile .delta { font-size: 11.5px; font-weight: 600; }
.delta.up { color: var(--good); } .delta.down { color: var(--bad); } .delta.same { color: var(--muted); }
.tile.band-good { border-left-color: var(--good); } .tile.band-warn { border-left-color: var(--warn); } .tile.band-bad { border-left-color: var(--bad); }
.tile.tile-score { border-left-color: var(--accent); background: #f3f8ff; }
.grid-2 { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
@media (max-width: 860px) { .grid-2 { grid-template-columns: 1fr; } }
figure { margin: 0 0 22px; padding: 12px 14px; border: 1px solid var(--line); border-radius: 6px; break-inside: avoid; page-break-inside: avoid; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 6px; }
svg { display: block; width: 100%; height: auto; overflow: visible; }
svg text { font-family: inherit; }
.no-data { color: var(--muted); font-style: italic; margin: 12px 0; }
.table-wrap { overflow-x: auto; }
table.scorecard { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; font-size: 13px; }
table.scorecard th, table.scorecard td { border-bottom: 1px solid var(--line); padding: 5px 7px; text-align: right; vertical-align: top; }
table.scorecard thead th { border-bottom: 2px solid var(--ink); font-weight: 600; font-size: 12px; }
table.scorecard th[scope=row], table.scorecard .name { text-align: left; font-weight: 600; }
table.scorecard .ind-id { display: block; font-weight: 700; }
table.scorecard .ind-name { display: block; font-weight: 400; color: var(--muted); font-size: 11px; }
table.scorecard .code { display: block; font-weight: 400; color: var(--muted); font-size: 11px; }
table.scorecard .rate { display: block; color: var(--muted); font-size: 11px; }
table.scorecard tr.province { background: #f3f8ff; }
table.scorecard td.band-good { background: #e6f4ea; } table.scorecard td.band-warn { background: #fcf3d9; } table.scorecard td.band-bad { background: #fde7e9; }
table.scorecard td.total { font-weight: 700; white-space: nowrap; }
table.scorecard td.total .pct { display: block; font-weight: 400; color: var(--muted); font-size: 11px; }
.notes { font-size: 12px; color: var(--muted); border-top: 1px solid var(--line); padding-top: 10px; }
.notes dt { font-weight: 600; color: var(--ink); } .notes dd { margin: 0 0 6px; }
@page { size: A4 landscape; margin: 10mm; }
@media print {
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  body { font-size: 11px; }
  main { max-width: none; padding: 0; }
  .grid-2 { grid-template-columns: 1fr 1fr; }
  figure { border-color: #bbb; }
  .report-header { margin-bottom: 10px; padding-bottom: 6px; }
  .report-header h1 { font-size: 20px; }
  .tiles { grid-template-columns: repeat(7, 1fr); gap: 6px; margin-bottom: 10px; }
  .tile { padding: 6px 8px; }
  .tile .value { font-size: 18px; }
  figure { padding: 8px 10px; margin-bottom: 10px; }
  .chart-ranking svg { max-height: 105mm; }
  #trend-monthly, #worst-procedures, #scorecard { break-before: page; }
}
"#;

/// The report as one self-contained HTML page.
pub fn render_html(input: &ReportInput) -> String {
    render_html_with_quality(input, None)
}

/// The report with a "Data quality" section (when the run measured it).
pub fn render_html_with_quality(input: &ReportInput, quality: Option<&QualityReport>) -> String {
    let p = prepare(input);
    let title = match input.title.trim() {
        "" => "sohoa",
        t => t,
    };
    let mut o = String::with_capacity(64 * 1024);
    put!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"sohoa\">\n\
         <title>{} · Administrative procedure report · {}</title>\n<style>{CSS}{}</style>\n</head>\n<body>\n<main>\n",
        esc(title),
        esc(&p.label),
        calendar::CSS
    );
    put!(
        o,
        "<header class=\"report-header\">\n<p class=\"kicker\">Administrative reform review · Decision 766 indicators</p>\n\
         <h1>{}</h1>\n<p class=\"subtitle\">Period: <strong>{}</strong> · in-progress dossiers judged as of {} · generated {}</p>\n</header>\n",
        esc(title),
        esc(&p.label),
        esc(input.as_of),
        esc(input.generated_at)
    );
    calendar::html(&mut o, input);
    o.push_str(VIEW_NOTE_HTML);
    headline(&mut o, &p);
    progress::html(&mut o, input, p.key);

    let ranked_note = "Dashed lines: 80% and 95%. Dark line: the province.";
    o.push_str("<div class=\"grid-2\">\n");
    ranking(
        &mut o,
        &p,
        RankingSpec {
            id: "ranking-ontime",
            heading: "On-time rate by agency · today's units",
            measure: "on-time rate",
            noun: "judged",
            rate: Counts::on_time_rate,
            n: Counts::ontime_total,
            note: ranked_note,
        },
    );
    ranking(
        &mut o,
        &p,
        RankingSpec {
            id: "ranking-digitization",
            heading: "Digitization rate by agency · today's units",
            measure: "digitization rate",
            noun: "received",
            rate: Counts::digitization_rate,
            n: |c| c.received,
            note: ranked_note,
        },
    );
    o.push_str("</div>\n");
    fields::html(&mut o, input, p.key);
    trend::html(&mut o, &p, input.breaks);
    years::html(&mut o, input);
    worst(&mut o, &p, input.min_dossiers);
    scorecard_table(&mut o, &p);
    if let Some(q) = quality {
        quality_section(&mut o, q, p.key);
    }
    notes(&mut o, input);
    o.push_str("</main>\n</body>\n</html>\n");
    o
}

fn no_data(o: &mut String, what: &str) {
    put!(o, "<p class=\"no-data\">No data: {}.</p>\n", esc(what));
}

fn delta_html(o: &mut String, cur: Option<f64>, p: &Prepared, rate: fn(&Counts) -> Option<f64>) {
    let Some((label, prev)) = &p.previous else {
        return;
    };
    let (Some(now), Some(before)) = (cur, rate(prev)) else {
        return;
    };
    let d = (now - before) * 100.0;
    if !d.is_finite() {
        return;
    }
    let shown = format!("{:.1}", d.abs());
    let (class, text) = if shown == "0.0" {
        ("same", format!("no change vs {}", esc(label)))
    } else if d > 0.0 {
        ("up", format!("▲ {shown} pts vs {}", esc(label)))
    } else {
        ("down", format!("▼ {shown} pts vs {}", esc(label)))
    };
    put!(o, "<div class=\"delta {class}\">{text}</div>");
}

fn headline(o: &mut String, p: &Prepared) {
    put!(
        o,
        "<section id=\"headline\" class=\"tiles\" aria-label=\"Province headline figures, {}\">\n",
        esc(&p.label)
    );
    let c = p.province;
    // Received.
    put!(
        o,
        "<div class=\"tile\" data-metric=\"received\"><div class=\"label\">Dossiers received</div><div class=\"value\">{}</div><div class=\"sub\">{}</div></div>\n",
        c.map_or("—".to_string(), |c| num(c.received)),
        c.map_or(String::new(), |c| format!("{} judged for timeliness", num(c.ontime_total())))
    );
    type Rate = fn(&Counts) -> Option<f64>;
    type Parts = fn(&Counts) -> (u64, u64);
    let tiles: [(&str, &str, Rate, Parts, &str, bool); 5] = [
        (
            "on-time",
            "On-time rate (2.1)",
            Counts::on_time_rate,
            |c| {
                (
                    c.early + c.on_time + c.in_progress_in_time,
                    c.ontime_total(),
                )
            },
            "judged",
            true,
        ),
        (
            "digitization",
            "Digitization rate (4.2)",
            Counts::digitization_rate,
            |c| (c.digitized, c.received),
            "received",
            true,
        ),
        (
            "online",
            "Online submission (3.3)",
            Counts::online_rate,
            |c| (c.online_received, c.received),
            "received",
            false,
        ),
        (
            "e-result",
            "Electronic results (4.1)",
            Counts::e_result_rate,
            |c| (c.e_result, c.e_result_eligible),
            "with a document result",
            false,
        ),
        (
            "online-payment",
            "Online payment (3.6)",
            Counts::online_payment_rate,
            |c| (c.paid_online, c.fee_bearing),
            "fee-bearing",
            false,
        ),
    ];
    for (metric, label, rate, parts, noun, banded) in tiles {
        let r = c.and_then(|c| rate(&c));
        let band = if banded { Band::of(r) } else { Band::None };
        put!(
            o,
            "<div class=\"tile {}\" data-metric=\"{metric}\"><div class=\"label\">{label}</div><div class=\"value\">{}</div>",
            band.class(),
            pct(r)
        );
        if let Some(c) = c {
            let (num_, den) = parts(&c);
            put!(
                o,
                "<div class=\"sub\">{} of {} {noun}</div>",
                num(num_),
                num(den)
            );
        }
        delta_html(o, r, p, rate);
        o.push_str("</div>\n");
    }
    // The 766 score.
    match p.province_score {
        Some(s) => {
            let supported = s.indicators.iter().filter(|i| i.rate.is_some()).count();
            put!(
                o,
                "<div class=\"tile tile-score\" data-metric=\"score\"><div class=\"label\">766 score</div><div class=\"value\">{} / {}</div><div class=\"sub\">{} of the maximum for the {} indicator{} measured</div></div>\n",
                pts(s.total),
                pts(s.max_total),
                pct(score_fraction(s)),
                supported,
                if supported == 1 { "" } else { "s" }
            );
        }
        None => o.push_str(
            "<div class=\"tile tile-score\" data-metric=\"score\"><div class=\"label\">766 score</div><div class=\"value\">—</div><div class=\"sub\">no province scorecard</div></div>\n",
        ),
    }
    o.push_str("</section>\n");
}

struct RankingSpec {
    id: &'static str,
    heading: &'static str,
    measure: &'static str,
    noun: &'static str,
    rate: fn(&Counts) -> Option<f64>,
    n: fn(&Counts) -> u64,
    note: &'static str,
}

struct RankItem<'p> {
    line: &'p AgencyLine<'p>,
    rate: f64,
    n: u64,
}

fn ranking(o: &mut String, p: &Prepared, spec: RankingSpec) {
    let id = spec.id;
    put!(
        o,
        "<figure id=\"{id}\" class=\"chart chart-ranking\">\n<h2>{} · {}</h2>\n",
        spec.heading,
        esc(&p.label)
    );
    let mut items: Vec<RankItem> = Vec::new();
    let mut unranked: Vec<&str> = Vec::new();
    for line in &p.agencies {
        match line
            .counts
            .and_then(|c| (spec.rate)(&c).map(|r| (r, (spec.n)(&c))))
            .filter(|(r, _)| r.is_finite())
        {
            Some((rate, n)) => items.push(RankItem { line, rate, n }),
            None => unranked.push(&line.name),
        }
    }
    items.sort_by(|a, b| {
        b.rate
            .total_cmp(&a.rate)
            .then_with(|| b.n.cmp(&a.n))
            .then_with(|| a.line.name.cmp(&b.line.name))
            .then_with(|| a.line.code.cmp(&b.line.code))
    });
    if items.is_empty() {
        no_data(
            o,
            &format!(
                "no agency has figures for the {} in this period",
                spec.measure
            ),
        );
        o.push_str("</figure>\n");
        return;
    }
    let province = p.province.and_then(|c| (spec.rate)(&c));

    const W: f64 = 560.0;
    const RANK_X: f64 = 20.0;
    const LABEL_X: f64 = 26.0;
    const X0: f64 = 222.0;
    const BW: f64 = 230.0;
    const ROW: f64 = 22.0;
    const TOP: f64 = 6.0;
    const AXIS: f64 = 24.0;
    let n = items.len() as f64;
    let plot_bottom = TOP + n * ROW;
    let h = plot_bottom + AXIS;

    let best = &items[0];
    let worst = &items[items.len() - 1];
    put!(
        o,
        "<svg class=\"chart-svg\" role=\"img\" aria-labelledby=\"{id}-title {id}-desc\" viewBox=\"0 0 {} {}\" preserveAspectRatio=\"xMidYMin meet\">\n\
         <title id=\"{id}-title\">Agencies ranked by {}, {}</title>\n\
         <desc id=\"{id}-desc\">{} agencies. Highest: {} {}. Lowest: {} {}. Province: {}.</desc>\n",
        c(W),
        c(h),
        spec.measure,
        esc(&p.label),
        items.len(),
        esc(&best.line.name),
        pct(Some(best.rate)),
        esc(&worst.line.name),
        pct(Some(worst.rate)),
        pct(province)
    );
    // Grid and axis.
    o.push_str("<g class=\"axis\" aria-hidden=\"true\">\n");
    for t in [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] {
        let x = X0 + BW * t;
        put!(
            o,
            "<line x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\" stroke=\"{COLOR_GRID}\" stroke-width=\"1\"/>\
             <text x=\"{0}\" y=\"{3}\" font-size=\"10\" text-anchor=\"middle\" fill=\"{COLOR_MUTED}\">{4}%</text>\n",
            c(x),
            c(TOP - 2.0),
            c(plot_bottom + 2.0),
            c(plot_bottom + 14.0),
            (t * 100.0).round()
        );
    }
    o.push_str("</g>\n");
    // Bars.
    for (i, it) in items.iter().enumerate() {
        let y = TOP + i as f64 * ROW;
        let band = Band::of(Some(it.rate));
        let bw = BW * clamp01(it.rate);
        let full = if it.line.name == it.line.code {
            it.line.name.clone()
        } else {
            format!("{} ({})", it.line.name, it.line.code)
        };
        put!(
            o,
            "<g class=\"bar-row\" data-code=\"{}\" data-rate=\"{:.4}\">\
             <title>{}: {} ({} {})</title>\
             <text class=\"rank\" x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\" fill=\"{COLOR_MUTED}\">{}</text>\
             <text class=\"label\" x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{COLOR_INK}\">{}</text>\
             <rect class=\"track\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"14\" fill=\"#f3f4f6\"/>\
             <rect class=\"bar {}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"14\" rx=\"2\" fill=\"{}\"/>\
             <text class=\"value\" x=\"{}\" y=\"{}\" font-size=\"12\" font-weight=\"700\" fill=\"{COLOR_INK}\">{}<tspan font-weight=\"400\" font-size=\"10.5\" fill=\"{COLOR_MUTED}\"> · {}</tspan></text>\
             </g>\n",
            esc(&it.line.code),
            clamp01(it.rate),
            esc(&full),
            pct(Some(it.rate)),
            num(it.n),
            spec.noun,
            c(RANK_X),
            c(y + 15.0),
            i + 1,
            c(LABEL_X),
            c(y + 15.0),
            esc(&truncate(&it.line.name, 29)),
            c(X0),
            c(y + 4.0),
            c(BW),
            band.class(),
            c(X0),
            c(y + 4.0),
            c(bw),
            band.color(),
            c(X0 + BW + 6.0),
            c(y + 15.5),
            pct(Some(it.rate)),
            num(it.n)
        );
    }
    // Thresholds and the province.
    o.push_str("<g class=\"references\" aria-hidden=\"true\">\n");
    for (t, color) in [(WARN_AT, COLOR_WARN), (GOOD_AT, COLOR_GOOD)] {
        let x = X0 + BW * t / 100.0;
        put!(
            o,
            "<line class=\"threshold\" x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\" stroke=\"{color}\" stroke-width=\"1.2\" stroke-dasharray=\"3 3\"/>\n",
            c(x),
            c(TOP - 2.0),
            c(plot_bottom + 2.0)
        );
    }
    if let Some(r) = province.filter(|r| r.is_finite()) {
        let x = X0 + BW * clamp01(r);
        put!(
            o,
            "<line class=\"province-line\" x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\" stroke=\"{COLOR_INK}\" stroke-width=\"1.6\"/>\n",
            c(x),
            c(TOP - 4.0),
            c(plot_bottom + 4.0)
        );
    }
    o.push_str("</g>\n</svg>\n");
    put!(
        o,
        "<figcaption>Province: <strong>{}</strong>. Green ≥ {GOOD_AT:.0}%, amber ≥ {WARN_AT:.0}%, red below; number after each rate: dossiers {}. {}",
        pct(province),
        spec.noun,
        spec.note
    );
    if !unranked.is_empty() {
        let names: Vec<String> = unranked.iter().map(|n| esc(n)).collect();
        put!(o, " Not ranked (nothing to measure): {}.", names.join(", "));
    }
    o.push_str("</figcaption>\n</figure>\n");
}

/// A round number at or above `x` (1, 2, 4, 6, 8 × 10ⁿ), at least 2.
fn nice_ceil(x: f64) -> f64 {
    if !x.is_finite() || x <= 2.0 {
        return 2.0;
    }
    let e = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 4.0, 6.0, 8.0, 10.0] {
        if m * e >= x {
            return m * e;
        }
    }
    10.0 * e
}

fn worst(o: &mut String, p: &Prepared, min_dossiers: u64) {
    let id = "worst-procedures";
    put!(
        o,
        "<figure id=\"{id}\" class=\"chart chart-worst\">\n<h2>Procedures with the lowest on-time rate · {}</h2>\n\
         <p class=\"figure-note\">All agencies together; procedures with at least {} judged dossier{} and at least one late or overdue.</p>\n",
        esc(&p.label),
        num(min_dossiers.max(1)),
        if min_dossiers.max(1) == 1 { "" } else { "s" }
    );
    if p.worst.is_empty() {
        no_data(
            o,
            if p.key.is_none() {
                "nothing in this run"
            } else {
                "no procedure above the threshold has late or overdue dossiers"
            },
        );
        if p.below_threshold > 0 {
            put!(
                o,
                "<figcaption>{} procedure{} below the threshold left out.</figcaption>\n",
                p.below_threshold,
                if p.below_threshold == 1 { "" } else { "s" }
            );
        }
        o.push_str("</figure>\n");
        return;
    }
    const W: f64 = 900.0;
    const X0: f64 = 28.0;
    const BW: f64 = 520.0;
    const ROW: f64 = 42.0;
    const T: f64 = 30.0;
    let h = T + ROW * p.worst.len() as f64 + 4.0;
    let worst_one = &p.worst[0];
    put!(
        o,
        "<svg class=\"chart-svg\" role=\"img\" aria-labelledby=\"{id}-title {id}-desc\" viewBox=\"0 0 {} {}\">\n\
         <title id=\"{id}-title\">The {} procedures with the lowest on-time rate, {}</title>\n\
         <desc id=\"{id}-desc\">Each bar splits the judged dossiers into on time, late and overdue. Lowest: {} {}.</desc>\n",
        c(W),
        c(h),
        p.worst.len(),
        esc(&p.label),
        esc(&proc_label(worst_one)),
        pct(worst_one.counts.on_time_rate())
    );
    put!(
        o,
        "<g class=\"legend\" font-size=\"12\" fill=\"{COLOR_INK}\">\
         <rect x=\"{X0}\" y=\"6\" width=\"14\" height=\"12\" fill=\"{COLOR_OK}\"/><text x=\"{}\" y=\"16\">On time or in time</text>\
         <rect x=\"{}\" y=\"6\" width=\"14\" height=\"12\" fill=\"{COLOR_LATE}\"/><text x=\"{}\" y=\"16\">Finished late</text>\
         <rect x=\"{}\" y=\"6\" width=\"14\" height=\"12\" fill=\"{COLOR_OVERDUE}\"/><text x=\"{}\" y=\"16\">Open and overdue</text>\
         </g>\n",
        c(X0 + 20.0),
        c(X0 + 150.0),
        c(X0 + 170.0),
        c(X0 + 270.0),
        c(X0 + 290.0)
    );
    for (i, pl) in p.worst.iter().enumerate() {
        let y = T + ROW * i as f64;
        let cts = &pl.counts;
        let judged = cts.ontime_total();
        let ok = judged - cts.late - cts.in_progress_overdue;
        let frac = |k: u64| {
            if judged == 0 {
                0.0
            } else {
                k as f64 / judged as f64
            }
        };
        let (w_ok, w_late, w_over) = (
            BW * frac(ok),
            BW * frac(cts.late),
            BW * frac(cts.in_progress_overdue),
        );
        let rate = cts.on_time_rate();
        let agencies = if pl.agencies > 1 {
            format!(" · {} agencies", pl.agencies)
        } else {
            String::new()
        };
        put!(
            o,
            "<g class=\"bar-row\" data-code=\"{}\" data-rate=\"{:.4}\">\
             <title>{}: {} on time; {} late, {} overdue, of {} judged</title>\
             <text class=\"label\" x=\"{X0}\" y=\"{}\" font-size=\"12\" fill=\"{COLOR_INK}\"><tspan font-weight=\"700\">{}. </tspan>{}<tspan fill=\"{COLOR_MUTED}\"> · {}{}</tspan></text>\
             <rect class=\"bar seg-ok\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"14\" fill=\"{COLOR_OK}\"/>\
             <rect class=\"seg seg-late\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"14\" fill=\"{COLOR_LATE}\"/>\
             <rect class=\"seg seg-overdue\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"14\" fill=\"{COLOR_OVERDUE}\"/>\
             <text class=\"value\" x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{COLOR_INK}\"><tspan font-weight=\"700\">{}</tspan> on time · {} late · {} overdue · {} judged</text>\
             </g>\n",
            esc(&pl.code),
            clamp01(rate.unwrap_or(0.0)),
            esc(&proc_label(pl)),
            pct(rate),
            num(cts.late),
            num(cts.in_progress_overdue),
            num(judged),
            c(y + 12.0),
            i + 1,
            esc(&truncate(if pl.name.is_empty() { &pl.code } else { &pl.name }, 95)),
            esc(&pl.code),
            agencies,
            c(X0),
            c(y + 18.0),
            c(w_ok),
            c(X0 + w_ok),
            c(y + 18.0),
            c(w_late),
            c(X0 + w_ok + w_late),
            c(y + 18.0),
            c(w_over),
            c(X0 + BW + 10.0),
            c(y + 29.5),
            pct(rate),
            num(cts.late),
            num(cts.in_progress_overdue),
            num(judged)
        );
    }
    o.push_str("</svg>\n<figcaption>On time includes dossiers finished early and those still open within their time.");
    if p.below_threshold > 0 {
        put!(
            o,
            " {} procedure{} with fewer than {} judged dossiers left out.",
            p.below_threshold,
            if p.below_threshold == 1 { "" } else { "s" },
            num(min_dossiers)
        );
    }
    o.push_str("</figcaption>\n</figure>\n");
}

fn proc_label(pl: &ProcLine) -> String {
    if pl.name.is_empty() {
        pl.code.clone()
    } else {
        format!("{} ({})", pl.name, pl.code)
    }
}

/// Sorts indicator ids like version numbers: "2.1" < "3.6" < "10.1".
fn indicator_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| -> Vec<(u64, String)> {
        s.split('.')
            .map(|part| {
                (
                    part.trim().parse::<u64>().unwrap_or(u64::MAX),
                    part.to_string(),
                )
            })
            .collect()
    };
    key(a).cmp(&key(b))
}

fn scorecard_table(o: &mut String, p: &Prepared) {
    put!(
        o,
        "<figure id=\"scorecard\" class=\"table-figure\">\n<h2>766 scorecard by agency · {}</h2>\n",
        esc(&p.label)
    );
    let mut scored: Vec<&AgencyLine> = p.agencies.iter().filter(|a| a.score.is_some()).collect();
    scored.sort_by(|a, b| by_score(a, b));
    if scored.is_empty() && p.province_score.is_none() {
        no_data(o, "no scorecards for this period");
        o.push_str("</figure>\n");
        return;
    }
    // Columns: every indicator of these scorecards, in indicator order.
    let mut columns: Vec<(String, String, f64)> = Vec::new();
    for s in p
        .province_score
        .into_iter()
        .chain(scored.iter().filter_map(|a| a.score))
    {
        for ind in &s.indicators {
            if !columns.iter().any(|(id, _, _)| *id == ind.id) {
                columns.push((ind.id.clone(), ind.name.clone(), ind.max_points));
            }
        }
    }
    columns.sort_by(|a, b| indicator_order(&a.0, &b.0));
    o.push_str("<div class=\"table-wrap\">\n<table class=\"scorecard\">\n<thead><tr><th scope=\"col\">#</th><th scope=\"col\" class=\"name\">Agency</th>");
    for (id, name, max) in &columns {
        put!(
            o,
            "<th scope=\"col\" data-indicator=\"{}\"><span class=\"ind-id\">{}</span><span class=\"ind-name\">{} · max {}</span></th>",
            esc(id),
            esc(id),
            esc(name),
            pts(*max)
        );
    }
    o.push_str("<th scope=\"col\">Total</th></tr></thead>\n<tbody>\n");
    let row = |o: &mut String,
               rank: Option<usize>,
               name: &str,
               code: Option<&str>,
               s: &Scorecard| {
        match code {
            Some(code) => put!(o, "<tr data-code=\"{}\">", esc(code)),
            None => o.push_str("<tr class=\"province\">"),
        }
        put!(
            o,
            "<td>{}</td><th scope=\"row\">{}",
            rank.map_or(String::new(), |r| r.to_string()),
            esc(name)
        );
        if let Some(code) = code.filter(|c| *c != name) {
            put!(o, "<span class=\"code\">{}</span>", esc(code));
        }
        o.push_str("</th>");
        for (id, _, _) in &columns {
            match s.indicators.iter().find(|i| i.id == *id) {
                Some(ind) if ind.rate.is_some() => {
                    let frac = (ind.max_points > 0.0).then(|| ind.points / ind.max_points);
                    put!(
                        o,
                        "<td class=\"cell {}\">{} / {}<span class=\"rate\">{}</span></td>",
                        Band::of(frac).class(),
                        pts(ind.points),
                        pts(ind.max_points),
                        pct(ind.rate)
                    );
                }
                Some(_) => o.push_str(
                    "<td class=\"cell na\" title=\"nothing to measure; left out of the maximum\">n/a</td>",
                ),
                None => o.push_str("<td class=\"cell na\">—</td>"),
            }
        }
        put!(
            o,
            "<td class=\"total\">{} / {}<span class=\"pct\">{}</span></td></tr>\n",
            pts(s.total),
            pts(s.max_total),
            pct(score_fraction(s))
        );
    };
    if let Some(s) = p.province_score {
        row(o, None, "Province (all agencies)", None, s);
    }
    for (i, a) in scored.iter().enumerate() {
        if let Some(s) = a.score {
            row(o, Some(i + 1), &a.name, Some(&a.code), s);
        }
    }
    o.push_str("</tbody>\n</table>\n</div>\n<figcaption>Points per indicator over its maximum, with the measured rate below; sorted by total. n/a: nothing to measure, left out of the maximum.</figcaption>\n</figure>\n");
}

fn notes(o: &mut String, input: &ReportInput) {
    put!(
        o,
        "<section class=\"notes\" aria-label=\"Definitions\">\n<dl>\n\
         <dt>On-time rate (2.1)</dt><dd>Dossiers resolved early or on time, plus those still open and within their time at the period's end (as of {} for a period not over), over those resolved plus those still open, the ones carried over from earlier periods included; withdrawn, stopped and refused dossiers are left out of both. Judged by the first due date, moved only by supplement pauses in working time.</dd>\n\
         <dt>Digitization rate (4.2)</dt><dd>Dossiers received with the submitted file digitized and, where the result is a document, an electronic result, over all received.</dd>\n\
         <dt>Online submission (3.3), electronic results (4.1), online payment (3.6)</dt><dd>Submitted online over received; with a result file over those whose result is a document; paid online over fee-bearing.</dd>\n\
         <dt>Colours</dt><dd>Green at or above {GOOD_AT:.0}%, amber at or above {WARN_AT:.0}%, red below.</dd>\n\
         <dt>766 score</dt><dd>Points of the indicators this feed can measure, over their maximum.</dd>\n\
         </dl>\n<p>Generated {} by sohoa{}.</p>\n</section>\n",
        esc(input.as_of),
        esc(input.generated_at),
        source(input)
    );
}

/// Where the figures come from, for the report's footer and the terminal's first line.
fn source(input: &ReportInput) -> String {
    input
        .events_version
        .map(|v| format!(" from version {v} of events/"))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Terminal
// ---------------------------------------------------------------------------------------

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";

/// A compact fixed-width summary: the province headline, then one row per agency for the
/// reference period, sorted by score (highest first). With `color`, the on-time column is
/// green, yellow or red by band.
pub fn terminal_summary(input: &ReportInput, color: bool) -> String {
    let p = prepare(input);
    let title = clean_terminal(input.title.trim());
    let title = if title.trim().is_empty() {
        "sohoa".to_string()
    } else {
        title
    };
    let mut o = String::new();
    let paint = |s: String, band: Band| -> String {
        match band.ansi().filter(|_| color) {
            Some(code) => format!("{code}{s}{RESET}"),
            None => s,
        }
    };
    if p.key.is_none() {
        put!(
            o,
            "{title} · 766 summary · no data\nNo metric rows or scorecards in this run.\n"
        );
        return o;
    }
    put!(
        o,
        "{title} · 766 summary · {} · as of {} (generated {}{})\n",
        p.label,
        clean_terminal(input.as_of),
        clean_terminal(input.generated_at),
        source(input)
    );
    calendar::terminal(&mut o, input);
    match p.province {
        Some(c) => {
            let ontime = c.on_time_rate();
            put!(
                o,
                "Province: {} received · on time {} · digitized {} · online {} · score {}\n          e-result {} · online payment {}\n",
                group(c.received, " "),
                paint(pct(ontime), Band::of(ontime)),
                pct(c.digitization_rate()),
                pct(c.online_rate()),
                p.province_score.map_or("—".to_string(), score_text),
                pct(c.e_result_rate()),
                pct(c.online_payment_rate())
            );
        }
        None => put!(
            o,
            "Province: no figures · score {}\n",
            p.province_score.map_or("—".to_string(), score_text)
        ),
    }
    if p.agencies.is_empty() {
        o.push_str("No agency figures for this period.\n");
        return o;
    }
    o.push_str(VIEW_NOTE_TERMINAL);
    let mut lines: Vec<&AgencyLine> = p.agencies.iter().collect();
    lines.sort_by(|a, b| by_score(a, b));

    struct Row {
        rank: String,
        name: String,
        received: String,
        ontime: String,
        band: Band,
        digit: String,
        online: String,
        score: String,
    }
    let rows: Vec<Row> = lines
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let ontime = a.counts.and_then(|c| c.on_time_rate());
            Row {
                rank: (i + 1).to_string(),
                name: clean_terminal(&a.name),
                received: a.counts.map_or("—".to_string(), |c| group(c.received, " ")),
                ontime: pct(ontime),
                band: Band::of(ontime),
                digit: pct(a.counts.and_then(|c| c.digitization_rate())),
                online: pct(a.counts.and_then(|c| c.online_rate())),
                score: a.score.map_or("—".to_string(), score_text),
            }
        })
        .collect();
    let name_w = rows
        .iter()
        .map(|r| width(&r.name))
        .max()
        .unwrap_or(0)
        .clamp(6, 34);
    let rank_w = rows.iter().map(|r| r.rank.len()).max().unwrap_or(1).max(1);
    let col = |head: &str, vals: &mut dyn Iterator<Item = usize>| {
        vals.max().unwrap_or(0).max(width(head))
    };
    let recv_w = col("Received", &mut rows.iter().map(|r| width(&r.received)));
    let ont_w = col("On time", &mut rows.iter().map(|r| width(&r.ontime)));
    let dig_w = col("Digitized", &mut rows.iter().map(|r| width(&r.digit)));
    let onl_w = col("Online", &mut rows.iter().map(|r| width(&r.online)));
    let sc_w = col("Score", &mut rows.iter().map(|r| width(&r.score)));

    let header = format!(
        "{}  {}  {}  {}  {}  {}  {}",
        pad_left("#", rank_w),
        pad_right("Agency", name_w),
        pad_left("Received", recv_w),
        pad_left("On time", ont_w),
        pad_left("Digitized", dig_w),
        pad_left("Online", onl_w),
        pad_left("Score", sc_w)
    );
    let rule = [rank_w, name_w, recv_w, ont_w, dig_w, onl_w, sc_w]
        .iter()
        .map(|w| "─".repeat(*w))
        .collect::<Vec<_>>()
        .join("  ");
    if color {
        put!(o, "{BOLD}{header}{RESET}\n");
    } else {
        put!(o, "{header}\n");
    }
    put!(o, "{rule}\n");
    for r in &rows {
        put!(
            o,
            "{}  {}  {}  {}  {}  {}  {}\n",
            pad_left(&r.rank, rank_w),
            pad_right(&truncate(&r.name, name_w), name_w),
            pad_left(&r.received, recv_w),
            paint(pad_left(&r.ontime, ont_w), r.band),
            pad_left(&r.digit, dig_w),
            pad_left(&r.online, onl_w),
            pad_left(&r.score, sc_w)
        );
    }
    progress::terminal(&mut o, input, p.key);
    fields::terminal(&mut o, input, p.key);
    o
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Data quality
// ---------------------------------------------------------------------------------------

/// A delay in seconds, readably: "< 1 s", "45 s", "12 min", "3.4 h", "2.1 d".
fn duration(s: Option<i64>) -> String {
    match s {
        None => "—".to_string(),
        Some(0) => "< 1 s".to_string(),
        Some(s) if s < 60 => format!("{s} s"),
        Some(s) if s < 3600 => format!("{} min", s / 60),
        Some(s) if s < 86_400 => format!("{:.1} h", s as f64 / 3600.0),
        Some(s) => format!("{:.1} d", s as f64 / 86_400.0),
    }
}

/// The quality period shown: the report's own when the quality table has it, else the
/// latest of the coarsest granularity it has.
fn quality_key(q: &QualityReport, key: Option<(Period, NaiveDate)>) -> Option<(Period, NaiveDate)> {
    if let Some(k) = key.filter(|k| q.rows.iter().any(|r| (r.period, r.period_start) == *k)) {
        return Some(k);
    }
    GRANULARITY.into_iter().find_map(|p| {
        q.rows
            .iter()
            .filter(|r| r.period == p)
            .map(|r| (p, r.period_start))
            .max()
    })
}

fn quality_rows(
    q: &QualityReport,
    key: (Period, NaiveDate),
) -> (Option<&QualityRow>, Vec<&QualityRow>) {
    let in_key = |r: &&QualityRow| (r.period, r.period_start) == key;
    let province = q
        .rows
        .iter()
        .filter(in_key)
        .find(|r| r.agency_code.is_none());
    let mut agencies: Vec<&QualityRow> = q
        .rows
        .iter()
        .filter(in_key)
        .filter(|r| r.agency_code.is_some())
        .collect();
    agencies.sort_by_key(|r| (r.quality_rank.unwrap_or(u64::MAX), r.agency_code.clone()));
    (province, agencies)
}

fn quality_section(o: &mut String, q: &QualityReport, key: Option<(Period, NaiveDate)>) {
    let Some(key) = quality_key(q, key) else {
        o.push_str("<section id=\"data-quality\" class=\"table-figure\">\n<h2>Data quality</h2>\n");
        no_data(o, "no dossiers or events to check");
        o.push_str("</section>\n");
        return;
    };
    let label = key.0.label(key.1);
    let (province, agencies) = quality_rows(q, key);
    put!(
        o,
        "<section id=\"data-quality\" class=\"table-figure\">\n<h2>Data quality · {}</h2>\n",
        esc(&label)
    );
    if let Some(p) = province {
        let c = &p.counts;
        put!(
            o,
            "<p class=\"quality-summary\">Province: {} dossiers, {} without any issue found. Changes reached the feed after {} (median) and {} (95th percentile); {} within 24 hours.</p>\n",
            num(c.dossiers()),
            pct(c.score().map(|s| s / 100.0)),
            duration(p.delay.p50_seconds),
            duration(p.delay.p95_seconds),
            pct(p.delay.within_24h_rate())
        );
    }
    o.push_str("<div class=\"table-wrap\">\n<table class=\"scorecard quality\">\n<thead><tr><th scope=\"col\">#</th><th scope=\"col\" class=\"name\">Agency</th>\
<th scope=\"col\">Quality score</th><th scope=\"col\">766 score</th><th scope=\"col\">Dossiers</th>\
<th scope=\"col\">Missing dates</th><th scope=\"col\">No due date</th><th scope=\"col\">Result without file</th><th scope=\"col\">Unknown procedure</th>\
<th scope=\"col\">Status regressions</th><th scope=\"col\">Dates out of order</th><th scope=\"col\">Two agencies</th>\
<th scope=\"col\">Sync p50</th><th scope=\"col\">Sync p95</th><th scope=\"col\">Within 24 h</th></tr></thead>\n<tbody>\n");
    let line = |o: &mut String, r: &QualityRow| {
        match &r.agency_code {
            Some(code) => put!(
                o,
                "<tr data-code=\"{}\"><td>{}</td><th scope=\"row\">{}</th>",
                esc(code),
                r.quality_rank.map_or(String::new(), |x| x.to_string()),
                esc(code)
            ),
            None => o.push_str(
                "<tr class=\"province\"><td></td><th scope=\"row\">Province (all agencies)</th>",
            ),
        }
        let qs = r.quality_score().map(|s| s / 100.0);
        let score = match (r.score_766, r.score_766_pct()) {
            (Some((t, m)), Some(pc)) => format!(
                "{} / {}<span class=\"rate\">{}{}</span>",
                pts(t),
                pts(m),
                pct(Some(pc / 100.0)),
                r.score_766_rank
                    .map_or(String::new(), |k| format!(" · #{k}"))
            ),
            _ => "—".to_string(),
        };
        let c = &r.counts;
        put!(
            o,
            "<td class=\"cell {}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            Band::of(qs).class(),
            pct(qs),
            score,
            num(c.dossiers()),
            num(c.get("missing_required_date")),
            num(c.get("no_due_date")),
            num(c.get("result_without_file")),
            num(c.get("unknown_procedure")),
            num(c.get("status_regression")),
            num(c.get("due_before_receipt") + c.get("finish_before_receipt")),
            num(c.get("two_agencies")),
            duration(r.delay.p50_seconds),
            duration(r.delay.p95_seconds),
            pct(r.delay.within_24h_rate())
        );
    };
    if let Some(p) = province {
        line(o, p);
    }
    for r in &agencies {
        line(o, r);
    }
    o.push_str("</tbody>\n</table>\n</div>\n<p class=\"caption\">Agencies by quality score: the share of their dossiers with none of the issues counted here. The 766 score beside it shows whether a good score rests on good data.</p>\n");

    let statuses: Vec<_> = q
        .delays
        .iter()
        .filter(|d| (d.period, d.period_start) == key && d.agency_code.is_none())
        .collect();
    if !statuses.is_empty() {
        o.push_str("<h3>Sync delay by status · province</h3>\n<div class=\"table-wrap\">\n<table class=\"scorecard\">\n<thead><tr><th scope=\"col\" class=\"name\">Status</th><th scope=\"col\">Events</th><th scope=\"col\">p50</th><th scope=\"col\">p95</th><th scope=\"col\">Within 24 h</th></tr></thead>\n<tbody>\n");
        for d in statuses {
            put!(
                o,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                d.status_code,
                num(d.delay.events),
                duration(d.delay.p50_seconds),
                duration(d.delay.p95_seconds),
                pct(d.delay.within_24h_rate())
            );
        }
        o.push_str("</tbody>\n</table>\n</div>\n");
    }
    if !q.sources.is_empty() || !q.ingest.is_empty() {
        o.push_str("<h3>Sources: repeats, dead letters and reconciliation (all periods read)</h3>\n<div class=\"table-wrap\">\n<table class=\"scorecard\">\n<thead><tr><th scope=\"col\" class=\"name\">Source</th><th scope=\"col\">Events or messages</th><th scope=\"col\">Repeats or dead letters</th><th scope=\"col\">Rate</th><th scope=\"col\">Rows: commits / storage</th></tr></thead>\n<tbody>\n");
        for s in &q.sources {
            put!(
                o,
                "<tr><th scope=\"row\">{} <span class=\"code\">repeats</span></th><td>{}</td><td>{}</td><td>{}</td><td></td></tr>\n",
                esc(&s.source_system),
                num(s.events),
                num(s.duplicates),
                pct(s.duplicate_rate())
            );
        }
        for r in &q.ingest {
            let what = match &r.reason {
                Some(reason) => format!(
                    "{} <span class=\"code\">dead letters: {}</span>",
                    esc(&r.topic),
                    esc(reason)
                ),
                None => format!("{} <span class=\"code\">topic</span>", esc(&r.topic)),
            };
            let recon = match r.difference() {
                Some(0) => format!(
                    "{} / {} ✓",
                    num(r.committed_rows_in_range),
                    num(r.storage_rows)
                ),
                Some(d) => format!(
                    "<strong>{} / {} (difference {d:+})</strong>",
                    num(r.committed_rows_in_range),
                    num(r.storage_rows)
                ),
                None => String::new(),
            };
            put!(
                o,
                "<tr><th scope=\"row\">{what}</th><td>{}</td><td>{}</td><td>{}</td><td>{recon}</td></tr>\n",
                num(r.messages),
                num(r.dead_lettered),
                pct(r.dead_letter_rate())
            );
        }
        o.push_str("</tbody>\n</table>\n</div>\n");
    }
    if q.unreadable_commits > 0 {
        put!(
            o,
            "<p class=\"no-data\">{} commit(s) of the events table could not be read and are left out.</p>\n",
            q.unreadable_commits
        );
    }
    o.push_str("<dl class=\"quality-notes\">\n\
<dt>Quality score</dt><dd>100 × the share of the agency's dossiers (counted on their receipt date, or the date of their latest event) with none of: a missing date their status requires, no due date, a result document without its file, a procedure code not in the catalogue, a status regression, a due date or a finish before the receipt, a code filed under two agencies, or no snapshot at all.</dd>\n\
<dt>Sync delay</dt><dd>Arrival (the broker's timestamp, or the ingest time) minus the time of the change, per event, by the date of the change. Quantiles come from half-octave buckets: within 19%.</dd>\n\
<dt>Status regression</dt><dd>The latest event shows an earlier stage of the dossier's life than one an earlier event had already reached. A stale snapshot arriving late is not one.</dd>\n\
<dt>Repeats</dt><dd>Events of a source system with the same dossier, kind, status and event time as another.</dd>\n\
</dl>\n</section>\n");
}

/// A few lines for the terminal: the province's quality, the agencies with the lowest
/// quality score, repeats, dead letters and any reconciliation mismatch.
pub fn terminal_quality(q: &QualityReport, color: bool) -> String {
    let mut o = String::new();
    let Some(key) = quality_key(q, None) else {
        return o;
    };
    let (province, agencies) = quality_rows(q, key);
    let bold = |s: &str| {
        if color {
            format!("{BOLD}{s}{RESET}")
        } else {
            s.to_string()
        }
    };
    put!(o, "{} · {}\n", bold("Data quality"), key.0.label(key.1));
    if let Some(p) = province {
        put!(
            o,
            "Province: {} dossiers · {} without issues · sync p50 {} · p95 {} · within 24 h {}\n",
            group(p.counts.dossiers(), " "),
            pct(p.quality_score().map(|s| s / 100.0)),
            duration(p.delay.p50_seconds),
            duration(p.delay.p95_seconds),
            pct(p.delay.within_24h_rate())
        );
    }
    let mut worst: Vec<&&QualityRow> = agencies
        .iter()
        .filter(|r| r.quality_score().is_some())
        .collect();
    worst.reverse();
    if !worst.is_empty() {
        let list: Vec<String> = worst
            .iter()
            .take(3)
            .map(|r| {
                format!(
                    "{} {} (766 {})",
                    clean_terminal(r.agency_code.as_deref().unwrap_or("")),
                    pct(r.quality_score().map(|s| s / 100.0)),
                    pct(r.score_766_pct().map(|s| s / 100.0))
                )
            })
            .collect();
        put!(o, "Lowest quality: {}\n", list.join(" · "));
    }
    let (events, dups) = q
        .sources
        .iter()
        .fold((0, 0), |(e, d), s| (e + s.events, d + s.duplicates));
    let (messages, dead) = q
        .ingest
        .iter()
        .filter(|r| r.reason.is_none())
        .fold((0, 0), |(m, d), r| (m + r.messages, d + r.dead_lettered));
    put!(
        o,
        "Repeats {} of {} events · dead letters {} of {} messages\n",
        group(dups, " "),
        group(events, " "),
        group(dead, " "),
        group(messages, " ")
    );
    let mismatches: Vec<String> = q
        .mismatches()
        .map(|r| {
            format!(
                "{} (storage {} vs commits {})",
                clean_terminal(&r.topic),
                r.storage_rows,
                r.committed_rows_in_range
            )
        })
        .collect();
    if mismatches.is_empty() {
        o.push_str("Reconciliation: storage matches the events table's commits\n");
    } else {
        put!(o, "Reconciliation MISMATCH: {}\n", mismatches.join(" · "));
    }
    if q.unreadable_commits > 0 {
        put!(
            o,
            "{} commit(s) of the events table unreadable\n",
            q.unreadable_commits
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IndicatorScore, View};

    fn d(y: i32, m: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, 1).unwrap()
    }

    /// Judged dossiers: `ok` early or on time, `late` finished late, `overdue` still open
    /// past their time; `received` of which `digitized` and `online`.
    fn counts(
        ok: u64,
        late: u64,
        overdue: u64,
        received: u64,
        digitized: u64,
        online: u64,
    ) -> Counts {
        Counts {
            received,
            online_received: online,
            early: ok / 2,
            on_time: ok - ok / 2,
            late,
            in_progress_overdue: overdue,
            digitized,
            e_result_eligible: received / 2,
            e_result: received / 4,
            fee_bearing: received / 2,
            paid_online: received / 5,
            ..Counts::default()
        }
    }

    fn row(
        period: Period,
        start: NaiveDate,
        agency: Option<&str>,
        proc_: Option<(&str, &str)>,
        c: Counts,
    ) -> MetricRow {
        MetricRow {
            period,
            period_start: start,
            view: View::Restated,
            province_code: None,
            province_name: None,
            agency_code: agency.map(str::to_string),
            agency_name: None,
            procedure_code: proc_.map(|(code, _)| code.to_string()),
            procedure_name: proc_.map(|(_, name)| name.to_string()),
            counts: c,
        }
    }

    fn card(agency: Option<&str>, points: [f64; 3], rates: [Option<f64>; 3]) -> Scorecard {
        let specs = [
            ("2.1", "Processed early or on time"),
            ("4.2", "Digitized dossiers"),
            ("3.3", "Submitted online"),
        ];
        let indicators: Vec<IndicatorScore> = specs
            .iter()
            .zip(points.iter().zip(rates.iter()))
            .map(|((id, name), (pt, r))| IndicatorScore {
                id: id.to_string(),
                name: name.to_string(),
                rate: *r,
                points: *pt,
                max_points: 6.0,
            })
            .collect();
        let max_total = indicators
            .iter()
            .filter(|i| i.rate.is_some())
            .map(|i| i.max_points)
            .sum();
        Scorecard {
            period: Period::Year,
            period_start: d(2026, 1),
            agency_code: agency.map(str::to_string),
            agency_name: None,
            total: points.iter().sum(),
            max_total,
            indicators,
        }
    }

    const P1: (&str, &str) = ("1.001193", "Đăng ký khai sinh");
    const P2: (&str, &str) = ("1.000894", "Đăng ký kết hôn");
    const P3: (&str, &str) = ("2.000908", "Cấp phiếu lý lịch tư pháp");
    const P4: (&str, &str) = ("1.004227", "Chứng thực bản sao");

    /// Three agencies in 2026 (A 100.0%, B 87.5%, C 60.0% on time; digitization A 95.0%,
    /// C 90.0%, B 75.0%; scores A 16.5, C 13, B 12), two months, a 2025 province year.
    fn fixture() -> (Vec<MetricRow>, Vec<Scorecard>, BTreeMap<String, String>) {
        let y = d(2026, 1);
        let yr = Period::Year;
        let mut rows = vec![
            // Agency × procedure rows.
            row(yr, y, Some("A"), Some(P1), counts(30, 0, 0, 30, 29, 22)),
            row(yr, y, Some("A"), Some(P2), counts(10, 0, 0, 10, 9, 8)),
            row(yr, y, Some("B"), Some(P1), counts(9, 1, 0, 10, 8, 5)),
            row(yr, y, Some("B"), Some(P3), counts(5, 1, 0, 6, 4, 3)),
            row(yr, y, Some("C"), Some(P3), counts(6, 0, 2, 8, 7, 4)),
            row(yr, y, Some("C"), Some(P4), counts(0, 2, 0, 2, 2, 1)),
            // Agency rollups.
            row(yr, y, Some("A"), None, counts(40, 0, 0, 40, 38, 30)),
            row(yr, y, Some("B"), None, counts(14, 2, 0, 16, 12, 8)),
            row(yr, y, Some("C"), None, counts(6, 2, 2, 10, 9, 5)),
            // The province.
            row(yr, y, None, None, counts(60, 4, 2, 66, 59, 43)),
            row(yr, d(2025, 1), None, None, counts(51, 9, 0, 60, 48, 30)),
            // The 2025 agency A: must not be what the rankings show.
            row(
                yr,
                d(2025, 1),
                Some("A"),
                None,
                counts(21, 21, 0, 42, 21, 1),
            ),
            // Months.
            row(
                Period::Month,
                d(2026, 1),
                None,
                None,
                counts(28, 2, 0, 30, 27, 20),
            ),
            row(
                Period::Month,
                d(2026, 2),
                None,
                None,
                counts(32, 2, 2, 36, 32, 23),
            ),
            row(
                Period::Month,
                d(2026, 1),
                Some("A"),
                None,
                counts(20, 0, 0, 20, 19, 15),
            ),
        ];
        rows.push(row(
            Period::Quarter,
            d(2026, 1),
            None,
            None,
            counts(60, 4, 2, 66, 59, 43),
        ));
        let scorecards = vec![
            card(
                None,
                [5.0, 5.0, 4.5],
                [Some(0.909), Some(0.894), Some(0.65)],
            ),
            card(
                Some("A"),
                [6.0, 5.5, 5.0],
                [Some(1.0), Some(0.95), Some(0.75)],
            ),
            card(
                Some("B"),
                [4.0, 4.0, 4.0],
                [Some(0.875), Some(0.75), Some(0.5)],
            ),
            card(
                Some("C"),
                [2.0, 6.0, 5.0],
                [Some(0.6), Some(0.9), Some(0.5)],
            ),
        ];
        let mut names = BTreeMap::new();
        names.insert("A".to_string(), "Sở Tư pháp".to_string());
        names.insert(
            "B".to_string(),
            "Sở <script>alert(1)</script> & Co".to_string(),
        );
        // C has no name: the code is shown.
        (rows, scorecards, names)
    }

    fn input<'a>(
        rows: &'a [MetricRow],
        scorecards: &'a [Scorecard],
        names: &'a BTreeMap<String, String>,
    ) -> ReportInput<'a> {
        ReportInput {
            title: "Tiền Giang",
            generated_at: "2026-11-25 14:00 ICT",
            as_of: "2026-11-25 14:00 ICT",
            rows,
            scorecards,
            agency_names: names,
            min_dossiers: 5,
            calendar: &crate::model::NO_CALENDAR_NOTES,
            fields: &[],
            breaks: &[],
            events_version: None,
        }
    }

    /// The text of the element with this id, up to its `</figure>`.
    fn figure<'h>(html: &'h str, id: &str) -> &'h str {
        let start = html
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no figure {id}"));
        let end = html[start..].find("</figure>").expect("closed figure") + start;
        &html[start..end]
    }

    fn codes_in_order(fig: &str) -> Vec<String> {
        fig.match_indices("data-code=\"")
            .map(|(i, m)| {
                let rest = &fig[i + m.len()..];
                rest[..rest.find('"').unwrap()].to_string()
            })
            .collect()
    }

    fn strip_ansi(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars().peekable();
        while let Some(ch) = chars.next() {
            if ch == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(ch);
            }
        }
        out
    }

    #[test]
    fn html_has_every_figure_and_is_self_contained() {
        let (rows, cards, names) = fixture();
        let html = render_html(&input(&rows, &cards, &names));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<meta charset=\"utf-8\">"));
        assert!(html.contains("<html lang=\"en\">"));
        for id in [
            "headline",
            "ranking-ontime",
            "ranking-digitization",
            "trend-monthly",
            "worst-procedures",
            "scorecard",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "missing {id}");
        }
        for id in [
            "ranking-ontime",
            "ranking-digitization",
            "trend-monthly",
            "worst-procedures",
        ] {
            let fig = figure(&html, id);
            assert!(fig.contains("<svg"), "{id} has no chart");
            assert!(
                fig.contains(&format!("<title id=\"{id}-title\">")),
                "{id} has no title"
            );
            assert!(fig.contains(&format!("aria-labelledby=\"{id}-title {id}-desc\"")));
        }
        assert!(figure(&html, "scorecard").contains("<table class=\"scorecard\">"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "external reference"
        );
        assert!(!html.contains("url("), "external resource in CSS");
        assert!(!html.contains("NaN") && !html.contains("inf\""));
        assert!(html.contains("@media print") && html.contains("A4 landscape"));
        assert!(html.contains("Tiền Giang"));
        assert!(html.trim_end().ends_with("</html>"));
    }

    #[test]
    fn rankings_have_one_bar_per_agency_best_first() {
        let (rows, cards, names) = fixture();
        let html = render_html(&input(&rows, &cards, &names));
        let ontime = figure(&html, "ranking-ontime");
        assert_eq!(ontime.matches("<rect class=\"bar ").count(), 3);
        assert_eq!(codes_in_order(ontime), ["A", "B", "C"]);
        assert!(ontime.contains("<rect class=\"bar band-good\""));
        assert!(ontime.contains("<rect class=\"bar band-warn\""));
        assert!(ontime.contains("<rect class=\"bar band-bad\""));
        let digit = figure(&html, "ranking-digitization");
        assert_eq!(digit.matches("<rect class=\"bar ").count(), 3);
        assert_eq!(codes_in_order(digit), ["A", "C", "B"]);
        // The latest year, not 2025 (when A was at 50.0%).
        assert!(!ontime.contains("50.0%"));
    }

    #[test]
    fn printed_percentages_match_the_inputs() {
        let (rows, cards, names) = fixture();
        let html = render_html(&input(&rows, &cards, &names));
        let ontime = figure(&html, "ranking-ontime");
        for s in [">100.0%<", ">87.5%<", ">60.0%<"] {
            assert!(ontime.contains(s), "on-time ranking lacks {s}");
        }
        let digit = figure(&html, "ranking-digitization");
        for s in [">95.0%<", ">90.0%<", ">75.0%<"] {
            assert!(digit.contains(s), "digitization ranking lacks {s}");
        }
        let tiles = &html
            [html.find("id=\"headline\"").unwrap()..html.find("id=\"ranking-ontime\"").unwrap()];
        // Province 2026: 60 of 66 on time, 59 of 66 digitized, 43 of 66 online.
        assert!(tiles.contains(">66<"));
        assert!(tiles.contains(">90.9%<"));
        assert!(tiles.contains(">89.4%<"));
        assert!(tiles.contains(">65.2%<"));
        assert!(tiles.contains(">14.5 / 18<"));
        // Against 2025's 85.0%.
        assert!(tiles.contains("▲ 5.9 pts vs 2025"));
        let trend = figure(&html, "trend-monthly");
        assert_eq!(trend.matches("<circle class=\"pt pt-ontime\"").count(), 2);
        assert_eq!(
            trend
                .matches("<circle class=\"pt pt-digitization\"")
                .count(),
            2
        );
        assert_eq!(trend.matches("<rect class=\"vol\"").count(), 2);
        assert!(trend.contains(">2026-01<") && trend.contains(">2026-02<"));
        assert!(trend.contains("class=\"legend\""));
        // January: 28 of 30 on time; February: 32 of 36.
        assert!(trend.contains("on-time 93.3%") && trend.contains("on-time 88.9%"));
    }

    #[test]
    fn worst_procedures_respect_the_threshold_and_order() {
        let (rows, cards, names) = fixture();
        let html = render_html(&input(&rows, &cards, &names));
        let worst = figure(&html, "worst-procedures");
        // P3: 11 of 14 in time across B and C; P1: 39 of 40. P4 (0%) has only 2 judged,
        // P2 has nothing late.
        assert_eq!(codes_in_order(worst), [P3.0, P1.0]);
        assert!(worst.contains(">78.6%</tspan> on time · 1 late · 2 overdue · 14 judged"));
        assert!(worst.contains(">97.5%</tspan>"));
        assert!(worst.contains("Cấp phiếu lý lịch tư pháp"));
        assert!(!worst.contains(P4.0) && !worst.contains(P2.0));
        assert!(worst.contains("1 procedure with fewer than 5 judged dossiers left out"));
    }

    #[test]
    fn scorecard_table_is_sorted_by_total() {
        let (rows, cards, names) = fixture();
        let html = render_html(&input(&rows, &cards, &names));
        let table = figure(&html, "scorecard");
        assert_eq!(codes_in_order(table), ["A", "C", "B"]);
        assert!(table.contains("<tr class=\"province\">"));
        assert!(
            table.contains("16.5 / 18") && table.contains("13 / 18") && table.contains("12 / 18")
        );
        assert!(table.contains(">5.5 / 6<span class=\"rate\">95.0%</span>"));
        let order: Vec<usize> = ["2.1", "3.3", "4.2"]
            .iter()
            .map(|id| table.find(&format!("data-indicator=\"{id}\"")).unwrap())
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "indicators out of order"
        );
    }

    #[test]
    fn data_text_is_escaped() {
        let (rows, cards, names) = fixture();
        let html = render_html(&input(&rows, &cards, &names));
        assert!(!html.contains("<script"));
        assert!(html.contains("Sở &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co"));
        let mut evil_rows = rows.clone();
        evil_rows.push(row(
            Period::Year,
            d(2026, 1),
            Some("\"><svg onload=x>"),
            None,
            counts(1, 0, 0, 1, 1, 1),
        ));
        let html = render_html(&input(&evil_rows, &cards, &names));
        assert!(!html.contains("<svg onload"));
        assert!(html.contains("data-code=\"&quot;&gt;&lt;svg onload=x&gt;\""));
    }

    #[test]
    fn empty_input_renders_no_data() {
        let names = BTreeMap::new();
        let inp = input(&[], &[], &names);
        let html = render_html(&inp);
        for id in [
            "headline",
            "ranking-ontime",
            "ranking-digitization",
            "trend-monthly",
            "worst-procedures",
            "scorecard",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "missing {id}");
        }
        assert!(html.contains("class=\"no-data\""));
        assert!(!html.contains("NaN"));
        assert!(!html.contains("<rect class=\"bar"));
        let text = terminal_summary(&inp, true);
        assert!(text.contains("no data"));
    }

    #[test]
    fn zero_denominators_and_bad_points_never_print_nan() {
        let names = BTreeMap::new();
        let y = d(2026, 1);
        let rows = vec![
            row(
                Period::Year,
                y,
                Some("Z"),
                None,
                Counts {
                    received: 3,
                    ..Counts::default()
                },
            ),
            row(
                Period::Year,
                y,
                Some("Y"),
                Some(P1),
                Counts {
                    late: 1,
                    ..Counts::default()
                },
            ),
            row(
                Period::Month,
                y,
                None,
                None,
                Counts {
                    received: 3,
                    ..Counts::default()
                },
            ),
        ];
        let mut bad_card = card(Some("Z"), [0.0, 0.0, 0.0], [None, None, None]);
        bad_card.total = f64::NAN;
        bad_card.max_total = 0.0;
        let cards = vec![bad_card];
        let mut inp = input(&rows, &cards, &names);
        inp.min_dossiers = 0;
        let html = render_html(&inp);
        assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
        // Z has no judged dossiers: not ranked on time, but 0.0% digitized.
        assert_eq!(
            figure(&html, "ranking-ontime")
                .matches("<rect class=\"bar ")
                .count(),
            1
        );
        assert!(figure(&html, "ranking-ontime").contains("Not ranked (nothing to measure): Z."));
        assert_eq!(
            figure(&html, "ranking-digitization")
                .matches("<rect class=\"bar ")
                .count(),
            1
        );
        let text = terminal_summary(&inp, false);
        assert!(!text.contains("NaN"));
    }

    #[test]
    fn terminal_rows_sorted_by_score_and_aligned() {
        let (rows, cards, names) = fixture();
        let text = terminal_summary(&input(&rows, &cards, &names), false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("Tiền Giang · 766 summary · 2026"));
        assert!(lines[1].starts_with("Province: 66 received · on time 90.9%"));
        assert!(lines[1].ends_with("score 14.5/18"));
        assert!(lines[2]
            .trim_start()
            .starts_with("e-result 48.5% · online payment 39.4%"));
        assert!(lines[3].starts_with("Agencies as today's units (restated view"));
        let table = &lines[4..];
        assert_eq!(table.len(), 2 + 3, "{text}");
        assert!(table[0].contains("Agency") && table[0].contains("Score"));
        let w = width(table[0]);
        for l in table {
            assert_eq!(width(l), w, "misaligned: {l:?}");
            assert_eq!(l.chars().count(), w, "{l:?}");
        }
        assert!(
            table[2].contains("Sở Tư pháp")
                && table[2].contains("100.0%")
                && table[2].ends_with("16.5/18")
        );
        assert!(
            table[3].contains(" C ") && table[3].contains("60.0%") && table[3].ends_with("13/18")
        );
        assert!(
            table[4].contains("Sở <script>")
                && table[4].contains("87.5%")
                && table[4].ends_with("12/18")
        );
    }

    #[test]
    fn terminal_color_only_adds_escape_codes() {
        let (rows, cards, names) = fixture();
        let inp = input(&rows, &cards, &names);
        let plain = terminal_summary(&inp, false);
        let colored = terminal_summary(&inp, true);
        assert!(!plain.contains('\x1b'));
        assert!(colored.contains("\x1b[32m 100.0%\x1b[0m"));
        assert!(colored.contains("\x1b[33m  87.5%\x1b[0m"));
        assert!(colored.contains("\x1b[31m  60.0%\x1b[0m"));
        assert_eq!(strip_ansi(&colored), plain);
    }

    #[test]
    fn terminal_strips_escape_sequences_from_data() {
        let (rows, cards, mut names) = fixture();
        names.insert("C".into(), "Evil\x1b[2J name".into());
        let text = terminal_summary(&input(&rows, &cards, &names), false);
        assert!(!text.contains('\x1b'));
        assert!(text.contains("Evil [2J name"));
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        assert_eq!(width("Sở Tư pháp"), 10);
        // The same text with its tones as combining marks (NFD).
        assert_eq!(width("So\u{31b}\u{309} Tu\u{31b} pha\u{301}p"), 10);
        assert_eq!(width("東京"), 4);
        assert_eq!(truncate("Sở Tài nguyên và Môi trường", 10), "Sở Tài ng…");
        assert_eq!(
            width(&truncate("So\u{31b}\u{309} Tu\u{31b} pha\u{301}p", 5)),
            5
        );
        assert_eq!(pad_left("87.5%", 7), "  87.5%");
    }

    #[test]
    fn without_yearly_rows_the_latest_period_is_used() {
        let names = BTreeMap::new();
        let rows = vec![
            row(
                Period::Month,
                d(2026, 1),
                Some("A"),
                None,
                counts(8, 0, 0, 8, 8, 8),
            ),
            row(
                Period::Month,
                d(2026, 2),
                Some("A"),
                None,
                counts(7, 1, 0, 8, 4, 4),
            ),
        ];
        let html = render_html(&input(&rows, &[], &names));
        assert!(html.contains("Period: <strong>2026-02</strong>"));
        assert!(figure(&html, "ranking-ontime").contains(">87.5%<"));
        // The province falls back to the sum of the agencies.
        assert!(html.contains("data-metric=\"on-time\"><div class=\"label\">On-time rate (2.1)</div><div class=\"value\">87.5%<"));
        // Two months of trend, from the agency sums.
        assert_eq!(
            figure(&html, "trend-monthly")
                .matches("<circle class=\"pt pt-ontime\"")
                .count(),
            2
        );
    }
}
