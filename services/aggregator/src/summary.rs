//! What a run produced: the tables' rows for the command line and the report, and the
//! run's figures for Prometheus.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::model::{CalendarNotes, FieldRow, MetricRow, Scorecard, View};
use crate::quality;

/// What a run produced, for the command line and the report.
#[derive(Debug, Default)]
pub struct Summary {
    pub files_read: usize,
    pub bytes_read: u64,
    pub events_read: u64,
    pub dossiers: usize,
    pub metric_rows: Vec<MetricRow>,
    /// The field rollups, within each agency and across agencies.
    pub field_rows: Vec<FieldRow>,
    pub scorecards: Vec<Scorecard>,
    pub written: Vec<String>,
    pub elapsed_ms: u64,
    /// Event time of the newest event folded in (UTC µs): how fresh the metrics are.
    pub newest_event_us: Option<i64>,
    /// The data-quality tables (`quality/`): a run over all dossiers, or a merge of shards,
    /// has them; one shard's run only writes its counts for the merge.
    pub quality: Option<quality::QualityReport>,
    /// The fingerprints of the pseudonym keys of the rows read (see
    /// `Pseudonymizer::fingerprint`): one, unless mixing keys was allowed.
    pub key_fingerprints: Vec<String>,
    /// Provisional years of the holiday table, and dossiers set aside for missing ones.
    pub calendar: CalendarNotes,
    /// The province the report covers, by name (from the agency reference).
    pub province: String,
    /// Agency code to its current name, for every code of the reference.
    pub agency_names: BTreeMap<String, String>,
    /// The days agencies ended on and handed their dossiers to successors, with how many
    /// ended then: what the report's trend charts mark.
    pub breaks: Vec<(NaiveDate, usize)>,
    /// Agency codes of the feed that the reference lacks.
    pub unknown_agencies: Vec<String>,
    /// The version of the events table the run read (`None` for a plain folder, or a
    /// merge of shards): `sohoa aggregate --events-version` reads it again.
    pub events_version: Option<u64>,
}

impl Summary {
    /// The metric rows of one view.
    pub fn rows_of(&self, view: View) -> Vec<MetricRow> {
        self.metric_rows
            .iter()
            .filter(|r| r.view == view)
            .cloned()
            .collect()
    }

    /// The field rows of one view.
    pub fn fields_of(&self, view: View) -> Vec<FieldRow> {
        self.field_rows
            .iter()
            .filter(|r| r.row.view == view)
            .cloned()
            .collect()
    }
}

impl Summary {
    /// The run's results in Prometheus' text format, for node-exporter's textfile
    /// collector: a batch job has no endpoint to scrape.
    pub fn prometheus_text(&self, finished_unix_s: i64) -> String {
        let gauges = [
            (
                "sohoa_aggregate_last_success_timestamp_seconds",
                "Unix time the last successful aggregation finished.",
                finished_unix_s as f64,
            ),
            (
                "sohoa_aggregate_duration_seconds",
                "How long the last successful aggregation took.",
                self.elapsed_ms as f64 / 1000.0,
            ),
            (
                "sohoa_aggregate_events_read",
                "Events the last successful aggregation read.",
                self.events_read as f64,
            ),
            (
                "sohoa_aggregate_dossiers",
                "Dossiers the last successful aggregation judged.",
                self.dossiers as f64,
            ),
            (
                "sohoa_aggregate_newest_event_timestamp_seconds",
                "Event time of the newest event the metrics include: their freshness.",
                self.newest_event_us.map_or(0.0, |u| u as f64 / 1e6),
            ),
        ];
        let version = self.events_version.map(|v| {
            (
                "sohoa_aggregate_events_version",
                "Version of the events table the last successful aggregation read.",
                v as f64,
            )
        });
        let mut out = String::new();
        for (name, help, value) in gauges.into_iter().chain(version) {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        out
    }
}
