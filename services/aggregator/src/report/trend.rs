//! The monthly trend of the province's rates, with the volume received, and the days the
//! agency reference reorganized marked across it.

use std::fmt::Write as _;

use chrono::NaiveDate;

use super::{
    c, clamp01, nice_ceil, no_data, num, pct, Prepared, COLOR_DIGIT, COLOR_GRID, COLOR_INK,
    COLOR_MUTED, COLOR_ONTIME, COLOR_VOLUME,
};
use crate::model::{Counts, Period};

macro_rules! put {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = write!($dst, $($arg)*);
    }};
}

pub(super) fn html(o: &mut String, p: &Prepared, breaks: &[(NaiveDate, usize)]) {
    let id = "trend-monthly";
    put!(
        o,
        "<figure id=\"{id}\" class=\"chart chart-trend\">\n<h2>Monthly trend · province</h2>\n"
    );
    let months = &p.months;
    if months.is_empty() {
        no_data(o, "no monthly province figures for this period");
        o.push_str("</figure>\n");
        return;
    }
    const W: f64 = 900.0;
    const H: f64 = 330.0;
    const L: f64 = 52.0;
    const R: f64 = 74.0;
    const T: f64 = 44.0;
    const B: f64 = 38.0;
    let pw = W - L - R;
    let ph = H - T - B;
    let n = months.len();
    let slot = pw / n as f64;
    let x_of = |i: usize| L + slot * (i as f64 + 0.5);
    let y_of = |r: f64| T + ph * (1.0 - clamp01(r));
    let max_received = months
        .iter()
        .filter_map(|(_, c)| c.map(|c| c.received))
        .max()
        .unwrap_or(0);
    let vmax = nice_ceil(max_received as f64);

    let first = Period::Month.label(months[0].0);
    let last = Period::Month.label(months[n - 1].0);
    let last_ontime = months
        .iter()
        .rev()
        .find_map(|(_, c)| c.and_then(|c| c.on_time_rate()));
    let last_digit = months
        .iter()
        .rev()
        .find_map(|(_, c)| c.and_then(|c| c.digitization_rate()));
    put!(
        o,
        "<svg class=\"chart-svg\" role=\"img\" aria-labelledby=\"{id}-title {id}-desc\" viewBox=\"0 0 {} {}\">\n\
         <title id=\"{id}-title\">Province on-time and digitization rates by month, {} to {}</title>\n\
         <desc id=\"{id}-desc\">Lines: on-time rate and digitization rate (left axis, percent). Bars: dossiers received (right axis). Latest month: on-time {}, digitization {}.</desc>\n",
        c(W),
        c(H),
        first,
        last,
        pct(last_ontime),
        pct(last_digit)
    );
    // Legend.
    put!(
        o,
        "<g class=\"legend\" font-size=\"12\" fill=\"{COLOR_INK}\">\
         <line x1=\"{0}\" x2=\"{1}\" y1=\"16\" y2=\"16\" stroke=\"{COLOR_ONTIME}\" stroke-width=\"3\"/><text x=\"{2}\" y=\"20\">On-time rate</text>\
         <line x1=\"{3}\" x2=\"{4}\" y1=\"16\" y2=\"16\" stroke=\"{COLOR_DIGIT}\" stroke-width=\"3\" stroke-dasharray=\"7 3\"/><text x=\"{5}\" y=\"20\">Digitization rate</text>\
         <rect x=\"{6}\" y=\"10\" width=\"14\" height=\"12\" fill=\"{COLOR_VOLUME}\"/><text x=\"{7}\" y=\"20\">Dossiers received (right axis)</text>\
         </g>\n",
        c(L),
        c(L + 24.0),
        c(L + 30.0),
        c(L + 130.0),
        c(L + 154.0),
        c(L + 160.0),
        c(L + 282.0),
        c(L + 302.0)
    );
    // Axes.
    o.push_str("<g class=\"axis\" aria-hidden=\"true\">\n");
    for t in [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] {
        let y = y_of(t);
        put!(
            o,
            "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"{COLOR_GRID}\"/>\
             <text x=\"{3}\" y=\"{4}\" font-size=\"11\" text-anchor=\"end\" fill=\"{COLOR_MUTED}\">{5}%</text>\
             <text x=\"{6}\" y=\"{4}\" font-size=\"11\" fill=\"{COLOR_MUTED}\">{7}</text>\n",
            c(L),
            c(W - R),
            c(y),
            c(L - 6.0),
            c(y + 4.0),
            (t * 100.0).round(),
            c(W - R + 6.0),
            num((vmax * t).round() as u64)
        );
    }
    let every = n.div_ceil(12).max(1);
    for (i, (m, _)) in months.iter().enumerate() {
        if i % every != 0 && i != n - 1 {
            continue;
        }
        put!(
            o,
            "<text class=\"month-label\" x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{COLOR_MUTED}\">{}</text>\n",
            c(x_of(i)),
            c(T + ph + 16.0),
            Period::Month.label(*m)
        );
    }
    put!(
        o,
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"{COLOR_MUTED}\"/>\n\
         <text x=\"{3}\" y=\"{4}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{COLOR_MUTED}\">Month</text>\n</g>\n",
        c(L),
        c(W - R),
        c(T + ph),
        c(L + pw / 2.0),
        c(H - 4.0)
    );
    // Volume bars.
    let bar_w = (slot * 0.6).min(40.0);
    o.push_str("<g class=\"volume\">\n");
    for (i, (m, cts)) in months.iter().enumerate() {
        let Some(cts) = cts else { continue };
        let hgt = ph * clamp01(cts.received as f64 / vmax);
        put!(
            o,
            "<rect class=\"vol\" data-month=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{COLOR_VOLUME}\"><title>{}: {} received</title></rect>\n",
            Period::Month.label(*m),
            c(x_of(i) - bar_w / 2.0),
            c(T + ph - hgt),
            c(bar_w),
            c(hgt),
            Period::Month.label(*m),
            num(cts.received)
        );
    }
    o.push_str("</g>\n");
    // Over the bars, under the lines: a break stays visible across a month's bar.
    let marked = marks(o, breaks, months, |i| L + slot * i, (T, ph));
    // Lines.
    type Rate = fn(&Counts) -> Option<f64>;
    let series: [(&str, &str, &str, &str, Rate); 2] = [
        ("ontime", "On-time", COLOR_ONTIME, "", Counts::on_time_rate),
        (
            "digitization",
            "Digitization",
            COLOR_DIGIT,
            " stroke-dasharray=\"7 3\"",
            Counts::digitization_rate,
        ),
    ];
    let mut last_points: Vec<(f64, f64, f64, &str)> = Vec::new();
    for (key, name, color, dash, rate) in series {
        let pts_: Vec<(usize, Option<f64>)> = months
            .iter()
            .enumerate()
            .map(|(i, (_, cts))| (i, cts.and_then(|c| rate(&c)).filter(|r| r.is_finite())))
            .collect();
        let mut d = String::new();
        let mut pen = false;
        for (i, r) in &pts_ {
            match r {
                Some(r) => {
                    put!(
                        d,
                        "{}{} {} ",
                        if pen { "L" } else { "M" },
                        c(x_of(*i)),
                        c(y_of(*r))
                    );
                    pen = true;
                }
                None => pen = false,
            }
        }
        put!(o, "<g class=\"series series-{key}\">\n");
        if !d.is_empty() {
            put!(
                o,
                "<path class=\"line line-{key}\" d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2.5\" stroke-linejoin=\"round\"{dash}/>\n",
                d.trim_end()
            );
        }
        for (i, r) in &pts_ {
            let Some(r) = r else { continue };
            let m = Period::Month.label(months[*i].0);
            put!(
                o,
                "<circle class=\"pt pt-{key}\" data-month=\"{m}\" cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"#fff\" stroke=\"{color}\" stroke-width=\"2\"><title>{m}: {} {}</title></circle>\n",
                c(x_of(*i)),
                c(y_of(*r)),
                name.to_lowercase(),
                pct(Some(*r))
            );
        }
        o.push_str("</g>\n");
        if let Some((i, Some(r))) = pts_.iter().rev().find(|(_, r)| r.is_some()) {
            last_points.push((x_of(*i), y_of(*r), *r, color));
        }
    }
    // Label the latest value of each line, keeping the two labels apart.
    if let [a, b] = last_points.as_slice() {
        let (upper, lower) = if a.1 <= b.1 { (a, b) } else { (b, a) };
        let mut yu = upper.1 - 8.0;
        let mut yl = lower.1 + 16.0;
        if yl - yu < 14.0 {
            yu -= 7.0;
            yl += 7.0;
        }
        for (pnt, y) in [(upper, yu), (lower, yl)] {
            put!(
                o,
                "<text class=\"last-value\" x=\"{}\" y=\"{}\" font-size=\"12\" font-weight=\"700\" text-anchor=\"middle\" fill=\"{}\">{}</text>\n",
                c(pnt.0),
                c(y.clamp(12.0, H - B - 2.0)),
                pnt.3,
                pct(Some(pnt.2))
            );
        }
    } else {
        for pnt in &last_points {
            put!(
                o,
                "<text class=\"last-value\" x=\"{}\" y=\"{}\" font-size=\"12\" font-weight=\"700\" text-anchor=\"middle\" fill=\"{}\">{}</text>\n",
                c(pnt.0),
                c((pnt.1 - 8.0).max(12.0)),
                pnt.3,
                pct(Some(pnt.2))
            );
        }
    }
    o.push_str("</svg>\n");
    put!(
        o,
        "<figcaption>Months with data from {first} to {last}; a gap in a line is a month with nothing to measure."
    );
    if marked {
        o.push_str(
            " A dashed vertical line marks a reorganization: agencies ended that day and handed \
             their open dossiers to their successors (from the agency reference). The figures \
             before it are restated to today's units, so the line runs on across it.",
        );
    }
    o.push_str("</figcaption>\n</figure>\n");
}

/// Mark each break of the agency reference that falls inside the chart's months with a
/// dashed line at its place in its month, labelled with its date and how many agencies
/// ended then. `x_of(i)` is the left edge of month `i`'s slot (fractional `i` for a day
/// inside it); `(top, height)` the plot area. Returns whether any was drawn.
fn marks(
    o: &mut String,
    breaks: &[(NaiveDate, usize)],
    months: &[(NaiveDate, Option<Counts>)],
    x_of: impl Fn(f64) -> f64,
    (top, height): (f64, f64),
) -> bool {
    let mut drawn = false;
    for &(day, ended) in breaks {
        let Some(i) = months
            .iter()
            .position(|(m, _)| Period::Month.start_of(day) == *m)
        else {
            continue;
        };
        let month = months[i].0;
        let days = (Period::Month.last_day(month) - month).num_days() + 1;
        let x = x_of(i as f64 + (day - month).num_days() as f64 / days as f64);
        let label = day.format("%-d %b %Y").to_string();
        let (agencies, their) = if ended == 1 {
            ("agency", "its")
        } else {
            ("agencies", "their")
        };
        put!(
            o,
            "<g class=\"break\" data-date=\"{day}\"><line x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\" stroke=\"{COLOR_INK}\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\"/>\
             <text x=\"{3}\" y=\"{4}\" font-size=\"11\" font-weight=\"700\" fill=\"{COLOR_INK}\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">{label}</text>\
             <text x=\"{3}\" y=\"{5}\" font-size=\"10\" fill=\"{COLOR_MUTED}\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">{ended} {agencies} ended</text>\
             <title>{label}: {ended} {agencies} of the reference ended and handed {their} dossiers over</title></g>\n",
            c(x),
            c(top - 4.0),
            c(top + height),
            c(x + 4.0),
            c(top + 10.0),
            c(top + 22.0)
        );
        drawn = true;
    }
    drawn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaks_inside_the_months_are_marked_where_they_fall() {
        let months: Vec<(NaiveDate, Option<Counts>)> = (1..=12)
            .map(|m| (NaiveDate::from_ymd_opt(2025, m, 1).unwrap(), None))
            .collect();
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let breaks = [
            (d(2025, 3, 1), 5),
            (d(2025, 7, 1), 32),
            (d(2025, 9, 16), 1),
            (d(2026, 7, 1), 2),
        ];
        let mut o = String::new();
        // Slots 10 wide from x = 100: a break on the 1st is at its month's left edge, one
        // on the 16th of a 30-day month half-way in.
        assert!(marks(
            &mut o,
            &breaks,
            &months,
            |i| 100.0 + 10.0 * i,
            (40.0, 200.0)
        ));
        let lines: Vec<&str> = o.lines().collect();
        assert_eq!(lines.len(), 3, "{o}");
        assert!(lines[0].starts_with("<g class=\"break\" data-date=\"2025-03-01\"><line x1=\"120.0\" x2=\"120.0\" y1=\"36.0\" y2=\"240.0\""), "{o}");
        assert!(
            lines[1].contains("data-date=\"2025-07-01\"><line x1=\"160.0\""),
            "{o}"
        );
        assert!(
            lines[1].contains(">1 Jul 2025</text>")
                && lines[1].contains(">32 agencies ended</text>"),
            "{o}"
        );
        assert!(
            lines[2].contains("<line x1=\"185.0\"") && lines[2].contains(">1 agency ended</text>"),
            "{o}"
        );
        // Nothing in range: nothing drawn.
        let mut o = String::new();
        assert!(!marks(&mut o, &breaks[3..], &months, |i| i, (0.0, 1.0)));
        assert!(o.is_empty());
    }
}
