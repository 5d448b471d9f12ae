//! The base counts every fold part and shard adds up to, and their rollups: agencies,
//! provinces and fields, each walked through the backlog, with names from the agency
//! reference.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;

use crate::agencies::{Agencies, AgencyId};
use crate::backlog;
use crate::model::{Counts, FieldRow, MetricRow, Period, View};

/// Group key with codes as text: view, period, start, agency, field, procedure.
pub type BaseKey = (
    View,
    Period,
    NaiveDate,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Counts by view × period × agency × field × procedure, before rollups. Adds up across
/// shards.
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
/// rollups, and the field rollups, in both views; and every period they span, without
/// gaps.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rollups {
    pub rows: Vec<MetricRow>,
    pub fields: Vec<FieldRow>,
    pub periods: Vec<(Period, NaiveDate)>,
}

/// A rollup group: view, period, province, agency (`None`: the province's rollup; inner
/// `None` never occurs, the base names a missing agency), and procedure or field.
type Group = (
    View,
    Period,
    Option<String>,
    Option<Option<String>>,
    Option<String>,
);
type Flows = BTreeMap<NaiveDate, Counts>;
type RowKey = (
    View,
    Period,
    NaiveDate,
    Option<String>,
    Option<Option<String>>,
    Option<String>,
);

/// Names and provinces of codes from the reference, looked up once per code.
struct Names<'a> {
    agencies: &'a Agencies,
    ids: HashMap<String, Option<AgencyId>>,
}

impl<'a> Names<'a> {
    fn id(&mut self, code: &str) -> Option<AgencyId> {
        if let Some(id) = self.ids.get(code) {
            return *id;
        }
        let id = self.agencies.id(code);
        self.ids.insert(code.to_string(), id);
        id
    }

    /// The province of an agency code (unknown codes: the configured province).
    fn province(&mut self, code: &str) -> Option<String> {
        let id = self.id(code);
        let a = self.agencies;
        a.province_of(id).map(|p| a.code(p).to_string())
    }

    /// A code's name: as it was on `on`, or the current unit's.
    fn name(&mut self, view: View, code: &str, on: NaiveDate) -> Option<String> {
        let id = self.id(code)?;
        let name = match view {
            View::AsWas => self.agencies.name_on(id, on),
            View::Restated => self.agencies.name(id),
        };
        Some(name.to_string())
    }
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

    /// The agency codes the base holds that the reference lacks.
    pub fn unknown_agencies(&self, agencies: &Agencies) -> Vec<String> {
        let mut out: Vec<String> = self
            .rows
            .keys()
            .filter_map(|k| k.3.clone())
            .filter(|c| agencies.id(c).is_none())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Base rows summed over fields (agency × procedure), plus agency rollups (procedure
    /// empty) and province rollups (both empty), ordered by view, period, start,
    /// province, agency and procedure (rollups first); and the field rollups, within each
    /// agency and across a province's agencies (agency empty), ordered the same way by
    /// field. Every agency belongs to its province in the reference (unknown ones to the
    /// configured province). The backlog is carried through every period up to the one
    /// holding `as_of` (or the last with a flow, if later); `periods` lists them all, per
    /// kind, without gaps.
    pub fn with_rollups(&self, as_of: NaiveDate, agencies: &Agencies) -> Rollups {
        let mut names = Names {
            agencies,
            ids: HashMap::new(),
        };
        // Flows by group, then by period start. The outer `Option` of the agency sorts the
        // province (None) first, and a `None` procedure sorts an agency's rollup before
        // its detail rows.
        let mut main: BTreeMap<Group, Flows> = BTreeMap::new();
        let mut fields: BTreeMap<Group, Flows> = BTreeMap::new();
        let mut span: BTreeMap<Period, (NaiveDate, NaiveDate)> = BTreeMap::new();
        for ((view, p, start, agency, field, procedure), c) in &self.rows {
            let province = agency.as_deref().and_then(|a| names.province(a));
            let add = |map: &mut BTreeMap<Group, Flows>, a: Option<Option<String>>, x| {
                map.entry((*view, *p, province.clone(), a, x))
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
        let walk = |groups: BTreeMap<Group, Flows>| -> BTreeMap<RowKey, Counts> {
            let mut out = BTreeMap::new();
            for ((view, p, province, agency, code), flows) in groups {
                for (start, c) in backlog::carry(p, &flows, horizon(p)) {
                    let key = (
                        view,
                        p,
                        start,
                        province.clone(),
                        agency.clone(),
                        code.clone(),
                    );
                    out.insert(key, c);
                }
            }
            out
        };
        let mut row = |view: View,
                       period: Period,
                       period_start: NaiveDate,
                       province: Option<String>,
                       agency: Option<String>,
                       counts: Counts| {
            let on = period.last_day(period_start);
            MetricRow {
                period,
                period_start,
                view,
                province_name: province.as_deref().and_then(|p| names.name(view, p, on)),
                province_code: province,
                agency_name: agency.as_deref().and_then(|a| names.name(view, a, on)),
                agency_code: agency,
                procedure_code: None,
                procedure_name: None,
                counts,
            }
        };
        let rows: Vec<MetricRow> = walk(main)
            .into_iter()
            .map(|((view, p, start, province, agency, procedure), counts)| {
                let mut r = row(view, p, start, province, agency.flatten(), counts);
                r.procedure_name = procedure.as_ref().and_then(|c| self.names.get(c).cloned());
                r.procedure_code = procedure;
                r
            })
            .collect();
        let fields = walk(fields)
            .into_iter()
            .filter_map(|((view, p, start, province, agency, field), counts)| {
                let field_code = field?;
                Some(FieldRow {
                    field_name: self.field_names.get(&field_code).cloned(),
                    field_code,
                    row: row(view, p, start, province, agency.flatten(), counts),
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
