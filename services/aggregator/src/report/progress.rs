//! The progress table the way a province's report form lays it out ("báo cáo tình hình
//! giải quyết hồ sơ"): per agency, carried over from the last period, newly received (of
//! which online), handed over to it, resolved early, on time and late, withdrawn, stopped
//! or refused, handed over away, and still in progress, in time or overdue; the province
//! last. Both sides of each row are equal: carried over + new + handed over to it =
//! everything to the right of them.

use std::fmt::Write as _;

use chrono::NaiveDate;

use super::{
    clean_terminal, display_name, esc, group, num, pad_left, pad_right, pct, truncate, width, Band,
    ReportInput,
};
use crate::model::{Counts, MetricRow, Period};

/// One line of the table: a label and its counts.
struct Line {
    code: Option<String>,
    label: String,
    counts: Counts,
}

/// The agency rollups of the period, by code, then the province.
fn lines(input: &ReportInput, key: (Period, NaiveDate)) -> Vec<Line> {
    let in_key = |r: &&MetricRow| (r.period, r.period_start) == key && r.procedure_code.is_none();
    let mut out: Vec<Line> = input
        .rows
        .iter()
        .filter(in_key)
        .filter_map(|r| {
            let code = r.agency_code.as_deref()?;
            Some(Line {
                code: Some(code.to_string()),
                label: display_name(input.agency_names, code),
                counts: r.counts,
            })
        })
        .filter(|l| has_progress(&l.counts))
        .collect();
    if let Some(r) = input
        .rows
        .iter()
        .filter(in_key)
        .find(|r| r.agency_code.is_none() && has_progress(&r.counts))
    {
        out.push(Line {
            code: None,
            label: r
                .province_name
                .clone()
                .unwrap_or_else(|| "Province".to_string()),
            counts: r.counts,
        });
    }
    out
}

fn has_progress(c: &Counts) -> bool {
    c.carried_over + c.inflow() > 0
}

/// The numbers of a line, in the table's order.
fn cells(c: &Counts) -> [u64; 12] {
    [
        c.carried_over,
        c.judged_received(),
        c.received_online,
        c.transferred_in,
        c.early,
        c.on_time,
        c.late,
        c.withdrawn,
        c.stopped_or_refused,
        c.transferred_out,
        c.in_progress_in_time,
        c.in_progress_overdue,
    ]
}

/// The table, for the report's reference period.
pub(super) fn html(o: &mut String, input: &ReportInput, key: Option<(Period, NaiveDate)>) {
    let Some(key) = key else { return };
    let lines = lines(input, key);
    let _ = write!(
        o,
        "<figure id=\"progress\">\n<h2>Progress report · {}</h2>\n<p class=\"figure-note\">As a province's report form counts them: dossiers carried over from the last period, those newly received and those handed over to the agency are to process; each is resolved (early, on time or late), withdrawn, stopped or refused, handed over to another agency, or still in progress at the period's end. Receipts stay with the agency that received the dossier; what ends or stays open counts under the agency holding it then. On time = (early + on time + in progress in time) ÷ (resolved + in progress).</p>\n",
        esc(&key.0.label(key.1))
    );
    if lines.is_empty() {
        o.push_str(
            "<p class=\"no-data\">No data: no judged dossiers in this period.</p>\n</figure>\n",
        );
        return;
    }
    o.push_str(
        "<div class=\"table-wrap\"><table class=\"scorecard\">\n<thead>\
         <tr><th scope=\"col\" rowspan=\"2\" class=\"name\">Agency</th><th scope=\"col\" rowspan=\"2\">Carried over</th><th scope=\"colgroup\" colspan=\"2\">New</th><th scope=\"col\" rowspan=\"2\">Handed over to it</th><th scope=\"colgroup\" colspan=\"3\">Resolved</th><th scope=\"col\" rowspan=\"2\">Withdrawn</th><th scope=\"col\" rowspan=\"2\">Stopped or refused</th><th scope=\"col\" rowspan=\"2\">Handed over away</th><th scope=\"colgroup\" colspan=\"2\">In progress</th><th scope=\"col\" rowspan=\"2\">On time</th></tr>\n\
         <tr><th scope=\"col\">Received</th><th scope=\"col\">of which online</th><th scope=\"col\">Early</th><th scope=\"col\">On time</th><th scope=\"col\">Late</th><th scope=\"col\">In time</th><th scope=\"col\">Overdue</th></tr>\n\
         </thead>\n<tbody>\n",
    );
    for l in &lines {
        let rate = l.counts.on_time_rate();
        let class = if l.code.is_none() {
            " class=\"province\""
        } else {
            ""
        };
        let _ = write!(
            o,
            "<tr{class} data-code=\"{}\"><th scope=\"row\">{}</th>",
            esc(l.code.as_deref().unwrap_or("")),
            esc(&l.label)
        );
        for n in cells(&l.counts) {
            let _ = write!(o, "<td>{}</td>", num(n));
        }
        let _ = writeln!(
            o,
            "<td class=\"{}\">{}</td></tr>",
            Band::of(rate).class(),
            pct(rate)
        );
    }
    o.push_str("</tbody></table></div>\n</figure>\n");
}

/// The same table, fixed-width, for the terminal.
pub(super) fn terminal(o: &mut String, input: &ReportInput, key: Option<(Period, NaiveDate)>) {
    let Some(key) = key else { return };
    let lines = lines(input, key);
    if lines.is_empty() {
        return;
    }
    const HEADS: [&str; 13] = [
        "Carried",
        "New",
        "Online",
        "In",
        "Early",
        "On time",
        "Late",
        "Withdrawn",
        "Stopped",
        "Out",
        "In time",
        "Overdue",
        "Rate",
    ];
    let rows: Vec<(String, Vec<String>)> = lines
        .iter()
        .map(|l| {
            let mut v: Vec<String> = cells(&l.counts).iter().map(|n| group(*n, " ")).collect();
            v.push(pct(l.counts.on_time_rate()));
            (clean_terminal(&l.label), v)
        })
        .collect();
    let name_w = rows
        .iter()
        .map(|(n, _)| width(n))
        .max()
        .unwrap_or(0)
        .clamp(8, 30);
    let widths: Vec<usize> = HEADS
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|(_, v)| width(&v[i]))
                .max()
                .unwrap_or(0)
                .max(width(h))
        })
        .collect();
    let _ = writeln!(
        o,
        "\nProgress · {} (carried over + new + handed in = resolved + withdrawn + stopped + handed out + in progress)",
        key.0.label(key.1)
    );
    let mut header = pad_right("Agency", name_w);
    for (h, w) in HEADS.iter().zip(&widths) {
        let _ = write!(header, "  {}", pad_left(h, *w));
    }
    let _ = writeln!(o, "{header}");
    let rule: Vec<String> = std::iter::once(name_w)
        .chain(widths.iter().copied())
        .map(|w| "─".repeat(w))
        .collect();
    let _ = writeln!(o, "{}", rule.join("  "));
    for (name, v) in &rows {
        let mut line = pad_right(&truncate(name, name_w), name_w);
        for (cell, w) in v.iter().zip(&widths) {
            let _ = write!(line, "  {}", pad_left(cell, *w));
        }
        let _ = writeln!(o, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::View;

    fn row(agency: Option<&str>, c: Counts) -> MetricRow {
        MetricRow {
            period: Period::Month,
            period_start: NaiveDate::from_ymd_opt(2023, 3, 1).unwrap(),
            view: View::Restated,
            province_code: None,
            province_name: None,
            agency_code: agency.map(str::to_string),
            agency_name: None,
            procedure_code: None,
            procedure_name: None,
            counts: c,
        }
    }

    #[test]
    fn the_report_form_shows_the_backlog_and_balances() {
        let a = Counts {
            carried_over: 3,
            received_online: 2,
            received_in_person: 1,
            transferred_in: 2,
            early: 1,
            on_time: 1,
            withdrawn: 1,
            transferred_out: 1,
            in_progress_overdue: 4,
            ..Counts::default()
        };
        let rows = [row(Some("A"), a), row(None, a)];
        let names = BTreeMap::from([("A".to_string(), "Sở Xây dựng".to_string())]);
        let input = ReportInput {
            title: "T",
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
        let key = Some((Period::Month, NaiveDate::from_ymd_opt(2023, 3, 1).unwrap()));
        let mut h = String::new();
        html(&mut h, &input, key);
        assert!(h.contains("Progress report · 2023-03"));
        // Carried 3, received 3 (2 online), handed over to it 2, early 1, on time 1, late
        // 0, withdrawn 1, stopped 0, handed over away 1, in time 0, overdue 4; on time 2
        // of 6.
        assert!(
            h.contains("<th scope=\"row\">Sở Xây dựng</th><td>3</td><td>3</td><td>2</td><td>2</td><td>1</td><td>1</td><td>0</td><td>1</td><td>0</td><td>1</td><td>0</td><td>4</td><td class=\"band-bad\">33.3%</td>"),
            "{h}"
        );
        assert!(h.contains("<tr class=\"province\" data-code=\"\"><th scope=\"row\">Province</th>"));
        let mut t = String::new();
        terminal(&mut t, &input, key);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].starts_with("Progress · 2023-03"), "{t}");
        assert!(
            lines[2].contains("Carried") && lines[2].contains("Overdue"),
            "{t}"
        );
        assert!(lines[4].starts_with("Sở Xây dựng"), "{t}");
        assert!(lines[4].ends_with("33.3%"), "{t}");
        assert!(lines[5].starts_with("Province"), "{t}");
    }
}
