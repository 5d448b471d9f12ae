//! The events table against a local folder: commits, the race between two writers, the
//! offsets kept in `txn` actions, compaction's remove-and-add, and checkpoints.

mod common;

use std::collections::BTreeMap;

use common::{file, open, schema};
use object_store::{ObjectStoreExt, PutPayload};
use sohoa_storage::{Commit, DataFile, Operation, Outcome, Table};

fn flush(adds: Vec<DataFile>, txns: &[(&str, i64)]) -> Commit {
    Commit {
        adds,
        txns: txns.iter().map(|(a, v)| ((*a).into(), *v)).collect(),
        data_change: true,
        info: BTreeMap::from([("messages".into(), "10".into())]),
        ..Commit::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_record_files_rows_and_source_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    assert!(!table.exists().await.unwrap());
    let v0 = table
        .create_if_absent(&schema(), &["dossier_code", "source_offset"], &[])
        .unwrap();
    assert_eq!(v0.version(), 0);
    assert!(table.exists().await.unwrap());
    // A second create finds the table.
    assert_eq!(
        table
            .create_if_absent(&schema(), &["dossier_code"], &[])
            .unwrap()
            .version(),
        0
    );

    let a = file(&table, "a", "2025-03-01", 0..6).await;
    let b = file(&table, "b", "2025-03-02", 6..10).await;
    let out = table
        .commit(&v0, flush(vec![a, b], &[("t:0", 10), ("t:1", 4)]))
        .unwrap();
    assert_eq!(out, Outcome::Committed { version: 1 });

    let v1 = table.latest().unwrap();
    assert_eq!(v1.version(), 1);
    assert_eq!(table.app_version(&v1, "t:0").unwrap(), Some(10));
    assert_eq!(table.app_version(&v1, "t:1").unwrap(), Some(4));
    assert_eq!(table.app_version(&v1, "t:2").unwrap(), None);
    let files = table.files(&v1).unwrap();
    let summary: Vec<_> = files
        .iter()
        .map(|f| (f.path.as_str(), f.date.as_str(), f.rows))
        .collect();
    assert_eq!(
        summary,
        [
            ("date=2025-03-01/a.parquet", "2025-03-01", Some(6)),
            ("date=2025-03-02/b.parquet", "2025-03-02", Some(4)),
        ]
    );

    // The log's JSON carries what the protocol requires, and the statistics.
    let log = std::fs::read_to_string(
        dir.path()
            .join("events/_delta_log/00000000000000000001.json"),
    )
    .unwrap();
    let actions: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let adds: Vec<_> = actions.iter().filter_map(|a| a.get("add")).collect();
    assert_eq!(adds.len(), 2);
    for add in &adds {
        for key in [
            "path",
            "partitionValues",
            "size",
            "modificationTime",
            "dataChange",
        ] {
            assert!(add.get(key).is_some(), "add without {key}: {add}");
        }
        let stats: serde_json::Value =
            serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
        assert!(stats["numRecords"].as_u64().unwrap() > 0);
        assert!(stats["minValues"]["source_offset"].is_i64(), "{stats}");
    }
    let a_stats: serde_json::Value = serde_json::from_str(
        adds.iter()
            .find(|a| a["path"] == "date=2025-03-01/a.parquet")
            .unwrap()["stats"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(a_stats["minValues"]["source_offset"], 0);
    assert_eq!(a_stats["maxValues"]["source_offset"], 5);
    assert_eq!(a_stats["minValues"]["dossier_code"], "D00000");
    let txns: Vec<_> = actions.iter().filter_map(|a| a.get("txn")).collect();
    assert_eq!(txns.len(), 2);
    let info = actions.iter().find_map(|a| a.get("commitInfo")).unwrap();
    assert_eq!(info["operation"], "STREAMING UPDATE");
    assert_eq!(info["operationParameters"]["messages"], "10");
}

#[tokio::test(flavor = "multi_thread")]
async fn of_two_writers_on_one_version_the_second_gets_a_conflict_and_nothing_of_it_lands() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let v0 = table
        .create_if_absent(&schema(), &["source_offset"], &[])
        .unwrap();
    let first = file(&table, "first", "2025-03-01", 0..5).await;
    let second = file(&table, "second", "2025-03-01", 0..3).await;
    assert_eq!(
        table
            .commit(&v0, flush(vec![first], &[("t:0", 5)]))
            .unwrap(),
        Outcome::Committed { version: 1 }
    );
    assert_eq!(
        table
            .commit(&v0, flush(vec![second], &[("t:0", 3)]))
            .unwrap(),
        Outcome::Conflict { version: 1 }
    );
    let latest = table.latest().unwrap();
    assert_eq!(latest.version(), 1);
    assert_eq!(table.app_version(&latest, "t:0").unwrap(), Some(5));
    let files = table.files(&latest).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "date=2025-03-01/first.parquet");
    // Refreshing the old snapshot reads only the new commit, and sees the winner.
    assert_eq!(table.refresh(&v0).unwrap().version(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_replaces_files_without_a_data_change_and_old_snapshots_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let table = open(dir.path());
    let v0 = table
        .create_if_absent(&schema(), &["source_offset"], &[])
        .unwrap();
    let a = file(&table, "a", "2025-03-01", 0..5).await;
    let b = file(&table, "b", "2025-03-01", 5..8).await;
    table.commit(&v0, flush(vec![a, b], &[("t:0", 8)])).unwrap();
    let v1 = table.latest().unwrap();
    let merged = file(&table, "merged", "2025-03-01", 0..8).await;
    let compaction = Commit {
        adds: vec![merged],
        removes: vec![
            "date=2025-03-01/a.parquet".into(),
            "date=2025-03-01/b.parquet".into(),
        ],
        data_change: false,
        operation: Operation::Optimize,
        ..Commit::default()
    };
    assert_eq!(
        table.commit(&v1, compaction).unwrap(),
        Outcome::Committed { version: 2 }
    );
    let v2 = table.latest().unwrap();
    let files = table.files(&v2).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].rows, Some(8));
    // Time travel: version 1 still lists the replaced files, which are still on disk.
    assert_eq!(table.files(&table.at_version(1).unwrap()).unwrap().len(), 2);
    // The offsets survive a compaction.
    assert_eq!(table.app_version(&v2, "t:0").unwrap(), Some(8));
    let log = std::fs::read_to_string(
        dir.path()
            .join("events/_delta_log/00000000000000000002.json"),
    )
    .unwrap();
    let removes: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|a| a.get("remove").cloned())
        .collect();
    assert_eq!(removes.len(), 2);
    assert!(removes.iter().all(|r| r["dataChange"] == false));
    assert!(log.contains("\"dataChange\":false"));

    // A second compactor that read version 1 loses: its input is gone.
    let late = file(&table, "late", "2025-03-01", 0..8).await;
    let again = Commit {
        adds: vec![late],
        removes: vec!["date=2025-03-01/a.parquet".into()],
        data_change: false,
        operation: Operation::Optimize,
        ..Commit::default()
    };
    assert!(matches!(
        table.commit(&v1, again).unwrap(),
        Outcome::Conflict { .. }
    ));
    assert_eq!(table.files(&table.latest().unwrap()).unwrap().len(), 1);

    // A checkpoint, then a fresh reader that starts from it sees the same.
    assert!(table.checkpoint(&v2).unwrap());
    assert!(dir
        .path()
        .join("events/_delta_log/00000000000000000002.checkpoint.parquet")
        .exists());
    let reread = open(dir.path()).latest().unwrap();
    assert_eq!(reread.version(), 2);
    assert_eq!(table.files(&reread).unwrap(), files);
    assert_eq!(table.app_version(&reread, "t:0").unwrap(), Some(8));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_events_table_of_a_root_sees_what_the_root_store_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sohoa_runtime::config::StorageConfig {
        root: dir.path().join("root").display().to_string(),
        options: Default::default(),
        fsync: false,
    };
    let storage = sohoa_runtime::Storage::open(&cfg).unwrap();
    storage
        .store
        .put(
            &object_store::path::Path::from("events/date=2025-03-01/x.parquet"),
            PutPayload::from_static(b"x"),
        )
        .await
        .unwrap();
    let table = Table::events(&storage).unwrap();
    assert!(
        table.url().as_str().ends_with("/root/events/"),
        "{}",
        table.url()
    );
    let seen = table
        .store()
        .head(&table.object_path("date=2025-03-01/x.parquet").unwrap())
        .await
        .unwrap();
    assert_eq!(seen.size, 1);
}
