//! `sohoa lag` against librdkafka's mock cluster (a Kafka-protocol server inside this test
//! process, on 127.0.0.1): committed offsets, watermarks, lag in messages and in seconds.

// The module is compiled straight into this test so it can be checked through its public
// functions, independently of how the binary wires the subcommand. The inline module
// keeps lag.rs a non-mod.rs file, so its own submodules are found under src/lag/.
#[path = "../src"]
mod src {
    pub mod lag;
}
use src::lag;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lag::{describe, render_json, render_table, LagArgs, LagError, LagFormat, PartitionLag};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "dvcqg.dossiers";
const GROUP: &str = "sohoa-ingestor-test";
const TIMEOUT: Duration = Duration::from_secs(10);

fn cluster(topic: &str, partitions: i32) -> (MockCluster<'static, DefaultProducerContext>, String) {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(topic, partitions, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    (mock, brokers)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `n` messages on one partition, each stamped `ts_ms` (producer CreateTime).
fn produce(brokers: &str, topic: &str, partition: i32, n: usize, ts_ms: i64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for i in 0..n {
        let payload = format!("{{\"n\":{i}}}");
        let mut rec = BaseRecord::<(), str>::to(topic)
            .partition(partition)
            .payload(payload.as_str())
            .timestamp(ts_ms);
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

/// Commit `offsets` for `group`, the way a consumer of that group would.
fn commit(brokers: &str, group: &str, offsets: &[(&str, i32, i64)]) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o)).unwrap();
    }
    c.assign(&tpl).unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<Offset> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_range(topic, 0, partitions - 1);
    let got = c.committed_offsets(tpl, TIMEOUT).unwrap();
    got.elements().iter().map(|e| e.offset()).collect()
}

fn topics(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn row(rows: &[PartitionLag], partition: i32) -> &PartitionLag {
    rows.iter()
        .find(|r| r.partition == partition)
        .unwrap_or_else(|| panic!("no row for partition {partition} in {rows:?}"))
}

fn assert_age(got: Option<f64>, range: std::ops::RangeInclusive<f64>, what: &str) {
    let s = got.unwrap_or_else(|| panic!("{what}: age unknown"));
    assert!(range.contains(&s), "{what}: age {s} s not in {range:?}");
}

#[test]
fn describe_reports_committed_offsets_watermarks_and_lag() {
    let (_mock, brokers) = cluster(TOPIC, 3);
    let now = now_ms();
    // Ten messages per partition: the first five ten minutes old, the last five two
    // minutes old, so the age tells which message was read.
    for p in 0..3 {
        produce(&brokers, TOPIC, p, 5, now - 600_000);
        produce(&brokers, TOPIC, p, 5, now - 120_000);
    }
    // Partition 0 half consumed, 1 never committed, 2 fully consumed.
    commit(&brokers, GROUP, &[(TOPIC, 0, 5), (TOPIC, 2, 10)]);

    let rows = describe(
        &brokers,
        GROUP,
        &topics(&[TOPIC]),
        &BTreeMap::new(),
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.partition).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(rows.iter().all(|r| r.topic == TOPIC));

    let p0 = row(&rows, 0);
    assert_eq!(
        (p0.committed, p0.low, p0.high, p0.lag_messages),
        (Some(5), 0, 10, 5)
    );
    // The message at the committed offset (5) is the two-minute-old one.
    assert_age(p0.lag_seconds, 119.0..=200.0, "partition 0");

    let p1 = row(&rows, 1);
    assert_eq!(
        (p1.committed, p1.low, p1.high, p1.lag_messages),
        (None, 0, 10, 10)
    );
    // Without a commit everything retained is unconsumed, down to the oldest message.
    assert_age(p1.lag_seconds, 599.0..=700.0, "partition 1");

    let p2 = row(&rows, 2);
    assert_eq!(
        (p2.committed, p2.low, p2.high, p2.lag_messages),
        (Some(10), 0, 10, 0)
    );
    assert_eq!(p2.lag_seconds, Some(0.0));

    assert_eq!(lag::total_lag(&rows), 15);
}

#[test]
fn describe_neither_commits_nor_moves_the_group() {
    let (_mock, brokers) = cluster(TOPIC, 3);
    produce(&brokers, TOPIC, 0, 4, now_ms());
    produce(&brokers, TOPIC, 1, 4, now_ms());
    commit(&brokers, GROUP, &[(TOPIC, 0, 1)]);
    let before = committed(&brokers, GROUP, TOPIC, 3);

    let first = describe(
        &brokers,
        GROUP,
        &topics(&[TOPIC]),
        &BTreeMap::new(),
        TIMEOUT,
    )
    .unwrap();
    let second = describe(
        &brokers,
        GROUP,
        &topics(&[TOPIC]),
        &BTreeMap::new(),
        TIMEOUT,
    )
    .unwrap();

    assert_eq!(committed(&brokers, GROUP, TOPIC, 3), before);
    assert_eq!(before[0], Offset::Offset(1));
    assert_eq!(before[1], Offset::Invalid);
    let lags = |rows: &[PartitionLag]| rows.iter().map(|r| r.lag_messages).collect::<Vec<_>>();
    assert_eq!(lags(&first), [3, 4, 0]);
    assert_eq!(lags(&second), lags(&first));
    // An empty partition has nothing unconsumed, so its age is zero, not unknown.
    assert_eq!(row(&first, 2).lag_seconds, Some(0.0));
    assert_eq!((row(&first, 2).low, row(&first, 2).high), (0, 0));
}

#[test]
fn several_topics_come_in_the_order_asked() {
    let (mock, brokers) = cluster(TOPIC, 2);
    mock.create_topic("other.topic", 1, 1).unwrap();
    produce(&brokers, "other.topic", 0, 3, now_ms());
    let rows = describe(
        &brokers,
        GROUP,
        // Duplicates and blanks (from "--topics a,,a") are ignored.
        &topics(&["other.topic", TOPIC, "", "other.topic"]),
        &BTreeMap::new(),
        TIMEOUT,
    )
    .unwrap();
    let keys: Vec<(&str, i32, i64)> = rows
        .iter()
        .map(|r| (r.topic.as_str(), r.partition, r.lag_messages))
        .collect();
    assert_eq!(keys, [("other.topic", 0, 3), (TOPIC, 0, 0), (TOPIC, 1, 0)]);
}

#[test]
fn unknown_topic_is_an_error_naming_it() {
    let (_mock, brokers) = cluster(TOPIC, 1);
    let err = describe(
        &brokers,
        GROUP,
        &topics(&[TOPIC, "no.such.topic"]),
        &BTreeMap::new(),
        TIMEOUT,
    )
    .unwrap_err();
    assert!(
        matches!(&err, LagError::UnknownTopic { topic } if topic == "no.such.topic"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"no.such.topic\""), "{err}");
}

#[test]
fn unreachable_brokers_give_a_one_line_error_with_the_hint() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let brokers = "127.0.0.1:1";
    let err = describe(
        brokers,
        GROUP,
        &topics(&[TOPIC]),
        &BTreeMap::new(),
        Duration::from_secs(2),
    )
    .unwrap_err();
    assert!(matches!(err, LagError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(brokers), "{msg}");
    // librdkafka's reason, not only "broker transport failure".
    assert!(msg.contains("Connection refused"), "{msg}");
    assert!(
        msg.contains("--brokers") && msg.contains("kafka.brokers"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn bad_client_properties_and_missing_arguments_are_errors() {
    let mut extra = BTreeMap::new();
    extra.insert("no.such.property".to_string(), "1".to_string());
    let err = describe("127.0.0.1:1", GROUP, &topics(&[TOPIC]), &extra, TIMEOUT).unwrap_err();
    assert!(matches!(err, LagError::Client(_)), "{err:?}");
    assert!(err.to_string().contains("kafka.properties"), "{err}");

    let none = BTreeMap::new();
    let err = describe("127.0.0.1:1", " ", &topics(&[TOPIC]), &none, TIMEOUT).unwrap_err();
    assert!(err.to_string().contains("--group"), "{err}");
    let err = describe("127.0.0.1:1", GROUP, &topics(&[""]), &none, TIMEOUT).unwrap_err();
    assert!(err.to_string().contains("--topics"), "{err}");
}

fn sample_rows() -> Vec<PartitionLag> {
    vec![
        PartitionLag {
            topic: TOPIC.into(),
            partition: 0,
            committed: Some(5),
            low: 0,
            high: 10,
            lag_messages: 5,
            lag_seconds: Some(120.4),
        },
        PartitionLag {
            topic: TOPIC.into(),
            partition: 1,
            committed: None,
            low: 3,
            high: 1_250_000,
            lag_messages: 1_249_997,
            lag_seconds: Some(7_800.0),
        },
        PartitionLag {
            topic: TOPIC.into(),
            partition: 2,
            committed: Some(10),
            low: 0,
            high: 10,
            lag_messages: 0,
            lag_seconds: Some(0.0),
        },
    ]
}

#[test]
fn render_table_aligns_columns_and_sums_the_total() {
    let table = render_table(&sample_rows());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "LOW",
            "HIGH",
            "LAG",
            "LAG_SECONDS"
        ]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [TOPIC, "0", "5", "0", "10", "5", "2m00s"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        [TOPIC, "1", "-", "3", "1250000", "1249997", "2h10m"]
    );
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        [TOPIC, "2", "10", "0", "10", "0", "0.0s"]
    );
    // The total is the sum of the lags, aged by the oldest unconsumed message.
    assert_eq!(
        lines[4].split_whitespace().collect::<Vec<_>>(),
        ["TOTAL", "1250002", "2h10m"]
    );
    // Right-aligned numbers: every line ends at the same column.
    let width = lines[0].len();
    assert!(lines.iter().all(|l| l.len() == width), "{table}");
    let lag_end = lines[0].find(" LAG ").unwrap() + " LAG".len();
    assert!(lines[4][..lag_end].ends_with(" 1250002"), "{table}");
}

#[test]
fn render_table_with_no_lag_and_unknown_ages() {
    let mut rows = sample_rows();
    rows[0].lag_seconds = None;
    rows[1].lag_seconds = None;
    let table = render_table(&rows);
    let total = table.lines().last().unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["TOTAL", "1250002", "?"]
    );
    assert!(table.lines().nth(1).unwrap().ends_with('?'), "{table}");

    // One lagging partition's age unknown: the known oldest is only a lower bound.
    rows[1].lag_seconds = Some(7_800.0);
    let table = render_table(&rows);
    assert_eq!(
        table
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["TOTAL", "1250002", ">=2h10m"]
    );

    let table = render_table(&[]);
    assert_eq!(table.lines().count(), 2, "{table}");
    assert_eq!(
        table
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["TOTAL", "0", "0.0s"]
    );
}

#[test]
fn render_json_writes_one_object_per_partition() {
    let text = render_json(GROUP, &sample_rows());
    let objs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 3);
    assert_eq!(
        objs[0],
        serde_json::json!({"group": GROUP, "topic": TOPIC, "partition": 0, "committed": 5,
            "low": 0, "high": 10, "lag_messages": 5, "lag_seconds": 120.4})
    );
    assert!(objs[1]["committed"].is_null());
    assert_eq!(objs[2]["lag_seconds"], 0.0);
}

#[test]
fn ages_read_for_people() {
    use lag::format_age;
    let cases = [
        (Some(0.0), "0.0s"),
        (Some(12.34), "12.3s"),
        (Some(59.96), "1m00s"),
        (Some(245.0), "4m05s"),
        (Some(3599.6), "1h00m"),
        (Some(7_800.0), "2h10m"),
        (Some(273_600.0), "3d04h"),
        (None, "?"),
        (Some(f64::NAN), "?"),
    ];
    for (s, want) in cases {
        assert_eq!(format_age(s), want, "{s:?}");
    }
}

fn config(brokers: &str, group: &str) -> sohoa_runtime::Config {
    let env = [
        ("SOHOA__KAFKA__BROKERS", brokers),
        ("SOHOA__KAFKA__GROUP_ID", group),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    sohoa_runtime::Config::load_with_env(None, env).unwrap()
}

fn args(fail_above: Option<i64>, format: LagFormat) -> LagArgs {
    LagArgs {
        brokers: None,
        group: None,
        topics: Vec::new(),
        format,
        fail_above,
        timeout: 10,
    }
}

#[test]
fn run_takes_defaults_from_the_configuration_and_fails_above_the_threshold() {
    // The embedded configuration's topic is dvcqg.dossiers.
    let (_mock, brokers) = cluster(TOPIC, 2);
    produce(&brokers, TOPIC, 0, 4, now_ms());
    produce(&brokers, TOPIC, 1, 3, now_ms());
    commit(&brokers, "from-config", &[(TOPIC, 1, 3)]);
    let cfg = config(&brokers, "from-config");

    let code = lag::run(&cfg, args(Some(3), LagFormat::Table)).unwrap();
    assert_eq!(code, ExitCode::from(lag::EXIT_LAG_ABOVE));
    let code = lag::run(&cfg, args(Some(4), LagFormat::Json)).unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    let code = lag::run(&cfg, args(None, LagFormat::Table)).unwrap();
    assert_eq!(code, ExitCode::SUCCESS);

    // Arguments win over the configuration.
    let mut a = args(Some(0), LagFormat::Table);
    a.group = Some(GROUP.into());
    a.topics = vec![TOPIC.into()];
    assert_eq!(
        lag::run(&cfg, a).unwrap(),
        ExitCode::from(lag::EXIT_LAG_ABOVE)
    );
    let mut a = args(None, LagFormat::Table);
    a.brokers = Some("127.0.0.1:1".into());
    a.timeout = 2;
    let err = lag::run(&cfg, a).unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

/// The arguments as the binary parses them.
#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: LagArgs,
}

#[test]
fn arguments_parse_like_the_binary_does() {
    use clap::{CommandFactory, Parser};
    Cli::command().debug_assert();

    let a = Cli::try_parse_from(["lag"]).unwrap().args;
    assert_eq!(
        (
            a.brokers,
            a.group,
            a.topics.len(),
            a.format,
            a.fail_above,
            a.timeout
        ),
        (None, None, 0, LagFormat::Table, None, 10)
    );

    let a = Cli::try_parse_from([
        "lag",
        "--brokers",
        "kafka-1:9093,kafka-2:9093",
        "--group",
        "g",
        "--topics",
        "a,b",
        "--format",
        "json",
        "--fail-above",
        "1000",
        "--timeout",
        "3",
    ])
    .unwrap()
    .args;
    assert_eq!(a.brokers.as_deref(), Some("kafka-1:9093,kafka-2:9093"));
    assert_eq!(a.group.as_deref(), Some("g"));
    assert_eq!(a.topics, ["a", "b"]);
    assert_eq!(
        (a.format, a.fail_above, a.timeout),
        (LagFormat::Json, Some(1000), 3)
    );

    assert!(Cli::try_parse_from(["lag", "--format", "yaml"]).is_err());
    assert!(Cli::try_parse_from(["lag", "--fail-above", "lots"]).is_err());
}
