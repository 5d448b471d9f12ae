//! `metrics/progress.*`: the province's report form, per view × period × agency ×
//! procedure and every rollup. Carried over, received and handed over to the agency on
//! one side; resolved, withdrawn, stopped or refused, handed over away and still in
//! progress on the other; the two sides are equal on every row.

use bytes::Bytes;

use super::metrics::{counts_field, table_csv, table_parquet, table_rows, Spec};
use super::OutputError;
use crate::metrics::Rollups;
use crate::model::Counts;

/// The columns of `metrics/progress.csv`; the Parquet table has the same.
pub const PROGRESS_COLUMNS: &[&str] = &[
    "period",
    "period_start",
    "period_label",
    "view",
    "province_code",
    "province_name",
    "agency_code",
    "agency_name",
    "procedure_code",
    "field_code",
    "field_name",
    "carried_over",
    "received",
    "received_in_person",
    "received_online",
    "received_postal",
    "received_other",
    "transferred_in",
    "resolved_early",
    "resolved_on_time",
    "resolved_late",
    "withdrawn",
    "stopped_or_refused",
    "transferred_out",
    "in_progress_in_time",
    "in_progress_overdue",
    "on_time_rate",
];

fn count(c: &Counts, name: &str) -> Option<u64> {
    match name {
        // Only the judged dossiers: the received-based `received` counts them all.
        "received" => Some(c.judged_received()),
        "resolved_early" => Some(c.early),
        "resolved_on_time" => Some(c.on_time),
        "resolved_late" => Some(c.late),
        "carried_over"
        | "received_in_person"
        | "received_online"
        | "received_postal"
        | "received_other"
        | "transferred_in"
        | "transferred_out"
        | "withdrawn"
        | "stopped_or_refused"
        | "in_progress_in_time"
        | "in_progress_overdue" => counts_field(c, name),
        _ => None,
    }
}

const PROGRESS: Spec = Spec {
    table: "progress",
    columns: PROGRESS_COLUMNS,
    count,
    rate: |c, name| (name == "on_time_rate").then(|| c.on_time_rate()),
    // A row with nothing carried over, received or handed over to it has nothing at all.
    keep: |c| c.carried_over + c.inflow() > 0,
};

/// `metrics/progress.csv`.
pub fn progress_csv(r: &Rollups) -> String {
    table_csv(&PROGRESS, &table_rows(r))
}

/// `metrics/progress.parquet`.
pub fn progress_parquet(r: &Rollups) -> Result<Bytes, OutputError> {
    table_parquet(&PROGRESS, &table_rows(r))
}
