//! Broker faults, with the ingestor in-process against librdkafka's mock cluster (a real
//! Kafka-protocol server in this test process, on 127.0.0.1): brokers going down and
//! coming back, request errors injected on Fetch, OffsetCommit and Produce (the
//! dead-letter producer), and added round-trip time. The checks, on the `events/` table's
//! snapshot: no event lost, none duplicated, every malformed message dead-lettered (at
//! least once), every message durable after the faults end (with a generous bound that
//! only guards against hangs; the time it took is printed, not asserted), and the table's
//! offsets and commit ranges claiming nothing its files do not hold. Whether the group's
//! offsets caught up with the high watermarks is printed too.
//!
//! The PRNG's seed is printed; `SOHOA_FAULT_SEED=<n>` replays a run. Each test prints its
//! row of the summary table, and the last one to finish prints the whole table.

mod common;
mod running;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use running::*;
use sohoa_ingestor::Metrics;

/// `#[test]`s in this file that run by default: the last one to finish prints the table.
const TESTS: usize = 5;

const GROUP: &str = "sohoa-ingestor";
/// Only a guard against hangs: recovery normally takes seconds.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn good_before(bad: &[usize], n: usize) -> usize {
    n - bad.iter().filter(|&&i| i < n).count()
}

/// After the faults: wait for every event (hang guard), stop, and check exactly once,
/// the dead letters, the table's claims and the group's offsets. Records the row, then
/// asserts.
#[allow(clippy::too_many_arguments)]
fn settle_and_check(
    t: &mut FaultTest,
    kind: &str,
    injected: u64,
    brokers: &str,
    partitions: i32,
    root: &std::path::Path,
    run: Running,
    msgs: &[String],
    bad: &[usize],
    faults_ended: Instant,
    note: String,
) {
    let by_index = offsets_by_index(brokers, TOPIC, msgs.len());
    let (good, dead) = split_offsets(&by_index, bad);
    let recovered = wait_for_rows(root, good.len(), HANG_GUARD);
    let recovery = faults_ended.elapsed();
    let hwm = high_watermarks_of(brokers, TOPIC, partitions);
    let mut committed = Vec::new();
    // Informational, not asserted: the group's offsets are for lag tools, the table is the
    // truth. Seen once after OffsetCommit errors (ILLEGAL_GENERATION and the like): two of
    // four partitions never got a commit again, new flushes notwithstanding.
    let caught_up = wait_until(Duration::from_secs(15), || {
        committed = group_committed(brokers, GROUP, TOPIC, partitions);
        committed == hwm
    });
    let totals = run.stop();
    let (lost, duplicated, unexpected) = lost_and_duplicated(root, &good);
    let claimed = claimed_not_held(&root.join("events"), TOPIC, partitions, &good);
    let problems = range_problems(root, TOPIC, partitions);
    let letters = dead_letter_sources(brokers);
    let dead_missing = dead
        .iter()
        .filter(|d| letters.binary_search(d).is_err())
        .count();
    let held = recovered
        && (lost, duplicated, unexpected, dead_missing) == (0, 0, 0, 0)
        && claimed.is_empty()
        && problems.is_empty()
        && totals.dead_lettered == bad.len() as u64;
    t.row(FaultRow {
        kind: kind.into(),
        injected,
        kills: 0,
        lost,
        duplicated,
        held,
        note: format!(
            "{note}; {} events, {} dead letters for {} malformed; all durable {:.1}s after the faults ended; group offsets {}",
            good.len(),
            letters.len(),
            dead.len(),
            recovery.as_secs_f64(),
            if caught_up {
                "at the high watermarks".to_string()
            } else {
                format!("behind: committed {committed:?}, high watermarks {hwm:?}")
            }
        ),
    });
    assert!(recovered, "every event durable after the faults");
    assert_eq!((lost, duplicated, unexpected), (0, 0, 0), "exactly once");
    assert_eq!(dead_missing, 0, "every malformed message was dead-lettered");
    assert_eq!(totals.dead_lettered, bad.len() as u64);
    assert_eq!(
        claimed,
        Vec::<Coord>::new(),
        "no table offset past rows not in the table"
    );
    assert_eq!(
        problems,
        Vec::<String>::new(),
        "the commits' ranges tile each partition up to its offset and count its rows"
    );
}

#[test]
fn brokers_going_down_and_coming_back_lose_and_duplicate_nothing() {
    let name = "broker: down and up (3 brokers)";
    let mut t = FaultTest::start(name, TESTS);
    let (mut rng, _) = Prng::for_test(name);
    let mock = MockCluster::new(3).expect("mock cluster");
    mock.create_topic(TOPIC, 6, 1).unwrap();
    mock.create_topic(DLQ, 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let (msgs, bad) = feed(1600, 40);
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let run = start(config(&brokers, dir.path(), &[]), metrics.clone());

    // The feed arrives in slices while brokers come and go.
    let producer = {
        let (brokers, msgs) = (brokers.clone(), msgs.clone());
        std::thread::spawn(move || {
            for k in 0..4 {
                produce_slice(&brokers, TOPIC, &msgs[k * 400..(k + 1) * 400], k * 400);
                std::thread::sleep(Duration::from_millis(800));
            }
        })
    };
    let mut outages = Vec::new();
    for cycle in 0..5 {
        // One outage takes every broker (the group coordinator too) away for longer than
        // the session timeout (6 s): the group evicts the member, which rejoins and
        // resumes from the table's offsets. The others take one partition leader away briefly.
        let (broker, down) = if cycle == 2 {
            (-1, rng.millis(6500, 8000))
        } else {
            (rng.between(1, 3) as i32, rng.millis(300, 3000))
        };
        mock.broker_down(broker).unwrap();
        std::thread::sleep(down);
        mock.broker_up(broker).unwrap();
        outages.push(format!("{broker}:{}ms", down.as_millis()));
        std::thread::sleep(rng.millis(300, 1500));
    }
    let ended = Instant::now();
    producer.join().unwrap();
    settle_and_check(
        &mut t,
        name,
        outages.len() as u64,
        &brokers,
        6,
        dir.path(),
        run,
        &msgs,
        &bad,
        ended,
        format!("outages (broker:duration, -1 = all) {}", outages.join(" ")),
    );
}

/// Rounds of request errors on one API while a slice of the feed goes through, then a
/// clean round.
fn request_errors(name: &'static str, api: RDKafkaApiKey, palette: &[RDKafkaRespErr]) {
    let mut t = FaultTest::start(name, TESTS);
    let (mut rng, _) = Prng::for_test(name);
    let c = cluster(4);
    let (msgs, bad) = feed(1000, 40);
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let run = start(config(&c.brokers, dir.path(), &[]), metrics.clone());
    let mut injected = 0u64;
    let mut codes = std::collections::BTreeMap::<String, u64>::new();
    for round in 0..2 {
        let (from, to) = (round * 400, (round + 1) * 400);
        let errors: Vec<RDKafkaRespErr> = (0..rng.between(5, 10))
            .map(|_| *rng.pick(palette))
            .collect();
        for e in &errors {
            *codes.entry(format!("{e:?}")).or_default() += 1;
        }
        injected += errors.len() as u64;
        if matches!(api, RDKafkaApiKey::Produce) {
            // The test's own producer must not meet them: only the dead-letter producer
            // produces after this point of the round.
            c.mock.clear_request_errors(RDKafkaApiKey::Produce);
            produce_slice(&c.brokers, TOPIC, &msgs[from..to], from);
            c.mock.request_errors(api, &errors);
        } else {
            c.mock.request_errors(api, &errors);
            produce_slice(&c.brokers, TOPIC, &msgs[from..to], from);
        }
        assert!(
            wait_for_rows(dir.path(), good_before(&bad, to), HANG_GUARD),
            "round {round}: the slice became durable despite {errors:?}"
        );
    }
    c.mock.clear_request_errors(api);
    let ended = Instant::now();
    produce_slice(&c.brokers, TOPIC, &msgs[800..], 800);
    let failures = |stage: &str| metrics.flush_failures.with_label_values(&[stage]).get();
    let note = format!(
        "codes {codes:?}; flush failures: dead_letter {}, storage {}",
        failures("dead_letter"),
        failures("storage")
    );
    settle_and_check(
        &mut t,
        name,
        injected,
        &c.brokers,
        4,
        dir.path(),
        run,
        &msgs,
        &bad,
        ended,
        note,
    );
}

#[test]
fn fetch_errors_lose_and_duplicate_nothing() {
    use RDKafkaRespErr::*;
    request_errors(
        "broker: Fetch request errors",
        RDKafkaApiKey::Fetch,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
}

#[test]
fn offset_commit_errors_lose_and_duplicate_nothing() {
    use RDKafkaRespErr::*;
    request_errors(
        "broker: OffsetCommit request errors",
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
            RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
            RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
}

#[test]
fn dead_letter_produce_errors_lose_and_duplicate_nothing() {
    use RDKafkaRespErr::*;
    request_errors(
        "broker: Produce request errors (dead letters)",
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR__TRANSPORT,
            // Permanent: librdkafka gives the message up, sohoa sends it again.
            RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        ],
    );
}

#[test]
fn added_round_trip_time_loses_and_duplicates_nothing() {
    let name = "broker: added round-trip time";
    let mut t = FaultTest::start(name, TESTS);
    let (mut rng, _) = Prng::for_test(name);
    let c = cluster(4);
    let (msgs, bad) = feed(1000, 40);
    let dir = tempfile::tempdir().unwrap();
    let run = start(config(&c.brokers, dir.path(), &[]), Metrics::new());
    let mut rtts = Vec::new();
    for round in 0..3 {
        let (from, to) = (round * 250, (round + 1) * 250);
        let rtt = rng.millis(50, 1000);
        c.mock.broker_round_trip_time(1, rtt).unwrap();
        rtts.push(format!("{}ms", rtt.as_millis()));
        produce_slice(&c.brokers, TOPIC, &msgs[from..to], from);
        assert!(
            wait_for_rows(dir.path(), good_before(&bad, to), HANG_GUARD),
            "round {round}: the slice became durable with {rtt:?} round trips"
        );
    }
    c.mock.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let ended = Instant::now();
    produce_slice(&c.brokers, TOPIC, &msgs[750..], 750);
    settle_and_check(
        &mut t,
        name,
        rtts.len() as u64,
        &c.brokers,
        4,
        dir.path(),
        run,
        &msgs,
        &bad,
        ended,
        format!("round-trip times {}", rtts.join(" ")),
    );
}
