//! The 766-style scorecard: points for the indicators this feed supports.

use sohoa_runtime::config::{IndicatorConfig, ScorecardConfig};

use crate::model::{Counts, IndicatorScore, MetricRow, Scorecard};

/// Points for one rate: all of them at `full_at` or above, proportional below.
pub fn points(rate: f64, ind: &IndicatorConfig) -> f64 {
    ind.points * (rate / ind.full_at).min(1.0)
}

/// The scorecard of one rollup row (an agency, or the province).
pub fn score(row: &MetricRow, cfg: &ScorecardConfig) -> Scorecard {
    type Rate = fn(&Counts) -> Option<f64>;
    let specs: [(&str, &str, Rate, IndicatorConfig); 6] = [
        (
            "2.1",
            "Processed early or on time",
            Counts::on_time_rate,
            cfg.on_time,
        ),
        ("3.3", "Submitted online", Counts::online_rate, cfg.online),
        (
            "3.6",
            "Paid online",
            Counts::online_payment_rate,
            cfg.online_payment,
        ),
        (
            "4.1",
            "Electronic results",
            Counts::e_result_rate,
            cfg.e_result,
        ),
        (
            "4.2",
            "Digitized dossiers",
            Counts::digitization_rate,
            cfg.digitization,
        ),
        ("4.3", "Reused components", Counts::reuse_rate, cfg.reuse),
    ];
    let indicators: Vec<IndicatorScore> = specs
        .iter()
        .map(|(id, name, rate, ind)| {
            let r = rate(&row.counts);
            IndicatorScore {
                id: (*id).into(),
                name: (*name).into(),
                rate: r,
                points: r.map_or(0.0, |r| points(r, ind)),
                max_points: ind.points,
            }
        })
        .collect();
    // An indicator with nothing to measure (no fee-bearing dossiers, say) is left out of
    // the maximum rather than scored zero.
    let total = indicators.iter().map(|i| i.points).sum();
    let max_total = indicators
        .iter()
        .filter(|i| i.rate.is_some())
        .map(|i| i.max_points)
        .sum();
    Scorecard {
        period: row.period,
        period_start: row.period_start,
        agency_code: row.agency_code.clone(),
        agency_name: row.agency_name.clone(),
        indicators,
        total,
        max_total,
    }
}

/// Scorecards of every agency and of the province, for every period.
pub fn scorecards(rows: &[MetricRow], cfg: &ScorecardConfig) -> Vec<Scorecard> {
    rows.iter()
        .filter(|r| r.procedure_code.is_none())
        .map(|r| score(r, cfg))
        .collect()
}
