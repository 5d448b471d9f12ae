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

/// The files of the newest snapshot of the events table under `root`, read through the
/// Delta kernel: a file no commit added (a fenced or interrupted flush's) is not one.
pub fn table_files(root: &Path) -> Vec<PathBuf> {
    table_files_in(&root.join("events"))
}

/// [`table_files`] of the table in `dir` (a root's `events/`, wherever it is now).
pub fn table_files_in(dir: &Path) -> Vec<PathBuf> {
    let table = sohoa_storage::Table::local(dir).unwrap();
    let Ok(snapshot) = table.latest() else {
        return Vec::new();
    };
    table
        .files(&snapshot)
        .unwrap()
        .into_iter()
        .map(|f| dir.join(f.path))
        .collect()
}

/// The offset the newest snapshot of the table in `dir` records for each partition
/// `0..partitions` of `topic` (its `txn` actions: where a restart resumes); `None` where
/// it records nothing.
pub fn table_offsets(dir: &Path, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let table = sohoa_storage::Table::local(dir).unwrap();
    let Ok(snapshot) = table.latest() else {
        return vec![None; partitions as usize];
    };
    (0..partitions)
        .map(|p| {
            let app = sohoa_storage::events::kafka_app_id(topic, p);
            table.app_version(&snapshot, &app).unwrap()
        })
        .collect()
}

/// Offsets of `good` (sorted) that the table in `dir` says it holds (below the offset it
/// records for their partition) and that none of its files holds: progress committed past
/// data not written. The offsets are read before the rows, so a commit in between can only
/// add rows, never a false claim.
pub fn claimed_not_held(dir: &Path, topic: &str, partitions: i32, good: &[Coord]) -> Vec<Coord> {
    let claimed = table_offsets(dir, topic, partitions);
    let held = offsets_in_table(dir);
    good.iter()
        .filter(|(p, o)| {
            claimed[*p as usize].is_some_and(|next| *o < next) && !held.contains_key(&(*p, *o))
        })
        .copied()
        .collect()
}

/// Where the commits of the table under `root` disagree with one another or with the
/// snapshot, per partition of `topic`: ranges (`sohoa.ranges`) that leave a gap or
/// overlap, a last range that does not end where the `txn` offset says, or event counts
/// that are not the rows of the partition in the table's files. Read while no one writes.
pub fn range_problems(root: &Path, topic: &str, partitions: i32) -> Vec<String> {
    let ranges = committed_ranges(root);
    let offsets = table_offsets(&root.join("events"), topic, partitions);
    let rows = offsets_in_storage(root);
    let mut out = Vec::new();
    for p in 0..partitions {
        let mine: Vec<&serde_json::Value> = ranges
            .iter()
            .filter(|r| r["topic"] == topic && r["partition"].as_i64() == Some(p.into()))
            .collect();
        let mut end: Option<i64> = None;
        let mut events = 0;
        for r in &mine {
            let (start, last) = (r["start"].as_i64().unwrap(), r["end"].as_i64().unwrap());
            if let Some(e) = end.filter(|e| start != e + 1) {
                out.push(format!(
                    "p{p}: range {start}..={last} follows one ending at {e}"
                ));
            }
            end = Some(last);
            events += r["events"].as_u64().unwrap() as usize;
        }
        if end.map(|e| e + 1) != offsets[p as usize] {
            out.push(format!(
                "p{p}: the ranges end at {end:?}, the table records {:?}",
                offsets[p as usize]
            ));
        }
        let held: usize = rows
            .range((p, i64::MIN)..=(p, i64::MAX))
            .map(|(_, n)| n)
            .sum();
        if held != events {
            out.push(format!(
                "p{p}: the ranges count {events} events, the table's files hold {held} rows"
            ));
        }
    }
    out
}

/// The source ranges the events table's commits record (`sohoa.ranges` in each commit's
/// `commitInfo.operationParameters`), sorted by partition and start.
pub fn committed_ranges(root: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let log = root.join("events/_delta_log");
    let Ok(entries) = std::fs::read_dir(&log) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(r) = action["commitInfo"]["operationParameters"]["sohoa.ranges"].as_str() {
                out.extend(serde_json::from_str::<Vec<serde_json::Value>>(r).unwrap());
            }
        }
    }
    out.sort_by_key(|r| (r["partition"].as_i64(), r["start"].as_i64()));
    out
}

/// Every row of the events table under `<root>/events/`.
pub fn read_events(root: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for f in table_files(root) {
        let file = std::fs::File::open(&f).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(Result::unwrap));
    }
    out
}

/// The Parquet data files under `dir`: the table's checkpoints, Parquet files too, are
/// not data.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == "_delta_log") {
                continue;
            }
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
    offsets_in_table(&root.join("events"))
}

/// [`offsets_in_storage`] of the table in `dir`.
pub fn offsets_in_table(dir: &Path) -> BTreeMap<(i32, i64), usize> {
    offsets_in_files(&table_files_in(dir))
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
    pub key: Option<Vec<u8>>,
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
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    assert_eq!(out.len(), n, "dead letters read back");
    out
}

// ---------------------------------------------------------------------------------------
// The fault-injection suites (ingestor and cli `tests/faults.rs`): a seeded PRNG, broker
// read-backs, and the summary table.
// ---------------------------------------------------------------------------------------

/// A small deterministic PRNG (splitmix64). The seed comes from `SOHOA_FAULT_SEED` or the
/// clock, and is printed, so a failing run can be replayed.
pub struct Prng(u64);

impl Prng {
    /// A generator for one test: the run's seed mixed with the test's name, so each test
    /// draws the same numbers whatever the others do.
    pub fn for_test(test: &str) -> (Prng, u64) {
        let seed = std::env::var("SOHOA_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(766, |d| d.as_secs())
            });
        let salt = test.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        uncaptured(&format!(
            "faults: {test}: seed {seed} (SOHOA_FAULT_SEED={seed} replays it)\n"
        ));
        (Prng(seed ^ salt), seed)
    }

    pub fn from_seed(seed: u64) -> Prng {
        Prng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// A duration uniform in `lo_ms..=hi_ms` milliseconds.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.between(lo_ms, hi_ms))
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// Written straight to the process's stderr, past the test harness's capture, so the
/// suite's seeds and summary show in every run, passing or not.
pub fn uncaptured(s: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(s.as_bytes());
}

/// Read every partition of `topic` from the beginning, without joining a group (a join
/// on the mock cluster waits 3 s for other members).
pub fn assign_from_beginning(c: &BaseConsumer, topic: &str) {
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
}

/// A message's (partition, offset).
pub type Coord = (i32, i64);

/// Where each produced message landed, by its index in the feed (the key `k<i>`).
pub fn offsets_by_index(brokers: &str, topic: &str, total: usize) -> Vec<(i32, i64)> {
    use rdkafka::Message;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sohoa-test-index-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    assign_from_beginning(&c, topic);
    let mut out = vec![(-1, -1); total];
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen < total && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let key = std::str::from_utf8(m.key().unwrap()).unwrap();
            let i: usize = key[1..].parse().unwrap();
            if out[i].0 < 0 {
                seen += 1;
            }
            out[i] = (m.partition(), m.offset());
        }
    }
    assert_eq!(seen, total, "the test reader saw every produced message");
    out
}

/// The (partition, offset) of every good and every malformed message of a feed.
pub fn split_offsets(by_index: &[(i32, i64)], bad: &[usize]) -> (Vec<Coord>, Vec<Coord>) {
    let (mut good, mut dead) = (Vec::new(), Vec::new());
    for (i, po) in by_index.iter().enumerate() {
        if bad.contains(&i) {
            dead.push(*po);
        } else {
            good.push(*po);
        }
    }
    good.sort();
    dead.sort();
    (good, dead)
}

/// Events lost (expected offsets missing from `events/`), events duplicated (extra
/// copies), and offsets present that nobody expected.
pub fn lost_and_duplicated(root: &Path, expected: &[(i32, i64)]) -> (usize, usize, usize) {
    let seen = offsets_in_storage(root);
    let lost = expected.iter().filter(|k| !seen.contains_key(k)).count();
    let duplicated = seen.values().map(|n| n - 1).sum();
    let unexpected = seen
        .keys()
        .filter(|k| expected.binary_search(k).is_err())
        .count();
    (lost, duplicated, unexpected)
}

/// The group's committed offsets for partitions `0..partitions` of `topic` (-1: none),
/// read without joining the group.
pub fn group_committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

pub fn high_watermarks_of(brokers: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

/// The source (partition, offset) of every message in the dead-letter topic, read to its
/// high watermark (dead letters are at least once: repeats are kept).
pub fn dead_letter_sources(brokers: &str) -> Vec<(i32, i64)> {
    use rdkafka::message::{Headers, Message};
    let end = high_watermarks_of(brokers, DLQ, 1)[0];
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sohoa-test-dead-letter-sources")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .unwrap();
    assign_from_beginning(&c, DLQ);
    let mut out = Vec::new();
    let mut last = -1;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while last + 1 < end && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            last = m.offset();
            let header = |name: &str| -> Option<i64> {
                let h = m.headers()?;
                let v = h.iter().find(|h| h.key == name)?.value?;
                std::str::from_utf8(v).ok()?.parse().ok()
            };
            if let (Some(p), Some(o)) = (
                header("sohoa.source.partition"),
                header("sohoa.source.offset"),
            ) {
                out.push((p as i32, o));
            }
        }
    }
    assert_eq!(last + 1, end, "the dead-letter topic was read to its end");
    out.sort();
    out
}

/// One line of the fault suite's summary.
pub struct FaultRow {
    pub kind: String,
    /// Faults injected: crash points armed, outages, error codes pushed, RTT changes.
    pub injected: u64,
    /// Processes killed (injected aborts and SIGKILLs).
    pub kills: u64,
    pub lost: usize,
    pub duplicated: usize,
    /// Every check of the test passed (exactly once and its fault-specific checks).
    pub held: bool,
    pub note: String,
}

static FAULT_ROWS: std::sync::Mutex<Vec<FaultRow>> = std::sync::Mutex::new(Vec::new());
static FAULT_TESTS_DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn fault_line(r: &FaultRow) -> String {
    format!(
        "| {:<44} | {:>8} | {:>5} | {:>11} | {:>17} | {:<4} | {}\n",
        r.kind,
        r.injected,
        r.kills,
        r.lost,
        r.duplicated,
        if r.held { "yes" } else { "NO" },
        r.note
    )
}

/// One test of a fault suite. Its rows are printed as they come; the test that finishes
/// last (of `total` in the binary) prints the whole table, failed tests included.
pub struct FaultTest {
    name: &'static str,
    total: usize,
    rows: Vec<usize>,
}

impl FaultTest {
    pub fn start(name: &'static str, total: usize) -> FaultTest {
        FaultTest {
            name,
            total,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, row: FaultRow) {
        uncaptured(&format!("faults: {}: {}", self.name, fault_line(&row)));
        let mut rows = FAULT_ROWS.lock().unwrap_or_else(|e| e.into_inner());
        self.rows.push(rows.len());
        rows.push(row);
    }
}

impl Drop for FaultTest {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.rows.is_empty() || std::thread::panicking() {
            let mut rows = FAULT_ROWS.lock().unwrap_or_else(|e| e.into_inner());
            if self.rows.is_empty() {
                rows.push(FaultRow {
                    kind: self.name.to_string(),
                    injected: 0,
                    kills: 0,
                    lost: 0,
                    duplicated: 0,
                    held: false,
                    note: "the test stopped before its check".into(),
                });
            } else {
                for &i in &self.rows {
                    rows[i].held = false;
                }
            }
        }
        if FAULT_TESTS_DONE.fetch_add(1, Ordering::SeqCst) + 1 != self.total {
            return;
        }
        let rows = FAULT_ROWS.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::from("\nfault-injection summary\n");
        out.push_str(&format!(
            "| {:<44} | {:>8} | {:>5} | {:>11} | {:>17} | {:<4} | note\n",
            "fault", "injected", "kills", "events lost", "events duplicated", "held"
        ));
        out.push_str(&format!(
            "|{:-<46}|{:-<10}|{:-<7}|{:-<13}|{:-<19}|{:-<6}|------\n",
            "", "", "", "", "", ""
        ));
        for r in rows.iter() {
            out.push_str(&fault_line(r));
        }
        let total = FaultRow {
            kind: "total".into(),
            injected: rows.iter().map(|r| r.injected).sum(),
            kills: rows.iter().map(|r| r.kills).sum(),
            lost: rows.iter().map(|r| r.lost).sum(),
            duplicated: rows.iter().map(|r| r.duplicated).sum(),
            held: rows.iter().all(|r| r.held),
            note: String::new(),
        };
        out.push_str(&fault_line(&total));
        uncaptured(&out);
    }
}

/// How many times each (partition, offset) appears in the Parquet files under `dir`,
/// whether the table names them or not.
pub fn offsets_in_dir(dir: &Path) -> BTreeMap<(i32, i64), usize> {
    offsets_in_files(&parquet_files(dir))
}

/// How many times each (partition, offset) appears in `files`.
pub fn offsets_in_files(files: &[PathBuf]) -> BTreeMap<(i32, i64), usize> {
    let mut seen = BTreeMap::new();
    for f in files {
        let file = std::fs::File::open(f).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in reader.map(Result::unwrap) {
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
    }
    seen
}

/// Like [`produce`], for a slice of a feed that starts at index `first`: keys stay the
/// feed's indexes (`k<first + i>`), so [`offsets_by_index`] can find every message.
pub fn produce_slice(brokers: &str, topic: &str, msgs: &[String], first: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "16777216")
        .create()
        .unwrap();
    for (i, m) in msgs.iter().enumerate() {
        let key = format!("k{}", first + i);
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
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// The rows the ingestor makes of messages `offsets` of partition `partition` of topic `t`,
/// each the national sync fixture `tests/fixtures/dvcqg/samples-envelope.json`.
pub fn fixture_rows(partition: i32, offsets: std::ops::Range<i64>) -> RecordBatch {
    use sohoa_schemas::{build_decoder, DecodeOutput, DecoderContext, DecoderKind};
    const PAYLOAD: &[u8] = include_bytes!("../../../../tests/fixtures/dvcqg/samples-envelope.json");
    let ctx = DecoderContext {
        source_system: std::sync::Arc::from("dvcqg"),
        pseudonymizer: std::sync::Arc::new(
            sohoa_schemas::Pseudonymizer::new(b"test-key-0123456789").unwrap(),
        ),
    };
    let decoder = build_decoder(DecoderKind::Dvcqg, ctx);
    let mut b = sohoa_schemas::EventBatchBuilder::default();
    for offset in offsets {
        let mut out = DecodeOutput::default();
        decoder.decode(PAYLOAD, &mut out);
        let lineage = sohoa_schemas::Lineage {
            topic: "t",
            partition,
            offset,
            ingested_at: 1_700_000_000_000_000,
            arrived_at: 1_700_000_000_000_000,
        };
        for e in &out.events {
            b.append(e, &lineage);
        }
    }
    b.finish().unwrap()
}
