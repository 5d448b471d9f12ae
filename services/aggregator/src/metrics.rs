//! Group judged dossiers into counts by period × agency × field × procedure, then roll
//! them up: agency × procedure, agencies, the province, and each field within each agency
//! and across agencies.
//!
//! A dossier counts in a period when it was received in it, or its clock ended in it
//! (766's "received or processed in the period"): received there, it adds to the
//! received-based rates (online, digitization, e-result, reuse, payment); ended there, to
//! early, on time or late; received there and still open at the period's end, to in
//! progress in time or overdue, judged at that end.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::fold::{FxMap, Interner, Sym};
use crate::model::{Counts, FieldRow, MetricRow, Period};
use crate::rules::{local_date, Judged, OnTime};

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
    as_of: i64,
    groups: FxMap<(Period, NaiveDate, Codes), Counts>,
}

fn bump(c: &mut Counts, class: OnTime) {
    match class {
        OnTime::Early => c.early += 1,
        OnTime::OnTime => c.on_time += 1,
        OnTime::Late => c.late += 1,
        OnTime::InProgressInTime => c.in_progress_in_time += 1,
        OnTime::InProgressOverdue => c.in_progress_overdue += 1,
    }
}

impl Grouper {
    pub fn new(periods: &[Period], as_of: i64) -> Self {
        Grouper {
            periods: periods.to_vec(),
            as_of,
            groups: FxMap::default(),
        }
    }

    pub fn add(&mut self, codes: Codes, j: &Judged) {
        if !j.counted {
            return;
        }
        for &p in &self.periods {
            if let Some(r) = j.received_at {
                let start = p.start_of(local_date(r));
                let c = self.groups.entry((p, start, codes)).or_default();
                c.received += 1;
                c.online_received += u64::from(j.online);
                c.digitized += u64::from(j.digitized);
                c.e_result_eligible += u64::from(j.e_result_eligible);
                c.e_result += u64::from(j.e_result);
                c.reused += u64::from(j.reused);
                c.fee_bearing += u64::from(j.fee_bearing);
                c.paid_online += u64::from(j.paid_online);
                if let Some(class) = j.open_class_at(p.last_day(start), self.as_of) {
                    bump(c, class);
                }
            }
            if let (Some(e), Some(class)) = (j.end_at, j.ended_class()) {
                let start = p.start_of(local_date(e));
                bump(self.groups.entry((p, start, codes)).or_default(), class);
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
/// rollups, and the field rollups.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rollups {
    pub rows: Vec<MetricRow>,
    pub fields: Vec<FieldRow>,
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
    /// agencies (agency empty), ordered by period, start, agency and field.
    pub fn with_rollups(&self) -> Rollups {
        let names = &self.names;
        // The outer `Option` of the agency sorts the province rollup (None) first, and a
        // `None` procedure sorts an agency's rollup before its detail rows.
        type RollupKey = (Period, NaiveDate, Option<Option<String>>, Option<String>);
        let mut all: BTreeMap<RollupKey, Counts> = BTreeMap::new();
        let mut fields: BTreeMap<RollupKey, Counts> = BTreeMap::new();
        for ((p, start, agency, field, procedure), c) in &self.rows {
            let detail = (*p, *start, Some(agency.clone()), procedure.clone());
            all.entry(detail).or_default().add(c);
            if procedure.is_some() {
                all.entry((*p, *start, Some(agency.clone()), None))
                    .or_default()
                    .add(c);
            }
            all.entry((*p, *start, None, None)).or_default().add(c);
            for a in [Some(agency.clone()), None] {
                fields
                    .entry((*p, *start, a, field.clone()))
                    .or_default()
                    .add(c);
            }
        }
        let rows = all
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
        let fields = fields
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
        Rollups { rows, fields }
    }
}
