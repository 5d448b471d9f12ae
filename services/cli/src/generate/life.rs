//! One dossier's whole life, decided up front: its steps, its pauses, its due dates, and
//! the agencies that hold it when the one holding it ends.

use anyhow::Result;
use chrono::{Datelike, NaiveDate};
use sohoa_aggregator::calendar::Calendar;
use sohoa_aggregator::catalog::Procedure;

use super::plan::{field_of, successor, Agency};
use super::{vn_us, Rng, DAY, HOUR};

/// A supplement request: when asked, when answered (never, if `None`), and the due date
/// the source moved (before, after), if it did.
pub(super) type SupplementPlan = (i64, Option<i64>, Option<(i64, i64)>);

/// How long a pause lasts in office time, and the due date it moves to: the source
/// software moves a due date by the pause's working time, never by calendar time.
pub(super) fn moved_by_pause(cal: &Calendar, due: i64, asked: i64, answered: i64) -> Result<i64> {
    let pause = cal.working_seconds(asked, answered)?;
    Ok(cal.add_working_seconds(due, pause)?)
}

/// One dossier's whole life, decided up front.
pub(super) struct Dossier {
    pub code: String,
    /// The agency that received it (an index into the plan)...
    pub agency: usize,
    /// ...and the ones it goes to when the one holding it ends: (the moment, the agency).
    pub handovers: Vec<(i64, usize)>,
    pub procedure: Procedure,
    pub channel: u8,
    pub received: i64,
    /// The due date (`NgayHenTra`) at receipt...
    pub due: i64,
    /// ...and each later move of it: (from, new due date).
    pub due_moves: Vec<(i64, i64)>,
    /// Status changes: (time, status).
    pub steps: Vec<(i64, u8)>,
    pub supplements: Vec<SupplementPlan>,
    pub finished: Option<i64>,
    pub returned: Option<i64>,
    pub refused: Option<i64>,
    pub submitted_file: bool,
    pub digitized_component: bool,
    pub reused: bool,
    pub e_result: bool,
    pub fee: u64,
    pub paid_online: bool,
    pub applicant_id: String,
}

impl Dossier {
    /// The due date a snapshot taken at `at` shows.
    pub fn due_at(&self, at: i64) -> i64 {
        self.due_moves
            .iter()
            .filter(|(from, _)| *from <= at)
            .map(|(_, due)| *due)
            .next_back()
            .unwrap_or(self.due)
    }

    /// The agency holding it at `at`.
    pub fn holder_at(&self, at: i64) -> usize {
        self.handovers
            .iter()
            .rev()
            .find(|h| h.0 <= at)
            .map_or(self.agency, |h| h.1)
    }
}

pub(super) fn working_day_between(
    cal: &Calendar,
    rng: &mut Rng,
    from: NaiveDate,
    days: i64,
) -> NaiveDate {
    loop {
        let d = from + chrono::Duration::days(rng.below(days as u64) as i64);
        if cal.is_working_day(d).unwrap_or(false) {
            return d;
        }
    }
}

/// The first day of Tết in `year` (the longest run of days off in January or February).
pub(super) fn tet_start(cal: &Calendar, year: i32) -> NaiveDate {
    let mut best = (NaiveDate::from_ymd_opt(year, 2, 1).expect("valid"), 0);
    let mut run = (best.0, 0);
    let mut d = NaiveDate::from_ymd_opt(year, 1, 2).expect("valid");
    while d.month() <= 2 {
        let off = d.weekday().number_from_monday() <= 5 && !cal.is_working_day(d).unwrap_or(true);
        if off {
            if run.1 == 0 {
                run.0 = d;
            }
            run.1 += 1;
            if run.1 > best.1 {
                best = run;
            }
        } else if d.weekday().number_from_monday() <= 5 {
            run.1 = 0;
        }
        d = d.succ_opt().expect("valid");
    }
    best.0
}

/// What a dossier's life is drawn from: the agency receiving it (`ai` of `agencies`),
/// the day, its number, and the feed's end.
pub(super) struct Start<'a> {
    pub agencies: &'a [Agency],
    pub ai: usize,
    pub day: NaiveDate,
    pub n: usize,
    pub procedure: Procedure,
    pub tet: NaiveDate,
    pub as_of: i64,
}

/// The life of a dossier received on `s.day` by agency `s.ai`.
pub(super) fn life(s: Start<'_>, cal: &Calendar, rng: &mut Rng) -> Result<Dossier> {
    let Start {
        agencies,
        ai,
        day,
        n,
        procedure,
        tet,
        as_of,
    } = s;
    let a = &agencies[ai];
    let received = vn_us(day, 7, 30) + (rng.below(8 * 60) as i64) * 60_000_000;
    let due = procedure.due_from(received, cal)?;
    let mut d = Dossier {
        code: format!("{}-{}-{:06}", a.code, day.format("%y%m%d"), n),
        agency: ai,
        handovers: Vec::new(),
        channel: if rng.chance(a.online) {
            2
        } else if rng.chance(0.03) {
            3
        } else {
            1
        },
        received,
        due,
        due_moves: Vec::new(),
        steps: vec![(received, 2)],
        supplements: Vec::new(),
        finished: None,
        returned: None,
        refused: None,
        submitted_file: rng.chance(a.digitized),
        digitized_component: rng.chance(a.digitized * 0.8),
        reused: rng.chance(a.digitized * 0.5),
        e_result: false,
        fee: if procedure.code.starts_with('1') && rng.chance(0.6) {
            50_000
        } else {
            0
        },
        paid_online: false,
        applicant_id: format!("0821{:08}", rng.below(100_000_000)),
        procedure,
    };
    d.paid_online = d.fee > 0 && rng.chance(a.paid_online);
    let mut now = received + HOUR / 2;
    d.steps.push((now, 4));
    let fate = rng.f();
    // Dossiers received in the weeks before Tết are late far more often.
    let before_tet = (tet - day).num_days();
    let late_p = if (0..21).contains(&before_tet) {
        (a.late * 4.0).min(0.8)
    } else {
        a.late
    };
    if fate < 0.02 {
        d.steps.push((now + DAY, 7)); // withdrawn
    } else if fate < 0.03 {
        d.refused = Some(now + 2 * DAY);
        d.steps.push((now + 2 * DAY, 8));
    } else {
        // The due date the dossier is judged by: the one given at receipt, extended by
        // every answered pause's working time, whether the source moved it or not.
        let mut judged_due = d.due;
        if rng.chance(0.15) {
            let asked = cal.add_working_seconds(now, 4 * 3600)?;
            let answered = (!rng.chance(0.1)).then(|| asked + (1 + rng.below(6) as i64) * DAY);
            d.steps.push((asked, 5));
            match answered {
                Some(ans) => {
                    judged_due = moved_by_pause(cal, judged_due, asked, ans)?;
                    // Half the time the source records the move (`NgayHenTraMoi`).
                    let moved = rng.chance(0.5).then_some((d.due, judged_due));
                    if let Some((_, new_due)) = moved {
                        d.due_moves.push((ans, new_due));
                    }
                    d.supplements.push((asked, answered, moved));
                    d.steps.push((ans, 4));
                    now = ans;
                    if rng.chance(0.15) {
                        let again = ans + DAY;
                        let back = again + (1 + rng.below(3) as i64) * DAY;
                        d.steps.push((again, 5));
                        d.supplements.push((again, Some(back), None));
                        d.steps.push((back, 4));
                        now = back;
                    }
                }
                None => {
                    d.supplements.push((asked, None, None));
                    now = i64::MAX; // never answered: stays waiting
                }
            }
        }
        if now != i64::MAX {
            let finished = if rng.chance(late_p) {
                // Late by one to five working days, and never before the last answer.
                let days = (1 + rng.below(5) as i64) * 8 * 3600;
                let late = cal.add_working_seconds(judged_due.max(now), days)?;
                if rng.chance(0.4) {
                    // The agency misses the date, apologises and sets a new one that it
                    // then keeps ("hẹn lại"): a snapshot moves the due date with no
                    // supplement behind it. The dossier stays late.
                    let at = (judged_due + HOUR).max(now);
                    let new_due = cal.add_working_seconds(late, rng.below(3) as i64 * 8 * 3600)?;
                    d.due_moves.push((at, new_due));
                    d.steps.push((at, 4));
                }
                late
            } else {
                let span = (judged_due - now).max(HOUR);
                now + (rng.f() * span as f64) as i64
            };
            let returned = finished + (rng.below(24) as i64) * HOUR;
            if finished <= as_of {
                d.finished = Some(finished);
                d.steps.push((finished, 9));
                d.e_result = d.procedure.result_is_document && rng.chance(a.e_result);
            }
            if returned <= as_of && d.finished.is_some() {
                d.returned = Some(returned);
                d.steps.push((returned, 10));
            }
        }
    }
    // A new appointment can come after a second pause began: keep both in time order.
    d.steps.sort_by_key(|s| s.0);
    d.due_moves.sort_by_key(|m| m.0);
    hand_over(&mut d, agencies, as_of, rng);
    Ok(d)
}

/// The moment an agency valid to `to` ends: the start of the next day.
pub(super) fn ends_at(to: NaiveDate) -> i64 {
    vn_us(to.succ_opt().expect("in range"), 0, 0)
}

/// A dossier still open when the agency holding it ends goes to a successor, and on down
/// the line while each ends with it still open.
fn hand_over(d: &mut Dossier, agencies: &[Agency], as_of: i64, rng: &mut Rng) {
    let (field, _) = field_of(&d.procedure.code);
    let mut holder = d.agency;
    while let Some(to) = agencies[holder].valid_to {
        let at = ends_at(to);
        let ended = d
            .steps
            .iter()
            .any(|&(t, st)| t <= at && matches!(st, 7..=10));
        if ended || at > as_of {
            return;
        }
        let Some(next) = successor(&agencies[holder], field, rng) else {
            return;
        };
        d.handovers.push((at, next));
        holder = next;
    }
}
