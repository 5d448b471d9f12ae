//! Backfill: the same pipeline and guarantees, fed from exported files instead of Kafka.
//!
//! Each file is one source partition named `file:<name>#<content hash>`, and its offsets
//! are line numbers (0-based), so the exactly-once protocol applies unchanged: a re-run
//! resumes after the last committed line and never duplicates. Rejected lines go to a
//! rejects file, with the reason and the original text.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sohoa_runtime::{Config, Storage};
use sohoa_schemas::{build_decoder, DecoderContext, DecoderKind};

use crate::checkpoint::{Checkpointer, PartitionPaths};
use crate::dead_letter::RejectsFile;
use crate::pipeline::{
    self, Body, Decoders, Input, NoCommit, Pipeline, PipelineConfig, Record, Shared, Totals,
};
use crate::{pseudonymizer, IngestError, Metrics};

/// How a file holds its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One JSON message per line.
    Lines,
    /// The whole file is one message (a pretty-printed envelope, say).
    Document,
    /// Lines if the first non-empty line is a JSON value by itself, else a document.
    Auto,
}

/// A backfill run's settings.
pub struct Backfill {
    pub files: Vec<PathBuf>,
    pub decoder: DecoderKind,
    pub source_system: String,
    pub layout: Layout,
    /// Where rejected lines go; defaults to `<root>/_sohoa/rejects/<file>.rejects.jsonl`
    /// for local roots.
    pub rejects: Option<PathBuf>,
}

/// The partition name of a file: its name plus a content hash, so a different file with
/// the same name is never mistaken for a re-run.
pub fn file_topic(path: &Path, bytes: &[u8]) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "stdin".into(), |n| n.to_string_lossy().into_owned());
    let hash = Sha256::digest(bytes);
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("file:{name}#{hex}")
}

fn messages(bytes: &[u8], layout: Layout) -> Vec<(i64, &[u8])> {
    let lines = || {
        bytes
            .split(|&b| b == b'\n')
            .enumerate()
            .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
            .map(|(i, l)| (i as i64, l))
            .collect()
    };
    match layout {
        Layout::Lines => lines(),
        Layout::Document => vec![(0, bytes)],
        Layout::Auto => {
            let first = bytes
                .split(|&b| b == b'\n')
                .find(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
                .unwrap_or_default();
            if serde_json::from_slice::<serde::de::IgnoredAny>(first).is_ok() {
                lines()
            } else {
                vec![(0, bytes)]
            }
        }
    }
}

/// Load files through the pipeline. Returns the run's totals.
pub fn run(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    job: &Backfill,
) -> Result<Totals, IngestError> {
    let storage = Storage::open(&cfg.storage)?;
    let pseudo = pseudonymizer(cfg)?;
    let checkpointer = Checkpointer::new(storage.store.clone());
    let mut contents = Vec::new();
    for f in &job.files {
        let mut bytes = Vec::new();
        if f.as_os_str() == "-" {
            std::io::stdin().read_to_end(&mut bytes)?;
        } else {
            std::fs::File::open(f)?.read_to_end(&mut bytes)?;
        }
        contents.push((file_topic(f, &bytes), bytes));
    }
    let mut decoders = Decoders::default();
    for (topic, _) in &contents {
        let ctx = DecoderContext {
            source_system: Arc::from(job.source_system.as_str()),
            pseudonymizer: pseudo.clone(),
        };
        decoders.insert(Arc::from(topic.as_str()), build_decoder(job.decoder, ctx));
    }
    let rejects_path = match (&job.rejects, &storage.local) {
        (Some(p), _) => p.clone(),
        (None, Some(root)) => root.join("_sohoa/rejects/backfill.rejects.jsonl"),
        (None, None) => PathBuf::from("backfill.rejects.jsonl"),
    };
    let rejects = RejectsFile::create(&rejects_path)?;
    // One shard: a file is one partition, which only one shard could own.
    let shared = Shared::new(1)?;
    metrics.shards.set(1);
    let buffered = shared.buffered.clone();
    let pipeline = Pipeline::new(
        PipelineConfig {
            flush: cfg.flush.clone(),
            buffer_max_bytes: cfg.buffer.max_bytes,
            key_fingerprint: pseudo.fingerprint(),
        },
        decoders,
        checkpointer.clone(),
        rt.clone(),
        Box::new(rejects),
        Box::new(NoCommit),
        metrics,
        shared,
    )?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let worker = std::thread::Builder::new()
        .name("sohoa-pipeline".into())
        .spawn(move || pipeline.run(rx))?;
    let send = |input| tx.send(input).is_ok();
    let mut skipped = 0;
    let mut batch = Vec::new();
    for (topic, bytes) in &contents {
        let recovered = rt
            .block_on(checkpointer.recover(&PartitionPaths::new(topic, 0)))
            .map_err(pipeline::PipelineError::from)?;
        let topic: Arc<str> = Arc::from(topic.as_str());
        let next = recovered.next_offset;
        if let Some(n) = next {
            tracing::info!(file = %topic, resume_line = n + 1, "resuming a file loaded before");
        }
        if !send(Input::Assigned(vec![(topic.clone(), 0, next)])) {
            break;
        }
        for (offset, line) in messages(bytes, job.layout) {
            if next.is_some_and(|n| offset < n) {
                skipped += 1;
                continue;
            }
            // Backpressure: the pipeline writes out buffers past the cap; wait for it.
            while buffered.load(std::sync::atomic::Ordering::SeqCst) > cfg.buffer.max_bytes {
                std::thread::sleep(Duration::from_millis(5));
            }
            buffered.fetch_add(line.len(), std::sync::atomic::Ordering::SeqCst);
            let rec = Record {
                topic: topic.clone(),
                partition: 0,
                offset,
                timestamp_ms: None,
                body: Body::Owned {
                    key: None,
                    payload: line.to_vec(),
                },
            };
            batch.push(rec);
            if batch.len() >= 512 && !send(Input::Records(std::mem::take(&mut batch))) {
                break;
            }
        }
        if !batch.is_empty() && !send(Input::Records(std::mem::take(&mut batch))) {
            break;
        }
    }
    let _ = send(Input::Drain(
        Instant::now() + Duration::from_millis(cfg.shutdown.drain_deadline_ms.max(60_000)),
    ));

    drop(tx);
    let mut totals = worker
        .join()
        .map_err(|_| pipeline::PipelineError::DrainTimeout(0))??;
    totals.skipped_durable += skipped;
    if totals.dead_lettered > 0 {
        tracing::warn!(rejected_lines = totals.dead_lettered, path = %rejects_path.display(), "some lines were rejected");
    }
    Ok(totals)
}
