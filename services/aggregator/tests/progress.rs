//! The progress table's two identities, on generated histories: on every row, carried
//! over and received add up to resolved, withdrawn, stopped or refused and in progress;
//! and a period's carried over equals the previous period's in progress, for every agency,
//! procedure and field. Each count is also checked against a count made dossier by
//! dossier.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use proptest::prelude::*;
use sohoa_aggregator::calendar::{Calendar, OfficeHours};
use sohoa_aggregator::catalog::Catalog;
use sohoa_aggregator::fold::{EventKey, Fact, Interner, Supplement};
use sohoa_aggregator::metrics::{Codes, Grouper, Rollups};
use sohoa_aggregator::model::{Counts, Period};
use sohoa_aggregator::rules::{judge, local_date, Judged};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

/// 2 Jan 2024 08:00 in Vietnam.
const T0: i64 = 1_704_157_200_000_000;

/// How a generated dossier ends.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Open,
    Processed,
    Withdrawn,
    Stopped,
    Refused,
    OneUnansweredSupplement,
    TwoSupplements,
}

#[derive(Debug, Clone)]
struct Spec {
    codes: (usize, usize, usize),
    channel: u8,
    received_h: i64,
    due_h: Option<i64>,
    fate: Fate,
    end_h: i64,
    pause_h: i64,
}

fn spec() -> impl Strategy<Value = Spec> {
    let fate = prop_oneof![
        Just(Fate::Open),
        Just(Fate::Processed),
        Just(Fate::Processed),
        Just(Fate::Withdrawn),
        Just(Fate::Stopped),
        Just(Fate::Refused),
        Just(Fate::OneUnansweredSupplement),
        Just(Fate::TwoSupplements),
    ];
    (
        (0..3usize, 0..3usize, 0..4usize),
        0..4u8,
        0..(24 * 420i64),
        proptest::option::weighted(0.85, -48..(24 * 40i64)),
        fate,
        // Ends a little before the receipt now and then (a data error the grouping clamps).
        -30..(24 * 90i64),
        1..(24 * 10i64),
    )
        .prop_map(
            |(codes, channel, received_h, due_h, fate, end_h, pause_h)| Spec {
                codes,
                channel,
                received_h,
                due_h,
                fate,
                end_h,
                pause_h,
            },
        )
}

fn fact(s: &Spec) -> Fact {
    let r = T0 + s.received_h * HOUR;
    let end = r + s.end_h * HOUR;
    let due = s.due_h.map(|h| r + h * HOUR);
    let mut f = Fact {
        snapshot: Some(EventKey::default()),
        status: 4,
        channel: s.channel,
        received_at: Some(r),
        due_at: due,
        first_due: due,
        ..Fact::default()
    };
    let ask = |at: i64, answered: bool| Supplement {
        requested_at: at,
        completed_at: answered.then_some(at + s.pause_h * HOUR),
        due_before: None,
        due_after: None,
    };
    match s.fate {
        Fate::Open => {}
        Fate::Processed => f.finished_at = Some(end),
        Fate::Withdrawn => f.first_seen[0] = Some(end),
        Fate::Stopped => f.first_seen[1] = Some(end),
        Fate::Refused => f.refused_at = Some(end),
        Fate::OneUnansweredSupplement => f.supplements = Box::new([ask(r + 2 * HOUR, false)]),
        Fate::TwoSupplements => {
            f.supplements = Box::new([ask(r + 2 * HOUR, true), ask(r + 3 * DAY, true)]);
            f.finished_at = Some(end + 5 * DAY);
        }
    }
    f
}

/// The progress counts of the judged dossiers, one by one, for a period of kind `p`
/// starting at `start`: (carried over, received, ended, in time, overdue).
fn by_dossier(judged: &[&Judged], p: Period, start: NaiveDate) -> [u64; 5] {
    let last = p.last_day(start);
    let mut out = [0u64; 5];
    for j in judged {
        let r = local_date(j.received_at.unwrap());
        let e = j.end_at.map(|e| local_date(e).max(r));
        let carried = r < start && e.is_none_or(|e| e >= start);
        let received = (start..=last).contains(&r);
        let open_at_end = r <= last && e.is_none_or(|e| e > last);
        out[0] += u64::from(carried);
        out[1] += u64::from(received);
        out[2] += u64::from(e.is_some_and(|e| (start..=last).contains(&e)));
        if open_at_end {
            let overdue = j.overdue_from.is_some_and(|d| d.max(r) <= last);
            out[if overdue { 4 } else { 3 }] += 1;
        }
    }
    out
}

fn progress(c: &Counts) -> [u64; 5] {
    [
        c.carried_over,
        c.judged_received(),
        c.ended(),
        c.in_progress_in_time,
        c.in_progress_overdue,
    ]
}

fn check(specs: &[Spec], as_of_h: i64) -> Result<(), TestCaseError> {
    let cal = Calendar::embedded(OfficeHours::default()).unwrap();
    let catalog = Catalog::embedded().unwrap();
    let as_of = T0 + as_of_h * HOUR;
    let mut syms = Interner::default();
    let mut names = |prefix: &str, n: usize| -> Vec<u32> {
        (0..n)
            .map(|i| syms.intern(Some(&format!("{prefix}{i}"))))
            .collect()
    };
    let (agencies, fields) = (names("A", 3), names("F", 3));
    // Procedures of the catalogue, so a dossier without a due date gets one.
    let procedures: Vec<u32> = ["1.001193", "2.000815", "1.009994", "9.999999"]
        .iter()
        .map(|c| syms.intern(Some(c)))
        .collect();
    let mut g = Grouper::new(&Period::ALL);
    let mut judged = Vec::new();
    for s in specs {
        let mut f = fact(s);
        f.procedure = procedures[s.codes.2];
        let j = judge(&f, &syms, &cal, &catalog, as_of);
        let codes = Codes {
            agency: agencies[s.codes.0],
            field: fields[s.codes.1],
            procedure: f.procedure,
        };
        g.add(codes, &j);
        judged.push(j);
    }
    let r: Rollups = g.base(&syms).with_rollups(local_date(as_of));
    let all: Vec<(&Option<String>, String, &sohoa_aggregator::model::MetricRow)> = r
        .rows
        .iter()
        .map(|m| (&m.agency_code, format!("p{:?}", m.procedure_code), m))
        .chain(
            r.fields
                .iter()
                .map(|f| (&f.row.agency_code, format!("f{}", f.field_code), &f.row)),
        )
        .collect();

    // 1. Every row balances.
    for (_, _, m) in &all {
        let c = &m.counts;
        prop_assert_eq!(
            c.carried_over + c.judged_received(),
            c.ended() + c.in_progress(),
            "{:?}",
            m
        );
    }
    // 2. Carried over = the previous period's in progress, for every group, over every
    // period (a period without a row counts zero).
    let mut groups: BTreeMap<(Period, &Option<String>, &String), BTreeMap<NaiveDate, &Counts>> =
        BTreeMap::new();
    for (a, code, m) in &all {
        groups
            .entry((m.period, *a, code))
            .or_default()
            .insert(m.period_start, &m.counts);
    }
    let zero = Counts::default();
    for ((p, _, _), rows) in &groups {
        let starts: Vec<NaiveDate> = r
            .periods
            .iter()
            .filter(|(q, _)| q == p)
            .map(|(_, s)| *s)
            .collect();
        for w in starts.windows(2) {
            let prev = rows.get(&w[0]).copied().unwrap_or(&zero);
            let next = rows.get(&w[1]).copied().unwrap_or(&zero);
            prop_assert_eq!(next.carried_over, prev.in_progress(), "{:?} {}", p, w[1]);
        }
        // Nothing is carried into a group's first period.
        let first = rows.values().next().unwrap();
        prop_assert_eq!(first.carried_over, 0);
    }
    // 3. The province's counts equal a count made dossier by dossier, in every period.
    let counted: Vec<&Judged> = judged
        .iter()
        .filter(|j| j.counted && j.received_at.is_some() && j.on_time.is_some())
        .collect();
    for &(p, start) in &r.periods {
        let row = r
            .rows
            .iter()
            .find(|m| m.period == p && m.period_start == start && m.agency_code.is_none());
        let got = row.map_or([0; 5], |m| progress(&m.counts));
        prop_assert_eq!(got, by_dossier(&counted, p, start), "{:?} {}", p, start);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_row_balances_and_each_period_carries_the_last_ones_backlog(
        specs in proptest::collection::vec(spec(), 1..40),
        as_of_h in (24 * 200i64)..(24 * 520),
    ) {
        check(&specs, as_of_h)?;
    }
}
