//! The 766 on-time rules, applied to one folded dossier.
//!
//! Every rule is written out, with a worked example, in the README ("The 766 rules").

use chrono::NaiveDate;

use crate::calendar::{Calendar, CalendarError};
use crate::catalog::Catalog;
use crate::fold::{Fact, Interner, CHANNEL_ONLINE, FLAG_E_RESULT};
use crate::fold::{FLAG_FEE_BEARING, FLAG_HAS_RESULT_DOCUMENT, FLAG_PAID_ONLINE, FLAG_REUSED};
use crate::fold::{FLAG_SUBMITTED_FILE, NO_SYM};

/// Why a dossier has no on-time class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotJudged {
    /// Statuses 1 and 3, or seen only through progress updates: outside the count.
    NotCounted,
    /// Never received (withdrawn before receipt, say): its clock never started.
    NotReceived,
    /// Neither the feed nor the catalogue gives a due date.
    NoDueDate,
    /// Judging it needs a year the holiday table does not have: set aside, never guessed.
    CalendarMissing { year: i32 },
    /// A date so far out that no calendar covers it.
    DateOutOfRange,
}

impl NotJudged {
    pub fn as_str(self) -> &'static str {
        match self {
            NotJudged::NotCounted => "not_counted",
            NotJudged::NotReceived => "not_received",
            NotJudged::NoDueDate => "no_due_date",
            NotJudged::CalendarMissing { .. } => "calendar_missing",
            NotJudged::DateOutOfRange => "date_out_of_range",
        }
    }

    fn of(e: &CalendarError) -> NotJudged {
        match e {
            CalendarError::YearMissing { year } => NotJudged::CalendarMissing { year: *year },
            _ => NotJudged::DateOutOfRange,
        }
    }
}

/// The on-time class of a dossier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OnTime {
    Early,
    OnTime,
    Late,
    InProgressInTime,
    InProgressOverdue,
}

impl OnTime {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTime::Early => "early",
            OnTime::OnTime => "on_time",
            OnTime::Late => "late",
            OnTime::InProgressInTime => "in_progress_in_time",
            OnTime::InProgressOverdue => "in_progress_overdue",
        }
    }
}

/// What ended the dossier's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Processed,
    Returned,
    Stopped,
    Refused,
    Withdrawn,
    /// The single supplement request the applicant never answered.
    SupplementUnanswered,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Processed => "processed",
            EndReason::Returned => "returned",
            EndReason::Stopped => "stopped",
            EndReason::Refused => "refused",
            EndReason::Withdrawn => "withdrawn",
            EndReason::SupplementUnanswered => "supplement_unanswered",
        }
    }
}

/// Where the due date came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueSource {
    /// `NgayHenTra`, or the source's own moved date after a supplement.
    Source,
    /// Received + the procedure's statutory time from the catalogue.
    Catalogue,
}

/// One row of `dossiers/`: the judged fact.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub status: i8,
    pub received_at: Option<i64>,
    /// The first due date (see [`due::Due::first`]) and the latest the feed gave (the
    /// latest snapshot's, or the first when it has none).
    pub first_due_at: Option<i64>,
    pub due_at: Option<i64>,
    pub due_source: Option<DueSource>,
    /// Due dates the feed moved to with no supplement to explain them ("hẹn lại").
    pub due_resets: u32,
    pub end_at: Option<i64>,
    pub end_reason: Option<EndReason>,
    pub supplement_count: u32,
    /// Completed pauses: calendar seconds, and office seconds (what the clock leaves out).
    pub paused_seconds: i64,
    pub pause_working_seconds: i64,
    /// Office seconds the pauses added to the first due date.
    pub due_extension_seconds: i64,
    /// The due date the dossier is judged by: `first_due_at`, extended by
    /// `due_extension_seconds` of office time.
    pub judged_due_at: Option<i64>,
    /// Office time from receipt to the end (or to the judging moment), less every pause,
    /// in 8-hour working days.
    pub working_days: Option<f64>,
    /// Judged at the end (or, while open, at the judging moment); `None` when the dossier
    /// is outside the count or cannot be judged, and then `not_judged` says why.
    pub on_time: Option<OnTime>,
    pub not_judged: Option<NotJudged>,
    /// The first local date at whose end the dossier, if still open then, is overdue: the
    /// date of its judged due date (its receipt date with more than one supplement
    /// request), never before its receipt date; `None` when it is not overdue by the
    /// judging moment, so a period not over yet (judged at that moment) agrees with the
    /// dossier's own class. The grouping and the SQL (`schemas/sql/metrics.sql`) judge an
    /// open dossier at each period's end with it.
    pub overdue_from: Option<NaiveDate>,
    /// Counted in the metrics at all (not status 1 or 3).
    pub counted: bool,
    /// `KenhThucHien`, as the fold keeps it (`fold::CHANNEL_*`).
    pub channel: u8,
    pub online: bool,
    pub digitized: bool,
    pub e_result_eligible: bool,
    pub e_result: bool,
    pub reused: bool,
    pub fee_bearing: bool,
    pub paid_online: bool,
}

/// Local Vietnam date of an instant.
pub fn local_date(us: i64) -> NaiveDate {
    let day = sohoa_schemas::normalize::vn_day(us);
    NaiveDate::from_num_days_from_ce_opt((day + 719_163) as i32).expect("dates in range")
}

/// Judge one dossier at `as_of` (UTC µs). Never fails: a dossier the rules cannot judge
/// (a year missing from the holiday table, say) gets no class and a reason, and the run
/// goes on.
pub fn judge(f: &Fact, syms: &Interner, cal: &Calendar, catalog: &Catalog, as_of: i64) -> Judged {
    let procedure = (f.procedure != NO_SYM)
        .then(|| syms.get(f.procedure))
        .flatten()
        .and_then(|c| catalog.get(c));
    let status = f.status;
    let counted = f.snapshot.is_some() && !matches!(status, 1 | 3);

    // The clock's end: the first ending status, in the 766 priority order.
    let received = f.received_at;
    let ends = [
        (f.finished_at.or(f.first_seen(9)), EndReason::Processed),
        (f.returned_at.or(f.first_seen(10)), EndReason::Returned),
    ];
    let mut end = ends.iter().find_map(|(t, r)| t.map(|t| (t, *r)));
    if end.is_none() {
        end = match (f.first_seen(8), f.refused_at) {
            (Some(s), Some(r)) if r < s => Some((r, EndReason::Refused)),
            (Some(s), _) => Some((s, EndReason::Stopped)),
            (None, Some(r)) => Some((r, EndReason::Refused)),
            (None, None) => None,
        };
    }
    if end.is_none() && received.is_some() {
        // A withdrawal ends the clock only once the dossier was received.
        end = f.first_seen(7).map(|t| (t, EndReason::Withdrawn));
    }
    let n = f.supplements.len() as u32;
    if end.is_none() && n == 1 && f.supplements[0].completed_at.is_none() {
        end = Some((
            f.supplements[0].requested_at,
            EndReason::SupplementUnanswered,
        ));
    }

    // Pauses: the office time spent waiting for the applicant does not count, and the
    // dossier is judged by the first due date it was given, moved only by them (see `due`).
    let timed = due::pauses(f, cal).and_then(|p| Ok((p, due::due(f, procedure, received, cal)?)));
    let (pauses, due, calendar) = match timed {
        Ok((p, d)) => (p, d, None),
        Err(e) => (due::Pauses::default(), None, Some(NotJudged::of(&e))),
    };
    let judged_due = due.map(|d| d.judged);

    let end_at = end.map(|e| e.0);
    let judge_at = end_at.unwrap_or(as_of);
    // Informational: without the calendar for the span, left empty.
    let working_days = match received {
        Some(r) if judge_at > r => cal.working_seconds(r, judge_at).ok().map(|w| {
            (w - pauses.working_seconds).max(0) as f64 / cal.office_hours().seconds_per_day() as f64
        }),
        Some(_) => Some(0.0),
        None => None,
    };
    let overdue_from = match (judged_due, received) {
        // More than one supplement request is late, so overdue from the start.
        (_, Some(r)) if n > 1 => Some(local_date(r)),
        (Some(d), r) if as_of > d => Some(match r {
            Some(r) => local_date(d).max(local_date(r)),
            None => local_date(d),
        }),
        _ => None,
    };
    let not_judged = if !counted {
        Some(NotJudged::NotCounted)
    } else if calendar.is_some() {
        calendar
    } else if judged_due.is_none() && n <= 1 {
        Some(NotJudged::NoDueDate)
    } else if received.is_none() && end_at.is_none() {
        Some(NotJudged::NotReceived)
    } else {
        None
    };
    let on_time = match (not_judged, end_at, judged_due) {
        (Some(_), _, _) => None,
        _ if n > 1 => Some(if end_at.is_some() {
            OnTime::Late
        } else {
            OnTime::InProgressOverdue
        }),
        (None, _, None) => None,
        (None, Some(e), Some(d)) => Some(match local_date(e).cmp(&local_date(d)) {
            std::cmp::Ordering::Less => OnTime::Early,
            std::cmp::Ordering::Equal => OnTime::OnTime,
            std::cmp::Ordering::Greater => OnTime::Late,
        }),
        (None, None, Some(d)) => Some(if as_of > d {
            OnTime::InProgressOverdue
        } else {
            OnTime::InProgressInTime
        }),
    };

    let result_is_document = procedure
        .map(|p| p.result_is_document)
        .unwrap_or(f.flag(FLAG_HAS_RESULT_DOCUMENT));
    let e_result = f.flag(FLAG_E_RESULT);
    Judged {
        status,
        received_at: received,
        first_due_at: due.map(|d| d.first).or(f.first_due),
        due_at: match due {
            Some(d) if d.source == DueSource::Catalogue => Some(d.first),
            _ => f.due_at.or(f.first_due),
        },
        due_source: due.map(|d| d.source),
        due_resets: due.map_or(0, |d| d.resets),
        end_at,
        end_reason: end.map(|e| e.1),
        supplement_count: n,
        paused_seconds: pauses.seconds,
        pause_working_seconds: pauses.working_seconds,
        due_extension_seconds: due.map_or(0, |d| d.extension),
        judged_due_at: judged_due,
        working_days,
        on_time,
        not_judged,
        overdue_from,
        counted,
        channel: f.channel,
        online: f.channel == CHANNEL_ONLINE,
        digitized: f.flag(FLAG_SUBMITTED_FILE) && (e_result || !result_is_document),
        e_result_eligible: result_is_document,
        e_result: result_is_document && e_result,
        reused: f.flag(FLAG_REUSED),
        fee_bearing: f.flag(FLAG_FEE_BEARING),
        paid_online: f.flag(FLAG_FEE_BEARING) && f.flag(FLAG_PAID_ONLINE),
    }
}

mod due;
#[cfg(test)]
mod tests;
