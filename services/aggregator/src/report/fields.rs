//! Fields ("lĩnh vực", `MaLinhVuc`) ranked by on-time rate and by digitization rate, the
//! way provincial reviews name their problem areas: the province-wide field rollups of the
//! reference period, worst first, so the areas to act on lead.

use std::fmt::Write as _;

use chrono::NaiveDate;

use super::{clean_terminal, esc, num, pct, Band, ReportInput};
use crate::metrics::MISSING_CODE;
use crate::model::{Counts, FieldRow, Period};

/// One field of the ranking.
struct Line<'a> {
    code: &'a str,
    name: Option<&'a str>,
    counts: &'a Counts,
}

impl Line<'_> {
    fn label(&self) -> String {
        match (self.code, self.name) {
            (MISSING_CODE, _) => "(no field code)".to_string(),
            (code, Some(name)) if !name.trim().is_empty() => format!("{} ({code})", name.trim()),
            (code, _) => code.to_string(),
        }
    }
}

/// A ranking: what it measures, over what.
struct Measure {
    id: &'static str,
    heading: &'static str,
    noun: &'static str,
    rate: fn(&Counts) -> Option<f64>,
    n: fn(&Counts) -> u64,
}

const ON_TIME: Measure = Measure {
    id: "fields-ontime",
    heading: "Fields by on-time rate",
    noun: "to process",
    rate: Counts::on_time_rate,
    n: Counts::ontime_total,
};

const DIGITIZATION: Measure = Measure {
    id: "fields-digitization",
    heading: "Fields by digitization rate",
    noun: "received",
    rate: Counts::digitization_rate,
    n: |c| c.received,
};

/// The province-wide field rows of one period that have something to rate, lowest rate
/// first (ties: more dossiers first, then by code).
fn ranked<'a>(
    fields: &'a [FieldRow],
    key: (Period, NaiveDate),
    m: &Measure,
) -> Vec<(Line<'a>, f64)> {
    let mut v: Vec<(Line, f64)> = fields
        .iter()
        .filter(|f| f.row.agency_code.is_none() && (f.row.period, f.row.period_start) == key)
        .filter_map(|f| {
            let rate = (m.rate)(&f.row.counts)?;
            Some((
                Line {
                    code: &f.field_code,
                    name: f.field_name.as_deref(),
                    counts: &f.row.counts,
                },
                rate,
            ))
        })
        .collect();
    v.sort_by(|(a, ra), (b, rb)| {
        ra.total_cmp(rb)
            .then_with(|| (m.n)(b.counts).cmp(&(m.n)(a.counts)))
            .then_with(|| a.code.cmp(b.code))
    });
    v
}

/// The two rankings side by side, for the report's reference period.
pub(super) fn html(o: &mut String, input: &ReportInput, key: Option<(Period, NaiveDate)>) {
    let Some(key) = key else { return };
    o.push_str("<div class=\"grid-2\">\n");
    for m in [ON_TIME, DIGITIZATION] {
        let lines = ranked(input.fields, key, &m);
        let _ = write!(
            o,
            "<figure id=\"{}\">\n<h2>{} · {}</h2>\n<p class=\"figure-note\">Province-wide, lowest first: the fields to act on lead.</p>\n",
            m.id,
            m.heading,
            esc(&key.0.label(key.1))
        );
        if lines.is_empty() {
            o.push_str("<p class=\"no-data\">No data: no field codes (MaLinhVuc) in this period.</p>\n</figure>\n");
            continue;
        }
        let _ = write!(
            o,
            "<div class=\"table-wrap\"><table class=\"scorecard\">\n<thead><tr><th scope=\"col\">#</th><th scope=\"col\" class=\"name\">Field</th><th scope=\"col\">Dossiers {}</th><th scope=\"col\">Rate</th></tr></thead>\n<tbody>\n",
            m.noun
        );
        for (i, (l, rate)) in lines.iter().enumerate() {
            let _ = writeln!(
                o,
                "<tr class=\"field-row\" data-code=\"{}\" data-rate=\"{rate}\"><td>{}</td><th scope=\"row\">{}</th><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(l.code),
                i + 1,
                esc(&l.label()),
                num((m.n)(l.counts)),
                Band::of(Some(*rate)).class(),
                pct(Some(*rate))
            );
        }
        o.push_str("</tbody></table></div>\n</figure>\n");
    }
    o.push_str("</div>\n");
}

/// The three lowest fields of each ranking, one line each, for the terminal.
pub(super) fn terminal(o: &mut String, input: &ReportInput, key: Option<(Period, NaiveDate)>) {
    let Some(key) = key else { return };
    for m in [ON_TIME, DIGITIZATION] {
        let lines = ranked(input.fields, key, &m);
        if lines.is_empty() {
            continue;
        }
        let shown: Vec<String> = lines
            .iter()
            .take(3)
            .map(|(l, r)| format!("{} {}", clean_terminal(&l.label()), pct(Some(*r))))
            .collect();
        let _ = writeln!(o, "{}, lowest first: {}", m.heading, shown.join(" · "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MetricRow, View};

    fn field(code: &str, name: Option<&str>, agency: Option<&str>, c: Counts) -> FieldRow {
        FieldRow {
            field_code: code.to_string(),
            field_name: name.map(str::to_string),
            row: MetricRow {
                period: Period::Year,
                period_start: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
                view: View::Restated,
                province_code: None,
                province_name: None,
                agency_code: agency.map(str::to_string),
                agency_name: None,
                procedure_code: None,
                procedure_name: None,
                counts: c,
            },
        }
    }

    fn c(ok: u64, late: u64, received: u64, digitized: u64) -> Counts {
        Counts {
            on_time: ok,
            late,
            received,
            digitized,
            ..Counts::default()
        }
    }

    #[test]
    fn fields_rank_lowest_first_by_each_rate_province_wide() {
        let fields = vec![
            field("HTTP", Some("Hộ tịch"), None, c(95, 5, 100, 90)),
            field("DD", Some("Đất đai"), None, c(60, 40, 100, 30)),
            field("CT", None, None, c(80, 20, 50, 45)),
            // Within an agency: not in the province ranking.
            field("DD", Some("Đất đai"), Some("A"), c(0, 10, 10, 0)),
        ];
        let key = (Period::Year, NaiveDate::from_ymd_opt(2025, 1, 1).unwrap());
        let codes = |m: &Measure| -> Vec<(String, f64)> {
            ranked(&fields, key, m)
                .iter()
                .map(|(l, r)| (l.label(), *r))
                .collect()
        };
        assert_eq!(
            codes(&ON_TIME),
            [
                ("Đất đai (DD)".to_string(), 0.6),
                ("CT".to_string(), 0.8),
                ("Hộ tịch (HTTP)".to_string(), 0.95)
            ]
        );
        assert_eq!(
            codes(&DIGITIZATION),
            [
                ("Đất đai (DD)".to_string(), 0.3),
                ("Hộ tịch (HTTP)".to_string(), 0.9),
                ("CT".to_string(), 0.9)
            ]
        );
    }
}
