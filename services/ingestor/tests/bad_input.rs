//! The bad-input corpus: every case of `tests/bad-input/cases.toml` is produced to
//! its topic on librdkafka's in-process mock cluster and goes through one real ingestor.
//! Then, per case: the dead-letter topic holds exactly the cases expected there, with their
//! reason class and source coordinates; `events/` holds exactly the expected good events;
//! the decoder's warnings are the expected ones and the ingestor counted them; counts
//! reconcile; the ingestor drained cleanly. A summary table is printed, and the test fails
//! if any case does not hold.

mod common;
mod running;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type};
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, Message};
use sohoa_ingestor::dead_letter::headers;
use sohoa_ingestor::Metrics;
use sohoa_runtime::config::TopicConfig;
use sohoa_schemas::{DecodeOutput, DecoderContext, DecoderKind, Pseudonymizer};

/// Kafka topics of the corpus; `large` holds the 10 MB messages, one per partition, since
/// the mock cluster keeps only about 5 MB per partition.
const CANONICAL_TOPIC: &str = "canonical.events";
const LARGE_TOPIC: &str = "dvcqg.large";

/// The good national sync record the fixtures and generators start from.
const GOOD: &str = r#"{"MaHoSo":"000.00.12.H55-230301-0001","MaTTHC":"1.001193","TenTTHC":"Đăng ký khai sinh","MaLinhVuc":"HTTP","DonViXuLy":"000.00.12.H55","KenhThucHien":2,"NgayTiepNhan":"20230301080000","NgayHenTra":"20230303170000","TrangThaiHoSo":4}"#;

/// "Đăng ký khai sinh " in NFD: the breve and the acute as combining marks.
const NFD_NAME: &str = "Đa\u{306}ng ky\u{301} khai sinh ";

const TEN_MB: usize = 10 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    DeadLetter,
    Mixed,
    Normalized,
    Empty,
}

impl Expect {
    fn as_str(self) -> &'static str {
        match self {
            Expect::DeadLetter => "dead_letter",
            Expect::Mixed => "mixed",
            Expect::Normalized => "normalized",
            Expect::Empty => "empty",
        }
    }
}

#[derive(Debug)]
struct Case {
    name: String,
    /// `dvcqg`, `canonical` or `large` (manifest names).
    topic: String,
    generate: Option<String>,
    expect: Expect,
    kind: Option<String>,
    count: u64,
    events: i64,
    warnings: BTreeMap<String, u64>,
    reason: Option<String>,
    note: Option<String>,
    /// Filled in: the payload and, for `events = -1`, the events the generator made.
    payload: Vec<u8>,
}

impl Case {
    fn kafka_topic(&self) -> &'static str {
        match self.topic.as_str() {
            "dvcqg" => TOPIC,
            "canonical" => CANONICAL_TOPIC,
            "large" => LARGE_TOPIC,
            other => panic!("case {}: unknown topic {other}", self.name),
        }
    }

    fn decoder(&self) -> DecoderKind {
        match self.topic.as_str() {
            "canonical" => DecoderKind::Canonical,
            _ => DecoderKind::Dvcqg,
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.topic, self.name)
    }

    fn expected_text(&self) -> String {
        let kind = self.kind.as_deref().unwrap_or("?");
        match self.expect {
            Expect::DeadLetter => format!("dead_letter {kind}×{}", self.count),
            Expect::Mixed => format!("mixed {} ev + {kind}×{}", self.events, self.count),
            Expect::Normalized => {
                format!("normalized {} ev{}", self.events, warn_text(&self.warnings))
            }
            Expect::Empty => "empty".into(),
        }
    }
}

fn warn_text(w: &BTreeMap<String, u64>) -> String {
    w.iter().fold(String::new(), |mut s, (k, n)| {
        let _ = write!(s, " {k}={n}");
        s
    })
}

fn bad_input_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bad-input")
}

// ---- the manifest: the small subset of TOML it uses ---------------------------------

#[derive(Debug)]
enum Value {
    Str(String),
    Int(i64),
    Table(BTreeMap<String, u64>),
}

/// `[[case]]` tables of `key = "string"`, `key = integer` and `key = { k = integer, ... }`
/// lines, with `#` comment lines. Anything else is an error naming the line.
fn parse_manifest(text: &str) -> Vec<BTreeMap<String, Value>> {
    let mut cases = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let fail = |why: &str| -> ! { panic!("cases.toml line {}: {why}: {line}", n + 1) };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[[case]]" {
            cases.push(BTreeMap::new());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            fail("expected key = value")
        };
        let (key, value) = (key.trim(), value.trim());
        let value = if let Some(rest) = value.strip_prefix('"') {
            let (s, tail) = toml_string(rest).unwrap_or_else(|| fail("unterminated string"));
            if !tail.trim().is_empty() && !tail.trim().starts_with('#') {
                fail("text after the string");
            }
            Value::Str(s)
        } else if let Some(inner) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
            let mut table = BTreeMap::new();
            for pair in inner.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| fail("bad inline table"));
                let v = v.trim().parse().unwrap_or_else(|_| fail("bad integer"));
                table.insert(k.trim().to_owned(), v);
            }
            Value::Table(table)
        } else {
            Value::Int(value.parse().unwrap_or_else(|_| fail("bad value")))
        };
        let Some(case) = cases.last_mut() else {
            fail("key before the first [[case]]")
        };
        if case.insert(key.to_owned(), value).is_some() {
            fail("key given twice");
        }
    }
    cases
}

/// A basic TOML string after its opening quote: the text and what follows the closing one.
fn toml_string(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    None
}

fn load_cases() -> Vec<Case> {
    let dir = bad_input_dir();
    let text = std::fs::read_to_string(dir.join("cases.toml")).expect("tests/bad-input/cases.toml");
    let mut cases: Vec<Case> = parse_manifest(&text)
        .into_iter()
        .map(|mut t| {
            let mut s = |k: &str| match t.remove(k) {
                Some(Value::Str(s)) => Some(s),
                None => None,
                Some(v) => panic!("cases.toml: {k} must be a string, not {v:?}"),
            };
            let name = s("name").expect("every case has a name");
            let topic = s("topic").unwrap_or_else(|| panic!("case {name}: no topic"));
            let generate = s("generate");
            let expect = match s("expect").as_deref() {
                Some("dead_letter") => Expect::DeadLetter,
                Some("mixed") => Expect::Mixed,
                Some("normalized") => Expect::Normalized,
                Some("empty") => Expect::Empty,
                other => panic!("case {name}: expect = {other:?}"),
            };
            let kind = s("kind");
            let reason = s("reason");
            let note = s("note");
            let mut int = |k: &str, default: i64| match t.remove(k) {
                Some(Value::Int(i)) => i,
                None => default,
                Some(v) => panic!("case {name}: {k} must be an integer, not {v:?}"),
            };
            let count = int("count", 1) as u64;
            let events = int("events", 0);
            let warnings = match t.remove("warnings") {
                Some(Value::Table(w)) => w,
                None => BTreeMap::new(),
                Some(v) => panic!("case {name}: warnings must be a table, not {v:?}"),
            };
            assert!(t.is_empty(), "case {name}: unknown keys {:?}", t.keys());
            let needs_kind = matches!(expect, Expect::DeadLetter | Expect::Mixed);
            assert_eq!(
                kind.is_some(),
                needs_kind,
                "case {name}: kind goes with dead_letter and mixed only"
            );
            Case {
                name,
                topic,
                generate,
                expect,
                kind,
                count: if needs_kind { count } else { 0 },
                events,
                warnings,
                reason,
                note,
                payload: Vec::new(),
            }
        })
        .collect();
    // Every fixture file is a case, and every case without a generator has its file.
    let mut files: Vec<String> = Vec::new();
    for sub in ["dvcqg", "canonical"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            files.push(format!(
                "{sub}/{}",
                e.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    files.sort();
    let mut used = Vec::new();
    for c in &mut cases {
        match &c.generate {
            Some(spec) => {
                let (payload, events) = generate(spec);
                c.payload = payload;
                if c.events < 0 {
                    c.events = events.unwrap_or_else(|| panic!("{spec} makes no event count"));
                }
            }
            None => {
                let file = format!("{}/{}.json", c.decoder().as_str(), c.name);
                c.payload = std::fs::read(dir.join(&file))
                    .unwrap_or_else(|e| panic!("case {}: {file}: {e}", c.name));
                used.push(file);
            }
        }
    }
    used.sort();
    assert_eq!(files, used, "every fixture file is a case, once");
    let mut names: Vec<_> = cases.iter().map(Case::label).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique per topic");
    cases
}

// ---- generated payloads: too big, or too deep, to keep as files ---------------------

fn with_field(field: &str, json: &str) -> String {
    format!("{},\"{field}\":{json}}}", &GOOD[..GOOD.len() - 1])
}

fn set(field: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    v[field] = value;
    v.to_string()
}

fn nested_arrays(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

fn nested_objects(n: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))
}

fn repeat_to(unit: &str, bytes: usize) -> String {
    unit.repeat(bytes.div_ceil(unit.len()))
}

/// An envelope of distinct good records of at least 10 MB; `bad` replaces one record's
/// status with an unknown code. Returns the envelope and how many records it holds.
fn envelope_10mb(bad: Option<usize>) -> (String, usize) {
    let mut s = String::from(r#"{"service":"DongBoHoSoMC","data":["#);
    let mut n = 0;
    while s.len() < TEN_MB {
        if n > 0 {
            s.push(',');
        }
        let r = record(n);
        if bad == Some(n) {
            s.push_str(&r.replace("\"TrangThaiHoSo\":2", "\"TrangThaiHoSo\":42"));
        } else {
            s.push_str(&r);
        }
        n += 1;
    }
    s.push_str("]}");
    (s, n)
}

/// `name:N` from the manifest: the payload, and the events it holds when that is not fixed.
fn generate(spec: &str) -> (Vec<u8>, Option<i64>) {
    let (name, n) = spec.split_once(':').unwrap_or((spec, "0"));
    let n: usize = n.parse().expect("generator size");
    let payload = match name {
        "nested_arrays" | "dvcqg_nested_arrays" => nested_arrays(n),
        "nested_objects" => nested_objects(n),
        "dvcqg_nested_in_list" => with_field("TaiLieuNop", &nested_arrays(n)),
        "dvcqg_nested_unknown_field" => with_field("Extra", &nested_objects(n)),
        "dvcqg_nested_steps" => {
            let step = r#"{"MaHoSo":"000.00.12.H55-230301-0001","ThoiDiemXuLy":"20230301080000","TrangThai":4"#;
            format!(
                r#"{{"service":"CapNhatTienDoHoSoMC","data":[{}{step}}}{}]}}"#,
                format!("{step},\"QuaTrinhXuLy\":[").repeat(n),
                "]}".repeat(n)
            )
        }
        "dvcqg_nested_envelopes" => format!(
            "{}{GOOD}{}",
            r#"{"service":"DongBoHoSoMC","data":["#.repeat(n),
            "]}".repeat(n)
        ),
        "dvcqg_long_nfd_name" => set("TenTTHC", repeat_to(NFD_NAME, n).into()),
        "dvcqg_long_code" => set("MaHoSo", format!("000.00.12.h55-{}", "x".repeat(n)).into()),
        "record_10mb_nfd_name" => set("TenTTHC", repeat_to(NFD_NAME, TEN_MB).into()),
        "envelope_10mb_one_bad" => {
            let (_, records) = envelope_10mb(None);
            let (s, n) = envelope_10mb(Some(records / 2));
            return (s.into_bytes(), Some(n as i64 - 1));
        }
        "envelope_10mb_truncated" => {
            let (mut s, _) = envelope_10mb(None);
            s.truncate(s.len() - 100);
            s
        }
        other => panic!("unknown generator {other}"),
    };
    (payload.into_bytes(), None)
}

// ---- what each case did ---------------------------------------------------------------

/// What the decoder itself makes of a case, outside the ingestor.
struct Direct {
    /// The event ids it makes, sorted.
    ids: Vec<String>,
    rejects: Vec<&'static str>,
    warnings: BTreeMap<String, u64>,
}

fn decode_directly(case: &Case) -> Direct {
    let ctx = DecoderContext {
        source_system: Arc::from(case.decoder().as_str()),
        pseudonymizer: Arc::new(Pseudonymizer::new(b"bad-input-corpus-test-key").unwrap()),
    };
    let decoder = sohoa_schemas::build_decoder(case.decoder(), ctx);
    let mut out = DecodeOutput::default();
    decoder.decode(&case.payload, &mut out);
    let mut ids: Vec<String> = out.events.iter().map(|e| e.event_id.to_string()).collect();
    ids.sort();
    Direct {
        ids,
        rejects: out.rejects.iter().map(|r| r.kind()).collect(),
        warnings: out
            .warnings
            .iter()
            .map(|(w, n)| (w.as_str().to_owned(), n as u64))
            .collect(),
    }
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "16777216")
        .create()
        .unwrap()
}

/// Produce every case, keyed by its label; the large ones each to a partition of their own.
fn produce_cases(brokers: &str, cases: &[Case]) {
    let p = producer(brokers);
    let mut large = 0;
    for c in cases {
        let key = c.label();
        let mut rec = BaseRecord::to(c.kafka_topic())
            .payload(&c.payload[..])
            .key(key.as_str());
        if c.topic == "large" {
            rec = rec.partition(large);
            large += 1;
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    p.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

type Coords = (String, i32, i64);

/// Where each case landed, read back from the broker by key; also checks that the mock
/// cluster deleted nothing (every low watermark is 0).
fn locate(brokers: &str, cases: &[Case], topics: &[(&str, i32)]) -> HashMap<Coords, usize> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sohoa-test-locate")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for &(t, parts) in topics {
        for p in 0..parts {
            tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
            let (low, _) = c.fetch_watermarks(t, p, Duration::from_secs(10)).unwrap();
            assert_eq!(low, 0, "the mock cluster kept all of {t}/{p}");
        }
    }
    c.assign(&tpl).unwrap();
    let by_label: HashMap<String, usize> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| (c.label(), i))
        .collect();
    let mut out = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < cases.len() && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap()).into_owned();
            let i = by_label[&key];
            assert_eq!(m.payload().unwrap_or_default(), &cases[i].payload[..]);
            out.insert((m.topic().to_owned(), m.partition(), m.offset()), i);
        }
    }
    assert_eq!(out.len(), cases.len(), "every case is on the broker");
    out
}

/// Event ids in storage per source message, sorted.
fn events_by_message(root: &Path) -> HashMap<Coords, Vec<String>> {
    let mut out: HashMap<Coords, Vec<String>> = HashMap::new();
    for b in read_events(root) {
        let ids = b.column_by_name("event_id").unwrap().as_string::<i32>();
        let topics = b.column_by_name("source_topic").unwrap().as_string::<i32>();
        let parts = b
            .column_by_name("source_partition")
            .unwrap()
            .as_primitive::<Int32Type>();
        let offs = b
            .column_by_name("source_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let k = (topics.value(i).to_owned(), parts.value(i), offs.value(i));
            out.entry(k).or_default().push(ids.value(i).to_owned());
        }
    }
    for ids in out.values_mut() {
        ids.sort();
    }
    out
}

fn dlq_high_watermark(brokers: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    c.fetch_watermarks(DLQ, 0, Duration::from_secs(10))
        .unwrap()
        .1
}

/// Check one case against what the run produced; returns what happened and what is wrong.
fn judge(
    case: &Case,
    coords: &Coords,
    letter: Option<&DeadLetter>,
    stored: &[String],
    direct: &Direct,
) -> (String, Vec<String>) {
    let events = stored.len();
    let mut wrong = Vec::new();
    let mut miss = |ok: bool, what: String| {
        if !ok {
            wrong.push(what);
        }
    };
    let got_expect = match (letter.is_some(), events > 0) {
        (true, true) => Expect::Mixed,
        (true, false) => Expect::DeadLetter,
        (false, true) => Expect::Normalized,
        (false, false) => Expect::Empty,
    };
    miss(
        got_expect == case.expect,
        format!(
            "outcome {} (expected {})",
            got_expect.as_str(),
            case.expect.as_str()
        ),
    );
    if case.expect != Expect::Mixed && case.expect != Expect::Normalized {
        miss(events == 0, format!("{events} events written"));
    } else {
        miss(
            events as i64 == case.events,
            format!("{events} events written (expected {})", case.events),
        );
    }
    let got = match letter {
        Some(d) => {
            let kind = d.header(headers::KIND);
            let count = d.header(headers::COUNT);
            miss(
                Some(kind) == case.kind.as_deref(),
                format!("kind {kind} (expected {:?})", case.kind),
            );
            miss(
                count == case.count.to_string(),
                format!("count {count} (expected {})", case.count),
            );
            miss(
                d.header(headers::CLASS) == "permanent",
                format!("class {}", d.header(headers::CLASS)),
            );
            let reason = d.header(headers::REASON);
            if let Some(want) = &case.reason {
                miss(
                    reason.contains(want.as_str()),
                    format!("reason {reason:?} lacks {want:?}"),
                );
            }
            // The source coordinates: they are how this letter was matched to the case,
            // so check they are the message's own.
            miss(
                (
                    d.header(headers::TOPIC),
                    d.header(headers::PARTITION),
                    d.header(headers::OFFSET),
                ) == (
                    coords.0.as_str(),
                    coords.1.to_string().as_str(),
                    coords.2.to_string().as_str(),
                ),
                "source headers".into(),
            );
            miss(
                d.key.as_deref() == Some(case.label().as_bytes()),
                "original key kept".into(),
            );
            match d.headers.get(headers::TRUNCATED) {
                Some(size) => miss(
                    size == &case.payload.len().to_string()
                        && !d.payload.is_empty()
                        && case.payload.starts_with(&d.payload),
                    format!("truncated dead letter: size {size}, head kept"),
                ),
                None => miss(d.payload == case.payload, "original bytes kept".into()),
            }
            if events > 0 {
                format!("mixed {events} ev + {kind}×{count}")
            } else {
                format!("dead_letter {kind}×{count}")
            }
        }
        None if events > 0 => format!("normalized {events} ev{}", warn_text(&direct.warnings)),
        None => "empty".into(),
    };
    // Storage holds exactly the events the decoder makes of the message on its own (so
    // the good records of a mixed message, and not the bad ones), and the decoder agrees
    // with the manifest, warnings included.
    miss(
        direct.ids == stored,
        format!(
            "stored event ids differ from the {} the decoder makes",
            direct.ids.len()
        ),
    );
    miss(
        direct.rejects.len() as u64 == case.count,
        format!("decoded alone: {} rejects", direct.rejects.len()),
    );
    miss(
        direct.rejects.first().copied() == case.kind.as_deref(),
        format!("decoded alone: first reject {:?}", direct.rejects.first()),
    );
    miss(
        direct.warnings == case.warnings,
        format!(
            "warnings{} (expected{})",
            warn_text(&direct.warnings),
            warn_text(&case.warnings)
        ),
    );
    (got, wrong)
}

/// How many of `want` are not in `got`, and how many of `got` are not in `want` (both
/// sorted, as multisets).
fn difference(want: &[String], got: &[String]) -> (usize, usize) {
    let (mut i, mut j, mut missing, mut extra) = (0, 0, 0, 0);
    while i < want.len() || j < got.len() {
        match (want.get(i), got.get(j)) {
            (Some(a), Some(b)) if a == b => (i, j) = (i + 1, j + 1),
            (Some(a), Some(b)) if a < b => (i, missing) = (i + 1, missing + 1),
            (Some(_), None) => (i, missing) = (i + 1, missing + 1),
            _ => (j, extra) = (j + 1, extra + 1),
        }
    }
    (missing, extra)
}

#[test]
fn every_bad_input_is_dead_lettered_or_normalized_and_good_records_stay() {
    let cases = load_cases();
    let large = cases.iter().filter(|c| c.topic == "large").count() as i32;
    let c = cluster(1);
    c.mock.create_topic(CANONICAL_TOPIC, 1, 1).unwrap();
    c.mock.create_topic(LARGE_TOPIC, large.max(1), 1).unwrap();
    let topics = [
        (TOPIC, 1),
        (CANONICAL_TOPIC, 1),
        (LARGE_TOPIC, large.max(1)),
    ];
    produce_cases(&c.brokers, &cases);
    let located = locate(&c.brokers, &cases, &topics);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&c.brokers, dir.path(), &[]);
    cfg.topics = vec![
        TopicConfig {
            name: TOPIC.into(),
            decoder: DecoderKind::Dvcqg,
            source_system: None,
        },
        TopicConfig {
            name: CANONICAL_TOPIC.into(),
            decoder: DecoderKind::Canonical,
            source_system: None,
        },
        TopicConfig {
            name: LARGE_TOPIC.into(),
            decoder: DecoderKind::Dvcqg,
            source_system: None,
        },
    ];
    let metrics = Metrics::new();
    let run = running::start(cfg, metrics.clone());
    // Every message's range committed: consumed = written + dead-lettered, per topic.
    let settled = |outcome: &str| -> u64 {
        topics
            .iter()
            .map(|(t, _)| metrics.messages.with_label_values(&[t, outcome]).get())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while settled("written") + settled("dead_lettered") < cases.len() as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Panics if the ingestor crashed or did not drain cleanly.
    let totals = run.stop();

    let want_letters = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::DeadLetter | Expect::Mixed))
        .count();
    let in_dlq = dlq_high_watermark(&c.brokers) as usize;
    let letters = read_dead_letters(&c.brokers, in_dlq);
    let mut letter_of: HashMap<usize, &DeadLetter> = HashMap::new();
    let mut stray = Vec::new();
    for d in &letters {
        let coords = (
            d.header(headers::TOPIC).to_owned(),
            d.header(headers::PARTITION).parse().unwrap_or(-1),
            d.header(headers::OFFSET).parse().unwrap_or(-1),
        );
        match located.get(&coords) {
            Some(&i) if !letter_of.contains_key(&i) => {
                letter_of.insert(i, d);
            }
            Some(&i) => stray.push(format!("second dead letter for {}", cases[i].label())),
            None => stray.push(format!("dead letter from unknown message {coords:?}")),
        }
    }
    let stored = events_by_message(dir.path());
    for k in stored.keys() {
        if !located.contains_key(k) {
            stray.push(format!("events from unknown message {k:?}"));
        }
    }

    // Per case.
    let mut by_case: Vec<(usize, &Coords)> = located.iter().map(|(k, &i)| (i, k)).collect();
    by_case.sort();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut expected_warnings: BTreeMap<(&str, String), u64> = BTreeMap::new();
    let mut expected_rejects: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let (mut lost, mut duplicated) = (0, 0);
    for (i, coords) in by_case {
        let case = &cases[i];
        let direct = decode_directly(case);
        let ids = stored.get(coords).map_or(&[][..], Vec::as_slice);
        let (missing, extra) = difference(&direct.ids, ids);
        lost += missing;
        duplicated += extra;
        let (got, wrong) = judge(case, coords, letter_of.get(&i).copied(), ids, &direct);
        for (k, n) in &case.warnings {
            *expected_warnings
                .entry((case.kafka_topic(), k.clone()))
                .or_default() += n;
        }
        for kind in &direct.rejects {
            *expected_rejects
                .entry((case.kafka_topic(), kind))
                .or_default() += 1;
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {}", case.label(), wrong.join("; ")));
        }
        rows.push((case, got, wrong.is_empty()));
    }

    // The summary table.
    let width = rows
        .iter()
        .map(|r| r.0.label().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let got_width = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    let exp_width = rows
        .iter()
        .map(|r| r.0.expected_text().chars().count())
        .max()
        .unwrap_or(8);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<width$}  {:<9}  {:<exp_width$}  {:<got_width$}  held",
        "case", "decoder", "expected", "got"
    );
    for (case, got, held) in &rows {
        let _ = writeln!(
            table,
            "{:<width$}  {:<9}  {:<exp_width$}  {:<got_width$}  {}",
            case.label(),
            case.decoder().as_str(),
            case.expected_text(),
            got,
            if *held { "yes" } else { "NO" }
        );
    }
    let count = |e: Expect| cases.iter().filter(|c| c.expect == e).count();
    let held = rows.iter().filter(|r| r.2).count();
    let events_expected: i64 = cases.iter().map(|c| c.events.max(0)).sum();
    let _ = writeln!(
        table,
        "TOTAL {} cases ({} dvcqg, {} canonical, {} of 10 MB): {} dead_letter, {} mixed, \
         {} normalized, {} empty; held {held}/{}; messages consumed {} = {} written + {} \
         dead-lettered; events written {} (expected {events_expected}), lost {lost}, \
         duplicated {duplicated}; records rejected {}",
        cases.len(),
        cases.iter().filter(|c| c.topic == "dvcqg").count(),
        cases.iter().filter(|c| c.topic == "canonical").count(),
        large,
        count(Expect::DeadLetter),
        count(Expect::Mixed),
        count(Expect::Normalized),
        count(Expect::Empty),
        cases.len(),
        totals.messages,
        totals.messages - totals.dead_lettered,
        totals.dead_lettered,
        totals.events,
        totals.rejected_records,
    );
    let silent: Vec<_> = cases
        .iter()
        .filter(|c| c.expect == Expect::Normalized && c.warnings.is_empty())
        .map(|c| {
            format!(
                "  {}: {}",
                c.label(),
                c.note.as_deref().unwrap_or("(no note)")
            )
        })
        .collect();
    if !silent.is_empty() {
        let _ = writeln!(
            table,
            "normalized without a warning:\n{}",
            silent.join("\n")
        );
    }
    println!("{table}");

    // Counts reconcile, and the ingestor counted what the decoder saw.
    let mut global = stray;
    let mut check = |ok: bool, what: String| {
        if !ok {
            global.push(what);
        }
    };
    check(
        totals.messages == cases.len() as u64,
        format!("consumed {} of {}", totals.messages, cases.len()),
    );
    check(
        totals.dead_lettered == want_letters as u64 && in_dlq == want_letters,
        format!(
            "dead-lettered {} (topic holds {in_dlq}), expected {want_letters}",
            totals.dead_lettered
        ),
    );
    check(
        totals.events as i64 == events_expected,
        format!("events {} (expected {events_expected})", totals.events),
    );
    check(
        totals.rejected_records == cases.iter().map(|c| c.count).sum::<u64>(),
        format!("rejected records {}", totals.rejected_records),
    );
    check(
        settled("written") + settled("dead_lettered") == cases.len() as u64
            && settled("dead_lettered") == want_letters as u64,
        format!(
            "messages_total: written {}, dead_lettered {}",
            settled("written"),
            settled("dead_lettered")
        ),
    );
    for &(t, _) in &topics {
        for w in sohoa_schemas::Warning::ALL {
            let want = expected_warnings
                .get(&(t, w.as_str().to_owned()))
                .copied()
                .unwrap_or(0);
            let got = metrics.warnings.with_label_values(&[t, w.as_str()]).get();
            check(
                got == want,
                format!(
                    "warnings_total{{{t},{}}} = {got}, expected {want}",
                    w.as_str()
                ),
            );
        }
    }
    for ((t, kind), want) in &expected_rejects {
        let got = metrics.dead_letters.with_label_values(&[t, kind]).get();
        check(
            got == *want,
            format!("dead_letters_total{{{t},{kind}}} = {got}, expected {want}"),
        );
    }
    check(
        lost == 0 && duplicated == 0,
        format!("{lost} events lost, {duplicated} duplicated"),
    );
    let all = failures.iter().chain(&global).cloned().collect::<Vec<_>>();
    assert!(
        all.is_empty(),
        "{} of {} cases did not hold:\n{}",
        cases.len() - held,
        cases.len(),
        all.join("\n")
    );
}
