//! Group judged dossiers into counts by view × period × agency × field × procedure, then
//! roll them up: agency × procedure, agencies, provinces, and each field within each
//! agency and across a province's agencies.
//!
//! Periods are local Vietnam dates (UTC+7): a period runs from 00:00 on its first day to
//! the end of its last. Per dossier, view and period kind, the grouping records flows
//! only, each under the agency it belongs to (see [`crate::placement`]):
//! - in the period of its receipt date, under the receiving agency, the received-based
//!   counts (online, digitization, e-result, reuse, payment), and, if the rules judge it,
//!   its channel;
//! - in the period of each handover (its date never before the receipt date),
//!   `transferred_out` under the agency it leaves and `transferred_in` under the one it
//!   goes to;
//! - in the period of the clock's end (never before the receipt date), under the agency
//!   holding it then, resolved early, on time or late, withdrawn, or stopped or refused;
//! - `overdue_in` under the agency holding it at the end of the first period that finds
//!   it open and overdue, and, while it stays so, `overdue_out` and `overdue_in` where a
//!   handover moves it, and `overdue_out` in the period of its end.
//!
//! [`crate::backlog`] then carries the open dossiers from period to period, per agency.

mod rollups;
#[cfg(test)]
mod tests;

use chrono::NaiveDate;

pub use rollups::{Base, BaseKey, Rollups};

use crate::agencies::Agencies;
use crate::fold::{FxMap, Interner, Sym, CHANNEL_IN_PERSON, CHANNEL_ONLINE, CHANNEL_POSTAL};
use crate::model::{Counts, Period, View};
use crate::placement::{AgencyKey, Placement, Stays};
use crate::rules::{local_date, EndReason, Judged, OnTime};

/// Stands for a code the events did not carry, so such dossiers are not mistaken for a
/// rollup row.
pub const MISSING_CODE: &str = "(none)";

/// The codes a dossier is grouped by besides its agencies: field, procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codes {
    pub field: Sym,
    pub procedure: Sym,
}

type Key = (Period, NaiveDate, AgencyKey, Sym, Sym);
type Groups = FxMap<Key, Counts>;

/// The additive base of one fold part: counts by (period, start, agency, field,
/// procedure), in both views. Most dossiers place the same in both (one current agency
/// throughout), so they are grouped once, in `both`.
#[derive(Debug, Default)]
pub struct Grouper {
    periods: Vec<Period>,
    both: Groups,
    as_was: Groups,
    restated: Groups,
}

impl Grouper {
    pub fn new(periods: &[Period]) -> Self {
        Grouper {
            periods: periods.to_vec(),
            ..Grouper::default()
        }
    }

    pub fn add(&mut self, codes: Codes, j: &Judged, place: &Placement) {
        match &place.restated {
            None => flows(&mut self.both, &self.periods, codes, j, &place.as_was),
            Some(r) => {
                flows(&mut self.as_was, &self.periods, codes, j, &place.as_was);
                flows(&mut self.restated, &self.periods, codes, j, r);
            }
        }
    }

    /// The base rows, with codes resolved: what shards write and merges add up.
    pub fn base(&self, syms: &Interner, agencies: &Agencies) -> Base {
        let mut out = Base::default();
        let views = [
            (View::AsWas, [&self.both, &self.as_was]),
            (View::Restated, [&self.both, &self.restated]),
        ];
        for (view, maps) in views {
            for map in maps {
                for (&(p, start, agency, field, procedure), c) in map {
                    // Empty codes mean "rollup" in the output, so a missing code gets a name.
                    let sym = |s: Sym| Some(syms.get(s).unwrap_or(MISSING_CODE).to_owned());
                    let agency = agency.code(syms, agencies).unwrap_or(MISSING_CODE);
                    let key = (
                        view,
                        p,
                        start,
                        Some(agency.to_owned()),
                        sym(field),
                        sym(procedure),
                    );
                    out.rows.entry(key).or_default().add(c);
                }
            }
        }
        out
    }
}

/// One dossier's flows in one view, from its stays.
fn flows(groups: &mut Groups, periods: &[Period], codes: Codes, j: &Judged, stays: &Stays) {
    let (true, Some(r)) = (j.counted, j.received_at) else {
        return;
    };
    let received = local_date(r);
    // The clock cannot end before it started: an end dated before the receipt (a data
    // error `quality/` counts) ends on the receipt date.
    let ended = j.end_at.map(|e| local_date(e).max(received));
    let key =
        |p: Period, d: NaiveDate, a: AgencyKey| (p, p.start_of(d), a, codes.field, codes.procedure);
    for &p in periods {
        let c = groups.entry(key(p, received, stays.receiving)).or_default();
        c.received += 1;
        c.online_received += u64::from(j.online);
        c.digitized += u64::from(j.digitized);
        c.e_result_eligible += u64::from(j.e_result_eligible);
        c.e_result += u64::from(j.e_result);
        c.reused += u64::from(j.reused);
        c.fee_bearing += u64::from(j.fee_bearing);
        c.paid_online += u64::from(j.paid_online);
        // The progress counts: only what the rules could judge.
        let Some(class) = j.on_time else { continue };
        match j.channel {
            CHANNEL_IN_PERSON => c.received_in_person += 1,
            CHANNEL_ONLINE => c.received_online += 1,
            CHANNEL_POSTAL => c.received_postal += 1,
            _ => c.received_other += 1,
        }
        for h in &stays.handovers {
            groups
                .entry(key(p, h.date, h.from))
                .or_default()
                .transferred_out += 1;
            groups
                .entry(key(p, h.date, h.to))
                .or_default()
                .transferred_in += 1;
        }
        if let Some(end) = ended {
            let c = groups.entry(key(p, end, stays.holder())).or_default();
            match (j.end_reason, class) {
                (Some(EndReason::Withdrawn), _) => c.withdrawn += 1,
                (Some(EndReason::Stopped | EndReason::Refused), _) => c.stopped_or_refused += 1,
                (_, OnTime::Early) => c.early += 1,
                (_, OnTime::OnTime) => c.on_time += 1,
                _ => c.late += 1,
            }
        }
        if let Some(from) = j.overdue_from {
            overdue(groups, p, from.max(received), ended, stays, key);
        }
    }
}

/// The overdue flows of a dossier overdue from local date `from` on, while open: it is
/// overdue at the end of every period from `from`'s to the one before its end, under
/// whoever holds it then. Its state changes only where it turns overdue, where a
/// handover moves it, and where it ends.
fn overdue(
    groups: &mut Groups,
    p: Period,
    from: NaiveDate,
    ended: Option<NaiveDate>,
    stays: &Stays,
    key: impl Fn(Period, NaiveDate, AgencyKey) -> Key,
) {
    let (turns, ends) = (p.start_of(from), ended.map(|e| p.start_of(e)));
    if ends.is_some_and(|e| turns >= e) {
        return;
    }
    let mut marks = vec![turns];
    for h in &stays.handovers {
        let s = p.start_of(h.date);
        if s > turns && ends.is_none_or(|e| s < e) && marks.last() != Some(&s) {
            marks.push(s);
        }
    }
    marks.extend(ends);
    let mut held: Option<AgencyKey> = None;
    for m in marks {
        let now = ends
            .is_none_or(|e| m < e)
            .then(|| stays.holder_on(p.last_day(m)));
        if now != held {
            if let Some(a) = held {
                groups.entry(key(p, m, a)).or_default().overdue_out += 1;
            }
            if let Some(b) = now {
                groups.entry(key(p, m, b)).or_default().overdue_in += 1;
            }
            held = now;
        }
    }
}
