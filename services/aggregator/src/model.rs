//! The shapes shared by the aggregator's stages: periods, the additive counts behind every
//! metric, metric rows and scorecards.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};

/// A reporting period's granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Day,
    Month,
    Quarter,
    Year,
}

impl Period {
    pub const ALL: [Period; 4] = [Period::Day, Period::Month, Period::Quarter, Period::Year];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Quarter => "quarter",
            Period::Year => "year",
        }
    }

    /// The first day of the period that contains `d`.
    pub fn start_of(self, d: NaiveDate) -> NaiveDate {
        let (y, m) = (d.year(), d.month());
        match self {
            Period::Day => d,
            Period::Month => NaiveDate::from_ymd_opt(y, m, 1).expect("valid"),
            Period::Quarter => NaiveDate::from_ymd_opt(y, (m - 1) / 3 * 3 + 1, 1).expect("valid"),
            Period::Year => NaiveDate::from_ymd_opt(y, 1, 1).expect("valid"),
        }
    }

    /// The last day of the period that starts at `start`.
    pub fn last_day(self, start: NaiveDate) -> NaiveDate {
        let months = match self {
            Period::Day => return start,
            Period::Month => 1,
            Period::Quarter => 3,
            Period::Year => 12,
        };
        let next = start
            .checked_add_months(chrono::Months::new(months))
            .expect("in range");
        next.pred_opt().expect("in range")
    }

    /// A readable label: `2023-02-24`, `2023-02`, `2023-Q1`, `2023`.
    pub fn label(self, start: NaiveDate) -> String {
        match self {
            Period::Day => start.format("%Y-%m-%d").to_string(),
            Period::Month => start.format("%Y-%m").to_string(),
            Period::Quarter => format!("{}-Q{}", start.year(), (start.month() - 1) / 3 + 1),
            Period::Year => start.year().to_string(),
        }
    }
}

/// The two views of every table: the agencies as they were, or restated to the current
/// units that succeeded them (see [`crate::placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum View {
    AsWas,
    #[default]
    Restated,
}

impl View {
    pub const ALL: [View; 2] = [View::AsWas, View::Restated];

    pub fn as_str(self) -> &'static str {
        match self {
            View::AsWas => "as_was",
            View::Restated => "restated",
        }
    }

    pub fn parse(s: &str) -> Option<View> {
        View::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Counts of one group of dossiers in one period. Every field adds up across groups and
/// across shards, so rollups and shard merges are sums; rates are computed last.
///
/// Two populations: the received-based counts (indicators 3.3, 3.6, 4.1–4.3) are over
/// every counted dossier received in the period; the progress counts are over the
/// dossiers the rules judge, received in the period or carried over into it, and hold the
/// report form's identity: `carried_over` + received (the channel split) +
/// `transferred_in` = resolved (`early` + `on_time` + `late`) + `withdrawn` +
/// `stopped_or_refused` + `transferred_out` + in progress. Receipts belong to the
/// agency that received the dossier, ends and open dossiers to the one holding it then,
/// and a handover is an outflow from one and an inflow into the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Dossiers received in the period.
    pub received: u64,
    /// Of those, submitted online.
    pub online_received: u64,
    /// Judged dossiers open at the end of the previous period (received before this one
    /// and not ended before it). Derived by [`crate::backlog`], never stored per shard.
    pub carried_over: u64,
    /// Judged dossiers received in the period, by channel (`KenhThucHien`; `other` when the
    /// events name none).
    pub received_in_person: u64,
    pub received_online: u64,
    pub received_postal: u64,
    pub received_other: u64,
    /// Judged dossiers handed over to this agency in the period, and away from it.
    pub transferred_in: u64,
    pub transferred_out: u64,
    /// Judged dossiers resolved in the period (processed, returned, or one unanswered
    /// supplement request), by class.
    pub early: u64,
    pub on_time: u64,
    pub late: u64,
    /// Judged dossiers ended in the period by a withdrawal after receipt, or by a stop or
    /// a refusal: outside the on-time rate.
    pub withdrawn: u64,
    pub stopped_or_refused: u64,
    /// Judged dossiers still open at the period's end, judged then (derived).
    pub in_progress_in_time: u64,
    pub in_progress_overdue: u64,
    /// Judged dossiers whose overdue stretch starts in this period while open (they are
    /// overdue at its end), and those that end in it after being overdue at an earlier
    /// period's end: what [`crate::backlog`] carries overdue dossiers forward with.
    pub overdue_in: u64,
    pub overdue_out: u64,
    /// Of the received: with a submitted file and, where the result is a document, an
    /// electronic result (indicator 4.2).
    pub digitized: u64,
    /// Of the received: procedures whose result is a document (4.1's denominator)...
    pub e_result_eligible: u64,
    /// ...and of those, with a result file link.
    pub e_result: u64,
    /// Of the received: with a reused component (4.3).
    pub reused: u64,
    /// Of the received: fee-bearing (3.6's denominator)...
    pub fee_bearing: u64,
    /// ...and of those, paid online.
    pub paid_online: u64,
}

impl Counts {
    /// Nothing counted.
    pub const ZERO: Counts = Counts {
        received: 0,
        online_received: 0,
        carried_over: 0,
        received_in_person: 0,
        received_online: 0,
        received_postal: 0,
        received_other: 0,
        transferred_in: 0,
        transferred_out: 0,
        early: 0,
        on_time: 0,
        late: 0,
        withdrawn: 0,
        stopped_or_refused: 0,
        in_progress_in_time: 0,
        in_progress_overdue: 0,
        overdue_in: 0,
        overdue_out: 0,
        digitized: 0,
        e_result_eligible: 0,
        e_result: 0,
        reused: 0,
        fee_bearing: 0,
        paid_online: 0,
    };

    pub fn add(&mut self, o: &Counts) {
        // Destructured, so a field added to `Counts` cannot be forgotten here.
        let Counts {
            received,
            online_received,
            carried_over,
            received_in_person,
            received_online,
            received_postal,
            received_other,
            transferred_in,
            transferred_out,
            early,
            on_time,
            late,
            withdrawn,
            stopped_or_refused,
            in_progress_in_time,
            in_progress_overdue,
            overdue_in,
            overdue_out,
            digitized,
            e_result_eligible,
            e_result,
            reused,
            fee_bearing,
            paid_online,
        } = *o;
        self.received += received;
        self.online_received += online_received;
        self.carried_over += carried_over;
        self.received_in_person += received_in_person;
        self.received_online += received_online;
        self.received_postal += received_postal;
        self.received_other += received_other;
        self.transferred_in += transferred_in;
        self.transferred_out += transferred_out;
        self.early += early;
        self.on_time += on_time;
        self.late += late;
        self.withdrawn += withdrawn;
        self.stopped_or_refused += stopped_or_refused;
        self.in_progress_in_time += in_progress_in_time;
        self.in_progress_overdue += in_progress_overdue;
        self.overdue_in += overdue_in;
        self.overdue_out += overdue_out;
        self.digitized += digitized;
        self.e_result_eligible += e_result_eligible;
        self.e_result += e_result;
        self.reused += reused;
        self.fee_bearing += fee_bearing;
        self.paid_online += paid_online;
    }

    /// Judged dossiers received in the period: the progress table's `received`.
    pub fn judged_received(&self) -> u64 {
        self.received_in_person + self.received_online + self.received_postal + self.received_other
    }

    /// Judged dossiers whose clock ended in the period, however.
    pub fn ended(&self) -> u64 {
        self.early + self.on_time + self.late + self.withdrawn + self.stopped_or_refused
    }

    /// Judged dossiers that came to the group in the period: received, or handed over to it.
    pub fn inflow(&self) -> u64 {
        self.judged_received() + self.transferred_in
    }

    /// Judged dossiers that left the group in the period: ended, or handed over away.
    pub fn outflow(&self) -> u64 {
        self.ended() + self.transferred_out
    }

    /// Judged dossiers open at the period's end.
    pub fn in_progress(&self) -> u64 {
        self.in_progress_in_time + self.in_progress_overdue
    }

    pub fn ontime_total(&self) -> u64 {
        self.early + self.on_time + self.late + self.in_progress_in_time + self.in_progress_overdue
    }

    pub fn online_rate(&self) -> Option<f64> {
        rate(self.online_received, self.received)
    }

    /// Indicator 2.1: resolved early or on time, or still open and in time at the period's
    /// end, over resolved plus open (the backlog included; withdrawn, stopped and refused
    /// dossiers left out of both).
    pub fn on_time_rate(&self) -> Option<f64> {
        rate(
            self.early + self.on_time + self.in_progress_in_time,
            self.ontime_total(),
        )
    }

    pub fn digitization_rate(&self) -> Option<f64> {
        rate(self.digitized, self.received)
    }

    pub fn e_result_rate(&self) -> Option<f64> {
        rate(self.e_result, self.e_result_eligible)
    }

    pub fn reuse_rate(&self) -> Option<f64> {
        rate(self.reused, self.received)
    }

    pub fn online_payment_rate(&self) -> Option<f64> {
        rate(self.paid_online, self.fee_bearing)
    }
}

/// A fraction from 0 to 1; `None` when there is nothing to divide by.
pub fn rate(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// One row of `metrics/`: a period × agency × procedure, or a rollup (agency-level rows
/// have no procedure; a province-level row has neither), in one view.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub period: Period,
    pub period_start: NaiveDate,
    pub view: View,
    /// The agency's province (for a province row, the province itself); `None` when the
    /// agency reference places it in none.
    pub province_code: Option<String>,
    pub province_name: Option<String>,
    pub agency_code: Option<String>,
    /// The agency's name from the reference: as it was on the period's last day, or the
    /// current unit's.
    pub agency_name: Option<String>,
    pub procedure_code: Option<String>,
    /// The procedure's name from the events (or the catalogue), for readers.
    pub procedure_name: Option<String>,
    pub counts: Counts,
}

/// A field rollup (`MaLinhVuc`): one field within one agency, or across agencies
/// (`row.agency_code` None). `row.procedure_code` is always None.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRow {
    pub field_code: String,
    /// `TenLinhVuc`, where the events gave one.
    pub field_name: Option<String>,
    pub row: MetricRow,
}

/// What the holiday table could not settle for a run, for the report and the terminal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CalendarNotes {
    /// The table's years whose notice is not out yet, and why.
    pub provisional: BTreeMap<i32, String>,
    /// Years the table lacks, with the dossiers set aside because judging them needs one.
    pub missing: BTreeMap<i32, u64>,
}

/// Nothing to flag: for reports of runs without a holiday table.
pub static NO_CALENDAR_NOTES: CalendarNotes = CalendarNotes {
    provisional: BTreeMap::new(),
    missing: BTreeMap::new(),
};

/// One indicator's points on a scorecard.
#[derive(Debug, Clone, PartialEq)]
pub struct IndicatorScore {
    /// The 766 indicator number, for example "2.1".
    pub id: String,
    pub name: String,
    pub rate: Option<f64>,
    pub points: f64,
    pub max_points: f64,
}

/// A 766-style scorecard of one agency (or the province, `agency_code` None) in a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorecard {
    pub period: Period,
    pub period_start: NaiveDate,
    pub agency_code: Option<String>,
    pub agency_name: Option<String>,
    pub indicators: Vec<IndicatorScore>,
    pub total: f64,
    /// The points this feed can support (indicators it cannot measure are left out).
    pub max_total: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_end_and_label() {
        let d = NaiveDate::from_ymd_opt(2023, 2, 24).unwrap();
        let q = Period::Quarter.start_of(d);
        assert_eq!(q, NaiveDate::from_ymd_opt(2023, 1, 1).unwrap());
        assert_eq!(
            Period::Quarter.last_day(q),
            NaiveDate::from_ymd_opt(2023, 3, 31).unwrap()
        );
        assert_eq!(Period::Quarter.label(q), "2023-Q1");
        assert_eq!(
            Period::Month.last_day(Period::Month.start_of(d)),
            NaiveDate::from_ymd_opt(2023, 2, 28).unwrap()
        );
        assert_eq!(Period::Year.label(d), "2023");
    }

    #[test]
    fn rates_are_empty_without_a_denominator() {
        let c = Counts::default();
        assert_eq!(c.on_time_rate(), None);
        let c = Counts {
            received: 4,
            online_received: 1,
            early: 1,
            late: 1,
            in_progress_in_time: 1,
            in_progress_overdue: 1,
            ..Counts::default()
        };
        assert_eq!(c.online_rate(), Some(0.25));
        assert_eq!(c.on_time_rate(), Some(0.5));
    }
}
