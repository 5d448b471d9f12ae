//! The ingestor against a real Kafka-protocol broker: librdkafka's mock cluster, running in
//! this test process on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use sohoa_ingestor::Metrics;

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: std::thread::JoinHandle<Result<sohoa_ingestor::Totals, sohoa_ingestor::IngestError>>,
    _rt: Arc<tokio::runtime::Runtime>,
}

fn start(cfg: sohoa_runtime::Config, metrics: Arc<Metrics>) -> Running {
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let h = rt.handle().clone();
    let handle = std::thread::spawn(move || {
        sohoa_ingestor::run(&cfg, &h, metrics, async move {
            let _ = rx.await;
        })
    });
    Running {
        stop,
        handle,
        _rt: rt,
    }
}

impl Running {
    fn stop(self) -> sohoa_ingestor::Totals {
        let _ = self.stop.send(());
        self.handle
            .join()
            .unwrap()
            .expect("ingestor drained cleanly")
    }
}

fn committed(brokers: &str, group: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(TOPIC, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(TOPIC, p).unwrap().offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

fn high_watermarks(brokers: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(TOPIC, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

#[test]
fn every_event_lands_once_bad_input_is_dead_lettered_and_offsets_are_committed() {
    let c = cluster(4);
    let (msgs, bad) = feed(2000, 50);
    produce(&c.brokers, TOPIC, &msgs);
    let expected = expected_offsets(&c.brokers, TOPIC, msgs.len(), &bad);
    assert_eq!(expected.len(), 1960);

    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let run = start(config(&c.brokers, dir.path(), &[]), metrics.clone());
    assert!(
        wait_for_rows(dir.path(), expected.len(), Duration::from_secs(60)),
        "rows did not arrive"
    );
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
    let dlq: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &c.brokers)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[DLQ]).unwrap();
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while dead.len() < 40 && std::time::Instant::now() < deadline {
        if let Some(Ok(msg)) = dlq.poll(Duration::from_millis(200)) {
            let h = msg.headers().expect("dead letters carry headers");
            let get = |k: &str| {
                h.iter()
                    .find(|x| x.key == k)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            assert_eq!(get("sohoa.error.class").as_deref(), Some("permanent"));
            assert_eq!(get("sohoa.error.kind").as_deref(), Some("syntax"));
            assert!(get("sohoa.error.reason")
                .unwrap()
                .starts_with("$: invalid JSON"));
            assert_eq!(get("sohoa.source.topic").as_deref(), Some(TOPIC));
            let payload = String::from_utf8(msg.payload().unwrap().to_vec()).unwrap();
            let i: usize = payload
                .split("broken-")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            dead.push(i);
        }
    }
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
    for f in parquet_files(&dir.path().join("events")) {
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
