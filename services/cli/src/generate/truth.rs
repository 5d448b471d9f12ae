//! The ground truth of a feed: what the generator put in it, per agency and per field,
//! computed from each dossier's plan and the snapshots that made it into the feed, never
//! from the aggregator's code.

use std::collections::BTreeMap;

use serde::Serialize;
use sohoa_aggregator::calendar::Calendar;

use super::{field_of, moved_by_pause, Agency, Dossier};

/// Per agency, the progress report of the year, as the feed shows each dossier at the
/// moment it stops (its latest synced snapshot): nothing is carried over into the year,
/// open dossiers are judged at that moment.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct ProgressTruth {
    pub received: u64,
    pub received_in_person: u64,
    pub received_online: u64,
    pub received_postal: u64,
    pub resolved_early: u64,
    pub resolved_on_time: u64,
    pub resolved_late: u64,
    pub withdrawn: u64,
    pub stopped_or_refused: u64,
    pub in_progress_in_time: u64,
    pub in_progress_overdue: u64,
}

/// Per agency, what the generator put in the feed: the expected values of the metrics
/// that follow directly from it.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct AgencyTruth {
    pub name: String,
    pub received: u64,
    pub online_received: u64,
    pub digitized: u64,
    pub e_result_eligible: u64,
    pub e_result: u64,
    pub reused: u64,
    pub fee_bearing: u64,
    pub paid_online: u64,
    pub progress: ProgressTruth,
}

/// Per field, across agencies: what the generator put in the feed.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct FieldTruth {
    pub name: String,
    pub received: u64,
    pub digitized: u64,
}

/// What a feed holds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GroundTruth {
    pub seed: u64,
    pub year: i32,
    /// The moment the feed stops (the last sync): judge the metrics as of it.
    pub as_of: String,
    pub dossiers: u64,
    pub messages: u64,
    pub malformed: u64,
    pub repeats: u64,
    /// Received dossiers (statuses other than 1 and 3) per agency, for the year.
    pub agencies: BTreeMap<String, AgencyTruth>,
    /// The same per field (`MaLinhVuc`), across agencies.
    pub fields: BTreeMap<String, FieldTruth>,
}

/// The event time of the snapshot taken at `at`, in whole seconds: the national record
/// has no time of its own, so it is the latest date the snapshot holds.
fn event_time(d: &Dossier, at: i64) -> i64 {
    let by = |t: Option<i64>| t.filter(|t| *t <= at);
    let mut latest = d.received;
    for t in [by(d.finished), by(d.returned), by(d.refused)]
        .into_iter()
        .flatten()
    {
        latest = latest.max(t);
    }
    for (asked, answered, _) in d.supplements.iter().filter(|s| s.0 <= at) {
        latest = latest.max(*asked).max(by(*answered).unwrap_or(*asked));
    }
    latest.div_euclid(1_000_000)
}

/// The local Vietnam day of an instant (days since 1970-01-01).
fn local_day(us: i64) -> i64 {
    (us.div_euclid(1_000_000) + sohoa_schemas::normalize::VN_OFFSET_SECS).div_euclid(86_400)
}

/// How a dossier's clock ended, as the feed shows it.
enum End {
    Resolved(i64),
    Withdrawn,
    StoppedOrRefused,
}

/// Record dossier `d` of agency `a`, whose steps `synced` (ascending) made it into the feed
/// stopping at `as_of`.
pub(super) fn record(
    d: &Dossier,
    a: &Agency,
    synced: &[usize],
    cal: &Calendar,
    as_of: i64,
    truth: &mut GroundTruth,
) {
    // The first snapshot: the earliest by event time, and among those sharing it (their
    // order is unknown to a reader of the feed) the one showing the earliest due date.
    let first = synced.iter().copied().min_by_key(|&i| {
        let at = d.steps[i].0;
        (event_time(d, at), d.due_at(at))
    });
    let (Some(first), Some(&last)) = (first, synced.last()) else {
        return;
    };
    // The fold keeps the latest snapshot by event time; it carries the final flags.
    let (seen_at, status) = d.steps[last];
    let e_result = d.e_result && status >= 9;
    let t = truth.agencies.entry(a.code.clone()).or_default();
    t.received += 1;
    t.online_received += u64::from(d.channel == 2);
    let doc = d.procedure.result_is_document;
    t.digitized += u64::from(d.submitted_file && (e_result || !doc));
    t.e_result_eligible += u64::from(doc);
    t.e_result += u64::from(e_result);
    t.reused += u64::from(d.reused || d.digitized_component);
    t.fee_bearing += u64::from(d.fee > 0);
    t.paid_online += u64::from(d.fee > 0 && d.paid_online);
    record_progress(d, &mut t.progress, (d.steps[first].0, seen_at), cal, as_of);
    let (code, name) = field_of(&d.procedure.code);
    let f = truth.fields.entry(code.to_string()).or_default();
    f.name = name.to_string();
    f.received += 1;
    f.digitized += u64::from(d.submitted_file && (e_result || !doc));
}

/// The dossier's line of the year's progress report. `first_seen` and `seen_at` are the
/// times of its earliest and latest snapshots in the feed: the first shows the due date
/// it is judged by, the latest what had happened.
fn record_progress(
    d: &Dossier,
    p: &mut ProgressTruth,
    (first_seen, seen_at): (i64, i64),
    cal: &Calendar,
    as_of: i64,
) {
    p.received += 1;
    match d.channel {
        2 => p.received_online += 1,
        3 => p.received_postal += 1,
        _ => p.received_in_person += 1,
    }
    let asked: Vec<_> = d.supplements.iter().filter(|s| s.0 <= seen_at).collect();
    // The due date the first snapshot in the feed shows, moved by every answered pause
    // after it, in working time (a pause before it already moved what it shows, if the
    // source recorded that move).
    let mut due = d.due_at(first_seen);
    for (at, answered, moved) in &asked {
        if let Some(ans) = answered.filter(|t| *t <= seen_at) {
            if moved.is_none() || ans > first_seen {
                due = moved_by_pause(cal, due, *at, ans).unwrap_or(due);
            }
        }
    }
    let withdrawn = d.steps.iter().any(|&(t, s)| s == 7 && t <= seen_at);
    let end = match (d.finished, d.refused) {
        (Some(f), _) if f <= seen_at => Some(End::Resolved(f)),
        (_, Some(r)) if r <= seen_at => Some(End::StoppedOrRefused),
        _ if withdrawn => Some(End::Withdrawn),
        _ if asked.len() == 1 && asked[0].1.is_none_or(|t| t > seen_at) => {
            Some(End::Resolved(asked[0].0))
        }
        _ => None,
    };
    let late = asked.len() > 1;
    match end {
        Some(End::Withdrawn) => p.withdrawn += 1,
        Some(End::StoppedOrRefused) => p.stopped_or_refused += 1,
        Some(End::Resolved(_)) if late => p.resolved_late += 1,
        Some(End::Resolved(at)) => match local_day(at).cmp(&local_day(due)) {
            std::cmp::Ordering::Less => p.resolved_early += 1,
            std::cmp::Ordering::Equal => p.resolved_on_time += 1,
            std::cmp::Ordering::Greater => p.resolved_late += 1,
        },
        None if late || as_of > due => p.in_progress_overdue += 1,
        None => p.in_progress_in_time += 1,
    }
}
