//! Exactly once through crashes, stops, rebalances and broker outages: `sohoa ingest`
//! runs as real subprocesses against librdkafka's mock cluster, a Kafka-protocol server
//! inside this test process, on 127.0.0.1.

#[path = "../../ingestor/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn ingestor(brokers: &str, root: &Path, group: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sohoa"));
    cmd.arg("ingest")
        .env("SOHOA__KAFKA__BROKERS", brokers)
        .env("SOHOA__KAFKA__GROUP_ID", group)
        .env("SOHOA__STORAGE__ROOT", root)
        .env("SOHOA__PRIVACY__DEVELOPMENT_MODE", "true")
        .env("SOHOA__HTTP__LISTEN", "")
        .env("SOHOA__FLUSH__MAX_AGE_MS", "200")
        .env("SOHOA__FLUSH__MAX_ROWS", "97")
        .env("SOHOA__KAFKA__SESSION_TIMEOUT_MS", "6000")
        .env("SOHOA__SHUTDOWN__DRAIN_DEADLINE_MS", "5000")
        .env("SOHOA__LOG__LEVEL", "info")
        .env_remove("SOHOA_CRASH_AT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("sohoa binary runs")
}

fn terminate(child: &mut Child) -> (ExitStatus, String) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    wait(child, Duration::from_secs(30))
}

fn wait(child: &mut Child, timeout: Duration) -> (ExitStatus, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ingestor did not exit in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_exactly_once(root: &Path, expected: &[(i32, i64)]) {
    let seen = offsets_in_storage(root);
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|k| !seen.contains_key(k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "missing: {missing:?} of {}",
        expected.len()
    );
    assert_eq!(seen.len(), expected.len());
}

#[test]
fn kill_at_every_crash_point_then_restart_keeps_exactly_once() {
    let c = cluster(3);
    let (msgs, bad) = feed(900, 90);
    produce(&c.brokers, TOPIC, &msgs);
    let expected = expected_offsets(&c.brokers, TOPIC, msgs.len(), &bad);
    // After a data file is written; with every file written, before the table commit;
    // and after the commit, before the offsets reach Kafka (the restart then finds the
    // group's offsets behind the table's, and must start from the table's).
    let points = ["after_stage_file", "before_commit", "after_commit"];
    for (i, point) in points.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let group = format!("crash-{i}");
        let after = format!("{}", 2 + i % 3);
        let mut crashing = ingestor(
            &c.brokers,
            dir.path(),
            &group,
            &[("SOHOA_CRASH_AT", point), ("SOHOA_CRASH_AFTER", &after)],
        );
        let (status, err) = wait(&mut crashing, Duration::from_secs(60));
        assert!(
            !status.success(),
            "{point}: the injected crash happened ({status})"
        );
        assert!(
            err.contains(&format!("injected crash at {point}")),
            "{point}: {err}"
        );

        let mut restarted = ingestor(&c.brokers, dir.path(), &group, &[]);
        assert!(
            wait_for_rows(dir.path(), expected.len(), Duration::from_secs(60)),
            "{point}: rows after restart"
        );
        let (status, err) = terminate(&mut restarted);
        assert!(
            status.success(),
            "{point}: graceful stop exits 0 ({status}): {err}"
        );
        assert_exactly_once(dir.path(), &expected);
        if *point != "after_commit" {
            // The crashed flush's files, which no commit names, are the only strays.
            assert!(
                parquet_files(&dir.path().join("events")).len() > table_files(dir.path()).len(),
                "{point}: the crashed flush left its files"
            );
        }
    }
}

#[test]
fn sigterm_mid_stream_drains_exits_zero_and_resumes_without_loss() {
    let c = cluster(2);
    let (msgs, bad) = feed(3000, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut first = ingestor(&c.brokers, dir.path(), "term", &[]);
    produce(&c.brokers, TOPIC, &msgs[..1500]);
    assert!(wait_for_rows(dir.path(), 200, Duration::from_secs(60)));
    let (status, err) = terminate(&mut first);
    assert!(status.success(), "exit 0 after SIGTERM ({status}): {err}");
    assert!(err.contains("stop requested: draining"), "{err}");
    produce(&c.brokers, TOPIC, &msgs[1500..]);
    let expected = expected_offsets(&c.brokers, TOPIC, msgs.len(), &bad);
    let mut second = ingestor(&c.brokers, dir.path(), "term", &[]);
    assert!(wait_for_rows(
        dir.path(),
        expected.len(),
        Duration::from_secs(60)
    ));
    let (status, _) = terminate(&mut second);
    assert!(status.success());
    assert_exactly_once(dir.path(), &expected);
    assert_no_strays(dir.path());
}

/// After graceful stops, every file under `events/` is one the table's log names: no
/// flush was left uncommitted.
fn assert_no_strays(root: &Path) {
    let mut on_disk = parquet_files(&root.join("events"));
    let mut live = table_files(root);
    on_disk.sort();
    live.sort();
    assert_eq!(on_disk, live, "files under events/ that no commit names");
}

#[test]
fn a_group_of_three_with_one_leaving_and_one_joining_loses_and_duplicates_nothing() {
    let c = cluster(6);
    let (msgs, bad) = feed(6000, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut a = ingestor(&c.brokers, dir.path(), "trio", &[]);
    let mut b = ingestor(&c.brokers, dir.path(), "trio", &[]);
    let mut x = ingestor(&c.brokers, dir.path(), "trio", &[]);
    produce(&c.brokers, TOPIC, &msgs[..2000]);
    assert!(wait_for_rows(dir.path(), 500, Duration::from_secs(60)));
    // One leaves mid-stream (a rebalance hands its partitions to the others)...
    let (status, err) = terminate(&mut x);
    assert!(status.success(), "{err}");
    produce(&c.brokers, TOPIC, &msgs[2000..4000]);
    // ...and a new one joins (another rebalance).
    let mut d = ingestor(&c.brokers, dir.path(), "trio", &[]);
    produce(&c.brokers, TOPIC, &msgs[4000..]);
    let expected = expected_offsets(&c.brokers, TOPIC, msgs.len(), &bad);
    assert!(
        wait_for_rows(dir.path(), expected.len(), Duration::from_secs(90)),
        "all rows arrive"
    );
    for p in [&mut a, &mut b, &mut d] {
        let (status, err) = terminate(p);
        assert!(status.success(), "{err}");
    }
    assert_exactly_once(dir.path(), &expected);
}

/// While the broker is down, librdkafka reports an error at every reconnection attempt,
/// about 25 a second. The log says it once per client and error (then once per 30 s),
/// the metric counts them all, and the run still ends exactly once.
#[test]
fn a_broker_outage_is_logged_once_per_client_and_error_not_per_retry() {
    let c = cluster(2);
    let (msgs, bad) = feed(1000, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut run = ingestor(&c.brokers, dir.path(), "outage-log", &[]);
    produce(&c.brokers, TOPIC, &msgs[..500]);
    assert!(wait_for_rows(dir.path(), 100, Duration::from_secs(60)));
    c.mock.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    c.mock.broker_up(1).unwrap();
    produce(&c.brokers, TOPIC, &msgs[500..]);
    let expected = expected_offsets(&c.brokers, TOPIC, msgs.len(), &bad);
    assert!(wait_for_rows(
        dir.path(),
        expected.len(),
        Duration::from_secs(60)
    ));
    let (status, err) = terminate(&mut run);
    assert!(status.success(), "exit 0 after SIGTERM ({status}): {err}");
    assert_exactly_once(dir.path(), &expected);

    // rdkafka's own handler logged each report, under its target: none of those now.
    assert!(
        !err.contains("rdkafka::client"),
        "a client error was logged outside client_errors: {err}"
    );
    let mut lines: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for line in err.lines().filter(|l| l.contains("kafka client error")) {
        let field = |name: &str| {
            line.split(&format!(" {name}="))
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .trim_matches('"')
                .to_string()
        };
        *lines.entry((field("client"), field("code"))).or_default() += 1;
    }
    assert!(
        lines.contains_key(&("consumer".to_string(), "AllBrokersDown".to_string())),
        "the outage is in the log: {lines:?}\n{err}"
    );
    for (key, n) in &lines {
        assert_eq!(*n, 1, "{key:?} was logged {n} times in a 5 s outage: {err}");
    }
}
