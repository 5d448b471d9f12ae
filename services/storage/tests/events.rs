//! A writer's flushes against the events table: the race for a log version between writers
//! of different partitions, and the fencing of writers of the same partition.

mod common;

use common::{file, open, schema};
use sohoa_storage::events::{kafka_app_id, Flush, FlushOutcome, SourceRange, Writer};

fn range(partition: i32, base: Option<i64>, next: i64) -> SourceRange {
    SourceRange {
        app_id: kafka_app_id("t", partition),
        base,
        next,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writers_of_different_partitions_both_commit_whoever_wins_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let v0 = table
        .create_if_absent(&schema(), &["source_offset"], &[])
        .unwrap();
    let a = Writer::new(table.clone(), v0.clone(), 1000);
    let b = Writer::new(open(dir.path()), v0, 1000);
    let fa = Flush {
        files: vec![file(&table, "a", "2025-03-01", 0..4).await],
        ranges: vec![range(0, None, 4)],
        ..Flush::default()
    };
    let fb = Flush {
        files: vec![file(&table, "b", "2025-03-01", 0..3).await],
        ranges: vec![range(1, None, 3)],
        ..Flush::default()
    };
    assert_eq!(
        a.commit(&fa).unwrap(),
        FlushOutcome::Committed { version: 1 }
    );
    // b still knows only version 0: its first try loses the race, its second lands.
    assert_eq!(
        b.commit(&fb).unwrap(),
        FlushOutcome::Committed { version: 2 }
    );
    let ids = [
        kafka_app_id("t", 0),
        kafka_app_id("t", 1),
        kafka_app_id("t", 2),
    ];
    assert_eq!(a.offsets(&ids).unwrap(), [Some(4), Some(3), None]);
    assert_eq!(table.files(&a.latest().unwrap()).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_whose_range_another_committed_is_fenced_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let v0 = table
        .create_if_absent(&schema(), &["source_offset"], &[])
        .unwrap();
    let old_owner = Writer::new(table.clone(), v0.clone(), 1000);
    let new_owner = Writer::new(table.clone(), v0, 1000);
    // The new owner read offsets 0..10 and committed them first.
    let won = Flush {
        files: vec![file(&table, "new", "2025-03-01", 0..10).await],
        ranges: vec![range(0, None, 10), range(1, None, 2)],
        ..Flush::default()
    };
    assert_eq!(
        new_owner.commit(&won).unwrap(),
        FlushOutcome::Committed { version: 1 }
    );
    // The evicted owner flushes 0..6 of partition 0 and 0..5 of partition 2.
    let late = Flush {
        files: vec![file(&table, "old", "2025-03-01", 0..6).await],
        ranges: vec![range(0, None, 6), range(2, None, 5)],
        ..Flush::default()
    };
    assert_eq!(
        old_owner.commit(&late).unwrap(),
        FlushOutcome::Fenced {
            lost: vec![(kafka_app_id("t", 0), Some(10))]
        }
    );
    let latest = old_owner.latest().unwrap();
    assert_eq!(latest.version(), 1);
    let files = table.files(&latest).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "date=2025-03-01/new.parquet");
    assert_eq!(
        old_owner
            .offsets(&[kafka_app_id("t", 0), kafka_app_id("t", 2)])
            .unwrap(),
        [Some(10), None]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_writers_that_start_with_no_offsets_at_different_positions_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let v0 = table
        .create_if_absent(&schema(), &["source_offset"], &[])
        .unwrap();
    let early = Writer::new(table.clone(), v0.clone(), 1000);
    let late = Writer::new(table.clone(), v0, 1000);
    // One started at offset 100 (the end of the topic), the other at 0 (its beginning).
    let from_100 = Flush {
        files: vec![file(&table, "from100", "2025-03-01", 100..120).await],
        ranges: vec![range(0, None, 120)],
        ..Flush::default()
    };
    let from_0 = Flush {
        files: vec![file(&table, "from0", "2025-03-01", 0..50).await],
        ranges: vec![range(0, None, 50)],
        ..Flush::default()
    };
    assert!(matches!(
        late.commit(&from_100).unwrap(),
        FlushOutcome::Committed { .. }
    ));
    assert!(matches!(
        early.commit(&from_0).unwrap(),
        FlushOutcome::Fenced { .. }
    ));
    // Resuming from the table, the second writer's next range starts at 120.
    let next = Flush {
        files: vec![file(&table, "next", "2025-03-01", 120..130).await],
        ranges: vec![range(0, Some(120), 130)],
        ..Flush::default()
    };
    assert_eq!(
        early.commit(&next).unwrap(),
        FlushOutcome::Committed { version: 2 }
    );
    let rows: u64 = table
        .files(&early.latest().unwrap())
        .unwrap()
        .iter()
        .map(|f| f.rows.unwrap())
        .sum();
    assert_eq!(rows, 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_is_checkpointed_every_interval_and_a_new_writer_reads_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let v0 = table
        .create_if_absent(&schema(), &["source_offset"], &[])
        .unwrap();
    let w = Writer::new(table.clone(), v0, 3);
    for i in 0..4i64 {
        let f = Flush {
            files: vec![file(&table, &format!("f{i}"), "2025-03-01", i * 10..i * 10 + 10).await],
            ranges: vec![range(0, (i > 0).then_some(i * 10), i * 10 + 10)],
            ..Flush::default()
        };
        assert!(matches!(
            w.commit(&f).unwrap(),
            FlushOutcome::Committed { .. }
        ));
    }
    let log = dir.path().join("events/_delta_log");
    assert!(log.join("00000000000000000003.checkpoint.parquet").exists());
    assert!(!log.join("00000000000000000002.checkpoint.parquet").exists());
    let fresh = open(dir.path());
    let snapshot = fresh.latest().unwrap();
    assert_eq!(snapshot.version(), 4);
    assert_eq!(
        fresh.app_version(&snapshot, &kafka_app_id("t", 0)).unwrap(),
        Some(40)
    );
    assert_eq!(fresh.files(&snapshot).unwrap().len(), 4);
}
