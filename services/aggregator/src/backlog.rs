//! The backlog: judged dossiers carried from one period into the next.
//!
//! A province's report form counts, for every period, the dossiers carried over from the
//! last one ("tồn kỳ trước") next to those newly received, and those still open at the
//! end. Counting that per dossier and period would touch every period a dossier is open
//! in. Instead, the grouping keeps only flows per period (received, ended by class, and
//! when an open dossier turns overdue), and this walk derives the rest:
//!
//! - open at a period's end = carried over + received + handed over to the group −
//!   ended − handed over away;
//! - carried over into a period = open at the end of the one before;
//! - overdue at a period's end = overdue at the end of the one before + turned overdue in
//!   it − ended in it after being overdue; in time = open − overdue.
//!
//! Both identities of the report form hold by construction, and flows add up across
//! shards, so a merge of shards walks the same sums a single run does.

use std::collections::BTreeMap;

use chrono::{Months, NaiveDate};

use crate::model::{Counts, Period};

/// The start of the period after the one starting at `start`.
pub fn next_start(p: Period, start: NaiveDate) -> Option<NaiveDate> {
    match p {
        Period::Day => start.succ_opt(),
        Period::Month => start.checked_add_months(Months::new(1)),
        Period::Quarter => start.checked_add_months(Months::new(3)),
        Period::Year => start.checked_add_months(Months::new(12)),
    }
}

/// Walk one group's flows (by period start) from its first period to `horizon` (a period
/// start): every period in which the group has something to count, with `carried_over`
/// and the in-progress counts filled in. A stretch with nothing open and no flow is
/// skipped, so a group costs its flows plus the periods its backlog spans.
pub fn carry(
    p: Period,
    flows: &BTreeMap<NaiveDate, Counts>,
    horizon: NaiveDate,
) -> Vec<(NaiveDate, Counts)> {
    let mut out = Vec::with_capacity(flows.len());
    let Some(&first) = flows.keys().next() else {
        return out;
    };
    let (mut open, mut overdue) = (0u64, 0u64);
    let mut start = first;
    loop {
        let mut c = flows.get(&start).copied().unwrap_or_default();
        c.carried_over = open;
        debug_assert!(open + c.inflow() >= c.outflow(), "{start}: {c:?}");
        debug_assert!(overdue + c.overdue_in >= c.overdue_out, "{start}: {c:?}");
        open = (open + c.inflow()).saturating_sub(c.outflow());
        overdue = (overdue + c.overdue_in).saturating_sub(c.overdue_out);
        debug_assert!(overdue <= open, "{start}: {c:?}");
        c.in_progress_overdue = overdue.min(open);
        c.in_progress_in_time = open - c.in_progress_overdue;
        if c != Counts::default() {
            out.push((start, c));
        }
        let next = if open > 0 {
            next_start(p, start).filter(|n| *n <= horizon)
        } else {
            // Nothing open: the next period with a flow, if any.
            flows.range(start..).map(|(s, _)| *s).find(|s| *s > start)
        };
        match next {
            Some(n) => start = n,
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(y: i32, mo: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, mo, 1).unwrap()
    }

    #[test]
    fn a_january_dossier_still_overdue_in_march_counts_in_february_and_march() {
        // Received in January, overdue from 3 February, resolved late in April; another
        // received and resolved in time in February.
        let flows = BTreeMap::from([
            (
                m(2023, 1),
                Counts {
                    received_in_person: 1,
                    ..Counts::default()
                },
            ),
            (
                m(2023, 2),
                Counts {
                    received_online: 1,
                    on_time: 1,
                    overdue_in: 1,
                    ..Counts::default()
                },
            ),
            (
                m(2023, 4),
                Counts {
                    late: 1,
                    overdue_out: 1,
                    ..Counts::default()
                },
            ),
        ]);
        let rows = carry(Period::Month, &flows, m(2023, 6));
        let got: Vec<(u32, [u64; 4])> = rows
            .iter()
            .map(|(s, c)| {
                use chrono::Datelike;
                (
                    s.month(),
                    [
                        c.carried_over,
                        c.in_progress_in_time,
                        c.in_progress_overdue,
                        c.late,
                    ],
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, [0, 1, 0, 0]),
                (2, [1, 0, 1, 0]),
                (3, [1, 0, 1, 0]),
                (4, [1, 0, 0, 1]),
            ]
        );
        // March: nothing received or ended, but one to process, overdue: 0% on time.
        assert_eq!(rows[2].1.on_time_rate(), Some(0.0));
    }

    #[test]
    fn an_open_dossier_is_carried_to_the_horizon_and_quiet_stretches_are_skipped() {
        // Received and withdrawn in 2023-Q1, then nothing until one received in 2024-Q1
        // and still open: the quarters between are skipped, the open one carried on.
        let flows = BTreeMap::from([
            (
                m(2023, 1),
                Counts {
                    received_postal: 1,
                    withdrawn: 1,
                    ..Counts::default()
                },
            ),
            (
                m(2024, 1),
                Counts {
                    received_other: 1,
                    ..Counts::default()
                },
            ),
        ]);
        let rows = carry(Period::Quarter, &flows, m(2024, 10));
        let starts: Vec<NaiveDate> = rows.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            starts,
            [m(2023, 1), m(2024, 1), m(2024, 4), m(2024, 7), m(2024, 10)]
        );
        assert_eq!(rows[0].1.in_progress(), 0);
        for (_, c) in &rows[1..] {
            assert_eq!(c.in_progress_in_time, 1);
        }
        assert_eq!(rows[4].1.carried_over, 1);
    }
}
