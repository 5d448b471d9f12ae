//! Compaction as commits of the events table: the same rows in fewer files, readers of
//! every snapshot seeing each row once, two compactors at once, and the vacuum's
//! retention.

mod common;

use std::time::Duration;

use chrono::NaiveDate;
use common::*;
use sohoa_ingestor::compact::{compact, vacuum, CompactOptions};
use sohoa_ingestor::write::FileFormat;
use sohoa_storage::events::{kafka_app_id, Flush, FlushOutcome, SourceRange, Writer};
use sohoa_storage::DataFile;

fn format() -> FileFormat {
    FileFormat::new(&sohoa_schemas::events_schema(), 1024, 3, Some("0123abcd")).unwrap()
}

/// A table under `root` with `flushes` commits of ten messages each, all dated 2023-03-01.
fn table_with_flushes(root: &std::path::Path, flushes: i64) -> Writer {
    let table = sohoa_storage::Table::local(&root.join("events")).unwrap();
    let snapshot = table
        .create_if_absent(
            &sohoa_schemas::events_schema(),
            sohoa_ingestor::STATS_COLUMNS,
            &[],
        )
        .unwrap();
    let writer = Writer::new(table.clone(), snapshot.clone(), 1000);
    let stats = table.stats_plan(&snapshot).unwrap();
    for i in 0..flushes {
        let batch = fixture_rows(0, i * 10..i * 10 + 10);
        let data = format().encode(&batch).unwrap();
        let path = format!("date=2023-03-01/part-{i}.parquet");
        std::fs::create_dir_all(root.join("events/date=2023-03-01")).unwrap();
        std::fs::write(root.join("events").join(&path), &data).unwrap();
        let flush = Flush {
            files: vec![DataFile {
                path,
                date: "2023-03-01".into(),
                size: data.len() as u64,
                modified_ms: 0,
                stats: stats.collect(std::slice::from_ref(&batch)).unwrap(),
                rows: batch.num_rows() as u64,
            }],
            ranges: vec![SourceRange {
                app_id: kafka_app_id("t", 0),
                base: (i > 0).then_some(i * 10),
                next: i * 10 + 10,
            }],
            ..Flush::default()
        };
        assert!(matches!(
            writer.commit(&flush).unwrap(),
            FlushOutcome::Committed { .. }
        ));
    }
    writer
}

fn options() -> CompactOptions {
    CompactOptions {
        min_age_days: 2,
        today: NaiveDate::from_ymd_opt(2023, 3, 10).unwrap(),
        small_bytes: 1 << 30,
        target_bytes: 1 << 30,
    }
}

/// How many times each (partition, offset) the rows of `files` hold.
fn offsets_of(files: &[std::path::PathBuf]) -> std::collections::BTreeMap<(i32, i64), usize> {
    let mut all = std::collections::BTreeMap::new();
    for f in files {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("f.parquet");
        std::fs::copy(f, &copy).unwrap();
        for (k, n) in offsets_in_dir(dir.path()) {
            *all.entry(k).or_default() += n;
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merge_is_one_commit_every_snapshot_reads_each_row_once_and_the_vacuum_waits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let writer = table_with_flushes(root, 4);
    let before = offsets_in_storage(root);
    let reports = compact(&writer, &format(), &options()).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].files_before, reports[0].files_after), (4, 1));
    let table = writer.table().clone();
    let latest = tokio::task::spawn_blocking(move || table.latest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version(), 5);
    // The newest snapshot: one file, every row once; the offsets survive the merge.
    assert_eq!(table_files(root).len(), 1);
    assert_eq!(offsets_in_storage(root), before);
    let w = writer.clone();
    let offsets = tokio::task::spawn_blocking(move || w.offsets(&[kafka_app_id("t", 0)]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(offsets, [Some(40)]);
    // The snapshot before the merge still reads its four files, each row once.
    let t = writer.table().clone();
    let old = tokio::task::spawn_blocking(move || {
        let s = t.at_version(4).unwrap();
        t.files(&s).unwrap()
    })
    .await
    .unwrap();
    let old_paths: Vec<_> = old
        .iter()
        .map(|f| root.join("events").join(&f.path))
        .collect();
    assert_eq!(old_paths.len(), 4);
    assert_eq!(offsets_of(&old_paths), before);
    // The merge is marked as changing no data, and a checkpoint was written.
    let log =
        std::fs::read_to_string(root.join("events/_delta_log/00000000000000000005.json")).unwrap();
    assert!(log.contains(r#""operation":"OPTIMIZE""#), "{log}");
    let removes = log.matches(r#""remove":"#).count();
    assert_eq!(removes, 4);
    assert!(!log.contains(r#""dataChange":true"#), "{log}");
    assert!(root.join("events/_delta_log/_last_checkpoint").exists());

    // Within the retention, the vacuum keeps the replaced files: readers of version 4 need
    // them. Past it, they go, and the newest snapshot is untouched.
    let kept = vacuum(&writer, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(kept.files, 0);
    assert!(old_paths.iter().all(|p| p.exists()));
    // A stray no commit names, as a crashed flush leaves.
    std::fs::write(root.join("events/date=2023-03-01/part-stray.parquet"), b"x").unwrap();
    let gone = vacuum(&writer, Duration::ZERO).await.unwrap();
    assert_eq!(gone.files, 5, "the four replaced files and the stray");
    assert!(old_paths.iter().all(|p| !p.exists()));
    assert_eq!(offsets_in_storage(root), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn of_two_compactors_at_once_one_commits_and_the_other_leaves_no_trace_in_the_table() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let writer = table_with_flushes(root, 6);
        let before = offsets_in_storage(root);
        let (a, b) = (writer.clone(), writer.clone());
        let (fa, fb) = (format(), format());
        let (ra, rb) = tokio::join!(
            async move { compact(&a, &fa, &options()).await },
            async move { compact(&b, &fb, &options()).await }
        );
        let merged = ra.unwrap().len() + rb.unwrap().len();
        assert!(merged >= 1, "round {round}: at least one merge committed");
        // Whoever won, the table reads every row exactly once, from one merged file.
        assert_eq!(offsets_in_storage(root), before, "round {round}");
        assert_eq!(table_files(root).len(), 1, "round {round}");
        // The loser's merged file, if it got to write one, is a stray: the vacuum removes
        // it with the replaced inputs, and leaves the winner's.
        let compacted = || {
            parquet_files(&root.join("events"))
                .into_iter()
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("compacted-")
                })
                .count()
        };
        assert!((1..=2).contains(&compacted()), "round {round}");
        vacuum(&writer, Duration::ZERO).await.unwrap();
        assert_eq!(compacted(), 1, "round {round}");
        assert_eq!(
            parquet_files(&root.join("events")),
            table_files(root),
            "round {round}"
        );
        assert_eq!(offsets_in_storage(root), before, "round {round}");
    }
}
