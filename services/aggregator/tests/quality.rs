//! The data-quality tables on crafted feeds whose counts are known exactly: events built
//! with the shared batch builder, written as `events/` Parquet (and commits of the events table as the
//! ingestor writes them), aggregated, and `quality/` read back.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use sohoa_aggregator::fold::Shard;
use sohoa_aggregator::read::DateRange;
use sohoa_aggregator::{model::Period, Options};
use sohoa_schemas::event::{EventKind, Flags, Status};
use sohoa_schemas::{DossierEvent, EventBatchBuilder, Lineage};

const MIN: i64 = 60 * 1_000_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn vn(s: &str) -> i64 {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    (t.and_utc().timestamp() - 7 * 3600) * 1_000_000
}

/// A snapshot of a dossier under `agency` with `status` at `time`, complete and
/// consistent: received at `time`, due three days later, finished and returned (for those
/// statuses) at `time`, with an electronic result, of a catalogued procedure. Tests spoil
/// one thing at a time.
fn snap(code: &str, agency: &str, status: i8, time: i64) -> DossierEvent<'static> {
    DossierEvent {
        event_id: format!("{code}-{status}-{time}").into(),
        kind: EventKind::Snapshot,
        source_system: Arc::from("dvcqg"),
        dossier_code: code.to_string().into(),
        procedure_code: Some("1.001193".into()),
        procedure_name: Some("Đăng ký khai sinh".into()),
        field_code: None,
        field_name: None,
        agency_code: Some(agency.to_string().into()),
        channel: None,
        status: Status::from_code(status.into()).unwrap(),
        event_time: time,
        filed_at: None,
        received_at: (status != 1 && status != 3).then_some(time),
        due_at: Some(time + 3 * DAY),
        finished_at: matches!(status, 9 | 10).then_some(time),
        returned_at: (status == 10).then_some(time),
        refused_at: (status == 3).then_some(time),
        supplements: vec![],
        document_count: 1,
        result_document_count: 1,
        result_file_count: 1,
        flags: Flags {
            has_submitted_file: true,
            has_e_result: true,
            ..Flags::default()
        },
        applicant_type: None,
        applicant_pseudonym: None,
        step_started_at: None,
        step_due_at: None,
    }
}

/// A progress step: no agency, no dates.
fn progress(code: &str, status: i8, time: i64) -> DossierEvent<'static> {
    let mut e = snap(code, "", status, time);
    e.kind = EventKind::Progress;
    e.agency_code = None;
    e.procedure_code = None;
    e.procedure_name = None;
    e.received_at = None;
    e.due_at = None;
    e.finished_at = None;
    e.returned_at = None;
    e.refused_at = None;
    e
}

/// One event as it reached storage: its topic, offset and arrival.
struct Row {
    e: DossierEvent<'static>,
    topic: &'static str,
    arrived: i64,
}

fn row(e: DossierEvent<'static>, delay: i64) -> Row {
    let arrived = e.event_time + delay;
    Row {
        e,
        topic: "t",
        arrived,
    }
}

/// Write `rows` as `events/date=<date>/<file>.parquet`, offsets in row order. Without
/// `with_arrived_at` the file lacks the column, as files written before it existed do;
/// `ingested_at` is then the arrival plus one hour.
fn write(root: &Path, date: &str, file: &str, rows: &[Row], with_arrived_at: bool) {
    let mut b = EventBatchBuilder::new();
    for (offset, r) in rows.iter().enumerate() {
        b.append(
            &r.e,
            &Lineage {
                topic: r.topic,
                partition: 0,
                offset: offset as i64,
                ingested_at: if with_arrived_at {
                    r.arrived + 5 * DAY
                } else {
                    r.arrived + HOUR
                },
                arrived_at: r.arrived,
            },
        );
    }
    let mut batch = b.finish().unwrap();
    if !with_arrived_at {
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| batch.schema().field(i).name() != "arrived_at")
            .collect();
        batch = batch.project(&keep).unwrap();
    }
    let dir = root.join(format!("events/date={date}"));
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::File::create(dir.join(format!("{file}.parquet"))).unwrap();
    let mut w = ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn options(range: DateRange) -> Options {
    Options {
        range,
        as_of: vn("2023-12-31 23:59"),
        shard: Shard::ALL,
        merge_shards: None,
        periods: Period::ALL.to_vec(),
        allow_mixed_keys: false,
        events: None,
        events_version: None,
    }
}

fn aggregate(root: &Path, opts: &Options) -> sohoa_aggregator::Summary {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root).unwrap());
    let cfg = sohoa_runtime::Config::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
    sohoa_aggregator::run(&cfg.aggregate, store, rt.handle(), opts).unwrap()
}

type CsvRow = BTreeMap<String, String>;

fn read_csv(root: &Path, name: &str) -> Vec<CsvRow> {
    let text = std::fs::read_to_string(root.join(format!("quality/{name}.csv"))).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            assert_eq!(cells.len(), header.len(), "{l}");
            header
                .iter()
                .zip(cells)
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn read_parquet(root: &Path, name: &str) -> Vec<RecordBatch> {
    let f = std::fs::File::open(root.join(format!("quality/{name}.parquet"))).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The row of `agency` ("" for the province) in the year `label`.
fn year<'a>(rows: &'a [CsvRow], agency: &str) -> &'a CsvRow {
    rows.iter()
        .find(|r| {
            r["period"] == "year" && r["period_label"] == "2023" && r["agency_code"] == agency
        })
        .unwrap_or_else(|| panic!("no 2023 row for {agency:?}"))
}

fn get<'a>(r: &'a CsvRow, cols: &[&str]) -> Vec<&'a str> {
    cols.iter().map(|c| r[*c].as_str()).collect()
}

#[test]
fn sync_delay_quantiles_and_the_share_within_24_hours() {
    let dir = tempfile::tempdir().unwrap();
    let t = vn("2023-03-01 08:00");
    write(
        dir.path(),
        "2023-03-01",
        "a",
        &[
            row(snap("A1", "A", 2, t), 10 * 1_000_000),
            row(snap("A2", "A", 2, t), HOUR),
            row(snap("A3", "A", 2, t), 2 * HOUR),
            row(snap("A4", "A", 9, t), 30 * HOUR),
            // Arrived five minutes before it happened: a clock off, counted apart.
            row(snap("B1", "B", 2, t), -5 * MIN),
        ],
        true,
    );
    let s = aggregate(dir.path(), &options(DateRange::default()));
    assert!(s.written.contains(&"quality/quality.parquet".to_string()));
    let rows = read_csv(dir.path(), "quality");
    let cols = [
        "sync_events",
        "sync_timed_events",
        "sync_p50_seconds",
        "sync_p95_seconds",
        "sync_within_24h",
        "sync_within_24h_rate",
        "sync_arrived_before_event",
    ];
    // Sorted delays 10 s, 1 h, 2 h, 30 h. p50 is the 2nd: 3600 s lies in the bucket
    // [2^11.5, 2^12) s, reported as 2^11.75 = 3444 s. p95 is the 4th: 108,000 s, in
    // [2^16.5, 2^17), reported as 2^16.75 = 110,218 s.
    assert_eq!(
        get(year(&rows, "A"), &cols),
        ["4", "4", "3444", "110218", "3", "0.75", "0"]
    );
    assert_eq!(
        get(year(&rows, "B"), &cols),
        ["1", "1", "0", "0", "1", "1", "1"]
    );
    assert_eq!(
        get(year(&rows, ""), &cols),
        ["5", "5", "3444", "110218", "4", "0.8", "1"]
    );
    // The same figures by day and month: every event is on 1 March.
    let day = rows
        .iter()
        .find(|r| r["period_label"] == "2023-03-01" && r["agency_code"] == "A")
        .unwrap();
    assert_eq!(day["sync_p50_seconds"], "3444");

    // By status: the three receipts (10 s, 1 h, 2 h: p95 is 7200 s, in [2^12.5, 2^13),
    // reported as 2^12.75 = 6889 s) and the processed one.
    let by_status = read_csv(dir.path(), "sync_delay");
    let status = |agency: &str, code: &str| {
        by_status
            .iter()
            .find(|r| {
                r["period_label"] == "2023"
                    && r["agency_code"] == agency
                    && r["status_code"] == code
            })
            .unwrap_or_else(|| panic!("no row {agency} {code}"))
    };
    let cols = [
        "events",
        "p50_seconds",
        "p95_seconds",
        "within_24h",
        "within_24h_rate",
    ];
    assert_eq!(
        get(status("A", "2"), &cols),
        ["3", "3444", "6889", "3", "1"]
    );
    assert_eq!(
        get(status("A", "9"), &cols),
        ["1", "110218", "110218", "0", "0"]
    );
    assert_eq!(get(status("", "2"), &cols)[0], "4");

    // The Parquet table holds the same rows.
    let batches = read_parquet(dir.path(), "quality");
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, rows.len());
    let summary = s.quality.unwrap();
    assert_eq!(summary.rows.len(), rows.len());
}

#[test]
fn files_without_arrived_at_fall_back_to_ingested_at() {
    let dir = tempfile::tempdir().unwrap();
    let t = vn("2023-03-01 08:00");
    // Arrived 1 h after the event, ingested 1 h later still: the delay is 2 h.
    write(
        dir.path(),
        "2023-03-01",
        "old",
        &[row(snap("O1", "A", 2, t), HOUR)],
        false,
    );
    // A newer file has arrived_at (1 h); ingested_at (5 days later) is ignored.
    write(
        dir.path(),
        "2023-03-01",
        "new",
        &[row(snap("N1", "A", 2, t), HOUR)],
        true,
    );
    aggregate(dir.path(), &options(DateRange::default()));
    let rows = read_csv(dir.path(), "sync_delay");
    let r = rows
        .iter()
        .find(|r| r["period_label"] == "2023" && r["agency_code"] == "A")
        .unwrap();
    // 1 h → 3444 s (the bucket [2^11.5, 2^12)); 2 h → 6889 s ([2^12.5, 2^13)).
    assert_eq!(
        get(r, &["events", "p50_seconds", "p95_seconds", "within_24h"]),
        ["2", "3444", "6889", "2"]
    );
}

#[test]
fn completeness_counts_each_missing_piece() {
    let dir = tempfile::tempdir().unwrap();
    let t = vn("2023-03-01 08:00");
    let mut c1 = snap("C1", "C", 9, t);
    c1.received_at = None; // processed, never received
    let mut c2 = snap("C2", "C", 10, t);
    c2.finished_at = None; // returned, never finished
    let mut c3 = snap("C3", "C", 10, t);
    c3.returned_at = None; // returned without the return date
    let mut c4 = snap("C4", "C", 3, t);
    c4.refused_at = None; // not accepted, no refusal date
    let mut c5 = snap("C5", "C", 4, t);
    c5.due_at = None; // in process, no due date
    let mut c6 = snap("C6", "C", 9, t);
    c6.result_file_count = 0; // a result document without its file
    c6.flags.has_e_result = false;
    let mut c7 = snap("C7", "C", 2, t);
    c7.procedure_code = Some("9.999999".into()); // not in the catalogue
    let c8 = snap("C8", "C", 2, t); // nothing wrong
    let c9 = progress("C9", 4, t); // only progress: never entered as a dossier
    write(
        dir.path(),
        "2023-03-01",
        "c",
        &[c1, c2, c3, c4, c5, c6, c7, c8, c9].map(|e| row(e, MIN)),
        true,
    );
    aggregate(dir.path(), &options(DateRange::default()));
    let rows = read_csv(dir.path(), "quality");
    let cols = [
        "dossiers",
        "no_snapshot",
        "missing_required_date",
        "missing_received_at",
        "missing_finished_at",
        "missing_returned_at",
        "missing_refused_at",
        "no_due_date",
        "result_without_file",
        "unknown_procedure",
        "dossiers_with_issue",
        "quality_score",
    ];
    assert_eq!(
        get(year(&rows, "C"), &cols),
        ["8", "0", "4", "1", "1", "1", "1", "1", "1", "1", "7", "12.5"]
    );
    assert_eq!(
        get(year(&rows, "(none)"), &cols),
        ["1", "1", "0", "0", "0", "0", "0", "0", "0", "0", "1", "0"]
    );
    assert_eq!(
        get(year(&rows, ""), &cols),
        [
            "9",
            "1",
            "4",
            "1",
            "1",
            "1",
            "1",
            "1",
            "1",
            "1",
            "8",
            "11.11111111111111"
        ]
    );
    // None of these is a consistency problem.
    let consistency = [
        "status_regression",
        "due_before_receipt",
        "finish_before_receipt",
        "two_agencies",
    ];
    assert_eq!(get(year(&rows, ""), &consistency), ["0", "0", "0", "0"]);
}

#[test]
fn consistency_regressions_date_order_and_two_agencies() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = vn("2023-03-01 08:00");
    let (t2, t3) = (t1 + HOUR, t1 + 2 * HOUR);
    let mut d4 = snap("D4", "D", 2, t1);
    d4.due_at = Some(t1 - DAY); // due the day before it was received
    let mut d5 = snap("D5", "D", 9, t2);
    d5.received_at = Some(t2);
    d5.finished_at = Some(t1); // finished an hour before it was received
    let mut d1_later = snap("D1", "D", 4, t2);
    d1_later.received_at = Some(t1);
    let rows = vec![
        // D1: processed, then a newer snapshot says processing again: a regression.
        snap("D1", "D", 9, t1),
        d1_later,
        // D2: processed at t2; a stale snapshot from t1 arrives after it: not one.
        snap("D2", "D", 9, t2),
        snap("D2", "D", 4, t1),
        // D3: processing, supplement requested, processing: the same stage, not one.
        snap("D3", "D", 4, t1),
        snap("D3", "D", 5, t2),
        snap("D3", "D", 4, t3),
        d4,
        d5,
        // D6: received under D, then in process under E: filed under two agencies,
        // counted under the latest (E).
        snap("D6", "D", 2, t1),
        snap("D6", "E", 4, t2),
        // D7: received by a district of the agency reference, then held by a ward that
        // succeeds it: a handover along the successor line, not an issue.
        snap("D7", "000.20.10.H55", 2, t1),
        snap("D7", "000.40.10.H20", 4, t2),
    ];
    write(
        dir.path(),
        "2023-03-01",
        "d",
        &rows.into_iter().map(|e| row(e, MIN)).collect::<Vec<_>>(),
        true,
    );
    aggregate(dir.path(), &options(DateRange::default()));
    let rows = read_csv(dir.path(), "quality");
    let cols = [
        "dossiers",
        "status_regression",
        "due_before_receipt",
        "finish_before_receipt",
        "two_agencies",
        "missing_required_date",
        "no_due_date",
        "result_without_file",
        "unknown_procedure",
        "dossiers_with_issue",
        "quality_score",
    ];
    assert_eq!(
        get(year(&rows, "D"), &cols),
        ["5", "1", "1", "1", "0", "0", "0", "0", "0", "3", "40"]
    );
    assert_eq!(
        get(year(&rows, "E"), &cols),
        ["1", "0", "0", "0", "1", "0", "0", "0", "0", "1", "0"]
    );
    let cols = [
        "dossiers",
        "two_agencies",
        "handed_over",
        "unknown_agency",
        "dossiers_with_issue",
    ];
    assert_eq!(
        get(year(&rows, "000.40.10.H20"), &cols),
        ["1", "0", "1", "0", "0"]
    );
    // D and E are not in the reference: counted, and kept under their own codes.
    assert_eq!(get(year(&rows, "E"), &cols), ["1", "1", "1", "1", "1"]);
    assert_eq!(year(&rows, "D")["unknown_agency"], "5");
}

#[test]
fn duplicates_per_source_are_repeats_of_the_same_event() {
    let dir = tempfile::tempdir().unwrap();
    let t = vn("2023-03-01 08:00");
    let canon = |mut e: DossierEvent<'static>| {
        e.source_system = Arc::from("canon");
        e
    };
    let rows = vec![
        // X sent three times: two repeats.
        snap("X", "A", 2, t),
        snap("X", "A", 2, t),
        snap("X", "A", 2, t),
        // Y: a snapshot and a progress step at the same time and status are two events;
        // so are two snapshots at the same time with different statuses.
        snap("Y", "A", 4, t),
        progress("Y", 4, t),
        snap("Y", "A", 5, t),
        // Z, from another system, sent twice.
        canon(snap("Z", "A", 2, t)),
        canon(snap("Z", "A", 2, t)),
        // W, re-synced by the software of the agency that took it over, nothing else
        // changed: two events, not a repeat.
        snap("W", "A", 4, t),
        snap("W", "B", 4, t),
    ];
    write(
        dir.path(),
        "2023-03-01",
        "x",
        &rows.into_iter().map(|e| row(e, MIN)).collect::<Vec<_>>(),
        true,
    );
    let s = aggregate(dir.path(), &options(DateRange::default()));
    assert_eq!(s.events_read, 10);
    let rows = read_csv(dir.path(), "sources");
    let got: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| {
            get(
                r,
                &["source_system", "events", "duplicates", "duplicate_rate"],
            )
        })
        .collect();
    assert_eq!(
        got,
        [["canon", "2", "1", "0.5"], ["dvcqg", "8", "2", "0.25"]]
    );
    // The repeats change no dossier count.
    let q = read_csv(dir.path(), "quality");
    assert_eq!(year(&q, "A")["dossiers"], "3");
    let batches = read_parquet(dir.path(), "sources");
    let dups = batches[0]
        .column_by_name("duplicates")
        .unwrap()
        .as_primitive::<UInt64Type>();
    assert_eq!((dups.value(0), dups.value(1)), (1, 2));
}

#[test]
fn dead_letters_by_reason_and_the_reconciliation_with_storage() {
    let dir = tempfile::tempdir().unwrap();
    let t = vn("2023-03-01 08:00");
    // Commits of the events table: their `commitInfo` records each source range.
    let commit = |version: u64, line: String| {
        let d = dir.path().join("events/_delta_log");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{version:020}.json")), line).unwrap();
    };
    let ranges = |ranges: serde_json::Value| {
        serde_json::json!({"commitInfo": {"operation": "STREAMING UPDATE", "operationParameters": {
            "sohoa.ranges": ranges.to_string(), "sohoa.keyFingerprint": "0123abcd"}}})
        .to_string()
    };
    // Offsets 0–9: five events written, three messages dead-lettered, by reason.
    commit(
        1,
        ranges(serde_json::json!([{
            "topic": "t1", "partition": 0, "start": 0, "end": 9,
            "messages": 10, "events": 5, "dead_lettered": 3,
            "dead_letters_by_reason": {"invalid_json": 2, "bad_date": 1},
            "events_by_date": {"2023-03-01": 5}
        }])),
    );
    // A range without the breakdown, whose events are dated after the run's range.
    commit(
        2,
        ranges(serde_json::json!([{
            "topic": "t1", "partition": 0, "start": 10, "end": 13,
            "messages": 4, "events": 2, "dead_lettered": 1,
            "events_by_date": {"2023-04-01": 2}
        }])),
    );
    // Not a commit the ingestor could have written.
    commit(3, "{".into());
    // Storage holds six rows of t1 in the range (one more than its commits say) and two
    // of t2, which no commit names at all.
    let mut rows: Vec<Row> = (0..6)
        .map(|i| row(snap(&format!("R{i}"), "A", 2, t), MIN))
        .collect();
    for i in 0..2 {
        let mut r = row(snap(&format!("S{i}"), "A", 2, t), MIN);
        r.topic = "t2";
        rows.push(r);
    }
    for r in &mut rows[..6] {
        r.topic = "t1";
    }
    write(dir.path(), "2023-03-01", "r", &rows, true);
    let range = DateRange {
        from: None,
        to: NaiveDate::from_ymd_opt(2023, 3, 31),
    };
    let s = aggregate(dir.path(), &options(range));
    let q = s.quality.unwrap();
    assert_eq!(q.unreadable_commits, 1);
    let rows = read_csv(dir.path(), "ingest");
    let cols = [
        "topic",
        "reason",
        "committed_ranges",
        "messages",
        "dead_lettered",
        "dead_letter_rate",
        "committed_events",
        "committed_rows_in_range",
        "storage_rows",
        "difference",
    ];
    let got: Vec<Vec<&str>> = rows.iter().map(|r| get(r, &cols)).collect();
    assert_eq!(
        got,
        [
            [
                "t1",
                "",
                "2",
                "14",
                "4",
                "0.2857142857142857",
                "7",
                "5",
                "6",
                "1"
            ],
            [
                "t1",
                "(unknown)",
                "2",
                "14",
                "1",
                "0.07142857142857142",
                "7",
                "5",
                "6",
                ""
            ],
            [
                "t1",
                "bad_date",
                "2",
                "14",
                "1",
                "0.07142857142857142",
                "7",
                "5",
                "6",
                ""
            ],
            [
                "t1",
                "invalid_json",
                "2",
                "14",
                "2",
                "0.14285714285714285",
                "7",
                "5",
                "6",
                ""
            ],
            ["t2", "", "0", "0", "0", "", "0", "0", "2", "2"],
        ]
    );
    let mismatched: Vec<&str> = q.mismatches().map(|r| r.topic.as_str()).collect();
    assert_eq!(mismatched, ["t1", "t2"]);
}

#[test]
fn agencies_are_ranked_by_quality_next_to_their_766_score() {
    let dir = tempfile::tempdir().unwrap();
    let t = vn("2023-03-01 08:00");
    let mut g2 = snap("G2b", "G2", 9, t);
    g2.due_at = None; // one of G2's two dossiers lacks a due date
    let mut g3 = snap("G3a", "G3", 9, t);
    g3.procedure_code = Some("9.999999".into()); // and both of G3's are unknown
    let mut g3b = snap("G3b", "G3", 9, t);
    g3b.procedure_code = Some("9.999999".into());
    let rows = [
        snap("G1a", "G1", 9, t),
        snap("G1b", "G1", 9, t),
        snap("G2a", "G2", 9, t),
        g2,
        g3,
        g3b,
    ];
    write(
        dir.path(),
        "2023-03-01",
        "g",
        &rows.map(|e| row(e, MIN)),
        true,
    );
    aggregate(dir.path(), &options(DateRange::default()));
    let rows = read_csv(dir.path(), "quality");
    let got: Vec<Vec<&str>> = ["G1", "G2", "G3"]
        .iter()
        .map(|a| get(year(&rows, a), &["quality_score", "quality_rank"]))
        .collect();
    assert_eq!(got, [["100", "1"], ["50", "2"], ["0", "3"]]);
    assert_eq!(year(&rows, "")["quality_rank"], "");

    // The 766 columns are the scorecard's, ranked by total over maximum.
    let cards = std::fs::read_to_string(dir.path().join("metrics/scorecard.csv")).unwrap();
    let mut lines = cards.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut pct: Vec<(String, f64)> = Vec::new();
    for l in lines {
        let c: Vec<&str> = l.split(',').collect();
        if c[col("period")] == "year" && !c[col("agency_code")].is_empty() {
            let (total, max): (f64, f64) = (
                c[col("total")].parse().unwrap(),
                c[col("max_total")].parse().unwrap(),
            );
            let q = year(&rows, c[col("agency_code")]);
            assert_eq!(q["score_766_max"].parse::<f64>().unwrap(), max);
            assert!((q["score_766"].parse::<f64>().unwrap() - total).abs() < 1e-3);
            pct.push((c[col("agency_code")].to_string(), total / max));
        }
    }
    pct.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (i, (agency, _)) in pct.iter().enumerate() {
        assert_eq!(year(&rows, agency)["score_766_rank"], (i + 1).to_string());
    }
    assert_eq!(pct.len(), 3);
}

#[test]
fn the_report_and_the_terminal_show_the_quality_block() {
    let dir = tempfile::tempdir().unwrap();
    let t = vn("2023-03-01 08:00");
    let mut bad = snap("H2", "H", 4, t);
    bad.due_at = None;
    write(
        dir.path(),
        "2023-03-01",
        "h",
        &[row(snap("H1", "H", 2, t), HOUR), row(bad, 2 * DAY)],
        true,
    );
    let s = aggregate(dir.path(), &options(DateRange::default()));
    let q = s.quality.as_ref().unwrap();
    let names = BTreeMap::new();
    let restated = sohoa_aggregator::model::View::Restated;
    let (rows, fields) = (s.rows_of(restated), s.fields_of(restated));
    let input = sohoa_aggregator::report::ReportInput {
        title: "Test",
        generated_at: "now",
        as_of: "then",
        rows: &rows,
        scorecards: &s.scorecards,
        agency_names: &names,
        min_dossiers: 1,
        calendar: &s.calendar,
        fields: &fields,
        breaks: &s.breaks,
        events_version: None,
    };
    let html = sohoa_aggregator::report::render_html_with_quality(&input, Some(q));
    assert!(html.contains("<h2>Data quality · 2023</h2>"));
    assert!(html.contains("<tr data-code=\"H\"><td>1</td>"));
    assert!(!sohoa_aggregator::report::render_html(&input).contains("Data quality"));
    // Delays of 1 h and 2 days: p50 3444 s (57 min); p95 in [2^17, 2^17.5) s, reported
    // as 2^17.25 = 155,871 s (1.8 d). The 766 score is the scorecard's.
    let text = sohoa_aggregator::report::terminal_quality(q, false);
    assert_eq!(
        text,
        "Data quality · 2023\n\
         Province: 2 dossiers · 50.0% without issues · sync p50 57 min · p95 1.8 d · within 24 h 50.0%\n\
         Lowest quality: H 50.0% (766 22.7%)\n\
         Repeats 0 of 2 events · dead letters 0 of 0 messages\n\
         Reconciliation MISMATCH: t (storage 2 vs commits 0)\n"
    );
}

/// The run's `quality/ingest` row of the whole topic (the one with no reason).
fn topic_row(s: sohoa_aggregator::Summary) -> sohoa_aggregator::quality::IngestRow {
    let ingest = s.quality.unwrap().ingest;
    ingest.into_iter().find(|r| r.reason.is_none()).unwrap()
}

#[test]
fn commits_are_read_once_and_summed_in_a_digest() {
    let dir = tempfile::tempdir().unwrap();
    let t = vn("2023-03-01 08:00");
    let commit = |version: u64, start: u64, messages: u64, dead: u64, date: &str, rows: u64| {
        let d = dir.path().join("events/_delta_log");
        std::fs::create_dir_all(&d).unwrap();
        let ranges = serde_json::json!([{
            "topic": "t", "partition": 0, "start": start, "end": start + messages - 1,
            "messages": messages, "events": rows, "dead_lettered": dead,
            "dead_letters_by_reason": {"syntax": dead}, "events_by_date": {date: rows}
        }]);
        let body = serde_json::json!({"commitInfo": {"operationParameters": {
            "sohoa.ranges": ranges.to_string()}}});
        std::fs::write(d.join(format!("{version:020}.json")), body.to_string()).unwrap();
    };
    commit(1, 0, 3, 1, "2023-03-01", 2);
    write(
        dir.path(),
        "2023-03-01",
        "a",
        &[
            row(snap("A", "A", 2, t), MIN),
            row(snap("B", "A", 2, t), MIN),
        ],
        true,
    );
    aggregate(dir.path(), &options(DateRange::default()));
    assert!(dir.path().join("quality/_commits.json").exists());

    // A commit already summed is not read again (commits never change; this one is
    // rewritten only to prove it), and a new one is added to the sum.
    commit(1, 0, 1000, 1000, "2023-03-01", 1000);
    commit(2, 3, 2, 0, "2023-03-02", 1);
    write(
        dir.path(),
        "2023-03-02",
        "b",
        &[row(snap("C", "A", 2, t + DAY), MIN)],
        true,
    );
    let s = aggregate(dir.path(), &options(DateRange::default()));
    let q = s.quality.unwrap();
    let topic = q.ingest.iter().find(|r| r.reason.is_none()).unwrap();
    assert_eq!(
        (
            topic.ranges,
            topic.messages,
            topic.dead_lettered,
            topic.committed_rows_in_range,
            topic.storage_rows,
            topic.difference()
        ),
        (2, 5, 1, 3, 3, Some(0))
    );
    // The digest keeps rows by date, so a range still applies.
    let range = DateRange {
        from: NaiveDate::from_ymd_opt(2023, 3, 2),
        to: None,
    };
    let s = aggregate(dir.path(), &options(range));
    let topic = topic_row(s);
    assert_eq!(
        (
            topic.committed_rows_in_range,
            topic.storage_rows,
            topic.difference()
        ),
        (1, 1, Some(0))
    );

    // A digest written before the count was named `ranges` still reads.
    let digest = dir.path().join("quality/_commits.json");
    let text = std::fs::read_to_string(&digest).unwrap();
    assert!(text.contains("\"ranges\""), "{text}");
    std::fs::write(&digest, text.replace("\"ranges\"", "\"markers\"")).unwrap();
    let s = aggregate(dir.path(), &options(DateRange::default()));
    let topic = topic_row(s);
    assert_eq!((topic.ranges, topic.messages), (2, 5));
}
