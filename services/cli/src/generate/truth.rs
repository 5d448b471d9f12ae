//! The ground truth of a feed: what the generator put in it, per year, per agency as it
//! was and per field, computed from each dossier's plan and the syncs that made it into
//! the feed, never from the aggregator's code.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use sohoa_aggregator::calendar::Calendar;

use super::life::{ends_at, moved_by_pause, Dossier};
use super::plan::{field_of, Agency};

/// Per agency, the progress report of a year, as the feed shows each dossier at the
/// moment it stops (its latest synced snapshot): open dossiers are judged at each year's
/// end by the due date that snapshot gives. A dossier counts under the agency that
/// received it, then under each agency it is handed to (from the day the one holding it
/// ended), and ends under the last.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct ProgressTruth {
    pub carried_over: u64,
    pub received: u64,
    pub received_in_person: u64,
    pub received_online: u64,
    pub received_postal: u64,
    pub transferred_in: u64,
    pub resolved_early: u64,
    pub resolved_on_time: u64,
    pub resolved_late: u64,
    pub withdrawn: u64,
    pub stopped_or_refused: u64,
    pub transferred_out: u64,
    pub in_progress_in_time: u64,
    pub in_progress_overdue: u64,
}

/// Per agency, what the generator put in the feed in a year: the expected values of the
/// metrics that follow directly from it, under the agency as it was.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct AgencyTruth {
    /// Its name as the year's last day shows it.
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

/// Per field, across agencies: what the generator put in the feed in a year.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct FieldTruth {
    pub name: String,
    pub received: u64,
    pub digitized: u64,
}

/// One year of a feed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct YearTruth {
    pub agencies: BTreeMap<String, AgencyTruth>,
    pub fields: BTreeMap<String, FieldTruth>,
}

/// What a feed holds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GroundTruth {
    pub seed: u64,
    /// The years the dossiers are received in.
    pub years: Vec<i32>,
    /// The moment the feed stops (the last sync): judge the metrics as of it.
    pub as_of: String,
    pub dossiers: u64,
    pub messages: u64,
    pub malformed: u64,
    pub repeats: u64,
    /// Dossiers handed over to a successor, when the agency holding them ended.
    pub handed_over: u64,
    /// Per year (as text, "2025"): received dossiers (statuses other than 1 and 3) per
    /// agency and per field (`MaLinhVuc`).
    pub by_year: BTreeMap<String, YearTruth>,
}

/// One sync that made it into the feed: when in the dossier's life, the status it
/// showed, and the agency that sent it.
pub(super) struct Synced {
    pub at: i64,
    pub status: u8,
    pub agency: usize,
}

/// The event time of the snapshot taken at `at`, in µs of whole seconds: the national
/// record has no time of its own, so it is the latest date the snapshot holds.
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
    latest.div_euclid(1_000_000) * 1_000_000
}

/// The local Vietnam date of an instant.
fn local_date(us: i64) -> NaiveDate {
    let days =
        (us.div_euclid(1_000_000) + sohoa_schemas::normalize::VN_OFFSET_SECS).div_euclid(86_400);
    NaiveDate::from_num_days_from_ce_opt((days + 719_163) as i32).expect("in range")
}

/// How a dossier's clock ended, as the feed shows it, and when.
#[derive(Clone, Copy)]
enum End {
    Resolved(i64),
    Withdrawn(i64),
    StoppedOrRefused(i64),
}

impl End {
    fn at(self) -> i64 {
        match self {
            End::Resolved(t) | End::Withdrawn(t) | End::StoppedOrRefused(t) => t,
        }
    }
}

/// Record dossier `d`, whose syncs `synced` (in the order of its life) made it into the
/// feed stopping at `as_of`.
pub(super) fn record(
    d: &Dossier,
    agencies: &[Agency],
    synced: &[Synced],
    cal: &Calendar,
    as_of: i64,
    truth: &mut GroundTruth,
) {
    // The first snapshot: the earliest by event time, and among those sharing it (their
    // order is unknown to a reader of the feed) the one showing the earliest due date.
    let first = synced
        .iter()
        .min_by_key(|s| (event_time(d, s.at), d.due_at(s.at)));
    let (Some(first), Some(last)) = (first, synced.last()) else {
        return;
    };
    let seen_at = last.at;
    // The fold keeps the latest snapshot by event time; it carries the final flags.
    let e_result = d.e_result && last.status >= 9;
    let doc = d.procedure.result_is_document;
    let received = local_date(d.received);

    // Who held it from when: the agency of the first sync, then each other agency that
    // synced it, from the day the one before it ended.
    let mut stays: Vec<(NaiveDate, usize, i64)> = vec![(received, synced[0].agency, 0)];
    let mut prev = event_time(d, synced[0].at);
    for w in synced.windows(2) {
        if w[0].agency != w[1].agency {
            let ended = agencies[w[0].agency].valid_to.map_or(w[1].at, ends_at);
            prev = ended.max(prev);
            stays.push((local_date(prev).max(received), w[1].agency, prev));
        }
    }
    if stays.len() > 1 {
        truth.handed_over += 1;
    }
    let (due, end, late) = judge(d, first.at, seen_at, cal);
    // A handover after the clock's end moves nothing: the end was the holder's then.
    if let Some(e) = end {
        stays.retain(|s| s.2 <= e.at());
    }
    let end_date = end.map(|e| local_date(e.at()).max(received));
    let holder_on = |day: NaiveDate| {
        stays
            .iter()
            .rev()
            .find(|s| s.0 <= day)
            .map_or(stays[0].1, |s| s.1)
    };
    let (field_code, field_name) = field_of(&d.procedure.code);
    let digitized = d.submitted_file && (e_result || !doc);
    for &year in &truth.years.clone() {
        let (start, end_of_year) = (
            NaiveDate::from_ymd_opt(year, 1, 1).expect("valid"),
            NaiveDate::from_ymd_opt(year, 12, 31).expect("valid"),
        );
        let within = |day: NaiveDate| (start..=end_of_year).contains(&day);
        let y = truth.by_year.entry(year.to_string()).or_default();
        if within(received) {
            let f = y.fields.entry(field_code.to_string()).or_default();
            f.name = field_name.to_string();
            f.received += 1;
            f.digitized += u64::from(digitized);
        }
        if within(received) {
            let t = entry(y, &agencies[stays[0].1], end_of_year);
            t.received += 1;
            t.online_received += u64::from(d.channel == 2);
            t.digitized += u64::from(digitized);
            t.e_result_eligible += u64::from(doc);
            t.e_result += u64::from(e_result);
            t.reused += u64::from(d.reused || d.digitized_component);
            t.fee_bearing += u64::from(d.fee > 0);
            t.paid_online += u64::from(d.fee > 0 && d.paid_online);
            let p = &mut t.progress;
            p.received += 1;
            match d.channel {
                2 => p.received_online += 1,
                3 => p.received_postal += 1,
                _ => p.received_in_person += 1,
            }
        }
        let before = start.pred_opt().expect("valid");
        if received < start && end_date.is_none_or(|e| e >= start) {
            entry(y, &agencies[holder_on(before)], end_of_year)
                .progress
                .carried_over += 1;
        }
        for w in stays.windows(2) {
            if within(w[1].0) {
                entry(y, &agencies[w[0].1], end_of_year)
                    .progress
                    .transferred_out += 1;
                entry(y, &agencies[w[1].1], end_of_year)
                    .progress
                    .transferred_in += 1;
            }
        }
        if let (Some(e), Some(day)) = (end, end_date) {
            if within(day) {
                let p = &mut entry(y, &agencies[stays[stays.len() - 1].1], end_of_year).progress;
                match e {
                    End::Withdrawn(_) => p.withdrawn += 1,
                    End::StoppedOrRefused(_) => p.stopped_or_refused += 1,
                    End::Resolved(_) if late => p.resolved_late += 1,
                    End::Resolved(t) => match local_date(t).cmp(&local_date(due)) {
                        std::cmp::Ordering::Less => p.resolved_early += 1,
                        std::cmp::Ordering::Equal => p.resolved_on_time += 1,
                        std::cmp::Ordering::Greater => p.resolved_late += 1,
                    },
                }
            }
        }
        if received <= end_of_year && end_date.is_none_or(|e| e > end_of_year) {
            let overdue = late || (as_of > due && local_date(due) <= end_of_year);
            let p = &mut entry(y, &agencies[holder_on(end_of_year)], end_of_year).progress;
            if overdue {
                p.in_progress_overdue += 1;
            } else {
                p.in_progress_in_time += 1;
            }
        }
    }
}

/// The counts of agency `a` in year `y`, named as the year's last day `end` shows it.
fn entry<'y>(y: &'y mut YearTruth, a: &Agency, end: NaiveDate) -> &'y mut AgencyTruth {
    let t = y.agencies.entry(a.code.clone()).or_default();
    if t.name.is_empty() {
        t.name = a.name_on(end).to_string();
    }
    t
}

/// The dossier's due date, its end and whether it is late whatever the dates say (more
/// than one supplement request). `first_seen` and `seen_at` are the times of its earliest
/// and latest syncs in the feed: the first shows the due date it is judged by, the latest
/// what had happened.
fn judge(d: &Dossier, first_seen: i64, seen_at: i64, cal: &Calendar) -> (i64, Option<End>, bool) {
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
    let withdrawn = d.steps.iter().find(|&&(t, s)| s == 7 && t <= seen_at);
    let end = match (d.finished, d.refused) {
        (Some(f), _) if f <= seen_at => Some(End::Resolved(f)),
        (_, Some(r)) if r <= seen_at => Some(End::StoppedOrRefused(r)),
        // A withdrawal is dated by its snapshot, whose time is the latest date it holds.
        _ if withdrawn.is_some() => withdrawn.map(|&(t, _)| End::Withdrawn(event_time(d, t))),
        _ if asked.len() == 1 && asked[0].1.is_none_or(|t| t > seen_at) => {
            Some(End::Resolved(asked[0].0))
        }
        _ => None,
    };
    (due, end, asked.len() > 1)
}

/// Every year the truth covers, from the first.
pub(super) fn years(first: i32, count: u32) -> Vec<i32> {
    (first..first + count as i32).collect()
}

/// The number of days of `year`.
pub(super) fn days_in(year: i32) -> i64 {
    if NaiveDate::from_ymd_opt(year, 12, 31).map(|d| d.ordinal()) == Some(366) {
        366
    } else {
        365
    }
}
