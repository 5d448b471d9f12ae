//! `sohoa demo`: the whole pipeline on this machine, with nothing to install.
//!
//! It starts librdkafka's mock cluster in this process (a real Kafka-protocol broker on
//! 127.0.0.1), generates a province's year of dossiers, produces them keyed by dossier
//! code while three ingestors in one consumer group write Parquet exactly once, then
//! aggregates and writes the report.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use sohoa_aggregator::fold::Shard;
use sohoa_aggregator::read::DateRange;
use sohoa_aggregator::report::{self, ReportInput};
use sohoa_ingestor::Metrics;

use crate::generate::{self, Message};

mod stages;
use stages::{Stage, Stages};

const TOPIC: &str = "dvcqg.dossiers";
const DEAD_LETTERS: &str = "sohoa.dead-letters";
const GROUP: &str = "sohoa-demo";
/// Messages produced ahead of what the ingestors have made durable. The mock cluster keeps
/// only about 5 MB per partition, so the producer must not run far ahead of them.
const WINDOW: u64 = 40_000;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// How many dossiers to generate (a province handles a few hundred thousand a year).
    #[arg(long, default_value_t = 100_000)]
    dossiers: usize,
    /// Seed of the generator: the same seed gives the same feed.
    #[arg(long, default_value_t = 766)]
    seed: u64,
    /// The first year of the feed. The demo region reorganizes on 1 July 2025: a feed from
    /// 2024 shows the old units, the break, and 2024 restated to today's units next to 2025.
    #[arg(long, default_value_t = 2024)]
    year: i32,
    /// How many years the feed covers, from `--year` on.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=5))]
    years: u32,
    /// Where events/, dossiers/, metrics/ and the report go.
    #[arg(long, default_value = "sohoa-demo")]
    out: PathBuf,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
}

/// What a previous run left in the output folder, so a re-run can say what it found.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct RunRecord {
    dossiers: usize,
    seed: u64,
    partitions: i32,
    /// The years of the feed (a record without them is of one 2025 feed).
    #[serde(default = "RunRecord::first_year")]
    year: i32,
    #[serde(default = "RunRecord::one")]
    years: u32,
}

impl RunRecord {
    fn first_year() -> i32 {
        2025
    }

    fn one() -> u32 {
        1
    }
}

/// A progress line on stderr: redrawn in place on a terminal, a few lines otherwise.
pub struct Progress {
    label: &'static str,
    total: u64,
    tty: bool,
    last: Instant,
    last_tenth: u64,
    started: Instant,
}

impl Progress {
    pub fn new(label: &'static str, total: u64) -> Self {
        Progress {
            label,
            total: total.max(1),
            tty: std::io::stderr().is_terminal(),
            last: Instant::now() - Duration::from_secs(1),
            last_tenth: 0,
            started: Instant::now(),
        }
    }

    pub fn set(&mut self, done: u64) {
        let done = done.min(self.total);
        let tenth = done * 10 / self.total;
        if self.tty {
            if self.last.elapsed() < Duration::from_millis(100) && done < self.total {
                return;
            }
            self.last = Instant::now();
            let width = 30;
            let filled = (done * width / self.total) as usize;
            eprint!(
                "\r{:<12} ▕{}{}▏ {:>9} / {:<9} {:>5.1} s",
                self.label,
                "█".repeat(filled),
                " ".repeat(width as usize - filled),
                group(done),
                group(self.total),
                self.started.elapsed().as_secs_f64()
            );
        } else if tenth > self.last_tenth || (done == self.total && self.last_tenth < 10) {
            self.last_tenth = tenth;
            eprintln!(
                "{:<12} {:>3}%  {} / {}",
                self.label,
                done * 100 / self.total,
                group(done),
                group(self.total)
            );
        }
    }

    pub fn finish(&mut self, done: u64) {
        self.set(done);
        if self.tty {
            eprintln!();
        }
    }
}

/// 1234567 as "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn producer(brokers: &str) -> Result<BaseProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .context("creating the producer")
}

fn send(p: &BaseProducer, topic: &str, key: &[u8], payload: &[u8]) -> Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                p.poll(Duration::from_millis(50));
            }
            Err((e, _)) => bail!("producing to {topic}: {e}"),
        }
    }
}

/// Produce every message, keyed by dossier code, calling `progress` as it goes.
pub fn produce_all(
    brokers: &str,
    topic: &str,
    messages: &[Message],
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let p = producer(brokers)?;
    for (i, m) in messages.iter().enumerate() {
        send(&p, topic, m.key.as_bytes(), m.payload.as_bytes())?;
        if i % 1000 == 0 {
            p.poll(Duration::ZERO);
            progress(i as u64);
        }
    }
    p.flush(Duration::from_secs(60))
        .context("flushing the producer")?;
    progress(messages.len() as u64);
    Ok(messages.len() as u64)
}

fn durable(metrics: &[Arc<Metrics>]) -> u64 {
    metrics
        .iter()
        .map(|m| {
            m.messages.with_label_values(&[TOPIC, "written"]).get()
                + m.messages
                    .with_label_values(&[TOPIC, "dead_lettered"])
                    .get()
        })
        .sum()
}

fn ingestor_config(
    base: &sohoa_runtime::Config,
    brokers: &str,
    out: &Path,
) -> sohoa_runtime::Config {
    let mut cfg = base.clone();
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.group_id = GROUP.into();
    cfg.kafka.dead_letter_topic = DEAD_LETTERS.into();
    cfg.kafka.statistics_interval_ms = 1000;
    cfg.storage.root = out.display().to_string();
    cfg.storage.options.clear();
    cfg.http.listen = String::new();
    cfg.flush.max_age_ms = 1500;
    // The demo has no secret key: say so, and never use it on real data.
    cfg.privacy.development_mode = true;
    cfg
}

pub fn run(cfg: sohoa_runtime::Config, args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    if std::env::var_os(sohoa_schemas::pseudonym::KEY_ENV).is_some_and(|k| !k.is_empty()) {
        bail!(
            "{} is set, and the demo pseudonymizes its generated feed with the public development \
             key: unset it for the demo, so that a real key is never silently set aside",
            sohoa_schemas::pseudonym::KEY_ENV
        );
    }
    let mut stages = Stages::default();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let record_path = out.join("_sohoa/demo.json");
    let this = RunRecord {
        dossiers: args.dossiers,
        seed: args.seed,
        partitions: args.partitions,
        year: args.year,
        years: args.years,
    };
    if let Ok(text) = std::fs::read_to_string(&record_path) {
        let before: RunRecord = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a demo run record", record_path.display()))?;
        if before != this {
            bail!(
                "{} holds a demo of {} dossiers (seed {}, {} partitions); this run asks for {} (seed {}, {}). \
                 Use another --out, or delete the folder",
                out.display(), before.dossiers, before.seed, before.partitions,
                this.dossiers, this.seed, this.partitions
            );
        }
        eprintln!(
            "found a previous demo of {} dossiers in {}: storage already holds what it wrote, so the \
             ingestors resume after it and write nothing twice",
            before.dossiers,
            out.display()
        );
    }

    eprintln!(
        "generating {} dossiers (seed {}); applicant IDs are pseudonymized with the public \
         development key, which is fine for generated data and never for real data",
        group(args.dossiers as u64),
        args.seed
    );
    let stage = Stage::start();
    let generate::Feed {
        messages,
        truth,
        as_of,
    } = generate::generate(args.dossiers, args.seed, args.year, args.years)?;
    // Held compressed from here: the ingestors and the mock cluster need the memory.
    let messages = generate::packed::Packed::pack(messages)?;
    crate::memory::give_back_freed();
    tracing::debug!(
        messages = messages.len(),
        bytes = messages.compressed_bytes(),
        "feed packed"
    );
    stages.generate = stage.stop();
    std::fs::write(
        out.join("ground-truth.json"),
        serde_json::to_vec_pretty(&truth)?,
    )?;
    drop(truth);
    let total = messages.len() as u64;

    let mock = MockCluster::new(1).context("starting the embedded Kafka cluster")?;
    mock.create_topic(TOPIC, args.partitions, 1)?;
    mock.create_topic(DEAD_LETTERS, 1, 1)?;
    let brokers = mock.bootstrap_servers();
    eprintln!(
        "embedded Kafka cluster on {brokers}: topic {TOPIC} ({} partitions), dead letters to {DEAD_LETTERS}",
        args.partitions
    );
    std::fs::create_dir_all(out.join("_sohoa"))?;
    std::fs::write(&record_path, serde_json::to_vec_pretty(&this)?)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let icfg = ingestor_config(&cfg, &brokers, &out);
    let ingest_stage = Stage::start();
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    let mut metrics = Vec::new();
    for i in 0..3 {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let m = Metrics::new();
        let (c, h, mm) = (icfg.clone(), rt.handle().clone(), m.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("ingestor-{i}"))
                .spawn(move || {
                    sohoa_ingestor::run(&c, &h, mm, async move {
                        let _ = rx.await;
                    })
                })?,
        );
        stops.push(tx);
        metrics.push(m);
    }
    let ctrl_c = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let flag = ctrl_c.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let interrupted = || ctrl_c.load(std::sync::atomic::Ordering::SeqCst);

    // Produce and consume at once; hold the producer back while the ingestors are far behind.
    // Flow control reads the group's progress from storage, not from counters: on a re-run
    // the ingestors skip what storage already holds and count nothing.
    let storage = sohoa_runtime::Storage::open(&icfg.storage)?;
    let writer = sohoa_ingestor::events_writer(&storage, rt.handle())?;
    let progressed = Progressed::new(writer.clone(), &brokers, args.partitions)?;
    let produce_stage = Stage::start();
    let p = producer(&brokers)?;
    let mut produced_bar = Progress::new("producing", total);
    let before = durable(&metrics);
    let mut i = 0u64;
    messages.for_each(|key, payload| {
        if i.is_multiple_of(1000) {
            p.poll(Duration::ZERO);
            produced_bar.set(i);
            while i.saturating_sub(progressed.durable_total(&rt)) > WINDOW && !interrupted() {
                if handles.iter().any(|h| h.is_finished()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if interrupted() {
                return Ok(ControlFlow::Break(()));
            }
        }
        send(&p, TOPIC, key, payload)?;
        i += 1;
        Ok(ControlFlow::Continue(()))
    })?;
    p.flush(Duration::from_secs(60))
        .context("flushing the producer")?;
    drop(messages);
    crate::memory::give_back_freed();
    stages.produce = produce_stage.stop();
    produced_bar.finish(if interrupted() { 0 } else { total });
    let ingest_after_produce = Stage::start();

    // A re-run finds everything durable already: the ingestors skip it, so wait for the
    // group's storage progress to reach the end of every partition instead of counting.
    let mut ingest_bar = Progress::new("ingesting", total);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = durable(&metrics) - before;
        ingest_bar.set(done);
        let caught_up = progressed.caught_up(&rt);
        if caught_up
            || interrupted()
            || Instant::now() > deadline
            || handles.iter().any(|h| h.is_finished())
        {
            ingest_bar.finish(if caught_up { total } else { done });
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for s in stops {
        let _ = s.send(());
    }
    let mut totals = sohoa_ingestor::Totals::default();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| anyhow::anyhow!("an ingestor panicked"))??;
        totals.messages += t.messages;
        totals.dead_lettered += t.dead_lettered;
        totals.events += t.events;
        totals.skipped_durable += t.skipped_durable;
    }
    stages.ingest = ingest_stage.stop();
    stages.ingest_after_produce = ingest_after_produce.stop();
    drop(mock);
    if interrupted() {
        bail!(
            "interrupted: what was flushed is in {}, and a re-run resumes from it",
            out.display()
        );
    }
    if totals.messages == 0 {
        eprintln!(
            "storage already held all {} messages of this feed: nothing was written twice",
            group(total)
        );
    } else {
        eprintln!(
            "ingested {} messages: {} events written, {} dead-lettered, {} already in storage",
            group(totals.messages),
            group(totals.events),
            group(totals.dead_lettered),
            group(totals.skipped_durable)
        );
    }

    let stage = Stage::start();
    let mut agg_bar = Progress::new("aggregating", 1);
    agg_bar.set(0);
    let opts = sohoa_aggregator::Options {
        range: DateRange::default(),
        as_of,
        shard: Shard::ALL,
        merge_shards: None,
        periods: sohoa_aggregator::model::Period::ALL.to_vec(),
        allow_mixed_keys: false,
        events: Some(writer.table().clone()),
        events_version: None,
    };
    let summary = sohoa_aggregator::run(&cfg.aggregate, storage.store.clone(), rt.handle(), &opts)?;
    agg_bar.finish(1);
    stages.aggregate = stage.stop();
    let stage = Stage::start();
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let as_of = chrono::DateTime::from_timestamp_micros(as_of + 7 * 3_600_000_000)
        .map(|t| t.format("%Y-%m-%d %H:%M ICT").to_string())
        .unwrap_or_default();
    // The report ranks today's units: the restated view, named from the reference.
    let restated = sohoa_aggregator::model::View::Restated;
    let (rows, fields) = (summary.rows_of(restated), summary.fields_of(restated));
    let input = ReportInput {
        title: &summary.province,
        generated_at: &generated,
        as_of: &as_of,
        rows: &rows,
        scorecards: &summary.scorecards,
        agency_names: &summary.agency_names,
        min_dossiers: cfg.aggregate.worst_procedures_min_dossiers,
        calendar: &summary.calendar,
        fields: &fields,
        breaks: &summary.breaks,
        events_version: summary.events_version,
    };
    let report_path = out.join("report/index.html");
    std::fs::create_dir_all(out.join("report"))?;
    std::fs::write(&report_path, report::render_html(&input))?;
    println!();
    print!(
        "{}",
        report::terminal_summary(&input, std::io::stdout().is_terminal())
    );
    stages.report = stage.stop();
    let o = out.display();
    println!(
        "\nDone in {:.0} s. Everything is under {o}:\n\
         \x20 events/     {} events, a Delta Lake table partitioned by date\n\
         \x20 dossiers/   {} dossiers, one row each; handovers/ their changes of agency\n\
         \x20 metrics/    metrics.csv, metrics.parquet, progress.csv, progress.parquet, scorecard.csv, agencies.csv,\n\
         \x20             run.json; every row as the agencies were and restated to today's units (view)\n\
         \x20 report      {}\n\
         \nQuery them:\n\
         \x20 duckdb -c \"SELECT period_label, agency_name, received, round(on_time_rate, 3) AS on_time, round(digitization_rate, 3) AS digitized FROM '{o}/metrics/metrics.parquet' WHERE view = 'restated' AND period = 'year' AND procedure_code IS NULL AND field_code IS NULL ORDER BY period_label, on_time\"\n\
         \x20 python -c \"import polars as pl; print(pl.read_parquet('{o}/dossiers/*.parquet').group_by('on_time_class').len())\"\n\
         \x20 python -c \"import deltalake; print(deltalake.DeltaTable('{o}/events').to_pyarrow_dataset().count_rows())\"",
        started.elapsed().as_secs_f64(),
        group(summary.events_read),
        group(summary.dossiers as u64),
        report_path.display(),
    );
    stages.total = started.elapsed();
    println!("\n{stages}");
    Ok(())
}

/// What the demo reads of the group's progress: the events table's offsets, which the
/// ingestors start from, and the topic's high watermarks.
struct Progressed {
    writer: sohoa_storage::events::Writer,
    consumer: rdkafka::consumer::BaseConsumer,
    partitions: i32,
}

impl Progressed {
    fn new(writer: sohoa_storage::events::Writer, brokers: &str, partitions: i32) -> Result<Self> {
        Ok(Progressed {
            writer,
            consumer: ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .create()
                .context("creating the progress reader")?,
            partitions,
        })
    }

    /// The next offset the table holds for each partition.
    fn durable(&self, _rt: &tokio::runtime::Runtime) -> Vec<i64> {
        let ids: Vec<String> = (0..self.partitions)
            .map(|p| sohoa_storage::events::kafka_app_id(TOPIC, p))
            .collect();
        match self.writer.offsets(&ids) {
            Ok(o) => o.into_iter().map(|n| n.unwrap_or(0)).collect(),
            Err(_) => vec![0; self.partitions as usize],
        }
    }

    /// Messages storage holds, summed over the partitions.
    fn durable_total(&self, rt: &tokio::runtime::Runtime) -> u64 {
        self.durable(rt).iter().map(|&n| n.max(0) as u64).sum()
    }

    /// Whether storage holds every partition up to its high watermark: the group is done.
    fn caught_up(&self, rt: &tokio::runtime::Runtime) -> bool {
        use rdkafka::consumer::Consumer;
        let durable = self.durable(rt);
        (0..self.partitions).all(|p| {
            self.consumer
                .fetch_watermarks(TOPIC, p, Duration::from_secs(5))
                .is_ok_and(|(_, high)| high == 0 || durable[p as usize] >= high)
        })
    }
}
