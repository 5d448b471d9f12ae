//! Incremental runs against full recomputes over the same storage: after every step (late
//! and out-of-order events, repeats, a stale snapshot, compactions, a crash before the
//! state's commit point), every table an incremental run writes must equal, byte for byte,
//! what a full recompute writes.

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use sohoa_aggregator::fold::Shard;
use sohoa_aggregator::incremental::{self, Incremental};
use sohoa_aggregator::read::DateRange;
use sohoa_aggregator::{model::Period, AggregateError, Options, Summary};
use sohoa_schemas::event::{EventKind, Flags, Status};
use sohoa_schemas::{DossierEvent, EventBatchBuilder, Lineage};

const HOUR: i64 = 3600 * 1_000_000;
const DAY: i64 = 24 * HOUR;

fn vn(s: &str) -> i64 {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    (t.and_utc().timestamp() - 7 * 3600) * 1_000_000
}

fn event(
    code: &str,
    agency: &str,
    status: i8,
    time: i64,
    kind: EventKind,
) -> DossierEvent<'static> {
    let snapshot = kind == EventKind::Snapshot;
    DossierEvent {
        event_id: format!("{code}-{status}-{time}").into(),
        kind,
        source_system: Arc::from(if code.ends_with('7') {
            "igate"
        } else {
            "dvcqg"
        }),
        dossier_code: code.to_string().into(),
        procedure_code: snapshot.then(|| "1.001193".into()),
        procedure_name: snapshot.then(|| "Đăng ký khai sinh".into()),
        // Two fields; the name only where some snapshots give it.
        field_code: snapshot.then(|| {
            if code.ends_with(['1', '2', '3']) {
                "CT"
            } else {
                "HTTP"
            }
            .into()
        }),
        field_name: (snapshot && status != 4)
            .then(|| "Hộ tịch".into())
            .filter(|_| !code.ends_with(['1', '2', '3'])),
        agency_code: snapshot.then(|| agency.to_string().into()),
        channel: None,
        status: Status::from_code(status.into()).unwrap(),
        event_time: time,
        filed_at: None,
        // Some snapshots leave out dates, so the quality checks have something to count.
        received_at: (snapshot && status != 1 && !code.ends_with('3')).then_some(time - DAY),
        due_at: snapshot.then_some(time + 2 * DAY),
        finished_at: (snapshot && matches!(status, 9 | 10)).then_some(time),
        returned_at: (snapshot && status == 10).then_some(time),
        refused_at: None,
        supplements: vec![],
        document_count: 1,
        result_document_count: 1,
        result_file_count: 1,
        flags: Flags {
            has_submitted_file: true,
            has_e_result: status == 10,
            ..Flags::default()
        },
        applicant_type: None,
        applicant_pseudonym: None,
        step_started_at: None,
        step_due_at: None,
    }
}

/// The life of dossier `i` (received, processing, processed, returned; some stay open),
/// starting on day `i % 20` of March 2024, under one of three agencies. Half the
/// district's dossiers are taken over by a ward from their third event on (along the
/// successor line), and a tenth of the department's by an agency the reference lacks.
fn life(i: usize) -> Vec<DossierEvent<'static>> {
    let code = format!("H55-{i:04}");
    let agency = ["000.00.12.H55", "000.00.30.H55", "000.20.31.H55"][i % 3];
    let later = match i % 3 {
        2 if i.is_multiple_of(2) => ["000.40.01.H55", "000.40.02.H55"][i % 4 / 2],
        0 if i.is_multiple_of(10) => "000.00.30.H55",
        _ => agency,
    };
    let start = vn("2024-03-01 08:00") + (i % 20) as i64 * DAY + (i % 7) as i64 * HOUR;
    let steps: &[i8] = match i % 4 {
        0 => &[2, 4],
        1 => &[2, 4, 9],
        _ => &[2, 4, 9, 10],
    };
    steps
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let kind = if k == 1 && i.is_multiple_of(5) {
                EventKind::Progress
            } else {
                EventKind::Snapshot
            };
            let holder = if k >= 2 { later } else { agency };
            event(&code, holder, s, start + k as i64 * (DAY + 3 * HOUR), kind)
        })
        .collect()
}

/// An ingestor flush: `events` get offsets `start..` of partition `partition` of topic
/// `t`, and go to one file per event date named by the whole range, as the ingestor
/// names them. Arrivals are late by a few hours (some by days), so delays vary. Returns
/// the next offset.
fn flush(root: &Path, partition: i32, start: i64, events: &[DossierEvent<'static>]) -> i64 {
    let end = start + events.len() as i64 - 1;
    let mut by_day: std::collections::BTreeMap<i64, EventBatchBuilder> = Default::default();
    for (k, e) in events.iter().enumerate() {
        let offset = start + k as i64;
        let arrived = e.event_time + (offset % 5) * HOUR + (offset % 11 == 0) as i64 * 3 * DAY;
        by_day
            .entry(sohoa_schemas::normalize::vn_day(e.event_time))
            .or_default()
            .append(
                e,
                &Lineage {
                    topic: "dvcqg.dossiers",
                    partition,
                    offset,
                    ingested_at: arrived + 60_000_000,
                    arrived_at: arrived,
                },
            );
    }
    for (day, mut b) in by_day {
        let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
            .unwrap()
            .format("%Y-%m-%d");
        let dir = root.join(format!("events/date={date}"));
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("dvcqg.dossiers-p{partition:05}-o{start:020}-{end:020}.parquet");
        write_parquet(&dir.join(name), &b.finish().unwrap());
    }
    end + 1
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// What `sohoa compact` leaves once done: the `inputs` (file names under `date`) merged
/// into `compacted-<id>.parquet`, the inputs deleted; with `keep_marker`, its commit
/// marker is still there (as between the inputs' deletion and the marker's).
fn compact(root: &Path, date: &str, id: &str, inputs: &[String], keep_marker: bool) {
    let dir = root.join(format!("events/date={date}"));
    let mut batches = Vec::new();
    for i in inputs {
        batches.extend(read_parquet(&dir.join(i)));
    }
    let merged = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    write_parquet(&dir.join(format!("compacted-{id}.parquet")), &merged);
    if keep_marker {
        let marker = root.join(format!("_sohoa/compact/commits/date={date}"));
        std::fs::create_dir_all(&marker).unwrap();
        let inputs: Vec<String> = inputs
            .iter()
            .map(|i| format!("events/date={date}/{i}"))
            .collect();
        let body = serde_json::json!({"version": 1, "date": date, "inputs": inputs});
        std::fs::write(marker.join(format!("{id}.json")), body.to_string()).unwrap();
    }
    for i in inputs {
        std::fs::remove_file(dir.join(i)).unwrap();
    }
}

fn files_of(root: &Path, date: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(format!("events/date={date}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn options(as_of: &str) -> Options {
    Options {
        range: DateRange::default(),
        as_of: vn(as_of),
        shard: Shard::ALL,
        merge_shards: None,
        periods: Period::ALL.to_vec(),
        allow_mixed_keys: false,
        events: None,
        events_version: None,
    }
}

fn store(root: &Path) -> Arc<dyn object_store::ObjectStore> {
    Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root).unwrap())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The test's agency reference: the district 000.20.31.H55 ended on 10 March 2024, its
/// dossiers shared between two new wards; 000.00.30.H55 is missing, so it is counted as
/// unknown.
const AGENCIES: &str = r#"
[[agencies]]
code = "P"
name = "Province"
level = "province"

[[agencies]]
code = "000.00.12.H55"
name = "Department"
level = "department"

[[agencies]]
code = "000.20.31.H55"
name = "District"
level = "district"
valid_to = 2024-03-10
successors = [{ code = "000.40.01.H55", share = 0.5 }, { code = "000.40.02.H55", share = 0.5 }]

[[agencies]]
code = "000.40.01.H55"
name = "Ward one"
level = "ward"
valid_from = 2024-03-11

[[agencies]]
code = "000.40.02.H55"
name = "Ward two"
level = "ward"
valid_from = 2024-03-11
"#;

/// The configuration, with the test's agency reference (written next to the storage root).
fn config(root: &Path) -> sohoa_runtime::config::AggregateConfig {
    let path = root.with_extension("agencies.toml");
    std::fs::write(&path, AGENCIES).unwrap();
    let mut cfg = sohoa_runtime::Config::load_with_env(None, Vec::<(String, String)>::new())
        .unwrap()
        .aggregate;
    cfg.agencies = path.to_string_lossy().into_owned();
    cfg
}

fn run_incremental(root: &Path, as_of: &str, inc: &Incremental) -> Result<Summary, AggregateError> {
    incremental::run(
        &config(root),
        store(root),
        rt().handle(),
        &options(as_of),
        inc,
    )
}

const CSV: [&str; 7] = [
    "metrics/metrics.csv",
    "metrics/progress.csv",
    "metrics/scorecard.csv",
    "quality/quality.csv",
    "quality/sync_delay.csv",
    "quality/sources.csv",
    "quality/ingest.csv",
];
const PARQUET: [&str; 7] = [
    "dossiers/part-00000-of-00001.parquet",
    "handovers/part-00000-of-00001.parquet",
    "metrics/agencies.parquet",
    "metrics/metrics.parquet",
    "metrics/progress.parquet",
    "metrics/periods.parquet",
    "quality/quality.parquet",
];

/// Every output file's bytes, and the Parquet tables' rows.
struct Outputs(Vec<(String, Vec<u8>)>, Vec<Vec<RecordBatch>>);

fn outputs(root: &Path) -> Outputs {
    let bytes = CSV
        .iter()
        .chain(&PARQUET)
        .map(|p| (p.to_string(), std::fs::read(root.join(p)).unwrap()))
        .collect();
    let rows = PARQUET
        .iter()
        .map(|p| read_parquet(&root.join(p)))
        .collect();
    Outputs(bytes, rows)
}

/// Run incrementally, then fully over the same storage, and compare every output.
fn check_step(root: &Path, as_of: &str) -> Summary {
    let s = run_incremental(root, as_of, &Incremental::default()).unwrap();
    let inc = outputs(root);
    let full =
        sohoa_aggregator::run(&config(root), store(root), rt().handle(), &options(as_of)).unwrap();
    assert_eq!(s.dossiers, full.dossiers);
    let recomputed = outputs(root);
    for ((path, a), (_, b)) in inc.0.iter().zip(&recomputed.0) {
        assert!(
            a == b,
            "{path} differs at {as_of}:\nincremental:\n{}\nfull:\n{}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
    assert_eq!(inc.1, recomputed.1);
    s
}

/// Objects under the state directory, relative to it.
fn state_objects(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let base = root.join(incremental::STATE_DIR);
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out.sort();
    out
}

fn manifests(root: &Path) -> Vec<String> {
    state_objects(root)
        .into_iter()
        .filter(|p| p.starts_with("manifests/"))
        .collect()
}

#[test]
fn incremental_runs_equal_full_recomputes_through_late_events_compaction_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let lives: Vec<Vec<DossierEvent>> = (0..60).map(life).collect();

    // Step 1: the first two events of dossiers 0..40, in two partitions.
    let firsts: Vec<_> = lives[..40].iter().flat_map(|l| l[..2].to_vec()).collect();
    let (mut p0, mut p1) = (0, 0);
    p0 = flush(root, 0, p0, &firsts[..40]);
    p1 = flush(root, 1, p1, &firsts[40..]);
    let s = check_step(root, "2024-03-25 12:00");
    assert_eq!((s.dossiers, s.events_read), (40, 80));
    assert_eq!(manifests(root), ["manifests/00000000000000000001.json"]);

    // Step 2: the rest of those lives, newest first (out of order), a repeat of five
    // events already folded, a stale snapshot (an older status, synced after the newest),
    // and new dossiers whose events arrive in separate flushes.
    let mut rest: Vec<_> = lives[..40].iter().flat_map(|l| l[2..].to_vec()).collect();
    rest.reverse();
    let repeats: Vec<_> = firsts[10..15].to_vec();
    let mut stale = event(
        "H55-0001",
        "000.00.12.H55",
        4,
        lives[1][2].event_time - HOUR,
        EventKind::Snapshot,
    );
    stale.event_id = "stale".into();
    p0 = flush(root, 0, p0, &rest);
    p0 = flush(root, 0, p0, &repeats);
    p1 = flush(root, 1, p1, &[stale]);
    let news: Vec<_> = lives[40..].iter().flatten().cloned().collect();
    p1 = flush(root, 1, p1, &news[..20]);
    p1 = flush(root, 1, p1, &news[20..]);
    let s = check_step(root, "2024-03-28 12:00");
    assert_eq!(s.dossiers, 60);
    assert_eq!(s.events_read, (rest.len() + 5 + 1 + news.len()) as u64);
    // The repeats of events folded by the previous run count as repeats (H55-0007 is
    // igate's).
    let dups: Vec<(&str, u64)> = s
        .quality
        .as_ref()
        .unwrap()
        .sources
        .iter()
        .map(|r| (r.source_system.as_str(), r.duplicates))
        .collect();
    assert_eq!(dups, [("dvcqg", 4), ("igate", 1)]);

    // Step 3: a late sync into an old date, and nothing else: only that file is read.
    let late = event(
        "H55-0002",
        "000.00.30.H55",
        10,
        lives[2][3].event_time + 2 * HOUR,
        EventKind::Snapshot,
    );
    let date = chrono::DateTime::from_timestamp(
        sohoa_schemas::normalize::vn_day(late.event_time) * 86_400,
        0,
    )
    .unwrap()
    .format("%Y-%m-%d")
    .to_string();
    p0 = flush(root, 0, p0, &[late]);
    let s = check_step(root, "2024-04-02 12:00");
    assert_eq!((s.files_read, s.events_read), (1, 1));
    // Both views hold handovers: along the successor line only as it was, to an agency
    // that does not succeed the first in both.
    let mut progress = csv::Reader::from_path(root.join("metrics/progress.csv")).unwrap();
    let header = progress.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = progress.records().map(Result::unwrap).collect();
    for (view, least) in [("as_was", 5), ("restated", 1)] {
        let handed: u64 = rows
            .iter()
            .filter(|r| r[col("view")] == *view && &r[col("period")] == "year")
            .filter(|r| r[col("agency_code")].is_empty() && r[col("field_code")].is_empty())
            .map(|r| r[col("transferred_in")].parse::<u64>().unwrap())
            .sum();
        assert!(handed >= least, "{view}: {handed}");
    }

    // Step 4: the date is compacted, together with a file written after the last run (so
    // the compacted file holds events folded and events not folded), and the marker is
    // gone by the time the aggregator looks: rows already folded are skipped by offset.
    let unseen = event(
        "H55-0005",
        "000.00.30.H55",
        9,
        lives[2][3].event_time + 3 * HOUR,
        EventKind::Snapshot,
    );
    p1 = flush(root, 1, p1, &[unseen]);
    let inputs = files_of(root, &date);
    assert!(inputs.len() >= 3, "{inputs:?}");
    compact(root, &date, "00aa11bb22cc33dd", &inputs, false);
    let s = check_step(root, "2024-04-03 12:00");
    assert_eq!((s.files_read, s.events_read), (1, 1));

    // Step 5: another date compacted with its marker still present and every input
    // folded: recorded without being read.
    let date2 = "2024-03-05";
    let inputs2 = files_of(root, date2);
    assert!(inputs2.len() >= 2, "{inputs2:?}");
    compact(root, date2, "44ee55ff66007711", &inputs2, true);
    let s = check_step(root, "2024-04-04 12:00");
    assert_eq!((s.files_read, s.events_read), (0, 0));

    // Step 5b: the window of a compaction between publishing its file and deleting its
    // inputs: the compacted file (of files folded before, and of two never folded) is
    // listed with one unfolded input still there. Each event is folded once: the input
    // whole, and from the compacted file only the other new input's rows.
    let d3 = "2024-03-10";
    let t3 = vn("2024-03-10 09:00");
    let snapshot = EventKind::Snapshot;
    let a = [event("H55-9001", "000.00.12.H55", 2, t3, snapshot)];
    let b = [
        event("H55-9002", "000.00.30.H55", 2, t3 + HOUR, snapshot),
        event("H55-9001", "000.00.12.H55", 4, t3 + 2 * HOUR, snapshot),
    ];
    let a_path = root.join(format!(
        "events/date={d3}/dvcqg.dossiers-p00000-o{p0:020}-{p0:020}.parquet"
    ));
    p0 = flush(root, 0, p0, &a);
    p1 = flush(root, 1, p1, &b);
    let inputs3 = files_of(root, d3);
    assert!(inputs3.len() >= 3, "{inputs3:?}");
    let not_yet_deleted = std::fs::read(&a_path).unwrap();
    compact(root, d3, "8899aabbccddeeff", &inputs3, true);
    std::fs::write(&a_path, not_yet_deleted).unwrap();
    let s = run_incremental(root, "2024-04-04 13:00", &Incremental::default()).unwrap();
    assert_eq!((s.files_read, s.events_read), (2, 3));
    std::fs::remove_file(&a_path).unwrap();
    std::fs::remove_file(root.join(format!(
        "_sohoa/compact/commits/date={d3}/8899aabbccddeeff.json"
    )))
    .unwrap();
    let s = check_step(root, "2024-04-04 14:00");
    assert_eq!((s.files_read, s.events_read, s.dossiers), (0, 0, 62));

    // Step 6: no new file, later as_of: open dossiers change class, the state stays.
    let before = state_objects(root);
    check_step(root, "2024-05-01 12:00");
    assert_eq!(state_objects(root), before);

    // Step 7: a run crashes after writing its state objects, before the manifest; the
    // next run starts from the last committed state and folds the same files again.
    let more: Vec<_> = (60..70).flat_map(life).collect();
    flush(root, 0, p0, &more);
    let generation = manifests(root);
    let err = run_incremental(
        root,
        "2024-05-02 12:00",
        &Incremental {
            fail_before_commit: true,
        },
    )
    .unwrap_err();
    assert!(matches!(
        err,
        AggregateError::State(incremental::StateError::Injected)
    ));
    assert_eq!(manifests(root), generation);
    let s = check_step(root, "2024-05-02 12:00");
    assert_eq!(s.events_read, more.len() as u64);
    assert_eq!(s.dossiers, 72);
    // The crashed run's objects are gone; what is left is one manifest and what it names.
    let objects = state_objects(root);
    assert_eq!(manifests(root).len(), 1);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(incremental::STATE_DIR).join(&manifests(root)[0])).unwrap(),
    )
    .unwrap();
    let mut named: Vec<String> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            [
                p["facts"].as_str().unwrap(),
                p["fingerprints"].as_str().unwrap(),
            ]
        })
        .chain([manifest["quality"].as_str().unwrap()])
        .map(|p| p.strip_prefix(incremental::STATE_DIR).unwrap()[1..].to_string())
        .collect();
    named.extend(manifests(root));
    named.sort();
    assert_eq!(objects, named);
    let _ = p1;
}

#[test]
fn options_the_state_cannot_honour_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options("2024-03-25 12:00");
    opts.range.from = chrono::NaiveDate::from_ymd_opt(2024, 3, 1);
    let err = incremental::run(
        &config(dir.path()),
        store(dir.path()),
        rt().handle(),
        &opts,
        &Incremental::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--incremental does not support --from"),
        "{err}"
    );
    let mut opts = options("2024-03-25 12:00");
    opts.shard = Shard { index: 0, count: 2 };
    let err = incremental::run(
        &config(dir.path()),
        store(dir.path()),
        rt().handle(),
        &opts,
        &Incremental::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--incremental does not support --shard"),
        "{err}"
    );
}

#[test]
fn a_state_of_another_version_is_rebuilt_from_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let lives: Vec<DossierEvent> = (0..12).flat_map(life).collect();
    flush(root, 0, 0, &lives);
    check_step(root, "2024-03-25 12:00");
    // The manifest of an older format, naming objects this version cannot read.
    let path = root.join(incremental::STATE_DIR).join(&manifests(root)[0]);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["version"] = serde_json::json!(1);
    std::fs::write(&path, manifest.to_string()).unwrap();
    let facts = manifest["parts"][0]["facts"].as_str().unwrap().to_string();
    let rel = facts.strip_prefix(incremental::STATE_DIR).unwrap()[1..].to_string();
    std::fs::write(root.join(&facts), b"sohoa-facts-1\n").unwrap();

    // The next run folds everything again, equals a full run, and replaces the state.
    let s = check_step(root, "2024-03-26 12:00");
    assert_eq!((s.dossiers, s.events_read), (12, lives.len() as u64));
    assert_eq!(manifests(root), ["manifests/00000000000000000002.json"]);
    assert!(!state_objects(root).contains(&rel), "{rel} was not cleaned");
    let again = check_step(root, "2024-03-27 12:00");
    assert_eq!(again.events_read, 0);
}
