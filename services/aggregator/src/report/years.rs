//! Year on year, unit by unit: each of today's units (the restated view) with its
//! figures for every year the run holds, so a year before a reorganization compares with
//! the years after it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate};

use super::{display_name, esc, num, pct, Band, ReportInput};
use crate::model::{Counts, Period};

/// One unit's counts by year.
type ByYear = BTreeMap<i32, Counts>;

/// Each unit's year rollups (agency code; `None` for the province), and the years.
fn table(input: &ReportInput) -> (BTreeMap<Option<String>, ByYear>, BTreeSet<i32>) {
    let mut units: BTreeMap<Option<String>, ByYear> = BTreeMap::new();
    let mut years = BTreeSet::new();
    for r in input.rows {
        if r.period != Period::Year || r.procedure_code.is_some() || r.counts == Counts::default() {
            continue;
        }
        let year = r.period_start.year();
        years.insert(year);
        units
            .entry(r.agency_code.clone())
            .or_default()
            .entry(year)
            .or_default()
            .add(&r.counts);
    }
    (units, years)
}

/// The table: units by name, the province last; per year, dossiers received, the on-time
/// rate and the digitization rate.
pub(super) fn html(o: &mut String, input: &ReportInput) {
    let (units, years) = table(input);
    if years.is_empty() {
        return;
    }
    let breaks: Vec<NaiveDate> = input.breaks.iter().map(|b| b.0).collect();
    let _ = write!(
        o,
        "<figure id=\"years-compared\">\n<h2>Year on year · today's units</h2>\n\
         <p class=\"figure-note\">Every agency as the unit it is today: the figures of the agencies it succeeded are restated into it (a split agency's dossiers go to the successor that took them, or are shared out as the agency reference says), so the years before a reorganization compare with the years after it, unit by unit."
    );
    if let (Some(first), Some(last)) = (breaks.first(), breaks.last()) {
        let _ = write!(
            o,
            " Reorganizations in the reference: {}.",
            if first == last {
                first.format("%-d %B %Y").to_string()
            } else {
                breaks
                    .iter()
                    .map(|d| d.format("%-d %B %Y").to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    o.push_str("</p>\n<div class=\"table-wrap\"><table class=\"scorecard years\">\n<thead><tr><th scope=\"col\" rowspan=\"2\" class=\"name\">Unit</th>");
    for y in &years {
        let _ = write!(o, "<th scope=\"colgroup\" colspan=\"3\">{y}</th>");
    }
    o.push_str("</tr>\n<tr>");
    for _ in &years {
        o.push_str("<th scope=\"col\">Received</th><th scope=\"col\">On time</th><th scope=\"col\">Digitized</th>");
    }
    o.push_str("</tr>\n</thead>\n<tbody>\n");
    let mut lines: Vec<(String, &Option<String>, &ByYear)> = units
        .iter()
        .filter_map(|(code, by_year)| {
            let code_ref = code.as_deref()?;
            Some((display_name(input.agency_names, code_ref), code, by_year))
        })
        .collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    if let Some(p) = units.get(&None) {
        let name = match input.title.trim() {
            "" => "Province".to_string(),
            t => t.to_string(),
        };
        lines.push((name, &None, p));
    }
    for (name, code, by_year) in lines {
        let class = if code.is_none() {
            " class=\"province\""
        } else {
            ""
        };
        let _ = write!(
            o,
            "<tr{class} data-code=\"{}\"><th scope=\"row\">{}</th>",
            esc(code.as_deref().unwrap_or("")),
            esc(&name)
        );
        for y in &years {
            match by_year.get(y) {
                Some(c) => {
                    let (ontime, digit) = (c.on_time_rate(), c.digitization_rate());
                    let _ = write!(
                        o,
                        "<td data-year=\"{y}\">{}</td><td class=\"{}\">{}</td><td class=\"{}\">{}</td>",
                        num(c.received),
                        Band::of(ontime).class(),
                        pct(ontime),
                        Band::of(digit).class(),
                        pct(digit)
                    );
                }
                None => {
                    let _ = write!(o, "<td data-year=\"{y}\">—</td><td>—</td><td>—</td>");
                }
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table></div>\n</figure>\n");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{MetricRow, View};

    fn year(y: i32, agency: Option<&str>, received: u64, early: u64, late: u64) -> MetricRow {
        MetricRow {
            period: Period::Year,
            period_start: NaiveDate::from_ymd_opt(y, 1, 1).unwrap(),
            view: View::Restated,
            province_code: Some("P".into()),
            province_name: Some("Tỉnh Đồng Tháp".into()),
            agency_code: agency.map(str::to_string),
            agency_name: None,
            procedure_code: None,
            procedure_name: None,
            counts: Counts {
                received,
                digitized: received / 2,
                early,
                late,
                ..Counts::default()
            },
        }
    }

    #[test]
    fn each_unit_has_every_year_and_the_province_comes_last() {
        // The ward exists from 2025 but is restated back into 2024 through its predecessors;
        // the department has no 2025 figures.
        let rows = [
            year(2024, Some("W"), 10, 8, 2),
            year(2025, Some("W"), 12, 12, 0),
            year(2024, Some("D"), 4, 3, 1),
            year(2024, None, 14, 11, 3),
            year(2025, None, 12, 12, 0),
        ];
        let names = BTreeMap::from([
            ("W".to_string(), "UBND phường Mỹ Tho".to_string()),
            ("D".to_string(), "Sở Tư pháp".to_string()),
        ]);
        let breaks = [(NaiveDate::from_ymd_opt(2025, 7, 1).unwrap(), 32)];
        let input = ReportInput {
            title: "Tỉnh Đồng Tháp",
            generated_at: "g",
            as_of: "a",
            rows: &rows,
            scorecards: &[],
            agency_names: &names,
            min_dossiers: 1,
            calendar: &crate::model::NO_CALENDAR_NOTES,
            fields: &[],
            breaks: &breaks,
            events_version: None,
        };
        let mut h = String::new();
        html(&mut h, &input);
        assert!(
            h.contains("Reorganizations in the reference: 1 July 2025."),
            "{h}"
        );
        assert!(h.contains("<th scope=\"colgroup\" colspan=\"3\">2024</th><th scope=\"colgroup\" colspan=\"3\">2025</th>"));
        let body: Vec<&str> = h
            .lines()
            .filter(|l| l.starts_with("<tr") && l.contains("data-code"))
            .collect();
        assert_eq!(body.len(), 3, "{h}");
        // By name: Sở Tư pháp, then the ward; the province last.
        assert!(body[0].starts_with("<tr data-code=\"D\"><th scope=\"row\">Sở Tư pháp</th><td data-year=\"2024\">4</td><td class=\"band-bad\">75.0%</td><td class=\"band-bad\">50.0%</td><td data-year=\"2025\">—</td>"), "{}", body[0]);
        assert!(body[1].contains("UBND phường Mỹ Tho</th><td data-year=\"2024\">10</td><td class=\"band-warn\">80.0%</td>"), "{}", body[1]);
        assert!(
            body[1].contains("<td data-year=\"2025\">12</td><td class=\"band-good\">100.0%</td>"),
            "{}",
            body[1]
        );
        assert!(body[2].starts_with("<tr class=\"province\" data-code=\"\"><th scope=\"row\">Tỉnh Đồng Tháp</th><td data-year=\"2024\">14</td>"), "{}", body[2]);
    }

    #[test]
    fn nothing_without_year_rows() {
        let rows: [MetricRow; 0] = [];
        let names = BTreeMap::new();
        let input = ReportInput {
            title: "",
            generated_at: "g",
            as_of: "a",
            rows: &rows,
            scorecards: &[],
            agency_names: &names,
            min_dossiers: 1,
            calendar: &crate::model::NO_CALENDAR_NOTES,
            fields: &[],
            breaks: &[],
            events_version: None,
        };
        let mut h = String::new();
        html(&mut h, &input);
        assert!(h.is_empty());
    }
}
