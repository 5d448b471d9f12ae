//! Shared by the ingestor's integration tests: the in-process Kafka mock cluster
//! (librdkafka's, a real Kafka-protocol server on 127.0.0.1), feeds, and reading the
//! Parquet output back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use sohoa_runtime::Config;

pub const TOPIC: &str = "dvcqg.dossiers";
pub const DLQ: &str = "sohoa.dead-letters";

pub struct Cluster {
    pub mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub brokers: String,
}

pub fn cluster(partitions: i32) -> Cluster {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, partitions, 1).unwrap();
    mock.create_topic(DLQ, 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    Cluster { mock, brokers }
}

/// A national sync record for dossier `i`, about 700 bytes.
pub fn record(i: usize) -> String {
    let day = 1 + i % 28;
    format!(
        r#"{{"MaHoSo":"000.00.12.H55-2303{day:02}-{i:06}","MaTTHC":"1.001193","TenTTHC":"Đăng ký khai sinh","MaLinhVuc":"HTTP","DonViXuLy":"000.00.{:02}.H55","KenhThucHien":{},"ChuHoSo":"Nguyễn Văn An","SoGiayToChuHoSo":"0821{i:08}","NgayTiepNhan":"202303{day:02}080000","NgayHenTra":"202303{day:02}170000","TrangThaiHoSo":2,"TaiLieuNop":[{{"IsDeleted":false,"DuongDanTaiTepTin":"https://files.example.invalid/{i}","DuocSoHoa":1}}]}}"#,
        10 + i % 5,
        1 + i % 2
    )
}

/// A feed of `n` messages, every `bad_every`-th one malformed (0 = none). Returns the
/// payloads and which indexes are bad.
pub fn feed(n: usize, bad_every: usize) -> (Vec<String>, Vec<usize>) {
    let mut bad = Vec::new();
    let msgs = (0..n)
        .map(|i| {
            if bad_every > 0 && i % bad_every == bad_every - 1 {
                bad.push(i);
                format!("{{\"MaHoSo\": \"broken-{i}\", \"TrangThaiHoSo\": ")
            } else {
                record(i)
            }
        })
        .collect();
    (msgs, bad)
}

pub fn produce(brokers: &str, topic: &str, msgs: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "16777216")
        .create()
        .unwrap();
    for (i, m) in msgs.iter().enumerate() {
        let key = format!("k{i}");
        let mut rec = BaseRecord::to(topic).payload(m.as_str()).key(key.as_str());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Configuration for a test ingestor on the mock cluster, writing under `root`.
pub fn config(brokers: &str, root: &Path, extra: &[(&str, &str)]) -> Config {
    let mut env: Vec<(String, String)> = vec![
        ("SOHOA__KAFKA__BROKERS".into(), brokers.into()),
        ("SOHOA__STORAGE__ROOT".into(), root.display().to_string()),
        ("SOHOA__PRIVACY__DEVELOPMENT_MODE".into(), "true".into()),
        ("SOHOA__HTTP__LISTEN".into(), "".into()),
        ("SOHOA__FLUSH__MAX_AGE_MS".into(), "300".into()),
        ("SOHOA__KAFKA__STATISTICS_INTERVAL_MS".into(), "200".into()),
        ("SOHOA__KAFKA__SESSION_TIMEOUT_MS".into(), "6000".into()),
        ("SOHOA__SHUTDOWN__DRAIN_DEADLINE_MS".into(), "5000".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load_with_env(None, env).unwrap()
}

/// Every row of every published file under `<root>/events/`.
pub fn read_events(root: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for f in parquet_files(&root.join("events")) {
        let file = std::fs::File::open(&f).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(Result::unwrap));
    }
    out
}

pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                files.extend(parquet_files(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// How many times each (partition, offset) appears in storage.
pub fn offsets_in_storage(root: &Path) -> BTreeMap<(i32, i64), usize> {
    let mut seen = BTreeMap::new();
    for b in read_events(root) {
        let parts = b
            .column_by_name("source_partition")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int32Type>()
            .clone();
        let offs = b
            .column_by_name("source_offset")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        for i in 0..b.num_rows() {
            *seen.entry((parts.value(i), offs.value(i))).or_insert(0) += 1;
        }
    }
    seen
}

/// Expected (partition, offset) of every good message, from the broker's own view of
/// where each message landed.
pub fn expected_offsets(
    brokers: &str,
    topic: &str,
    total: usize,
    bad: &[usize],
) -> Vec<(i32, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sohoa-test-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen < total && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            use rdkafka::Message;
            seen += 1;
            let key = std::str::from_utf8(m.key().unwrap()).unwrap();
            let i: usize = key[1..].parse().unwrap();
            if !bad.contains(&i) {
                out.push((m.partition(), m.offset()));
            }
        }
    }
    assert_eq!(seen, total, "the test reader saw every produced message");
    out.sort();
    out
}

/// Wait until storage holds `n` distinct offsets, or the timeout passes.
pub fn wait_for_rows(root: &Path, n: usize, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if offsets_in_storage(root).len() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub fn null_count(batches: &[RecordBatch], col: &str) -> usize {
    batches
        .iter()
        .map(|b| b.column_by_name(col).unwrap().null_count())
        .sum()
}

/// One message read back from the dead-letter topic.
pub struct DeadLetter {
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

impl DeadLetter {
    pub fn header(&self, key: &str) -> &str {
        self.headers.get(key).map_or("", String::as_str)
    }
}

/// Read `n` dead letters (or fail after 20 s), in a group of the test's own.
pub fn read_dead_letters(brokers: &str, n: usize) -> Vec<DeadLetter> {
    use rdkafka::message::{Headers, Message};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sohoa-test-dead-letters")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .unwrap();
    c.subscribe(&[DLQ]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_owned(),
                                x.value
                                    .map(|v| String::from_utf8_lossy(v).into_owned())
                                    .unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(DeadLetter {
                headers,
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    assert_eq!(out.len(), n, "dead letters read back");
    out
}
