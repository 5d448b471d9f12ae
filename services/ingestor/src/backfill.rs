//! Backfill: the same pipeline and guarantees, fed from exported files instead of Kafka.
//!
//! Each file is one source partition named `file:<name>#<content hash>`, and its offsets
//! are line numbers (0-based), so the exactly-once protocol applies unchanged: a re-run
//! resumes after the last committed line and never duplicates. Rejected lines are
//! committed with their range (`rejects`).
//!
//! Files are streamed, never read whole: a file is read once to hash it, then line by
//! line into the pipeline under the same buffer cap as Kafka ingest, so a 5 GB export
//! needs no more memory than a 5 MB one. A run ends well only when storage holds every
//! line of every file as committed (an event or a reject); otherwise it fails, saying
//! how far each file got.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use sohoa_runtime::{Config, Storage};
use sohoa_schemas::{build_decoder, DecoderContext, DecoderKind};

use crate::pipeline::Sources;
use crate::pipeline::{
    self, Body, Decoders, Input, NoCommit, Pipeline, PipelineConfig, Record, Shared, Totals,
};
use crate::rejects::RejectsSink;
use crate::{pseudonymizer, IngestError, Metrics};
use sohoa_storage::events::Writer;

/// How a file holds its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One JSON message per line.
    Lines,
    /// The whole file is one message (a pretty-printed envelope, say).
    Document,
    /// Lines if at least half of the first lines are JSON values by themselves, else a
    /// document.
    Auto,
}

/// Lines looked at to tell the layouts apart.
const SNIFF_LINES: usize = 16;
/// ...and at most this many bytes of them.
const SNIFF_BYTES: u64 = 64 << 20;
/// Records handed to the pipeline at once, as the Kafka source does.
const BATCH_RECORDS: usize = 512;
/// A UTF-8 byte-order mark, which some exporters put first.
const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: neither JSON lines ({parsed} of the first {looked} lines are JSON values) nor one JSON document ({reason}); nothing of it was loaded. Fix the file, or pass --layout lines to load its good lines and reject the rest")]
    NotJson {
        path: String,
        looked: usize,
        parsed: usize,
        reason: String,
    },
    #[error("not every line was committed: {}. A re-run resumes after each file's last committed line{}", describe(.files), .cause.as_ref().map(|c| format!(" (the run stopped on: {c})")).unwrap_or_default())]
    Incomplete {
        files: Vec<Progress>,
        cause: Option<String>,
    },
    #[error("raw rejects store: {0}")]
    RawStore(#[from] object_store::Error),
}

/// How far one file got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub path: String,
    /// Lines committed, from the first (1-based, inclusive); 0 when none.
    pub committed_through: i64,
    /// The file's last line holding a message (1-based).
    pub last_line: i64,
}

fn describe(files: &[Progress]) -> String {
    files
        .iter()
        .map(|p| {
            format!(
                "{} committed through line {} of {}",
                p.path, p.committed_through, p.last_line
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A backfill run's settings.
pub struct Backfill {
    pub files: Vec<PathBuf>,
    pub decoder: DecoderKind,
    pub source_system: String,
    pub layout: Layout,
}

/// One input: where its bytes come from, its partition name and how it holds messages.
struct FileInput {
    path: PathBuf,
    topic: String,
    layout: Layout,
    /// Standard input, kept in memory: it cannot be read twice.
    stdin: Option<Vec<u8>>,
}

impl FileInput {
    fn display(&self) -> String {
        if self.stdin.is_some() {
            "-".into()
        } else {
            self.path.display().to_string()
        }
    }

    fn open(&self) -> Result<Box<dyn BufRead>, BackfillError> {
        match &self.stdin {
            Some(bytes) => Ok(Box::new(std::io::Cursor::new(bytes.clone()))),
            None => {
                let f = std::fs::File::open(&self.path).map_err(|source| BackfillError::Read {
                    path: self.display(),
                    source,
                })?;
                Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
            }
        }
    }

    fn read_err(&self, source: std::io::Error) -> BackfillError {
        BackfillError::Read {
            path: self.display(),
            source,
        }
    }
}

/// The partition name of a file: its name plus a content hash, so a different file with
/// the same name is never mistaken for a re-run.
pub fn file_topic(path: &Path, hash: &[u8]) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "stdin".into(), |n| n.to_string_lossy().into_owned());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("file:{name}#{hex}")
}

/// Hash a file's content, streaming.
fn content_hash(r: &mut dyn Read) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(h.finalize().into()),
            n => h.update(&buf[..n]),
        }
    }
}

/// Read the next line into `buf` without its newline; `false` at the end.
fn next_line(r: &mut dyn BufRead, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    if r.read_until(b'\n', buf)? == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(true)
}

fn blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

fn is_json(bytes: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Decide an `Auto` layout from the first lines: JSON lines if most of them are JSON
/// values by themselves. A truncated first line, or a byte-order mark, does not turn a
/// file of good lines into one rejected document.
fn sniff(r: &mut dyn BufRead) -> std::io::Result<(usize, usize)> {
    let (mut looked, mut parsed) = (0, 0);
    let mut line = Vec::new();
    let mut limited = r.take(SNIFF_BYTES);
    let mut first = true;
    while looked < SNIFF_LINES && next_line(&mut limited, &mut line)? {
        let l = if first { strip_bom(&line) } else { &line[..] };
        first = false;
        if blank(l) {
            continue;
        }
        looked += 1;
        parsed += usize::from(is_json(l).is_ok());
    }
    Ok((looked, parsed))
}

/// Name, hash and layout of each file, checked before anything is loaded: a file that
/// is neither JSON lines nor a JSON document fails the run instead of becoming one
/// rejected message.
fn inputs(files: &[PathBuf], layout: Layout) -> Result<Vec<FileInput>, BackfillError> {
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let mut input = FileInput {
            path: path.clone(),
            topic: String::new(),
            layout,
            stdin: None,
        };
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| input.read_err(e))?;
            input.stdin = Some(bytes);
        }
        let hash = content_hash(&mut input.open()?).map_err(|e| input.read_err(e))?;
        input.topic = file_topic(path, &hash);
        let (looked, parsed) = sniff(&mut input.open()?).map_err(|e| input.read_err(e))?;
        if layout == Layout::Auto {
            // At least half: a pretty-printed document has next to no line that is a JSON
            // value by itself, and a file of lines has all but its broken ones.
            input.layout = if parsed > 0 && parsed * 2 >= looked {
                Layout::Lines
            } else {
                Layout::Document
            };
        }
        if input.layout == Layout::Document {
            let mut doc = Vec::new();
            input
                .open()?
                .read_to_end(&mut doc)
                .map_err(|e| input.read_err(e))?;
            if let Err(reason) = is_json(strip_bom(&doc)) {
                return Err(BackfillError::NotJson {
                    path: input.display(),
                    looked,
                    parsed,
                    reason,
                });
            }
        }
        tracing::info!(file = %input.display(), partition = %input.topic, layout = ?input.layout, "backfill file");
        out.push(input);
    }
    Ok(out)
}

/// Load files through the pipeline. Returns the run's totals.
pub fn run(
    cfg: &Config,
    rt: &tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    job: &Backfill,
) -> Result<Totals, IngestError> {
    let storage = crate::open_storage(cfg, rt)?;
    let pseudo = pseudonymizer(cfg)?;
    let raw_store = match cfg.rejects.raw_storage() {
        Some(raw) => Some(Storage::open(&raw)?.store),
        None => None,
    };
    let writer = crate::events_writer(&storage, rt)?;
    let inputs = inputs(&job.files, job.layout)?;
    let mut decoders = Decoders::default();
    for input in &inputs {
        let ctx = DecoderContext {
            source_system: Arc::from(job.source_system.as_str()),
            pseudonymizer: pseudo.clone(),
        };
        decoders.insert(
            Arc::from(input.topic.as_str()),
            build_decoder(job.decoder, ctx),
        );
    }
    // One shard: a file is one partition, which only one shard could own.
    let shared = Shared::new(1)?;
    metrics.shards.set(1);
    let pipeline = Pipeline::new(
        PipelineConfig::new(cfg, pseudo.fingerprint(), Sources::Files),
        decoders,
        writer.clone(),
        rt.clone(),
        Box::new(RejectsSink::new(
            pseudo.clone(),
            storage.store.clone(),
            raw_store.clone(),
        )),
        Box::new(NoCommit),
        metrics,
        shared.clone(),
    )?;
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    let worker = std::thread::Builder::new()
        .name("sohoa-pipeline".into())
        .spawn(move || pipeline.run(rx))?;
    let feeder = Feeder {
        tx,
        shared,
        cap: cfg.buffer.max_bytes,
    };
    let fed = feed_all(
        &feeder,
        &inputs,
        &writer,
        storage.store.as_ref(),
        raw_store.as_deref(),
        rt,
    );
    // The last flushes get the drain deadline of a Kafka replica: storage that stays
    // down longer than that ends the run, saying how far each file got.
    let _ = feeder.tx.send(Input::Drain(
        Instant::now() + Duration::from_millis(cfg.shutdown.drain_deadline_ms),
    ));
    drop(feeder);
    let outcome = worker
        .join()
        .unwrap_or(Err(pipeline::PipelineError::DrainTimeout(0)));
    let (last_lines, skipped) = fed?;
    // Storage is the judge of what is loaded, not the pipeline's own account.
    let mut short = Vec::new();
    let ids: Vec<String> = inputs
        .iter()
        .map(|i| Sources::Files.app_id(&i.topic, 0))
        .collect();
    let committed = writer.offsets(&ids)?;
    for ((input, last), next) in inputs.iter().zip(&last_lines).zip(committed) {
        let next = next.unwrap_or(0);
        if let Some(last) = last.filter(|&l| next <= l) {
            short.push(Progress {
                path: input.display(),
                committed_through: next,
                last_line: last + 1,
            });
        }
    }
    let mut totals = match outcome {
        Ok(t) if short.is_empty() => t,
        outcome => {
            return Err(BackfillError::Incomplete {
                files: short,
                cause: outcome.err().map(|e| e.to_string()),
            }
            .into())
        }
    };
    totals.skipped_durable += skipped;
    if totals.dead_lettered > 0 {
        tracing::warn!(rejected_lines = totals.dead_lettered, root = %storage.root,
            "some lines were rejected; see _sohoa/rejects/ under the root");
    }
    Ok(totals)
}

/// Hands lines to the pipeline under the buffer cap.
struct Feeder {
    tx: std::sync::mpsc::SyncSender<Input>,
    shared: Shared,
    cap: usize,
}

impl Feeder {
    fn send(&self, input: Input) -> bool {
        self.tx.send(input).is_ok()
    }

    /// Wait while the pipeline holds too much: the level the Kafka source pauses at, and
    /// an eighth of the cap in flight (Kafka's prefetch plays that part there).
    fn wait_for_room(&self) {
        while self.shared.level() > self.cap
            || self.shared.buffered.load(Ordering::SeqCst) > self.cap / 8
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn send_batch(&self, batch: &mut Vec<Record>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let bytes: usize = batch.iter().map(|r| r.payload().len()).sum();
        self.wait_for_room();
        self.shared.buffered.fetch_add(bytes, Ordering::SeqCst);
        self.send(Input::Records(std::mem::take(batch)))
    }
}

/// Feed every file from where storage says it stops. Returns, per file, the offset of
/// its last message (`None` for a file without any), and the lines already loaded.
fn feed_all(
    feeder: &Feeder,
    inputs: &[FileInput],
    writer: &Writer,
    root: &dyn ObjectStore,
    raw_store: Option<&dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
) -> Result<(Vec<Option<i64>>, u64), IngestError> {
    let mut last_lines = Vec::with_capacity(inputs.len());
    let mut skipped = 0;
    for input in inputs {
        let next = writer
            .offsets(&[Sources::Files.app_id(&input.topic, 0)])?
            .pop()
            .flatten();
        if let Some(n) = next {
            tracing::info!(file = %input.display(), resume_line = n + 1, "resuming a file loaded before");
        }
        let from = next.unwrap_or(0);
        let redacted = crate::rejects::redacted_rejects_dir(&input.topic, 0);
        rt.block_on(forget_uncommitted(root, &redacted, from))
            .map_err(BackfillError::from)?;
        if let Some(raw) = raw_store {
            let dir = crate::rejects::raw_rejects_dir(&input.topic, 0);
            rt.block_on(forget_uncommitted(raw, &dir, from))
                .map_err(BackfillError::from)?;
        }
        let topic: Arc<str> = Arc::from(input.topic.as_str());
        if !feeder.send(Input::Assigned(vec![(topic.clone(), 0, next)])) {
            last_lines.push(None);
            break;
        }
        let (last, skip) = feed_file(feeder, input, &topic, next)?;
        last_lines.push(last);
        skipped += skip;
    }
    Ok((last_lines, skipped))
}

/// One file's messages from `next` on. Returns the offset of its last message and the
/// messages skipped as already loaded.
fn feed_file(
    feeder: &Feeder,
    input: &FileInput,
    topic: &Arc<str>,
    next: Option<i64>,
) -> Result<(Option<i64>, u64), IngestError> {
    let record = |offset, payload: &[u8]| Record {
        topic: topic.clone(),
        partition: 0,
        offset,
        timestamp_ms: None,
        body: Body::Owned {
            key: None,
            payload: payload.to_vec(),
        },
    };
    let mut r = input.open()?;
    if input.layout == Layout::Document {
        let mut doc = Vec::new();
        r.read_to_end(&mut doc).map_err(|e| input.read_err(e))?;
        if next.is_some() {
            return Ok((Some(0), 1));
        }
        let mut batch = vec![record(0, strip_bom(&doc))];
        feeder.send_batch(&mut batch);
        return Ok((Some(0), 0));
    }
    let (mut last, mut skipped) = (None, 0);
    let mut batch = Vec::with_capacity(BATCH_RECORDS);
    let mut line = Vec::new();
    let mut offset: i64 = -1;
    while next_line(&mut *r, &mut line).map_err(|e| input.read_err(e))? {
        offset += 1;
        let l = if offset == 0 {
            strip_bom(&line)
        } else {
            &line[..]
        };
        if blank(l) {
            continue;
        }
        last = Some(offset);
        if next.is_some_and(|n| offset < n) {
            skipped += 1;
            continue;
        }
        batch.push(record(offset, l));
        if batch.len() >= BATCH_RECORDS && !feeder.send_batch(&mut batch) {
            break;
        }
    }
    feeder.send_batch(&mut batch);
    Ok((last, skipped))
}

/// Rejects of ranges from `next` on were never committed (a single writer loads a file,
/// and every committed range ends before `next`): a run killed between writing them and
/// its commit left them. Deleted, so each rejected line is kept once.
async fn forget_uncommitted(
    raw: &dyn ObjectStore,
    dir: &object_store::path::Path,
    next: i64,
) -> Result<(), object_store::Error> {
    let listed: Vec<_> = raw.list(Some(dir)).try_collect().await?;
    for meta in listed {
        let start = meta
            .location
            .filename()
            .and_then(|n| n.split_once('-'))
            .and_then(|(s, _)| s.parse::<i64>().ok());
        if start.is_some_and(|s| s >= next) {
            match raw.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniffed(text: &[u8]) -> (usize, usize) {
        sniff(&mut std::io::Cursor::new(text.to_vec())).unwrap()
    }

    #[test]
    fn a_bad_or_marked_first_line_does_not_make_a_document_of_good_lines() {
        let good = br#"{"service":"DongBoHoSoMC","data":[]}"#;
        let mut lines = Vec::new();
        lines.extend_from_slice(br#"{"service":"DongBoHoSoMC","da"#);
        lines.push(b'\n');
        for _ in 0..20 {
            lines.extend_from_slice(good);
            lines.push(b'\n');
        }
        assert_eq!(sniffed(&lines), (16, 15));
        let mut bom = BOM.to_vec();
        bom.extend_from_slice(&lines[lines.iter().position(|&b| b == b'\n').unwrap() + 1..]);
        assert_eq!(sniffed(&bom), (16, 16));
        let pretty = b"{\n  \"service\": \"DongBoHoSoMC\",\n  \"data\": []\n}\n";
        assert_eq!(sniffed(pretty), (4, 0));
    }

    #[test]
    fn lines_are_read_without_their_newline_and_offsets_count_blank_lines() {
        let mut r = std::io::Cursor::new(b"a\n\n  \nb\r\nc".to_vec());
        let mut line = Vec::new();
        let mut got = Vec::new();
        while next_line(&mut r, &mut line).unwrap() {
            got.push(line.clone());
        }
        assert_eq!(got, [&b"a"[..], b"", b"  ", b"b\r", b"c"]);
    }
}
