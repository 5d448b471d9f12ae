//! What the holiday table could not settle: provisional years in the report's span, and
//! dossiers set aside for years it lacks. Shown so that nobody reads a provisional year's
//! on-time rate as final.

use std::fmt::Write as _;

use super::{esc, group, ReportInput};
use crate::model::CalendarNotes;

/// The calendar notice's style.
pub(super) const CSS: &str = r#"
.calendar-notes { border: 1px solid var(--warn); border-left: 5px solid var(--warn); background: #fffbea; border-radius: 6px; padding: 8px 12px; margin: 0 0 18px; }
.calendar-notes p { margin: 2px 0; }
"#;

/// The years the report's rows span (period starts and ends), if any.
fn span(input: &ReportInput) -> Option<(i32, i32)> {
    use chrono::Datelike;
    let years = input.rows.iter().flat_map(|r| {
        [
            r.period_start.year(),
            r.period.last_day(r.period_start).year(),
        ]
    });
    let (lo, hi) = years.fold((i32::MAX, i32::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    (lo <= hi).then_some((lo, hi))
}

/// One sentence per provisional year in the report's span and per missing year.
pub(super) fn lines(input: &ReportInput, notes: &CalendarNotes) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((lo, hi)) = span(input) {
        for (year, why) in notes.provisional.range(lo..=hi) {
            out.push(format!(
                "Working days in {year} are provisional: {why} Figures that depend on them may change."
            ));
        }
    }
    for (year, n) in &notes.missing {
        out.push(format!(
            "{} dossier(s) set aside, not judged: judging them needs {year}, which the holiday table does not have (calendar_missing in quality/).",
            group(*n, " ")
        ));
    }
    out
}

/// The notice at the top of the report, when there is anything to say.
pub(super) fn html(o: &mut String, input: &ReportInput) {
    let lines = lines(input, input.calendar);
    if lines.is_empty() {
        return;
    }
    o.push_str("<section class=\"calendar-notes\" id=\"calendar-notes\" aria-label=\"Holiday calendar\">\n");
    for l in lines {
        let _ = writeln!(o, "<p>{}</p>", esc(&l));
    }
    o.push_str("</section>\n");
}

/// The same, one line each, for the terminal.
pub(super) fn terminal(o: &mut String, input: &ReportInput) {
    for l in lines(input, input.calendar) {
        let _ = writeln!(o, "Calendar: {l}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::NaiveDate;

    use super::*;
    use crate::model::{Counts, MetricRow, Period, View};

    static NAMES: BTreeMap<String, String> = BTreeMap::new();

    fn input<'a>(rows: &'a [MetricRow], notes: &'a CalendarNotes) -> ReportInput<'a> {
        ReportInput {
            title: "T",
            generated_at: "g",
            as_of: "a",
            rows,
            scorecards: &[],
            agency_names: &NAMES,
            min_dossiers: 1,
            calendar: notes,
            fields: &[],
            breaks: &[],
            events_version: None,
        }
    }

    fn year_row(y: i32) -> MetricRow {
        MetricRow {
            period: Period::Year,
            period_start: NaiveDate::from_ymd_opt(y, 1, 1).unwrap(),
            view: View::Restated,
            province_code: None,
            province_name: None,
            agency_code: None,
            agency_name: None,
            procedure_code: None,
            procedure_name: None,
            counts: Counts {
                received: 1,
                ..Counts::default()
            },
        }
    }

    #[test]
    fn provisional_years_in_the_span_and_missing_years_are_named() {
        let notes = CalendarNotes {
            provisional: BTreeMap::from([(2027, "Tết not announced.".to_string())]),
            missing: BTreeMap::from([(2021, 1200)]),
        };
        let rows = [year_row(2026), year_row(2027)];
        let got = lines(&input(&rows, &notes), &notes);
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with("Working days in 2027 are provisional: Tết not announced."));
        assert!(
            got[1].starts_with("1 200 dossier(s) set aside"),
            "{}",
            got[1]
        );
        assert!(got[1].contains("2021"));
        let mut html_out = String::new();
        html(&mut html_out, &input(&rows, &notes));
        assert!(html_out.contains("id=\"calendar-notes\""));
        assert!(html_out.contains("Working days in 2027 are provisional"));
        // A report of 2025 and 2026 alone does not flag 2027.
        let rows = [year_row(2025), year_row(2026)];
        let notes = CalendarNotes {
            missing: BTreeMap::new(),
            ..notes
        };
        assert!(lines(&input(&rows, &notes), &notes).is_empty());
        let mut html_out = String::new();
        html(&mut html_out, &input(&rows, &notes));
        assert!(html_out.is_empty());
    }
}
