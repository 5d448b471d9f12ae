//! What the storage tests share: a small table of two columns, and files written into it.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use sohoa_storage::{DataFile, Table};
use url::Url;

pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("dossier_code", DataType::Utf8, false),
        Field::new("source_offset", DataType::Int64, false),
    ]))
}

pub fn open(dir: &std::path::Path) -> Table {
    let url = Url::from_directory_path(dir.join("events")).unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
    Table::new(store, url).unwrap()
}

/// Writes a Parquet file of `offsets` under the table and describes it for a commit.
pub async fn file(
    table: &Table,
    name: &str,
    date: &str,
    offsets: std::ops::Range<i64>,
) -> DataFile {
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                offsets.clone().map(|o| format!("D{o:05}")),
            )),
            Arc::new(Int64Array::from_iter_values(offsets.clone())),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let path = format!("date={date}/{name}.parquet");
    let size = buf.len() as u64;
    table
        .store()
        .put(
            &table.object_path(&path).unwrap(),
            PutPayload::from(Bytes::from(buf)),
        )
        .await
        .unwrap();
    let snapshot = table.latest().unwrap();
    let stats = table
        .stats_plan(&snapshot)
        .unwrap()
        .collect(&[batch])
        .unwrap();
    DataFile {
        path,
        date: date.into(),
        size,
        modified_ms: 0,
        stats,
        rows: offsets.end.abs_diff(offsets.start),
    }
}
