//! The aggregator end to end on real Parquet: national sync records are decoded with the
//! shared decoders, written as `events/` partitions, aggregated, and the tables read back.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::{json, Value};
use sohoa_aggregator::fold::Shard;
use sohoa_aggregator::read::DateRange;
use sohoa_aggregator::{model::Period, Options};
use sohoa_schemas::{
    build_decoder, DecodeOutput, DecoderContext, DecoderKind, EventBatchBuilder, Lineage,
    Pseudonymizer,
};

const SAMPLES: &str = include_str!("../../../tests/fixtures/dvcqg/samples-envelope.json");

/// Decode `messages` (each one Kafka message) and write them as `events/` partitions, one
/// file per (message group, date), with offsets in message order.
fn write_events(root: &Path, file: &str, messages: &[String]) {
    let dec = build_decoder(
        DecoderKind::Dvcqg,
        DecoderContext {
            source_system: Arc::from("dvcqg"),
            pseudonymizer: Arc::new(Pseudonymizer::development()),
        },
    );
    let mut by_day: std::collections::BTreeMap<i64, EventBatchBuilder> = Default::default();
    for (offset, m) in messages.iter().enumerate() {
        let mut out = DecodeOutput::default();
        dec.decode(m.as_bytes(), &mut out);
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        for e in &out.events {
            let day = sohoa_schemas::normalize::vn_day(e.event_time);
            by_day.entry(day).or_default().append(
                e,
                &Lineage {
                    topic: "t",
                    partition: 0,
                    offset: offset as i64,
                    ingested_at: 0,
                    arrived_at: 0,
                },
            );
        }
    }
    for (day, mut b) in by_day {
        let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
            .unwrap()
            .format("%Y-%m-%d");
        let dir = root.join(format!("events/date={date}"));
        std::fs::create_dir_all(&dir).unwrap();
        let batch = b.finish().unwrap();
        let f = std::fs::File::create(dir.join(format!("{file}.parquet"))).unwrap();
        let mut w = ArrowWriter::try_new(f, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

fn config() -> sohoa_runtime::Config {
    sohoa_runtime::Config::load_with_env(None, Vec::<(String, String)>::new()).unwrap()
}

fn vn(s: &str) -> i64 {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    (t.and_utc().timestamp() - 7 * 3600) * 1_000_000
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

/// Aggregate `root`, with the agency reference `root.agencies.toml` where a test wrote one.
fn aggregate(root: &Path, opts: &Options) -> sohoa_aggregator::Summary {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root).unwrap());
    let mut cfg = config().aggregate;
    let agencies = root.with_extension("agencies.toml");
    if agencies.exists() {
        cfg.agencies = agencies.to_string_lossy().into_owned();
    }
    sohoa_aggregator::run(&cfg, store, rt.handle(), opts).unwrap()
}

fn read_table(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `metrics.csv` as (period, period_label, agency, procedure) → column → value.
fn metrics_csv(root: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    csv_rows(&root.join("metrics/metrics.csv"))
}

/// A CSV table, row by row: column → value.
fn csv_rows(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

/// The view a row of `agency` is read in: an agency as the feed names it, as it was; the
/// province ("") restated, where the samples' two old provinces are one.
fn view_of(agency: &str) -> &'static str {
    if agency.is_empty() {
        "restated"
    } else {
        "as_was"
    }
}

fn row<'a>(
    rows: &'a [std::collections::BTreeMap<String, String>],
    label: &str,
    agency: &str,
    procedure: &str,
) -> &'a std::collections::BTreeMap<String, String> {
    rows.iter()
        .find(|r| {
            r["period_label"] == label
                && r["view"] == view_of(agency)
                && r["agency_code"] == agency
                && r["procedure_code"] == procedure
                && r["field_code"].is_empty()
        })
        .unwrap_or_else(|| panic!("no row {label} {agency:?} {procedure:?}"))
}

#[test]
fn the_three_samples_give_the_classes_and_counts_of_the_readme() {
    let dir = tempfile::tempdir().unwrap();
    write_events(dir.path(), "samples", &[SAMPLES.to_string()]);
    let s = aggregate(dir.path(), &options("2023-12-31 23:59"));
    assert_eq!((s.files_read, s.events_read, s.dossiers), (3, 3, 3));

    let batches = read_table(&dir.path().join("dossiers/part-00000-of-00001.parquet"));
    let b = &batches[0];
    let code = b.column_by_name("dossier_code").unwrap().as_string::<i32>();
    let class = b
        .column_by_name("on_time_class")
        .unwrap()
        .as_string::<i32>();
    let got: Vec<(String, String)> = (0..b.num_rows())
        .map(|i| (code.value(i).to_string(), class.value(i).to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("000.00.12.H55-230223-0001".into(), "on_time".into()),
            ("000.00.12.H55-230301-0107".into(), "on_time".into()),
            ("000.00.30.H55-230110-0042".into(), "late".into()),
        ]
    );

    let rows = metrics_csv(dir.path());
    // January: the permit was received and was still in time at the month's end.
    let jan = row(&rows, "2023-01", "", "");
    assert_eq!(
        (
            jan["received"].as_str(),
            jan["in_progress_in_time"].as_str()
        ),
        ("1", "1")
    );
    assert_eq!(jan["on_time_rate"], "1");
    // February: the birth registration on time, the permit late; one received, online.
    let feb = row(&rows, "2023-02", "", "");
    assert_eq!(
        [
            &feb["received"],
            &feb["online_received"],
            &feb["on_time"],
            &feb["late"],
            &feb["ontime_total"]
        ],
        ["1", "1", "1", "1", "2"]
    );
    assert_eq!(feb["on_time_rate"], "0.5");
    // Only the notarised copy (withdrawn) is received in March; its only fee is zero.
    let mar = row(&rows, "2023-03", "", "");
    assert_eq!(
        (
            mar["fee_bearing"].as_str(),
            mar["online_payment_rate"].as_str()
        ),
        ("0", "")
    );
    // The year: the notarised copy was withdrawn, so it stays out of the on-time counts.
    let year = row(&rows, "2023", "", "");
    assert_eq!(
        [
            &year["received"],
            &year["on_time"],
            &year["late"],
            &year["in_progress_in_time"],
            &year["on_time_rate"]
        ],
        ["3", "1", "1", "0", "0.5"]
    );
    // The progress table: February carries the permit over from January, and every row
    // balances (carried over + received = resolved + withdrawn + stopped + in progress).
    let progress = csv_rows(&dir.path().join("metrics/progress.csv"));
    let province = |label: &str| {
        progress
            .iter()
            .find(|r| {
                r["period_label"] == label
                    && r["view"] == "restated"
                    && r["agency_code"].is_empty()
                    && r["field_code"].is_empty()
            })
            .unwrap()
    };
    let feb = province("2023-02");
    assert_eq!(
        [
            &feb["carried_over"],
            &feb["received"],
            &feb["received_online"],
            &feb["resolved_on_time"],
            &feb["resolved_late"]
        ],
        ["1", "1", "1", "1", "1"]
    );
    let mar = province("2023-03");
    assert_eq!(
        [
            &mar["carried_over"],
            &mar["received"],
            &mar["withdrawn"],
            &mar["on_time_rate"]
        ],
        ["0", "1", "1", ""]
    );
    for r in &progress {
        let n = |c: &str| r[c].parse::<u64>().unwrap();
        assert_eq!(
            n("carried_over") + n("received") + n("transferred_in"),
            n("resolved_early")
                + n("resolved_on_time")
                + n("resolved_late")
                + n("withdrawn")
                + n("stopped_or_refused")
                + n("transferred_out")
                + n("in_progress_in_time")
                + n("in_progress_overdue"),
            "{r:?}"
        );
    }
    // The birth registration is digitized with an electronic result; the agency rollup
    // and its procedure row agree.
    let agency = row(&rows, "2023", "000.00.12.H55", "");
    let detail = row(&rows, "2023", "000.00.12.H55", "1.001193");
    assert_eq!(agency["digitized"], "1");
    assert_eq!(detail["e_result"], "1");
    assert_eq!(detail["procedure_name"], "Đăng ký khai sinh");
    // Field rollups: civil status (HTTP, named in the feed) across agencies, and
    // construction (XD, no name given) within its agency.
    let field = |label: &str, agency: &str, code: &str| {
        rows.iter()
            .find(|r| {
                r["period_label"] == label
                    && r["view"] == view_of(agency)
                    && r["agency_code"] == agency
                    && r["field_code"] == code
                    && r["procedure_code"].is_empty()
            })
            .unwrap_or_else(|| panic!("no field row {label} {agency:?} {code}"))
    };
    let civil = field("2023", "", "HTTP");
    assert_eq!(
        [&civil["field_name"], &civil["received"], &civil["on_time"]],
        ["Hộ tịch", "1", "1"]
    );
    let permits = field("2023", "000.00.30.H55", "XD");
    assert_eq!(
        [
            &permits["field_name"],
            &permits["received"],
            &permits["late"]
        ],
        ["", "1", "1"]
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["period_label"] == "2023"
                && r["view"] == "restated"
                && !r["field_code"].is_empty())
            .count(),
        // Three fields across agencies, three within their one agency each.
        6
    );
    // 000.00.30.H55 is not in the agency reference: counted under its own code, under the
    // configured province, and in quality/, never dropped.
    assert_eq!(s.unknown_agencies, ["000.00.30.H55"]);
    let unknown = row(&rows, "2023", "000.00.30.H55", "");
    assert_eq!(
        [
            &unknown["received"],
            &unknown["province_code"],
            &unknown["agency_name"]
        ],
        ["1", "000.00.00.H20", ""]
    );
    let quality = csv_rows(&dir.path().join("quality/quality.csv"));
    let q = quality
        .iter()
        .find(|r| r["period_label"] == "2023" && r["agency_code"] == "000.00.30.H55")
        .unwrap();
    assert_eq!(
        (q["dossiers"].as_str(), q["unknown_agency"].as_str()),
        ("1", "1")
    );
    let listed = csv_rows(&dir.path().join("metrics/agencies.csv"));
    let l = listed
        .iter()
        .find(|r| r["code"] == "000.00.30.H55")
        .unwrap();
    assert_eq!(
        [&l["in_reference"], &l["province_code"], &l["current_code"]],
        ["false", "000.00.00.H20", "000.00.30.H55"]
    );
    // A known one is named, as it was and restated to the unit that succeeded it.
    let known = row(&rows, "2023", "000.00.12.H55", "");
    assert_eq!(
        [&known["agency_name"], &known["province_name"]],
        ["Sở Xây dựng tỉnh Tiền Giang", "Tỉnh Tiền Giang"]
    );
    let restated = rows
        .iter()
        .find(|r| {
            r["period_label"] == "2023"
                && r["view"] == "restated"
                && r["agency_code"] == "000.00.12.H20"
                && r["procedure_code"].is_empty()
                && r["field_code"].is_empty()
        })
        .unwrap();
    assert_eq!(
        [
            &restated["received"],
            &restated["agency_name"],
            &restated["province_name"]
        ],
        ["2", "Sở Xây dựng tỉnh Đồng Tháp", "Tỉnh Đồng Tháp"]
    );
    // The scorecard gives the province points for what it can measure.
    let cards = std::fs::read_to_string(dir.path().join("metrics/scorecard.csv")).unwrap();
    assert!(cards.lines().next().unwrap().contains("points_2_1"));
    assert!(s
        .scorecards
        .iter()
        .any(|c| c.agency_code.is_none() && c.period == Period::Year));
}

#[test]
fn repeats_and_a_stale_snapshot_arriving_late_change_nothing() {
    let clean = tempfile::tempdir().unwrap();
    write_events(clean.path(), "a", &[SAMPLES.to_string()]);
    aggregate(clean.path(), &options("2023-12-31 23:59"));

    let dirty = tempfile::tempdir().unwrap();
    let mut env: Value = serde_json::from_str(SAMPLES).unwrap();
    // An older snapshot of the permit (still processing, before it finished), synced
    // after the final one: it must not win.
    let mut stale = env["data"][1].clone();
    stale["TrangThaiHoSo"] = json!(4);
    stale.as_object_mut().unwrap().remove("NgayKetThucXuLy");
    let stale_msg = json!({"service": "DongBoHoSoMC", "data": [stale]}).to_string();
    write_events(
        dirty.path(),
        "a",
        &[SAMPLES.to_string(), stale_msg, SAMPLES.to_string()],
    );
    // The same file replayed under another name.
    write_events(dirty.path(), "b", &[SAMPLES.to_string()]);
    let s = aggregate(dirty.path(), &options("2023-12-31 23:59"));
    assert_eq!(s.dossiers, 3);
    assert_eq!(s.events_read, 10);
    let a = std::fs::read_to_string(clean.path().join("metrics/metrics.csv")).unwrap();
    let b = std::fs::read_to_string(dirty.path().join("metrics/metrics.csv")).unwrap();
    assert_eq!(a, b);
    env["data"][1]["TrangThaiHoSo"] = json!(9);
}

/// A deterministic feed: `n` dossiers over 2024 across agencies, procedures and fates.
fn synthetic(n: usize) -> Vec<String> {
    let agencies = [
        "000.00.12.H55",
        "000.00.30.H55",
        "000.20.31.H55",
        "000.21.32.H55",
    ];
    let procedures = [
        ("1.001193", "Đăng ký khai sinh"),
        ("1.004227", "Cấp giấy phép xây dựng"),
        ("2.000908", "Chứng thực bản sao"),
        ("9.999999", "Thủ tục chưa có trong danh mục"),
    ];
    let mut seed: u64 = 42;
    let mut rnd = move |m: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % m
    };
    let fmt = |t: chrono::NaiveDateTime| t.format("%Y%m%d%H%M%S").to_string();
    (0..n)
        .flat_map(|i| {
            let received = chrono::NaiveDate::from_ymd_opt(2024, 1, 2).unwrap().and_hms_opt(7, 30, 0).unwrap()
                + chrono::Duration::hours(rnd(24 * 330) as i64);
            let due = received + chrono::Duration::days(1 + rnd(10) as i64);
            let (proc_code, proc_name) = procedures[rnd(4) as usize];
            let mut r = json!({
                "MaHoSo": format!("H55-{i:06}"),
                "MaTTHC": proc_code,
                "TenTTHC": proc_name,
                "DonViXuLy": agencies[rnd(4) as usize],
                "KenhThucHien": 1 + rnd(2),
                "NgayTiepNhan": fmt(received),
                "TrangThaiHoSo": 4,
                "HoSoCoThanhPhanSoHoa": rnd(2),
                "DuocThanhToanTrucTuyen": rnd(3),
                "TaiLieuNop": [{"IsDeleted": false, "DuongDanTaiTepTin": "https://f.example.invalid/x", "DuocSoHoa": rnd(2)}],
                "DanhSachLePhi": [{"Gia": rnd(2) * 50000}],
                "DanhSachGiayToKetQua": if rnd(3) > 0 { json!([{"TenGiayTo": "KQ", "DuongDanTepTinKetQua": "https://f.example.invalid/r"}]) } else { json!([]) },
            });
            if rnd(5) > 0 {
                r["NgayHenTra"] = json!(fmt(due));
            }
            match rnd(6) {
                0 => {}
                1 => {
                    let asked = received + chrono::Duration::hours(5);
                    r["DanhSachHoSoBoSung"] = json!([{"NgayBoSung": fmt(asked), "NgayTiepNhanBoSung": fmt(asked + chrono::Duration::days(3))}]);
                    r["NgayKetThucXuLy"] = json!(fmt(due + chrono::Duration::days(rnd(5) as i64 - 1)));
                    r["TrangThaiHoSo"] = json!(9);
                }
                2 => r["TrangThaiHoSo"] = json!(7),
                _ => {
                    r["NgayKetThucXuLy"] = json!(fmt(received + chrono::Duration::hours(rnd(24 * 12) as i64)));
                    r["TrangThaiHoSo"] = json!(10);
                }
            }
            let full = json!({"service": "DongBoHoSoMC", "data": [r.clone()]}).to_string();
            // A third of the districts' dossiers: the district's snapshot at receipt, then
            // its successor's with all that happened since (see `REORGANIZED`); and a third
            // of the department's, taken over by an agency that does not succeed it.
            let successor = match r["DonViXuLy"].as_str() {
                Some("000.20.31.H55") => ["000.40.01.H55", "000.40.02.H55"][i % 2],
                Some("000.21.32.H55") => "000.40.01.H55",
                // Not a successor: a handover the restated view keeps too.
                Some("000.00.12.H55") => "000.00.30.H55",
                _ => return vec![full],
            };
            if i % 3 != 0 {
                return vec![full];
            }
            let mut first = json!({
                "MaHoSo": r["MaHoSo"],
                "MaTTHC": r["MaTTHC"],
                "TenTTHC": r["TenTTHC"],
                "DonViXuLy": r["DonViXuLy"],
                "KenhThucHien": r["KenhThucHien"],
                "NgayTiepNhan": r["NgayTiepNhan"],
                "TrangThaiHoSo": 4,
            });
            if let Some(due) = r.get("NgayHenTra") {
                first["NgayHenTra"] = due.clone();
            }
            let mut last = r;
            last["DonViXuLy"] = json!(successor);
            vec![
                json!({"service": "DongBoHoSoMC", "data": [first]}).to_string(),
                json!({"service": "DongBoHoSoMC", "data": [last]}).to_string(),
            ]
        })
        .collect()
}

/// The agency reference of the synthetic feed: two districts ended on 30 June 2024, one
/// shared between two wards, one merged into the first ward; 000.00.30.H55 is missing.
const REORGANIZED: &str = r#"
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
name = "District one"
level = "district"
valid_to = 2024-06-30
successors = [{ code = "000.40.01.H55", share = 0.5 }, { code = "000.40.02.H55", share = 0.5 }]

[[agencies]]
code = "000.21.32.H55"
name = "District two"
level = "district"
valid_to = 2024-06-30
successors = ["000.40.01.H55"]

[[agencies]]
code = "000.40.01.H55"
name = "Ward one"
level = "ward"
valid_from = 2024-07-01

[[agencies]]
code = "000.40.02.H55"
name = "Ward two"
level = "ward"
valid_from = 2024-07-01
"#;

#[test]
fn shards_merged_equal_one_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().with_extension("agencies.toml"), REORGANIZED).unwrap();
    write_events(dir.path(), "feed", &synthetic(600));
    let whole = aggregate(dir.path(), &options("2024-12-31 12:00"));
    assert_eq!(whole.dossiers, 600);
    let one = std::fs::read_to_string(dir.path().join("metrics/metrics.csv")).unwrap();
    let one_progress = std::fs::read_to_string(dir.path().join("metrics/progress.csv")).unwrap();
    // Both views, with handovers in them.
    let progress = csv_rows(&dir.path().join("metrics/progress.csv"));
    for view in ["as_was", "restated"] {
        let handed: u64 = progress
            .iter()
            .filter(|r| {
                r["view"] == view && r["period"] == "year" && r["procedure_code"].is_empty()
            })
            .filter(|r| !r["agency_code"].is_empty() && r["field_code"].is_empty())
            .map(|r| r["transferred_in"].parse::<u64>().unwrap())
            .sum();
        assert!(handed > 0, "{view}");
    }
    let one_cards = std::fs::read_to_string(dir.path().join("metrics/scorecard.csv")).unwrap();
    let quality_files = ["quality.csv", "sync_delay.csv", "sources.csv", "ingest.csv"];
    let one_quality: Vec<String> = quality_files
        .iter()
        .map(|f| std::fs::read_to_string(dir.path().join("quality").join(f)).unwrap())
        .collect();
    std::fs::remove_dir_all(dir.path().join("metrics")).unwrap();
    std::fs::remove_dir_all(dir.path().join("quality")).unwrap();

    let mut dossiers = 0;
    for index in 0..3 {
        let mut o = options("2024-12-31 12:00");
        o.shard = Shard { index, count: 3 };
        let s = aggregate(dir.path(), &o);
        assert!(
            s.dossiers > 100,
            "each shard gets a fair share: {}",
            s.dossiers
        );
        dossiers += s.dossiers;
    }
    assert_eq!(dossiers, 600);
    let mut o = options("2024-12-31 12:00");
    o.merge_shards = Some(3);
    aggregate(dir.path(), &o);
    let merged = std::fs::read_to_string(dir.path().join("metrics/metrics.csv")).unwrap();
    assert_eq!(one, merged);
    // The backlog is walked after the merge, from the shards' flows: the same table.
    assert_eq!(
        one_progress,
        std::fs::read_to_string(dir.path().join("metrics/progress.csv")).unwrap()
    );
    assert_eq!(
        one_cards,
        std::fs::read_to_string(dir.path().join("metrics/scorecard.csv")).unwrap()
    );
    // The data-quality tables too.
    for (f, one) in quality_files.iter().zip(&one_quality) {
        let merged = std::fs::read_to_string(dir.path().join("quality").join(f)).unwrap();
        assert_eq!(*one, merged, "{f}");
    }
    // The three parts replaced the single run's file.
    let parts: Vec<_> = std::fs::read_dir(dir.path().join("dossiers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(parts.len(), 3, "{parts:?}");
}

#[test]
fn a_year_missing_from_the_calendar_sets_the_dossier_aside_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut env: Value = serde_json::from_str(SAMPLES).unwrap();
    // The birth registration, received in 2021 without a due date: the catalogue's due
    // date needs 2021, which the holiday table does not have.
    let old = env["data"][0].as_object_mut().unwrap();
    old.insert("NgayTiepNhan".into(), json!("20210223080512"));
    old.insert("NgayNopHoSo".into(), json!("20210222080512"));
    old.remove("NgayHenTra");
    write_events(dir.path(), "old", &[env.to_string()]);
    let s = aggregate(dir.path(), &options("2023-12-31 23:59"));
    assert_eq!(s.dossiers, 3);
    assert_eq!(
        s.calendar.missing,
        std::collections::BTreeMap::from([(2021, 1)])
    );
    assert_eq!(
        s.calendar.provisional.keys().copied().collect::<Vec<_>>(),
        [2027]
    );

    let b = &read_table(&dir.path().join("dossiers/part-00000-of-00001.parquet"))[0];
    let col = |name| b.column_by_name(name).unwrap().as_string::<i32>();
    let (code, class, reason) = (
        col("dossier_code"),
        col("on_time_class"),
        col("not_judged_reason"),
    );
    fn opt(a: &arrow::array::StringArray, i: usize) -> Option<&str> {
        a.is_valid(i).then(|| a.value(i))
    }
    let got: Vec<(&str, Option<&str>, Option<&str>)> = (0..b.num_rows())
        .map(|i| (code.value(i), opt(class, i), opt(reason, i)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("000.00.12.H55-230223-0001", None, Some("calendar_missing")),
            ("000.00.12.H55-230301-0107", Some("on_time"), None),
            ("000.00.30.H55-230110-0042", Some("late"), None),
        ]
    );
    // Received in 2021 and counted there, but not judged; the others as ever.
    let rows = metrics_csv(dir.path());
    let y2021 = row(&rows, "2021", "", "");
    assert_eq!(
        (y2021["received"].as_str(), y2021["ontime_total"].as_str()),
        ("1", "0")
    );
    // 2023: the permit late; the notarised copy withdrawn, so outside the on-time counts.
    let y2023 = row(&rows, "2023", "", "");
    assert_eq!(
        (y2023["on_time"].as_str(), y2023["late"].as_str()),
        ("0", "1")
    );
    // quality/ counts the dossier set aside, under its agency and year.
    let q = std::fs::read_to_string(dir.path().join("quality/quality.csv")).unwrap();
    let mut lines = q.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let agency_2021 = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|r| r[at("period_label")] == "2021" && r[at("agency_code")] == "000.00.12.H55")
        .unwrap();
    assert_eq!(agency_2021[at("calendar_missing")], "1");
}

#[test]
fn only_the_date_partitions_asked_for_are_read() {
    let dir = tempfile::tempdir().unwrap();
    write_events(dir.path(), "samples", &[SAMPLES.to_string()]);
    let mut o = options("2023-12-31 23:59");
    o.range = DateRange {
        from: Some(chrono::NaiveDate::from_ymd_opt(2023, 2, 1).unwrap()),
        to: Some(chrono::NaiveDate::from_ymd_opt(2023, 2, 28).unwrap()),
    };
    let s = aggregate(dir.path(), &o);
    assert_eq!((s.files_read, s.dossiers), (2, 2));
}

#[test]
fn a_bad_agency_reference_is_a_configuration_error_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    write_events(dir.path(), "samples", &[SAMPLES.to_string()]);
    let path = dir.path().with_extension("bad.toml");
    let entry = "[[agencies]]\ncode = \"X\"\nname = \"X\"\nlevel = \"ward\"\n";
    std::fs::write(&path, format!("{entry}\n{entry}")).unwrap();
    let mut cfg = config().aggregate;
    cfg.agencies = path.to_string_lossy().into_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let err = sohoa_aggregator::run(
        &cfg,
        store.clone(),
        rt.handle(),
        &options("2023-12-31 23:59"),
    )
    .unwrap_err();
    assert!(err.is_config());
    assert_eq!(
        err.to_string(),
        format!("aggregate.agencies {:?}: agency reference: code \"X\" appears twice with the same validity, at agencies[0] and agencies[1]; give a new version of a code its own valid_from", cfg.agencies)
    );
    // A province the reference does not have.
    let mut cfg = config().aggregate;
    cfg.province = "000.00.12.H55".into();
    let err =
        sohoa_aggregator::run(&cfg, store, rt.handle(), &options("2023-12-31 23:59")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "aggregate.province: \"000.00.12.H55\" is not a province-level entry of the agency reference"
    );
}
