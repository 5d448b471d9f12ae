//! The ingestor against a real Kafka-protocol broker: librdkafka's mock cluster, running in
//! this test process on 127.0.0.1.

mod common;
mod running;

use std::time::Duration;

use arrow::array::{Array, AsArray};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use running::*;
use sohoa_ingestor::Metrics;

fn committed(brokers: &str, group: &str, partitions: i32) -> Vec<i64> {
    group_committed(brokers, group, TOPIC, partitions)
}

fn high_watermarks(brokers: &str, partitions: i32) -> Vec<i64> {
    high_watermarks_of(brokers, TOPIC, partitions)
}

/// With one pipeline (decoding on the worker pool), and with three shards on four
/// partitions (one shard owning two); every other test runs one shard per core.
#[test]
fn every_event_lands_once_bad_input_is_dead_lettered_and_offsets_are_committed() {
    for shards in ["1", "3"] {
        lands_once_with(shards);
    }
}

fn lands_once_with(shards: &str) {
    let c = cluster(4);
    let (msgs, bad) = feed(2000, 50);
    produce(&c.brokers, TOPIC, &msgs);
    let expected = expected_offsets(&c.brokers, TOPIC, msgs.len(), &bad);
    assert_eq!(expected.len(), 1960);

    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let run = start(
        config(&c.brokers, dir.path(), &[("SOHOA__INGEST__SHARDS", shards)]),
        metrics.clone(),
    );
    assert!(
        wait_for_rows(dir.path(), expected.len(), Duration::from_secs(60)),
        "rows did not arrive"
    );
    assert_eq!(metrics.shards.get().to_string(), shards);
    assert_eq!(metrics.assigned_partitions.get(), 4);
    let totals = run.stop();

    // Exactly once: every good message's offset appears once, nothing else.
    let seen = offsets_in_storage(dir.path());
    assert!(
        seen.values().all(|&n| n == 1),
        "duplicates: {:?}",
        seen.iter()
            .filter(|(_, &n)| n > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expected);

    // Counts reconcile: consumed = written + dead-lettered.
    assert_eq!(totals.messages, 2000);
    assert_eq!(totals.dead_lettered, 40);
    assert_eq!(totals.events, 1960);
    let m = |o| metrics.messages.with_label_values(&[TOPIC, o]).get();
    assert_eq!(m("written") + m("dead_lettered"), 2000);
    assert_eq!(m("dead_lettered"), 40);

    // The dead-letter topic holds exactly the malformed messages, with their headers.
    let mut dead: Vec<usize> = read_dead_letters(&c.brokers, 40)
        .into_iter()
        .map(|d| {
            assert_eq!(d.header("sohoa.error.class"), "permanent");
            assert_eq!(d.header("sohoa.error.kind"), "syntax");
            assert!(d
                .header("sohoa.error.reason")
                .starts_with("$: invalid JSON"));
            assert_eq!(d.header("sohoa.source.topic"), TOPIC);
            let payload = String::from_utf8(d.payload).unwrap();
            payload
                .split("broken-")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    dead.sort();
    assert_eq!(
        dead, bad,
        "the dead letters are exactly the malformed messages"
    );

    // The group's committed offsets equal the high watermarks: progress is visible to
    // external lag tools.
    assert_eq!(
        committed(&c.brokers, "sohoa-ingestor", 4),
        high_watermarks(&c.brokers, 4)
    );

    // Files: zstd, page index, rows sorted by agency then time.
    for f in table_files(dir.path()) {
        assert!(f
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("date=2023-03-"));
        let file = std::fs::File::open(&f).unwrap();
        let b = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let md = b.metadata().clone();
        let col = md.row_group(0).column(0);
        assert!(
            col.column_index_offset().is_some() && col.offset_index_offset().is_some(),
            "page index in {}",
            f.display()
        );
        assert!(matches!(
            md.row_group(0).column(0).compression(),
            Compression::ZSTD(_)
        ));
        for batch in b.build().unwrap() {
            let batch = batch.unwrap();
            let agency = batch
                .column_by_name("agency_code")
                .unwrap()
                .as_string::<i32>();
            let keys: Vec<_> = (0..batch.num_rows())
                .map(|i| agency.value(i).to_owned())
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "rows sorted by agency in {}", f.display());
        }
    }
}

#[test]
fn lag_metrics_match_high_watermark_minus_committed_offset() {
    let c = cluster(1);
    let (first, _) = feed(60, 0);
    produce(&c.brokers, TOPIC, &first);
    let dir = tempfile::tempdir().unwrap();
    let run = start(config(&c.brokers, dir.path(), &[]), Metrics::new());
    assert!(wait_for_rows(dir.path(), 60, Duration::from_secs(30)));
    run.stop();
    assert_eq!(committed(&c.brokers, "sohoa-ingestor", 1), vec![60]);

    // A second replica that never flushes on its own: 40 new messages stay pending.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let cfg = config(
        &c.brokers,
        dir.path(),
        &[
            ("SOHOA__FLUSH__MAX_AGE_MS", "600000"),
            ("SOHOA__HTTP__LISTEN", &listen),
        ],
    );
    let metrics = Metrics::new();
    let run = start(cfg, metrics);
    let (second, _) = feed(100, 0);
    produce(&c.brokers, TOPIC, &second[60..]);
    let scrape = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&listen).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    };
    let line = |body: &str, name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains("partition=\"0\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut lag = None;
    while std::time::Instant::now() < deadline {
        if let Some(body) = scrape() {
            assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
            lag = line(&body, "sohoa_ingest_consumer_lag_messages");
            if lag == Some(40) {
                assert_eq!(line(&body, "sohoa_ingest_durable_offset"), Some(60));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let hwm = high_watermarks(&c.brokers, 1)[0];
    let committed_now = committed(&c.brokers, "sohoa-ingestor", 1)[0];
    assert_eq!((hwm, committed_now), (100, 60));
    assert_eq!(
        lag,
        Some(hwm - committed_now),
        "lag = high watermark - committed offset"
    );
    run.stop();
    assert_eq!(
        committed(&c.brokers, "sohoa-ingestor", 1),
        vec![100],
        "drained on stop"
    );
    assert_eq!(offsets_in_storage(dir.path()).len(), 100);
}

#[test]
fn broker_down_then_up_mid_stream_loses_and_duplicates_nothing() {
    let c = cluster(2);
    let (msgs, bad) = feed(1200, 100);
    produce(&c.brokers, TOPIC, &msgs[..600]);
    let dir = tempfile::tempdir().unwrap();
    let run = start(config(&c.brokers, dir.path(), &[]), Metrics::new());
    assert!(wait_for_rows(dir.path(), 100, Duration::from_secs(30)));
    // The only broker goes away: fetches, commits and dead letters all fail meanwhile.
    c.mock.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    c.mock.broker_up(1).unwrap();
    produce(&c.brokers, TOPIC, &msgs[600..]);
    let expected = expected_offsets(&c.brokers, TOPIC, msgs.len(), &bad);
    assert!(
        wait_for_rows(dir.path(), expected.len(), Duration::from_secs(60)),
        "recovered after the outage"
    );
    let totals = run.stop();
    let seen = offsets_in_storage(dir.path());
    assert!(seen.values().all(|&n| n == 1), "no duplicates");
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expected);
    assert_eq!(totals.dead_lettered, 12);
}

#[test]
fn each_kind_of_bad_input_is_dead_lettered_with_its_reason_and_good_records_stay() {
    let c = cluster(1);
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &c.brokers)
        .set("message.max.bytes", "16777216")
        .create()
        .unwrap();
    // Larger than the dead-letter topic takes (1 MB). The mock cluster keeps only about
    // 5 MB per partition, so a 5 MB message would push the rest of this small feed out of
    // it; the 5 MB and 10 MB cases run at the decoder level instead.
    let huge = format!("{{\"MaHoSo\": \"{}", "x".repeat(2 * 1024 * 1024));
    let envelope = format!(
        r#"{{"service":"DongBoHoSoMC","data":[{},{},{}]}}"#,
        record(1),
        record(2).replace(
            "\"NgayTiepNhan\":\"20230303080000\"",
            "\"NgayTiepNhan\":\"20231345\""
        ),
        record(3)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"MaHoSo\":\"\xff\xfe\"}".to_vec(), "syntax"),
        (
            br#"{"MaHoSo":"A","TrangThaiHoSo":"x","NgayTiepNhan":"20230301080000"}"#.to_vec(),
            "wrong_type",
        ),
        (
            br#"{"MaHoSo":"A","TrangThaiHoSo":99,"NgayTiepNhan":"20230301080000"}"#.to_vec(),
            "unknown_code",
        ),
        (huge.into_bytes(), "syntax"),
        (envelope.into_bytes(), "bad_date"),
        (record(4).into_bytes(), ""),
    ];
    for (payload, _) in &cases {
        producer
            .send(rdkafka::producer::BaseRecord::<(), [u8]>::to(TOPIC).payload(&payload[..]))
            .unwrap();
    }
    use rdkafka::producer::Producer;
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let run = start(config(&c.brokers, dir.path(), &[]), metrics.clone());
    // Records 1 and 3 of the envelope (one offset), and record 4 (another).
    assert!(wait_for_rows(dir.path(), 2, Duration::from_secs(30)));
    let totals = run.stop();
    assert_eq!(
        (totals.messages, totals.dead_lettered, totals.events),
        (6, 5, 3)
    );
    let codes: Vec<String> = read_events(dir.path())
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name("dossier_code")
                .unwrap()
                .as_string::<i32>()
                .clone();
            (0..a.len()).map(move |i| a.value(i).to_owned())
        })
        .collect();
    assert_eq!(codes.len(), 3);
    assert!(
        codes.iter().all(|c| !c.ends_with("-000002")),
        "the bad record stayed out: {codes:?}"
    );

    let mut got: Vec<(usize, String, String)> = read_dead_letters(&c.brokers, 5)
        .into_iter()
        .map(|d| {
            let offset: usize = d.header("sohoa.source.offset").parse().unwrap();
            let original = &cases[offset].0[..];
            match d.headers.get("sohoa.payload.truncated") {
                // The 2 MB message is larger than the dead-letter topic takes: its head is
                // kept, with its full size.
                Some(size) => {
                    assert_eq!(size.parse::<usize>().unwrap(), original.len());
                    assert!(original.starts_with(&d.payload) && d.payload.len() > 900_000);
                }
                None => assert_eq!(d.payload, original, "original bytes kept"),
            }
            (
                offset,
                d.header("sohoa.error.kind").to_owned(),
                d.header("sohoa.error.reason").to_owned(),
            )
        })
        .collect();
    got.sort();
    let kinds: Vec<_> = got.iter().map(|(o, k, _)| (*o, k.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (0, "syntax"),
            (1, "wrong_type"),
            (2, "unknown_code"),
            (3, "syntax"),
            (4, "bad_date")
        ]
    );
    assert!(
        got[4]
            .2
            .starts_with("data[1].NgayTiepNhan: \"20231345\" is not a date"),
        "{}",
        got[4].2
    );
    assert!(got[0].2.contains("not UTF-8"), "{}", got[0].2);
    assert_eq!(
        metrics
            .dead_letters
            .with_label_values(&[TOPIC, "bad_date"])
            .get(),
        1
    );
    // The table's commits carry the same counts by reason, for the aggregator's
    // data-quality table.
    let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
    for r in committed_ranges(dir.path()) {
        for (k, v) in r["dead_letters_by_reason"].as_object().unwrap() {
            *by_reason.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
    }
    let expected: std::collections::BTreeMap<String, u64> = [
        ("bad_date", 1),
        ("syntax", 2),
        ("unknown_code", 1),
        ("wrong_type", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(by_reason, expected);
}

#[test]
fn nothing_is_committed_past_a_dead_letter_the_broker_refused() {
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;
    let c = cluster(1);
    let (msgs, bad) = feed(100, 50);
    assert_eq!(bad, vec![49, 99]);
    produce(&c.brokers, TOPIC, &msgs);
    // Every produce request (only the dead-letter producer produces from here on) fails
    // with a retriable error until the faults are cleared.
    c.mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5000],
    );
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let run = start(config(&c.brokers, dir.path(), &[]), metrics.clone());
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        offsets_in_storage(dir.path()).len(),
        0,
        "nothing committed while dead letters are refused"
    );
    assert!(
        committed(&c.brokers, "sohoa-ingestor", 1)[0] <= 0,
        "no group offset either"
    );
    c.mock.clear_request_errors(RDKafkaApiKey::Produce);
    let expected = expected_offsets(&c.brokers, TOPIC, msgs.len(), &bad);
    assert!(
        wait_for_rows(dir.path(), expected.len(), Duration::from_secs(90)),
        "progress after the broker accepts again"
    );
    let totals = run.stop();
    assert_eq!(totals.dead_lettered, 2);
    assert_eq!(read_dead_letters(&c.brokers, 2).len(), 2);
    assert_eq!(committed(&c.brokers, "sohoa-ingestor", 1), vec![100]);
}

#[test]
fn a_dead_letter_the_broker_refuses_for_good_is_sent_again_not_lost() {
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;
    let c = cluster(1);
    let (msgs, bad) = feed(100, 50);
    produce(&c.brokers, TOPIC, &msgs);
    // The broker refuses for longer than the producer's delivery timeout: librdkafka
    // gives up on the messages (as after a long outage), so only sohoa's resend keeps them.
    c.mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5000],
    );
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let run = start(
        config(
            &c.brokers,
            dir.path(),
            &[("SOHOA_KAFKA_PROP_MESSAGE_TIMEOUT_MS", "1500")],
        ),
        metrics.clone(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metrics
        .flush_failures
        .with_label_values(&["dead_letter"])
        .get()
        < 2
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        offsets_in_storage(dir.path()).len(),
        0,
        "nothing committed meanwhile"
    );
    c.mock.clear_request_errors(RDKafkaApiKey::Produce);
    let expected = expected_offsets(&c.brokers, TOPIC, msgs.len(), &bad);
    assert!(
        wait_for_rows(dir.path(), expected.len(), Duration::from_secs(90)),
        "progress once the broker accepts again"
    );
    let totals = run.stop();
    assert!(
        metrics
            .flush_failures
            .with_label_values(&["dead_letter"])
            .get()
            >= 2,
        "the refusals failed flushes"
    );
    assert_eq!(totals.dead_lettered, 2);
    let letters = read_dead_letters(&c.brokers, 2);
    assert_eq!(letters.len(), 2, "both dead letters arrived");
    assert_eq!(committed(&c.brokers, "sohoa-ingestor", 1), vec![100]);
}

#[test]
fn a_writer_that_loses_the_commit_race_drops_its_copy_and_resumes_after_the_winner() {
    // Two consumer groups writing the same storage stand in for a replica the group evicted
    // while it was still flushing: both believe they own the partition. The fast one wins
    // every range; the slow one must neither fail nor duplicate anything.
    let c = cluster(1);
    let (msgs, bad) = feed(600, 0);
    produce(&c.brokers, TOPIC, &msgs[..300]);
    let dir = tempfile::tempdir().unwrap();
    let fast = start(
        config(
            &c.brokers,
            dir.path(),
            &[
                ("SOHOA__KAFKA__GROUP_ID", "fast"),
                ("SOHOA__FLUSH__MAX_AGE_MS", "100"),
            ],
        ),
        Metrics::new(),
    );
    let slow_metrics = Metrics::new();
    let slow = start(
        config(
            &c.brokers,
            dir.path(),
            &[
                ("SOHOA__KAFKA__GROUP_ID", "slow"),
                ("SOHOA__FLUSH__MAX_AGE_MS", "2500"),
            ],
        ),
        slow_metrics.clone(),
    );
    let fenced = || {
        slow_metrics
            .flush_failures
            .with_label_values(&["fenced"])
            .get()
    };
    let wait_fenced = |n: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while fenced() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        fenced() >= n
    };
    assert!(wait_fenced(1), "the slow writer lost the first range");
    // After the rewind the slow writer consumes from the winner's end, and loses again.
    produce(&c.brokers, TOPIC, &msgs[300..]);
    assert!(
        wait_fenced(2),
        "the slow writer resumed and lost the next range"
    );
    let expected = expected_offsets(&c.brokers, TOPIC, msgs.len(), &bad);
    assert!(wait_for_rows(
        dir.path(),
        expected.len(),
        Duration::from_secs(30)
    ));
    let slow_totals = slow.stop();
    fast.stop();
    let seen = offsets_in_storage(dir.path());
    assert!(seen.values().all(|&n| n == 1), "no duplicates");
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expected);
    assert_eq!(slow_totals.events, 0, "the slow writer committed nothing");
    // The loser's files were never committed: the table does not name them, and a
    // vacuum deletes them once they are older than the retention.
    let live = table_files(dir.path()).len();
    let on_disk = parquet_files(&dir.path().join("events")).len();
    assert!(
        on_disk > live,
        "{on_disk} files on disk, {live} in the table"
    );
}

/// The mock cluster caps a partition's log at 5 MiB (`max_size` of
/// `rd_kafka_mock_partition_t`, not configurable): an append that takes it over deletes the
/// oldest message sets until it fits, as retention does. Should that delete every set
/// before the new one, the mock reports the log start as its end, so one is always kept.
const MOCK_LOG_BYTES: usize = 5 << 20;

#[test]
fn offsets_retention_deleted_are_recorded_as_a_gap_and_what_is_left_lands_once() {
    let c = cluster(1);
    let (msgs, _) = feed(560, 0);
    produce_slice(&c.brokers, TOPIC, &msgs[..20], 0);
    let dir = tempfile::tempdir().unwrap();
    let first = Metrics::new();
    let run = start(config(&c.brokers, dir.path(), &[]), first.clone());
    assert!(
        wait_for_rows(dir.path(), 20, Duration::from_secs(60)),
        "offsets 0..=19 written"
    );
    run.stop();
    assert_eq!(first.offset_gaps.with_label_values(&[TOPIC, "0"]).get(), 0);

    // While no ingestor runs: 20..=39; 40, 100 kB short of the cap; 41..=60 (about 8 kB),
    // still under it; then 61..=560 (about 200 kB), which take the log over: 0..=40 are
    // deleted, and 41 is the oldest offset held. Storage resumes at 20.
    produce_slice(&c.brokers, TOPIC, &msgs[20..40], 20);
    let filler = "x".repeat(MOCK_LOG_BYTES - 100_000);
    produce_slice(&c.brokers, TOPIC, &[filler], 560);
    produce_slice(&c.brokers, TOPIC, &msgs[40..60], 40);
    produce_slice(&c.brokers, TOPIC, &msgs[60..], 60);
    let watermarks = ClientConfig::new()
        .set("bootstrap.servers", &c.brokers)
        .create::<BaseConsumer>()
        .unwrap()
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(watermarks, (41, 561), "retention deleted offsets 0..=40");

    let metrics = Metrics::new();
    let run = start(config(&c.brokers, dir.path(), &[]), metrics.clone());
    // Every offset still held lands, once, after the ones written before.
    assert!(
        wait_for_rows(dir.path(), 540, Duration::from_secs(60)),
        "the ingestor resumed at the oldest offset held, not at the end"
    );
    run.stop();
    let seen = offsets_in_storage(dir.path());
    assert!(seen.values().all(|&n| n == 1), "no duplicates");
    let expected: Vec<(i32, i64)> = (0..20).chain(41..561).map(|o| (0, o)).collect();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expected);

    // The gap is in the commit of the range that follows it, which starts where the table
    // stopped, so the committed ranges still join up.
    let ranges = committed_ranges(dir.path());
    let mut next = 0;
    for r in &ranges {
        assert_eq!(r["start"].as_i64().unwrap(), next, "ranges join up");
        next = r["end"].as_i64().unwrap() + 1;
    }
    assert_eq!(next, 561);
    let gaps: Vec<_> = ranges
        .iter()
        .flat_map(|r| {
            r["gaps"].as_array().unwrap().iter().map(move |g| {
                (
                    r["start"].as_i64().unwrap(),
                    g["from"].as_i64().unwrap(),
                    g["to"].as_i64().unwrap(),
                )
            })
        })
        .collect();
    assert_eq!(gaps, [(20, 20, 40)]);
    let count = |c: &prometheus::IntCounterVec| c.with_label_values(&[TOPIC, "0"]).get();
    assert_eq!(count(&metrics.offset_gaps), 1);
    assert_eq!(count(&metrics.offset_gap_messages), 21);
    assert!(metrics.render().contains(
        "sohoa_ingest_offset_gap_messages_total{partition=\"0\",topic=\"dvcqg.dossiers\"} 21"
    ));
}
