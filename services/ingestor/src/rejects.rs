//! Rejected backfill lines, kept exactly once and without personal data.
//!
//! A Kafka source's rejects go to the dead-letter topic. A backfill's are gathered per
//! source partition (a file) and committed with the range they belong to: the pipeline
//! takes them when it takes a partition's open range ([`DeadLetters::take_range`]), and
//! the commit stages, lists and publishes them beside the range's data files
//! (`checkpoint`). A killed and re-run backfill therefore neither repeats nor loses a
//! reject, and never leaves a torn line.
//!
//! What the storage root keeps of a reject is what an operator needs and no more (see
//! `redact`): the source and line, the reasons, the byte length, a keyed digest of the
//! line, and a masked excerpt. The raw line goes only to the separate raw store, when
//! one is configured (`rejects.raw_root`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sohoa_schemas::{DecodeError, Pseudonymizer};

use crate::dead_letter::{CommitRejects, DeadLetterError, DeadLetters};
use crate::pipeline::Record;
use crate::redact;

/// Bytes of a rejected line an excerpt shows, at most.
const EXCERPT_BYTES: usize = 400;

/// The rejects of a range not yet taken for its commit.
#[derive(Debug, Default)]
struct Gathered {
    /// One JSON object per rejected message, with no personal data.
    redacted: Vec<u8>,
    /// One JSON object per rejected message with its raw text, for the raw store.
    raw: Vec<u8>,
}

/// Where raw rejected lines go, and the rejects of the ranges not yet committed.
pub struct RejectsSink {
    pseudonymizer: Arc<Pseudonymizer>,
    /// The storage root, where the redacted rejects go.
    root: Arc<dyn ObjectStore>,
    raw_store: Option<Arc<dyn ObjectStore>>,
    open: HashMap<(Arc<str>, i32), Gathered>,
}

impl RejectsSink {
    /// Rejects whose digests are keyed with `pseudonymizer`'s key, and whose raw bytes go
    /// to `raw_store`, if any.
    pub fn new(
        pseudonymizer: Arc<Pseudonymizer>,
        root: Arc<dyn ObjectStore>,
        raw_store: Option<Arc<dyn ObjectStore>>,
    ) -> Self {
        RejectsSink {
            pseudonymizer,
            root,
            raw_store,
            open: HashMap::new(),
        }
    }
}

impl DeadLetters for RejectsSink {
    fn send(&mut self, record: &Record, rejects: &[DecodeError]) -> Result<(), DeadLetterError> {
        let payload = record.payload();
        let kind = rejects.first().map_or("unknown", |e| e.kind());
        let line = serde_json::json!({
            "source": &*record.topic,
            "line": record.offset + 1,
            "bytes": payload.len(),
            "digest": self.pseudonymizer.digest(payload),
            "kind": kind,
            "errors": rejects.iter().map(|e| redact::message(&e.to_string())).collect::<Vec<_>>(),
            "excerpt": redact::excerpt(payload, EXCERPT_BYTES),
        });
        let range = self
            .open
            .entry((record.topic.clone(), record.partition))
            .or_default();
        serde_json::to_writer(&mut range.redacted, &line).expect("JSON values always serialize");
        range.redacted.push(b'\n');
        if self.raw_store.is_some() {
            let mut whole = serde_json::Map::new();
            whole.insert("source".into(), record.topic.as_ref().into());
            whole.insert("line".into(), (record.offset + 1).into());
            whole.insert("kind".into(), kind.into());
            let errors = rejects.iter().map(|e| e.to_string().into()).collect();
            whole.insert("errors".into(), serde_json::Value::Array(errors));
            match std::str::from_utf8(payload) {
                Ok(text) => whole.insert("raw".into(), text.into()),
                Err(_) => whole.insert("raw_hex".into(), hex(payload).into()),
            };
            serde_json::to_writer(&mut range.raw, &whole).expect("JSON values always serialize");
            range.raw.push(b'\n');
        }
        Ok(())
    }

    /// Nothing to wait for: rejects are written with their range's commit.
    fn flush(&mut self, _: Duration) -> Result<(), DeadLetterError> {
        Ok(())
    }

    /// Not committed here: the records are rejected again by whoever loads them next.
    fn dropped(&mut self, topic: &str, partition: i32, _sent: u64, _cause: &'static str) {
        self.open.remove(&(Arc::from(topic), partition));
    }

    fn take_range(&mut self, topic: &str, partition: i32) -> Option<CommitRejects> {
        let key = (Arc::from(topic), partition);
        let range = self.open.remove(&key)?;
        Some(CommitRejects {
            root: self.root.clone(),
            redacted: Bytes::from(range.redacted),
            raw: self
                .raw_store
                .clone()
                .map(|store| (store, Bytes::from(range.raw))),
        })
    }
}

/// The writes that keep a range's rejects, before its commit: the redacted lines under the
/// root's `_sohoa/rejects/`, and the raw lines in the raw store if there is one. A range
/// that is never committed leaves its file behind, to be overwritten when the range is
/// loaded again; the commit's metadata names the files of committed ranges.
pub fn commit_writes(
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    r: &CommitRejects,
) -> Vec<(Arc<dyn ObjectStore>, object_store::path::Path, Bytes)> {
    let name = format!("{start:020}-{end:020}.jsonl");
    let redacted = redacted_rejects_dir(topic, partition)
        .clone()
        .join(name.as_str());
    let mut writes = vec![(r.root.clone(), redacted, r.redacted.clone())];
    if let Some((store, raw)) = &r.raw {
        let path = raw_rejects_dir(topic, partition)
            .clone()
            .join(name.as_str());
        writes.push((store.clone(), path, raw.clone()));
    }
    writes
}

/// The folder of a partition's redacted rejects, under the storage root.
pub fn redacted_rejects_dir(topic: &str, partition: i32) -> Path {
    Path::from(format!(
        "_sohoa/rejects/{}/p{partition:05}",
        safe_topic(topic)
    ))
}

/// The folder of a partition's raw rejects, in the raw store.
pub fn raw_rejects_dir(topic: &str, partition: i32) -> Path {
    Path::from(format!("{}/p{partition:05}", safe_topic(topic)))
}

/// A topic name made safe for a path segment.
pub fn safe_topic(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Delete the raw rejects last written before `cutoff`: the raw store's retention.
/// Returns how many files were deleted and how many are kept.
pub async fn purge(
    raw: &dyn ObjectStore,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<(usize, usize), object_store::Error> {
    use futures::TryStreamExt;
    let listed: Vec<_> = raw.list(None).try_collect().await?;
    let (mut deleted, mut kept) = (0, 0);
    for meta in listed {
        if meta.last_modified >= cutoff {
            kept += 1;
            continue;
        }
        match raw.delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((deleted, kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    fn record(topic: &str, offset: i64, payload: &[u8]) -> Record {
        Record {
            topic: Arc::from(topic),
            partition: 0,
            offset,
            timestamp_ms: None,
            body: crate::pipeline::Body::Owned {
                key: None,
                payload: payload.to_vec(),
            },
        }
    }

    fn reject() -> Vec<DecodeError> {
        vec![sohoa_schemas::DecodeError::internal(
            r#"$.data[0].ChuHoSo: "Lê Thị Bình" is not a number"#,
        )]
    }

    #[test]
    fn each_range_takes_its_own_rejects_and_only_the_raw_store_sees_the_raw_line() {
        let key = Arc::new(Pseudonymizer::new(b"0123456789abcdef-key").unwrap());
        let raw: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut sink = RejectsSink::new(key.clone(), Arc::new(InMemory::new()), Some(raw));
        let line = r#"{"MaHoSo":"H1","ChuHoSo":"Lê Thị Bình","SoGiayToChuHoSo":"082123456789"}"#;
        sink.send(&record("a", 4, line.as_bytes()), &reject())
            .unwrap();
        sink.send(&record("b", 0, b"\xff"), &reject()).unwrap();
        sink.send(&record("a", 9, line.as_bytes()), &reject())
            .unwrap();
        let a = sink.take_range("a", 0).unwrap();
        assert!(sink.take_range("a", 0).is_none(), "taken once");
        let redacted = String::from_utf8(a.redacted.to_vec()).unwrap();
        let rows: Vec<serde_json::Value> = redacted
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["line"], 5);
        assert_eq!(rows[1]["line"], 10);
        assert_eq!(rows[0]["bytes"], line.len());
        assert_eq!(rows[0]["digest"], key.digest(line.as_bytes()));
        assert!(rows[0]["excerpt"]
            .as_str()
            .unwrap()
            .contains(r#""MaHoSo":"H1""#));
        for secret in ["Bình", "082123456789"] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        let (_, raw) = a.raw.unwrap();
        let raw = String::from_utf8(raw.to_vec()).unwrap();
        assert_eq!(raw.lines().count(), 2);
        assert!(raw.contains("082123456789") && raw.contains("Bình"));
        let b = sink.take_range("b", 0).unwrap();
        let (_, raw) = b.raw.unwrap();
        assert!(String::from_utf8(raw.to_vec())
            .unwrap()
            .contains(r#""raw_hex":"ff""#));
        // Without a raw store, nothing of the raw line is kept anywhere.
        let mut bare = RejectsSink::new(key, Arc::new(InMemory::new()), None);
        bare.send(&record("a", 0, line.as_bytes()), &reject())
            .unwrap();
        assert!(bare.take_range("a", 0).unwrap().raw.is_none());
    }

    #[tokio::test]
    async fn purge_deletes_what_is_older_than_the_cutoff() {
        let raw = InMemory::new();
        raw.put(&Path::from("t/p00000/a.jsonl"), "x".into())
            .await
            .unwrap();
        let before = chrono::Utc::now() - chrono::Duration::seconds(1);
        assert_eq!(purge(&raw, before).await.unwrap(), (0, 1));
        let after = chrono::Utc::now() + chrono::Duration::seconds(1);
        assert_eq!(purge(&raw, after).await.unwrap(), (1, 0));
        assert!(raw.head(&Path::from("t/p00000/a.jsonl")).await.is_err());
    }
}
