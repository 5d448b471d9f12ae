//! Adoption of a root written by the commit-marker protocol of earlier releases, laid out
//! here as that protocol left it: published files with their markers, a committed range
//! whose file was still staged (a crash between commit and publish), and a committed merge
//! whose inputs were not yet deleted (a crash before the retire). Nothing may be lost or
//! counted twice, and ingestion must resume where the markers stopped.

mod common;

use arrow::array::RecordBatch;
use common::*;
use sohoa_ingestor::adopt::{adopt, needs_adoption, AdoptError};
use sohoa_ingestor::write::FileFormat;

fn put(root: &std::path::Path, rel: &str, batch: &RecordBatch) {
    let format =
        FileFormat::new(&sohoa_schemas::events_schema(), 1024, 3, Some("0123abcd")).unwrap();
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format.encode(batch).unwrap()).unwrap();
}

fn marker(root: &std::path::Path, p: i32, start: i64, end: i64, files: &[(&str, &str, usize)]) {
    let dir = root.join(format!("_sohoa/commits/t/p{p:05}"));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<_> = files
        .iter()
        .map(|(staged, published, rows)| {
            serde_json::json!({"staged": staged, "published": published, "rows": rows, "bytes": 1})
        })
        .collect();
    let m = serde_json::json!({
        "version": 1, "topic": "t", "partition": p, "start": start, "end": end,
        "files": files, "messages": end - start + 1, "events": 0, "dead_lettered": 1,
        "dead_letters_by_reason": {"syntax": 1}, "committed_at": "2025-03-01T00:00:00Z",
        "key_fingerprint": "0123abcd"
    });
    std::fs::write(dir.join(format!("{start:020}.json")), m.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_marker_root_becomes_one_commit_with_every_row_once_and_offsets_from_the_markers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Partition 0: offsets 0..=9 published; 10..=19 committed, its file still staged.
    let a = fixture_rows(0, 0..10);
    let b = fixture_rows(0, 10..20);
    put(root, "events/date=2023-03-01/t-p00000-a.parquet", &a);
    put(root, "_sohoa/staging/t/p00000/b.parquet", &b);
    marker(
        root,
        0,
        0,
        9,
        &[(
            "_sohoa/staging/t/p00000/a.parquet",
            "events/date=2023-03-01/t-p00000-a.parquet",
            a.num_rows(),
        )],
    );
    marker(
        root,
        0,
        10,
        19,
        &[(
            "_sohoa/staging/t/p00000/b.parquet",
            "events/date=2023-03-01/t-p00000-b.parquet",
            b.num_rows(),
        )],
    );
    // Partition 1: two ranges, merged into one file whose inputs were not deleted yet.
    let c = fixture_rows(1, 0..5);
    let d = fixture_rows(1, 5..10);
    put(root, "events/date=2023-03-02/t-p00001-c.parquet", &c);
    put(root, "events/date=2023-03-02/t-p00001-d.parquet", &d);
    marker(
        root,
        1,
        0,
        4,
        &[(
            "s",
            "events/date=2023-03-02/t-p00001-c.parquet",
            c.num_rows(),
        )],
    );
    marker(
        root,
        1,
        5,
        9,
        &[(
            "s",
            "events/date=2023-03-02/t-p00001-d.parquet",
            d.num_rows(),
        )],
    );
    let merged = arrow::compute::concat_batches(&c.schema(), [&c, &d]).unwrap();
    put(root, "events/date=2023-03-02/compacted-x.parquet", &merged);
    let merge_dir = root.join("_sohoa/compact/commits/date=2023-03-02");
    std::fs::create_dir_all(&merge_dir).unwrap();
    std::fs::write(
        merge_dir.join("x.json"),
        serde_json::json!({
            "version": 1, "date": "2023-03-02",
            "inputs": ["events/date=2023-03-02/t-p00001-c.parquet", "events/date=2023-03-02/t-p00001-d.parquet"],
            "staged": "_sohoa/compact/staging/date=2023-03-02/x.parquet",
            "output": "events/date=2023-03-02/compacted-x.parquet", "rows": merged.num_rows()
        })
        .to_string(),
    )
    .unwrap();

    let cfg = sohoa_runtime::config::StorageConfig {
        root: root.display().to_string(),
        options: Default::default(),
        fsync: false,
    };
    let storage = sohoa_runtime::Storage::open(&cfg).unwrap();
    // The ingestor refuses the root until it is adopted: it would load everything again.
    assert!(needs_adoption(storage.store.as_ref()).await.unwrap());
    let refused = tokio::task::spawn_blocking({
        let storage = storage.clone();
        move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            sohoa_ingestor::events_writer(&storage, rt.handle()).map(|_| ())
        }
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(refused.to_string().contains("sohoa adopt"), "{refused}");

    let table = sohoa_storage::Table::events(&storage).unwrap();
    let adopted = adopt(
        storage.store.clone(),
        table.clone(),
        sohoa_schemas::events_schema(),
        sohoa_ingestor::STATS_COLUMNS,
    )
    .await
    .unwrap();
    assert_eq!(adopted.version, 1);
    assert_eq!(
        (adopted.files, adopted.published, adopted.replaced),
        (3, 1, 2)
    );
    let expected_rows = (a.num_rows() + b.num_rows() + merged.num_rows()) as u64;
    assert_eq!(adopted.rows, expected_rows);
    assert_eq!(
        adopted.offsets.into_iter().collect::<Vec<_>>(),
        [("kafka:t:0".to_owned(), 20), ("kafka:t:1".to_owned(), 10)]
    );

    // The table holds every row once: each (partition, offset) as many times as the
    // message's events, no more.
    let per_message = fixture_rows(0, 0..1).num_rows();
    let seen = offsets_in_storage(root);
    let mut expected: Vec<(i32, i64)> = (0..20).map(|o| (0, o)).collect();
    expected.extend((0..10).map(|o| (1, o)));
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expected);
    assert!(seen.values().all(|&n| n == per_message), "{seen:?}");
    // The commit carries the markers' counts for the data-quality reconciliation.
    let ranges = committed_ranges(root);
    assert_eq!(ranges.len(), 4);
    assert_eq!(ranges[0]["dead_letters_by_reason"]["syntax"], 1);

    // Adopted once: a second run changes nothing.
    let again = adopt(
        storage.store.clone(),
        table,
        sohoa_schemas::events_schema(),
        sohoa_ingestor::STATS_COLUMNS,
    )
    .await
    .unwrap_err();
    assert!(matches!(again, AdoptError::AlreadyTable(1)), "{again}");
    assert!(!needs_adoption(storage.store.as_ref()).await.unwrap());
}
