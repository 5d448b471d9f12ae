//! Ingest throughput of `sohoa ingest` against a bare consume of the same topic, in the
//! same run: `kcat -C -e` when kcat is installed (three runs first, and one more just
//! before each ingest run, which gives that run a ratio to a reference measured moments
//! earlier), and always a bare librdkafka consumer loop. Then the same with 2 and 3
//! replicas in one group, for scaling. Everything reads from librdkafka's mock cluster in
//! this process.
//!
//! Run: `cargo bench -p sohoa --bench ingest` (release). Environment:
//! - `SOHOA_BENCH_MESSAGES`: the topic size (default 1,000,000 national sync records of
//!   about 1.5 KB);
//! - `SOHOA_BENCH_PARTITIONS`: its partitions (default 512);
//! - `SOHOA_BENCH_DATES`: the event dates the records spread over, one after another
//!   (default 2, a day's live sync traffic). Late syncs and backfills spread a flush over
//!   many dates, and a flush writes a file per date;
//! - `SOHOA_BENCH_COMPRESSION`: the producer's `compression.type` (default `none`; with
//!   `lz4`, the default topic fits in 48 partitions);
//! - `SOHOA_BENCH_LINGER_MS`: the producer's `linger.ms` (default 3000). The mock cluster
//!   answers a fetch with one produced batch per partition, where a Kafka broker returns
//!   up to `max.partition.fetch.bytes` (1 MB) of them: with the default, batches are about
//!   1 MB, and consumers read the topic as they would from Kafka; with 20, batches are a few KB, every fetch
//!   interleaves all partitions, and kcat's time swings by half from run to run;
//! - `SOHOA_BENCH_REPLICAS`: the replica counts to run (default `1,2,3`). A count given
//!   more than once (`1,1,1,1,1`) runs again, and the bench prints the median and the
//!   range of its ratios: one run's ratio moves by a third with the host;
//! - `SOHOA_BENCH_BUFFER_BYTES`: each replica's `buffer.max_bytes` (default: the production
//!   default of `config/default.toml`, 256 MB);
//! - `SOHOA_BENCH_FLUSH_AGE_MS`: its `flush.max_age_ms` (default: the production default
//!   of `config/default.toml`, 60 s). Once a replica has received every message, the
//!   bench stops it with SIGTERM, and its graceful drain writes the last buffers; the time
//!   runs until every replica has exited, so the drain counts;
//! - `SOHOA_BENCH_FLUSH_BYTES`: its `flush.max_bytes` (default: the production default of
//!   `config/default.toml`, 48 MB). A flush takes every date buffer of a shard, so a smaller
//!   one multiplies the files of a feed spread over many dates;
//! - `SOHOA_BENCH_LOG`: the replicas' log level (default `error`; logs go to stderr);
//! - `SOHOA_BENCH_WRAPPER`: a program the replicas are started through, given the binary
//!   and its arguments. It must `exec` them, so that the bench's SIGTERM and its memory
//!   readings reach the replica: a script that preloads a heap profiler, for example.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

mod common;
use common::record_over;

const TOPIC: &str = "bench.dossiers";
/// The same records, a fifth as many: peak RSS with a smaller backlog, against the full
/// one's. Both backlogs are several times the buffer cap, and backpressure bounds memory by
/// the cap, so the two stay close.
const SMALL_TOPIC: &str = "bench.small";
/// Partitions of the benchmark topic: `SOHOA_BENCH_PARTITIONS`, default 512. The mock
/// cluster keeps about 5 MB per partition, so the default topic of 1.4 GB needs this many
/// for nothing to be deleted before it is read (checked below through the low
/// watermarks). A shard's flush writes a file per date, whatever the partitions: more of
/// them spread the same messages over more fetches and more commit ranges.
fn partitions() -> i32 {
    std::env::var("SOHOA_BENCH_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Distinct event dates of the records: `SOHOA_BENCH_DATES`, default 2.
fn dates() -> usize {
    std::env::var("SOHOA_BENCH_DATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&d| d > 0)
        .unwrap_or(2)
}

/// The producer's `compression.type`: `SOHOA_BENCH_COMPRESSION`, default `none`. The mock
/// cluster's retention counts the bytes it stores, which are the compressed batches, so a
/// compressed topic of the same messages fits in fewer partitions.
fn compression() -> String {
    std::env::var("SOHOA_BENCH_COMPRESSION").unwrap_or_else(|_| "none".into())
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether a child has exited and waits to be reaped.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(')')?.1.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// The messages the events table under the storage root `root` accounts for, from its
/// log, and the size of each Parquet file its newest snapshot holds: what storage holds.
fn committed(root: &std::path::Path, sizes: &mut Vec<u64>) -> u64 {
    let Ok(entries) = std::fs::read_dir(root.join("events/_delta_log")) else {
        return 0;
    };
    let mut messages = 0u64;
    let mut live: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut logs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    logs.sort();
    for path in logs {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines() {
            let Ok(a) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let (Some(p), Some(size)) = (a["add"]["path"].as_str(), a["add"]["size"].as_u64()) {
                live.insert(p.to_owned(), size);
            } else if let Some(p) = a["remove"]["path"].as_str() {
                live.remove(p);
            } else if let Some(r) = a["commitInfo"]["operationParameters"]["sohoa.ranges"].as_str()
            {
                let ranges: Vec<serde_json::Value> = serde_json::from_str(r).unwrap_or_default();
                messages += ranges
                    .iter()
                    .filter_map(|r| r["messages"].as_u64())
                    .sum::<u64>();
            }
        }
    }
    sizes.extend(live.into_values());
    messages
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space-separated.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // Clock ticks: 100 per second on Linux unless the kernel says otherwise.
    Some((utime + stime) / 100.0)
}

fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The sum of a metric's series in a /metrics body.
fn metric_sum(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Seconds per pipeline stage (`sohoa_ingest_pipeline_seconds_total`), summed over replicas.
fn stage_seconds(bodies: &[String]) -> Vec<(String, f64)> {
    let mut stages: Vec<(String, f64)> = Vec::new();
    for line in bodies.iter().flat_map(|b| b.lines()) {
        let Some(rest) = line.strip_prefix("sohoa_ingest_pipeline_seconds_total{stage=\"") else {
            continue;
        };
        let Some((stage, value)) = rest.split_once("\"} ") else {
            continue;
        };
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        match stages.iter_mut().find(|(s, _)| s == stage) {
            Some((_, total)) => *total += v,
            None => stages.push((stage.to_string(), v)),
        }
    }
    stages
}

/// Seconds for kcat to read the whole benchmark topic to /dev/null.
fn kcat(brokers: &str) -> f64 {
    let t = Instant::now();
    let status = Command::new("kcat")
        .args([
            "-C",
            "-b",
            brokers,
            "-t",
            TOPIC,
            "-e",
            "-q",
            "-o",
            "beginning",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    t.elapsed().as_secs_f64()
}

/// Produce `n` records to `topic` and check the mock cluster kept them all. Returns the
/// payload bytes.
fn produce(brokers: &str, topic: &str, n: usize, partitions: i32) -> usize {
    let t = Instant::now();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "linger.ms",
            std::env::var("SOHOA_BENCH_LINGER_MS").unwrap_or_else(|_| "3000".into()),
        )
        .set("batch.size", "1000000")
        // A long linger only fills batches if the queue can hold that many messages.
        .set("queue.buffering.max.messages", "2000000")
        .set("compression.type", compression())
        .create()
        .unwrap();
    let mut bytes = 0usize;
    let dates = dates();
    for i in 0..n {
        let payload = record_over(i, dates);
        bytes += payload.len();
        let key = format!("{i}");
        let mut rec = BaseRecord::to(topic)
            .payload(payload.as_str())
            .key(key.as_str());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(5));
                    rec = back;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    println!(
        "topic {topic}: {n} messages, {:.0} MB, mean {} bytes, {partitions} partitions, {dates} event dates (produced in {:.1}s)",
        bytes as f64 / 1e6,
        bytes / n,
        t.elapsed().as_secs_f64()
    );
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut total = 0;
    for p in 0..partitions {
        let (lo, hi) = probe
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            lo, 0,
            "partition {p} lost messages to the mock cluster's retention"
        );
        total += hi;
    }
    assert_eq!(total as usize, n);
    bytes
}

fn main() {
    let n: usize = std::env::var("SOHOA_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mock = MockCluster::new(1).expect("mock cluster");
    let partitions = partitions();
    mock.create_topic(TOPIC, partitions, 1).unwrap();
    mock.create_topic(SMALL_TOPIC, partitions, 1).unwrap();
    mock.create_topic("sohoa.dead-letters", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();

    let bytes = produce(&brokers, TOPIC, n, partitions);

    // Reference 1: kcat, if installed. Its time varies by a third from run to run here,
    // which moved the ratio more than most changes to the ingestor did: the ratio is to
    // the median of three runs.
    let has_kcat = Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    let mut kcat_runs: Vec<f64> = (0..if has_kcat { 3 } else { 0 })
        .map(|_| kcat(&brokers))
        .collect();
    kcat_runs.sort_by(f64::total_cmp);
    let kcat_secs = kcat_runs.get(kcat_runs.len() / 2).copied();

    // Reference 2: a bare librdkafka consumer loop that touches every payload.
    let t = Instant::now();
    let bare: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "bench-bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    bare.subscribe(&[TOPIC]).unwrap();
    let (mut got, mut sum) = (0usize, 0u64);
    let mut first = None;
    while got < n {
        if let Some(Ok(m)) = bare.poll(Duration::from_millis(100)) {
            use rdkafka::Message;
            first.get_or_insert_with(Instant::now);
            got += 1;
            sum += m.payload().map_or(0, |p| p[p.len() / 2] as u64);
        }
    }
    // From the first message: joining the group is a fixed cost kcat (which assigns
    // partitions without a group) does not pay.
    let bare_secs = first.expect("n > 0").elapsed().as_secs_f64();
    let bare_join = t.elapsed().as_secs_f64() - bare_secs;
    std::hint::black_box(sum);
    drop(bare);

    // The ingestor, as separate processes in one group, until every message is committed
    // in storage: once with one replica, then with more (SOHOA_BENCH_REPLICAS, "1,2,3").
    let replicas: Vec<usize> = std::env::var("SOHOA_BENCH_REPLICAS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    // The host's speed drifts by more than most changes to the ingestor move it, so each
    // run also gets a kcat run just before it: the ratio to that one compares the two at
    // the same moment.
    let runs: Vec<(usize, Option<f64>, Run)> = replicas
        .iter()
        .map(|&r| {
            let kcat_before = has_kcat.then(|| kcat(&brokers));
            (r, kcat_before, ingest(&brokers, TOPIC, r, n))
        })
        .collect();
    let n_small = (n / 5).max(1);
    produce(&brokers, SMALL_TOPIC, n_small, partitions);
    let small = ingest(&brokers, SMALL_TOPIC, 1, n_small);

    let mb = bytes as f64 / 1e6;
    let line = |label: &str, secs: f64| {
        println!(
            "{label:<40} {secs:>7.2} s {:>9.0} msg/s {:>7.1} MB/s",
            n as f64 / secs,
            mb / secs
        )
    };
    if let Some(s) = kcat_secs {
        line("kcat -C -e > /dev/null, median of 3", s);
        let runs: Vec<String> = kcat_runs.iter().map(|s| format!("{s:.2} s")).collect();
        println!("    (kcat runs: {})", runs.join(", "));
    } else {
        println!("kcat: not installed (apt-get install kcat), skipped");
    }
    line("bare consumer in a group, from 1st message", bare_secs);
    println!("    (joining the group took {bare_join:.2} s before that)");
    for (r, kcat_before, run) in &runs {
        let secs = run.measured_secs();
        line(&format!("sohoa ingest x{r}, assigned to durable"), secs);
        let ratio = |k: Option<f64>| k.map_or("-".to_string(), |k| format!("{:.2}", k / secs));
        println!(
            "    ratio to kcat {} (to the kcat run of {} just before it, {}), to the bare consumer {:.2}; end to end {:.2} s with {:.2} s to join and {:.2} s to drain",
            ratio(kcat_secs),
            kcat_before.map_or("-".to_string(), |k| format!("{k:.2} s")),
            ratio(*kcat_before),
            bare_secs / secs,
            run.secs,
            run.assigned_at,
            run.secs - run.received_at
        );
        println!(
            "    peak RSS per replica {:.0} MB; CPU {:.1} s in all replicas, {:.1} us per message, {:.2} cores busy after the join",
            run.peak_kb as f64 / 1024.0,
            run.cpu,
            run.cpu * 1e6 / n as f64,
            (run.cpu - run.cpu_assigned) / secs
        );
        let window = (run.received_at - run.assigned_at) * run.shards as f64;
        let stages: Vec<String> = run
            .stages
            .iter()
            .map(|(s, v)| format!("{s} {:.0}%", 100.0 * v / window))
            .collect();
        println!(
            "    pipeline threads ({} in all), from the assignment to the last message received: {}",
            run.shards,
            stages.join(", ")
        );
        println!(
            "    {} Parquet files, median {:.0} KB, {:.0} messages per file, {:.0} MB in all",
            run.files,
            run.median_file_bytes as f64 / 1024.0,
            n as f64 / run.files.max(1) as f64,
            run.parquet_bytes as f64 / 1e6
        );
    }
    // One run's ratio moves by a third with the host (BENCHMARKS.md): with a replica count
    // repeated (`SOHOA_BENCH_REPLICAS=1,1,1,1,1`), the spread is what to judge by.
    let mut counts = replicas.clone();
    counts.sort_unstable();
    counts.dedup();
    for count in counts {
        let mut ratios: Vec<f64> = runs
            .iter()
            .filter(|(r, _, _)| *r == count)
            .filter_map(|(_, k, run)| k.map(|k| k / run.measured_secs()))
            .collect();
        if ratios.len() < 2 {
            continue;
        }
        ratios.sort_by(f64::total_cmp);
        let n = ratios.len();
        let median = if n % 2 == 1 {
            ratios[n / 2]
        } else {
            (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
        };
        println!(
            "x{count}, {n} runs: ratio to the kcat run just before each, median {median:.2}, from {:.2} to {:.2}, at least 0.5 in {}",
            ratios[0],
            ratios[n - 1],
            ratios.iter().filter(|&&r| r >= 0.5).count()
        );
    }
    if let Some((_, _, big)) = runs.iter().find(|(r, _, _)| *r == 1) {
        println!(
            "peak RSS of one replica: {:.0} MB with a backlog of {n} messages, {:.0} MB with {n_small} (ratio {:.2})",
            big.peak_kb as f64 / 1024.0,
            small.peak_kb as f64 / 1024.0,
            big.peak_kb as f64 / small.peak_kb.max(1) as f64
        );
    }
}

/// What one ingest run measured.
struct Run {
    /// From starting the processes to every replica drained and exited, every message
    /// committed in storage.
    secs: f64,
    /// From starting the processes to every partition assigned.
    assigned_at: f64,
    /// The largest peak RSS of one replica, in KB.
    peak_kb: u64,
    /// From starting the processes to the last message received.
    received_at: f64,
    /// CPU seconds of all replicas.
    cpu: f64,
    /// CPU seconds of all replicas once every partition was assigned.
    cpu_assigned: f64,
    /// Seconds per pipeline stage from the assignment to the last message received, summed
    /// over replicas: the group join, spent waiting, is left out.
    stages: Vec<(String, f64)>,
    /// Pipeline threads in all replicas (`sohoa_ingest_shards`).
    shards: u64,
    /// Parquet files written.
    files: u64,
    /// The median size of those files: a cap on memory that flushes too often shows here
    /// before it shows in the time.
    median_file_bytes: u64,
    /// Bytes of those files.
    parquet_bytes: u64,
    /// The run's storage, deleted when the bench ends rather than before the next run: on
    /// ext4 without a journal, creating inodes soon after thousands were deleted scans past
    /// every recently freed one (`recently_deleted`), which would slow the next run down.
    _storage: tempfile::TempDir,
}

impl Run {
    /// Seconds from the moment every partition is assigned, as the bare consumer is
    /// measured: the group join is the broker's fixed cost, not the ingestor's throughput.
    fn measured_secs(&self) -> f64 {
        self.secs - self.assigned_at
    }
}

/// Run `replicas` ingestor processes in a fresh group and storage until every message is
/// committed.
fn ingest(brokers: &str, topic: &str, replicas: usize, n: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!("[[topics]]\nname = \"{topic}\"\ndecoder = \"dvcqg\"\n"),
    )
    .unwrap();
    // A fresh group per run: when the last member of a group leaves, the mock cluster
    // (unlike Kafka, which empties the group) waits out most of a session timeout, 44 s,
    // before the next run's replicas could join it.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let group = format!("bench-{topic}-{replicas}-{run}");
    let t = Instant::now();
    let mut children: Vec<(std::process::Child, u16)> = (0..replicas)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = match std::env::var("SOHOA_BENCH_WRAPPER") {
                Ok(wrapper) => {
                    let mut c = Command::new(wrapper);
                    c.arg(env!("CARGO_BIN_EXE_sohoa"));
                    c
                }
                Err(_) => Command::new(env!("CARGO_BIN_EXE_sohoa")),
            };
            let child = child
                .arg("ingest")
                .arg("--config")
                .arg(&cfg)
                .env("SOHOA__KAFKA__BROKERS", brokers)
                .env("SOHOA__KAFKA__GROUP_ID", &group)
                .env("SOHOA__STORAGE__ROOT", dir.path().join("data"))
                .env("SOHOA__PRIVACY__DEVELOPMENT_MODE", "true")
                .env("SOHOA__HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .env(
                    "SOHOA__LOG__LEVEL",
                    std::env::var("SOHOA_BENCH_LOG").unwrap_or_else(|_| "error".into()),
                )
                .envs(
                    std::env::var("SOHOA_BENCH_FLUSH_AGE_MS")
                        .map(|ms| ("SOHOA__FLUSH__MAX_AGE_MS", ms)),
                )
                .envs(
                    std::env::var("SOHOA_BENCH_BUFFER_BYTES")
                        .map(|b| ("SOHOA__BUFFER__MAX_BYTES", b)),
                )
                .envs(
                    std::env::var("SOHOA_BENCH_FLUSH_BYTES")
                        .map(|b| ("SOHOA__FLUSH__MAX_BYTES", b)),
                )
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            (child, port)
        })
        .collect();
    let mut peak_kb = 0;
    let mut assigned_at = None;
    let mut stages_assigned = Vec::new();
    let mut cpu_assigned = 0.0;
    let mut shards = 0;
    let mut cpu_live = vec![0.0; children.len()];
    let mut pause = Duration::from_millis(50);
    loop {
        std::thread::sleep(pause);
        for (i, (child, _)) in children.iter().enumerate() {
            peak_kb = peak_kb.max(vm_hwm_kb(child.id()).unwrap_or(0));
            cpu_live[i] = cpu_secs(child.id()).unwrap_or(cpu_live[i]);
        }
        let bodies: Vec<String> = children
            .iter()
            .filter_map(|(_, port)| scrape(*port))
            .collect();
        let sum = |name| bodies.iter().map(|b| metric_sum(b, name)).sum::<u64>();
        if assigned_at.is_none() && sum("sohoa_ingest_assigned_partitions") == partitions() as u64 {
            assigned_at = Some(t.elapsed().as_secs_f64());
            stages_assigned = stage_seconds(&bodies);
            shards = sum("sohoa_ingest_shards");
            cpu_assigned = cpu_live.iter().sum();
        }
        // Received, not yet durable: the drain below makes the rest durable, as it would
        // at any rolling restart, instead of the bench waiting out `flush.max_age_ms`.
        let received = sum("sohoa_ingest_received_messages_total");
        if received >= n as u64 {
            break;
        }
        // Each scrape renders every partition's series: at 20 a second that was a
        // fortieth of a replica's CPU, where Prometheus scrapes every 15 s or so. So
        // scrape often only while waiting for the assignment, and near the end: the next
        // scrape comes after half the time the rest should take at the rate so far.
        if let Some(at) = assigned_at.filter(|_| received > 0) {
            let rate = received as f64 / (t.elapsed().as_secs_f64() - at).max(1e-3);
            let rest = (n as u64 - received) as f64 / rate;
            pause = Duration::from_secs_f64((rest / 2.0).clamp(0.02, 1.0));
        }
        for (child, _) in &mut children {
            assert!(
                child.try_wait().unwrap().is_none(),
                "an ingestor exited early"
            );
        }
    }
    // Stage times up to the last message received: the drain's flush is not in them.
    let bodies: Vec<String> = children
        .iter()
        .filter_map(|(_, port)| scrape(*port))
        .collect();
    let received_at = t.elapsed().as_secs_f64();
    let stages = stage_seconds(&bodies)
        .into_iter()
        .map(|(stage, v)| {
            let before = stages_assigned
                .iter()
                .find(|(s, _)| *s == stage)
                .map_or(0.0, |(_, b)| *b);
            (stage, v - before)
        })
        .collect();
    for (child, _) in &children {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    // The CPU of each replica through its drain: an exited child's /proc entry stays
    // readable until it is reaped, so poll for the zombie, read it, then reap it.
    let mut cpu = 0.0;
    for (i, (child, _)) in children.iter_mut().enumerate() {
        while !is_zombie(child.id()) {
            peak_kb = peak_kb.max(vm_hwm_kb(child.id()).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(5));
        }
        cpu += cpu_secs(child.id()).unwrap_or(cpu_live[i]);
        assert!(
            child.wait().unwrap().success(),
            "an ingestor failed its drain"
        );
    }
    let secs = t.elapsed().as_secs_f64();
    let mut sizes = Vec::new();
    let durable = committed(&dir.path().join("data"), &mut sizes);
    sizes.sort_unstable();
    assert_eq!(
        durable, n as u64,
        "every message is committed in storage after the drain"
    );
    Run {
        secs,
        assigned_at: assigned_at.expect("every partition was assigned before the end"),
        received_at,
        peak_kb,
        cpu,
        cpu_assigned,
        stages,
        shards: shards.max(1),
        files: sizes.len() as u64,
        median_file_bytes: sizes.get(sizes.len() / 2).copied().unwrap_or(0),
        parquet_bytes: sizes.iter().sum(),
        _storage: dir,
    }
}
