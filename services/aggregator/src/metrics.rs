//! Group judged dossiers into counts by period × agency × field × procedure, then roll
//! them up: agency × procedure, agencies, the province, and each field within each agency
//! and across agencies.
//!
//! Periods are local Vietnam dates (UTC+7): a period runs from 00:00 on its first day to
//! the end of its last. Per dossier and period kind, the grouping records flows only:
//! - in the period of its receipt date, the received-based counts (online, digitization,
//!   e-result, reuse, payment), and, if the rules judge it, its channel;
//! - in the period of the clock's end (never before the receipt date), resolved early, on
//!   time or late, withdrawn, or stopped or refused;
//! - in the period whose end first finds it open and overdue, `overdue_in`, and, if it
//!   ends later, `overdue_out` in the period of its end.
//!
//! [`crate::backlog`] then carries the open dossiers from period to period.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::backlog;
use crate::fold::{FxMap, Interner, Sym, CHANNEL_IN_PERSON, CHANNEL_ONLINE, CHANNEL_POSTAL};
use crate::model::{Counts, FieldRow, MetricRow, Period};
use crate::rules::{local_date, EndReason, Judged, OnTime};

/// Stands for a code the events did not carry, so such dossiers are not mistaken for a
/// rollup row.
pub const MISSING_CODE: &str = "(none)";

/// The codes a dossier is grouped by: agency, field, procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codes {
    pub agency: Sym,
    pub field: Sym,
    pub procedure: Sym,
}

/// The additive base: counts by (period, start, agency, field, procedure).
#[derive(Debug, Default)]
pub struct Grouper {
    periods: Vec<Period>,
    groups: FxMap<(Period, NaiveDate, Codes), Counts>,
}

/// The counts of `codes` in the period of kind `p` holding `d`.
fn at(
    groups: &mut FxMap<(Period, NaiveDate, Codes), Counts>,
    p: Period,
    d: NaiveDate,
    codes: Codes,
) -> &mut Counts {
    groups.entry((p, p.start_of(d), codes)).or_default()
}

impl Grouper {
    pub fn new(periods: &[Period]) -> Self {
        Grouper {
            periods: periods.to_vec(),
            groups: FxMap::default(),
        }
    }

    pub fn add(&mut self, codes: Codes, j: &Judged) {
        let (true, Some(r)) = (j.counted, j.received_at) else {
            return;
        };
        let received = local_date(r);
        // The clock cannot end before it started: an end dated before the receipt (a
        // data error `quality/` counts) ends on the receipt date.
        let ended = j.end_at.map(|e| local_date(e).max(received));
        let groups = &mut self.groups;
        for &p in &self.periods {
            let c = at(groups, p, received, codes);
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
            if let Some(end) = ended {
                let c = at(groups, p, end, codes);
                match (j.end_reason, class) {
                    (Some(EndReason::Withdrawn), _) => c.withdrawn += 1,
                    (Some(EndReason::Stopped | EndReason::Refused), _) => c.stopped_or_refused += 1,
                    (_, OnTime::Early) => c.early += 1,
                    (_, OnTime::OnTime) => c.on_time += 1,
                    _ => c.late += 1,
                }
            }
            if let Some(from) = j.overdue_from {
                let (turns, ends) = (p.start_of(from.max(received)), ended.map(|e| p.start_of(e)));
                if ends.is_none_or(|e| turns < e) {
                    at(groups, p, from.max(received), codes).overdue_in += 1;
                    if let Some(end) = ended {
                        at(groups, p, end, codes).overdue_out += 1;
                    }
                }
            }
        }
    }

    /// The base rows, with codes resolved: what shards write and merges add up.
    pub fn base(&self, syms: &Interner) -> Base {
        let mut out = Base::default();
        for (&(p, start, codes), c) in &self.groups {
            // Empty codes mean "rollup" in the output, so a missing code gets a name.
            let code = |s: Sym| Some(syms.get(s).unwrap_or(MISSING_CODE).to_owned());
            let key = (
                p,
                start,
                code(codes.agency),
                code(codes.field),
                code(codes.procedure),
            );
            out.rows.entry(key).or_default().add(c);
        }
        out
    }
}

/// Group key with codes as text: period, start, agency, field, procedure.
pub type BaseKey = (
    Period,
    NaiveDate,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Counts by period × agency × field × procedure, before rollups. Adds up across shards.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Base {
    pub rows: BTreeMap<BaseKey, Counts>,
    /// Procedure code to name, as the events spell it (the smallest spelling wins, so
    /// every shard picks the same).
    pub names: BTreeMap<String, String>,
    /// Field code to name, the same way.
    pub field_names: BTreeMap<String, String>,
}

/// Keep the smallest spelling of a name, so every shard and every order picks the same.
fn add_name(names: &mut BTreeMap<String, String>, code: String, name: String) {
    match names.get_mut(&code) {
        Some(n) if name < *n => *n = name,
        Some(_) => {}
        None => {
            names.insert(code, name);
        }
    }
}

/// The metric rows of a run: agency × procedure rows with the agency and province
/// rollups, and the field rollups; and every period they span, without gaps.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rollups {
    pub rows: Vec<MetricRow>,
    pub fields: Vec<FieldRow>,
    pub periods: Vec<(Period, NaiveDate)>,
}

impl Base {
    pub fn merge(&mut self, other: Base) {
        for (k, c) in other.rows {
            self.rows.entry(k).or_default().add(&c);
        }
        for (code, name) in other.names {
            self.add_name(code, name);
        }
        for (code, name) in other.field_names {
            self.add_field_name(code, name);
        }
    }

    pub fn add_name(&mut self, code: String, name: String) {
        add_name(&mut self.names, code, name);
    }

    pub fn add_field_name(&mut self, code: String, name: String) {
        add_name(&mut self.field_names, code, name);
    }

    /// Base rows summed over fields (agency × procedure), plus agency rollups (procedure
    /// empty) and province rollups (both empty), ordered by period, start, agency and
    /// procedure (rollups first); and the field rollups, within each agency and across
    /// agencies (agency empty), ordered by period, start, agency and field. The backlog is
    /// carried through every period up to the one holding `as_of` (or the last with a
    /// flow, if later); `periods` lists them all, per kind, without gaps.
    pub fn with_rollups(&self, as_of: NaiveDate) -> Rollups {
        // Flows by group, then by period start. The outer `Option` of the agency sorts the
        // province (None) first, and a `None` procedure sorts an agency's rollup before
        // its detail rows.
        type Group = (Period, Option<Option<String>>, Option<String>);
        type Flows = BTreeMap<NaiveDate, Counts>;
        let mut main: BTreeMap<Group, Flows> = BTreeMap::new();
        let mut fields: BTreeMap<Group, Flows> = BTreeMap::new();
        let mut span: BTreeMap<Period, (NaiveDate, NaiveDate)> = BTreeMap::new();
        for ((p, start, agency, field, procedure), c) in &self.rows {
            let add = |map: &mut BTreeMap<Group, Flows>, a: Option<Option<String>>, x| {
                map.entry((*p, a, x))
                    .or_default()
                    .entry(*start)
                    .or_default()
                    .add(c)
            };
            add(&mut main, Some(agency.clone()), procedure.clone());
            if procedure.is_some() {
                add(&mut main, Some(agency.clone()), None);
            }
            add(&mut main, None, None);
            add(&mut fields, Some(agency.clone()), field.clone());
            add(&mut fields, None, field.clone());
            let s = span.entry(*p).or_insert((*start, *start));
            s.0 = s.0.min(*start);
            s.1 = s.1.max(*start);
        }
        let horizon = |p: Period| span[&p].1.max(p.start_of(as_of));
        type RowKey = (Period, NaiveDate, Option<Option<String>>, Option<String>);
        let walk = |groups: BTreeMap<Group, Flows>| -> BTreeMap<RowKey, Counts> {
            let mut out = BTreeMap::new();
            for ((p, agency, code), flows) in groups {
                for (start, c) in backlog::carry(p, &flows, horizon(p)) {
                    out.insert((p, start, agency.clone(), code.clone()), c);
                }
            }
            out
        };
        let names = &self.names;
        let rows = walk(main)
            .into_iter()
            .map(
                |((period, period_start, agency, procedure), counts)| MetricRow {
                    period,
                    period_start,
                    agency_code: agency.flatten(),
                    procedure_name: procedure.as_ref().and_then(|p| names.get(p).cloned()),
                    procedure_code: procedure,
                    counts,
                },
            )
            .collect();
        let fields = walk(fields)
            .into_iter()
            .filter_map(|((period, period_start, agency, field), counts)| {
                let field_code = field?;
                Some(FieldRow {
                    field_name: self.field_names.get(&field_code).cloned(),
                    field_code,
                    row: MetricRow {
                        period,
                        period_start,
                        agency_code: agency.flatten(),
                        procedure_code: None,
                        procedure_name: None,
                        counts,
                    },
                })
            })
            .collect();
        let mut periods = Vec::new();
        for (&p, &(first, _)) in &span {
            let mut s = Some(first);
            while let Some(start) = s.filter(|s| *s <= horizon(p)) {
                periods.push((p, start));
                s = backlog::next_start(p, start);
            }
        }
        Rollups {
            rows,
            fields,
            periods,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The README's worked example of the progress table ("Carried-over dossiers").
    use super::*;
    use crate::calendar::{Calendar, OfficeHours};
    use crate::catalog::Catalog;
    use crate::fold::{EventKey, Fact, CHANNEL_POSTAL};
    use crate::rules::judge;

    fn vn(s: &str) -> i64 {
        let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        (t.and_utc().timestamp() - 7 * 3600) * 1_000_000
    }

    /// A dossier received at `received` through `channel`, due at `due`.
    fn fact(channel: u8, received: &str, due: &str) -> Fact {
        Fact {
            snapshot: Some(EventKey::default()),
            status: 4,
            channel,
            received_at: Some(vn(received)),
            due_at: Some(vn(due)),
            first_due: Some(vn(due)),
            ..Fact::default()
        }
    }

    #[test]
    fn a_january_dossier_still_open_in_march_is_carried_over_and_overdue_there() {
        let mut a = fact(CHANNEL_IN_PERSON, "2023-01-10 14:30", "2023-02-03 17:00");
        a.finished_at = Some(vn("2023-04-12 09:00"));
        let mut b = fact(CHANNEL_ONLINE, "2023-02-06 08:00", "2023-02-10 17:00");
        b.finished_at = Some(vn("2023-02-08 10:00"));
        let mut c = fact(CHANNEL_POSTAL, "2023-02-20 08:00", "2023-02-24 17:00");
        c.first_seen[0] = Some(vn("2023-02-21 09:00")); // withdrawn (7)
        let mut d = fact(CHANNEL_IN_PERSON, "2023-02-27 08:00", "2023-03-03 17:00");
        d.first_seen[1] = Some(vn("2023-02-28 09:00")); // stopped (8)

        let mut syms = Interner::default();
        let codes = Codes {
            agency: syms.intern(Some("000.00.30.H55")),
            field: syms.intern(Some("XD")),
            procedure: syms.intern(Some("1.009994")),
        };
        let hours = OfficeHours::default();
        let cal = Calendar::embedded(hours).unwrap();
        let catalog = Catalog::embedded().unwrap();
        let mut g = Grouper::new(&[Period::Month, Period::Year]);
        for f in [&a, &b, &c, &d] {
            g.add(
                codes,
                &judge(f, &syms, &cal, &catalog, vn("2023-04-30 12:00")),
            );
        }
        let r = g
            .base(&syms)
            .with_rollups(NaiveDate::from_ymd_opt(2023, 4, 30).unwrap());
        let province = |p: Period| -> Vec<(String, [u64; 10], Option<f64>)> {
            r.rows
                .iter()
                .filter(|m| m.period == p && m.agency_code.is_none())
                .map(|m| {
                    let c = &m.counts;
                    let row = [
                        c.carried_over,
                        c.judged_received(),
                        c.received_online,
                        c.early,
                        c.on_time,
                        c.late,
                        c.withdrawn,
                        c.stopped_or_refused,
                        c.in_progress_in_time,
                        c.in_progress_overdue,
                    ];
                    (p.label(m.period_start), row, c.on_time_rate())
                })
                .collect()
        };
        // carried, received, online, early, on time, late, withdrawn, stopped, in time,
        // overdue; the on-time rate.
        assert_eq!(
            province(Period::Month),
            [
                ("2023-01".into(), [0, 1, 0, 0, 0, 0, 0, 0, 1, 0], Some(1.0)),
                ("2023-02".into(), [1, 3, 1, 1, 0, 0, 1, 1, 0, 1], Some(0.5)),
                ("2023-03".into(), [1, 0, 0, 0, 0, 0, 0, 0, 0, 1], Some(0.0)),
                ("2023-04".into(), [1, 0, 0, 0, 0, 1, 0, 0, 0, 0], Some(0.0)),
            ]
        );
        assert_eq!(
            province(Period::Year),
            [("2023".into(), [0, 4, 1, 1, 0, 1, 1, 1, 0, 0], Some(0.5))]
        );
        // The field rows walk the same backlog.
        let xd_march = r
            .fields
            .iter()
            .find(|f| {
                f.row.agency_code.is_none() && Period::Month.label(f.row.period_start) == "2023-03"
            })
            .unwrap();
        assert_eq!(
            (
                xd_march.row.counts.carried_over,
                xd_march.row.counts.in_progress_overdue
            ),
            (1, 1)
        );
        // Every month up to April, without gaps, for the SQL to join.
        let months: Vec<String> = r
            .periods
            .iter()
            .filter(|(p, _)| *p == Period::Month)
            .map(|(p, s)| p.label(*s))
            .collect();
        assert_eq!(months, ["2023-01", "2023-02", "2023-03", "2023-04"]);
    }
}
