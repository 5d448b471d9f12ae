//! A Delta Lake table, written and read through the Delta kernel.
//!
//! The kernel owns the log: its actions, their JSON, checkpoints and the commit race. Data
//! files are written by the caller (they are sorted and encoded by the ingestor's own
//! Parquet settings) and handed over as [`DataFile`]s, with statistics computed here from
//! the same Arrow rows, so the log's statistics are the kernel's, not a copy of them.
//!
//! Every commit is a put of `_delta_log/<version>.json` that fails if the file exists. Two
//! writers that build on the same version therefore cannot both win: the loser gets
//! [`Outcome::Conflict`] and decides what to keep after reading the winner's commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch, StructArray};
use arrow::datatypes::Schema as ArrowSchema;
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_conversion::TryFromArrow;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::engine_data::FilteredEngineData;
use delta_kernel::expressions::{ColumnName, Scalar};
use delta_kernel::schema::{DataType, SchemaRef, StructField, StructType};
use delta_kernel::snapshot::CheckpointWriteResult;
use delta_kernel::transaction::create_table::create_table;
use delta_kernel::transaction::data_layout::DataLayout;
use delta_kernel::transaction::{CommitResult, UpdateTableOperation};
use delta_kernel::{FileMeta, Snapshot, SnapshotRef};
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use delta_kernel_default_engine::executor::TaskExecutor;
use delta_kernel_default_engine::parquet::DataFileMetadata;
use delta_kernel_default_engine::stats::collect_stats;
use delta_kernel_default_engine::{build_add_file_metadata, DefaultEngine, DefaultEngineBuilder};
use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use url::Url;

/// What commits say they are in `commitInfo.engineInfo`.
pub const ENGINE_INFO: &str = concat!("sohoa/", env!("CARGO_PKG_VERSION"));

/// The partition column: the event's date, as `date=YYYY-MM-DD` folders.
pub const PARTITION_COLUMN: &str = "date";

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("delta table {url}: {source}")]
    Kernel {
        url: String,
        source: Box<delta_kernel::KernelError>,
    },
    #[error("delta table {url}: storage: {source}")]
    Store {
        url: String,
        source: object_store::Error,
    },
    #[error("delta table {url}: {reason}")]
    Invalid { url: String, reason: String },
    #[error("delta table {url}: commit {version} failed and can be retried: {reason}")]
    Retryable {
        url: String,
        version: u64,
        reason: String,
    },
    #[error("a call of the delta table was interrupted: {0}")]
    Interrupted(String),
}

/// Runs a call of the table off the async runtime's worker threads: the kernel's calls
/// block on I/O. A panic inside is resumed here.
pub async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TableError> + Send + 'static,
) -> Result<T, TableError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels it.
        Err(e) => Err(TableError::Interrupted(e.to_string())),
    }
}

impl TableError {
    /// A storage hiccup or an interrupted commit: the same step may succeed later. The
    /// kernel reports a log it could not read or write (a store down, a folder made
    /// read-only) as an object-store or I/O error of its own.
    pub fn is_transient(&self) -> bool {
        fn io(e: &delta_kernel::KernelError) -> bool {
            use delta_kernel::KernelError as K;
            match e {
                K::ObjectStore(_) | K::IOError(_) | K::Reqwest(_) => true,
                K::Backtraced { source, .. } => io(source),
                _ => false,
            }
        }
        match self {
            TableError::Store { .. }
            | TableError::Retryable { .. }
            | TableError::Interrupted(_) => true,
            TableError::Kernel { source, .. } => io(source),
            TableError::Invalid { .. } => false,
        }
    }
}

/// A data file written under the table root, ready to be added by a commit.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Relative to the table root: `date=2025-03-01/<name>.parquet`.
    pub path: String,
    /// The partition value, `YYYY-MM-DD`.
    pub date: String,
    pub size: u64,
    /// Milliseconds since the epoch.
    pub modified_ms: i64,
    /// One row, in the table's statistics schema ([`StatsPlan::collect`]).
    pub stats: StructArray,
    pub rows: u64,
}

/// A file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFile {
    /// Relative to the table root, as the log holds it.
    pub path: String,
    pub date: String,
    pub size: u64,
    /// `None` when the commit that added the file carried no statistics.
    pub rows: Option<u64>,
}

/// One commit's content.
#[derive(Debug, Default)]
pub struct Commit {
    pub adds: Vec<DataFile>,
    /// Paths (as [`LiveFile::path`]) of files this commit replaces.
    pub removes: Vec<String>,
    /// `txn` actions: application id and version. The table's record of how far each
    /// source was consumed.
    pub txns: Vec<(String, i64)>,
    /// `commitInfo.operationParameters`: what readers may want to know about the commit.
    pub info: BTreeMap<String, String>,
    /// `false` for a commit that rewrites rows without changing them (compaction).
    pub data_change: bool,
    /// `WRITE`, `STREAMING UPDATE`, `OPTIMIZE`...
    pub operation: Operation,
}

/// The `commitInfo.operation` of a commit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A flush of a streaming source: Spark's name for a micro-batch.
    #[default]
    StreamingUpdate,
    /// A batch load, such as a backfill from files.
    Write,
    /// A compaction: the same rows in fewer files.
    Optimize,
}

impl Operation {
    fn kernel(self) -> UpdateTableOperation {
        match self {
            Operation::StreamingUpdate => UpdateTableOperation::StreamingUpdate,
            Operation::Write => UpdateTableOperation::Write,
            Operation::Optimize => UpdateTableOperation::Optimize,
        }
    }
}

/// How a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed {
        version: u64,
    },
    /// Another writer committed `version` first; nothing of this commit is in the log.
    Conflict {
        version: u64,
    },
}

/// The columns the log keeps statistics for, and how to compute them from a file's rows.
#[derive(Debug, Clone)]
pub struct StatsPlan {
    columns: Vec<ColumnName>,
    physical: SchemaRef,
}

impl StatsPlan {
    /// The file-level statistics of `batches` (the rows of one file, without the partition
    /// column), as one row of the log's statistics schema.
    pub fn collect(
        &self,
        batches: &[RecordBatch],
    ) -> Result<StructArray, delta_kernel::KernelError> {
        let batch = match batches {
            [one] => one.clone(),
            _ => {
                let schema = batches
                    .first()
                    .map(|b| b.schema())
                    .ok_or_else(|| delta_kernel::KernelError::generic("statistics of no rows"))?;
                arrow::compute::concat_batches(&schema, batches)?
            }
        };
        collect_stats(&batch, &self.columns, &self.physical)
    }
}

/// A Delta table at `url`, whose objects `store` reaches by the URL's path.
#[derive(Clone)]
pub struct Table {
    engine: Arc<DefaultEngine<TokioMultiThreadExecutor>>,
    store: Arc<dyn ObjectStore>,
    url: Url,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("url", &self.url).finish()
    }
}

impl Table {
    /// `url` must end with `/`. `store` is addressed by the URL's path: for `file://` URLs a
    /// store rooted at `/`, for `s3://bucket/...` the bucket's store.
    pub fn new(store: Arc<dyn ObjectStore>, url: Url) -> Result<Self, TableError> {
        if !url.path().ends_with('/') {
            return Err(TableError::Invalid {
                url: url.to_string(),
                reason: "a table URL must end with '/'".into(),
            });
        }
        // The kernel lists a local table's folder before it creates the table, and a folder
        // that does not exist is an error to it.
        if let Ok(dir) = url.to_file_path() {
            std::fs::create_dir_all(&dir).map_err(|e| TableError::Invalid {
                url: url.to_string(),
                reason: format!("cannot create the folder: {e}"),
            })?;
        }
        let engine = DefaultEngineBuilder::new(store.clone())
            .with_task_executor(kernel_executor().map_err(|e| kernel_err(&url, e))?)
            .build();
        Ok(Table {
            engine: Arc::new(engine),
            store,
            url,
        })
    }

    /// A table in a local folder.
    pub fn local(dir: &std::path::Path) -> Result<Self, TableError> {
        let url = Url::from_directory_path(dir).map_err(|()| TableError::Invalid {
            url: dir.display().to_string(),
            reason: "not an absolute path".into(),
        })?;
        Self::new(Arc::new(object_store::local::LocalFileSystem::new()), url)
    }

    /// The `events/` table of a storage root.
    pub fn events(storage: &sohoa_runtime::Storage) -> Result<Self, TableError> {
        let (store, url) = storage.url_of("events").map_err(|e| TableError::Invalid {
            url: storage.root.clone(),
            reason: e.to_string(),
        })?;
        Self::new(store, url)
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The object store path of `rel`, a path relative to the table root.
    pub fn object_path(&self, rel: &str) -> Result<Path, TableError> {
        let joined = self.url.join(rel).map_err(|e| TableError::Invalid {
            url: self.url.to_string(),
            reason: format!("{rel}: {e}"),
        })?;
        Path::from_url_path(joined.path()).map_err(|e| TableError::Invalid {
            url: self.url.to_string(),
            reason: format!("{rel}: {e}"),
        })
    }

    /// The store the table's objects live in, addressed by [`Table::object_path`].
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn err(&self, e: delta_kernel::KernelError) -> TableError {
        kernel_err(&self.url, e)
    }

    /// Whether the log holds any commit.
    pub async fn exists(&self) -> Result<bool, TableError> {
        let log = self.object_path("_delta_log/")?;
        let mut listing = self.store.list(Some(&log));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|source| TableError::Store {
                url: self.url.to_string(),
                source,
            })?;
            if meta.location.as_ref().ends_with(".json")
                || meta.location.as_ref().ends_with(".checkpoint.parquet")
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the log holds any commit, without asking the kernel to load a table that
    /// may not be there (which it reports as an error). Blocking.
    pub fn exists_blocking(&self) -> Result<bool, TableError> {
        let executor = kernel_executor().map_err(|e| self.err(e))?;
        let table = self.clone();
        executor.block_on(async move { table.exists().await })
    }

    /// The newest snapshot. Blocking: call it off the async runtime.
    pub fn latest(&self) -> Result<SnapshotRef, TableError> {
        Snapshot::builder_for(self.url.as_str())
            .build(self.engine.as_ref())
            .map_err(|e| self.err(e))
    }

    /// The snapshot at `version`. Blocking.
    pub fn at_version(&self, version: u64) -> Result<SnapshotRef, TableError> {
        Snapshot::builder_for(self.url.as_str())
            .at_version(version)
            .build(self.engine.as_ref())
            .map_err(|e| self.err(e))
    }

    /// `snapshot` brought up to the newest version, reading only the commits after it.
    /// Blocking.
    pub fn refresh(&self, snapshot: &SnapshotRef) -> Result<SnapshotRef, TableError> {
        Snapshot::builder_from(snapshot.clone())
            .build(self.engine.as_ref())
            .map_err(|e| self.err(e))
    }

    /// Creates the table with `schema` plus the date partition column, unless it exists.
    /// Two replicas may race to create it: one wins, and both return the same table.
    /// `stats_columns` are the columns the log keeps minimum and maximum values of.
    /// Blocking.
    pub fn create_if_absent(
        &self,
        schema: &ArrowSchema,
        stats_columns: &[&str],
        properties: &[(&str, &str)],
    ) -> Result<SnapshotRef, TableError> {
        if self.exists_blocking()? {
            return self.latest();
        }
        let mut fields: Vec<StructField> = StructType::try_from_arrow(schema)
            .map_err(|e| self.err(e.into()))?
            .fields()
            .cloned()
            .collect();
        fields.push(StructField::not_null(PARTITION_COLUMN, DataType::DATE));
        let kernel_schema = Arc::new(StructType::try_new(fields).map_err(|e| self.err(e))?);
        let mut props: Vec<(String, String)> = properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        props.push((
            "delta.dataSkippingStatsColumns".into(),
            stats_columns.join(","),
        ));
        let txn = create_table(self.url.as_str(), kernel_schema, ENGINE_INFO, true)
            .with_data_layout(DataLayout::partitioned([PARTITION_COLUMN]))
            .with_table_properties(props)
            .build(self.engine.as_ref(), Box::new(FileSystemCommitter::new()));
        let txn = match txn {
            Ok(txn) => txn,
            // Created meanwhile by another writer.
            Err(_) if self.latest().is_ok() => return self.latest(),
            Err(e) => return Err(self.err(e)),
        };
        match txn.commit(self.engine.as_ref()) {
            Ok(CommitResult::Committed(c)) => match c.post_commit_snapshot() {
                Some(s) => Ok(s.clone()),
                None => self.latest(),
            },
            Ok(CommitResult::Conflicted(_)) => self.latest(),
            Ok(CommitResult::Retryable(r)) => Err(TableError::Retryable {
                url: self.url.to_string(),
                version: 0,
                reason: r.error.to_string(),
            }),
            Err(_) if self.latest().is_ok() => self.latest(),
            Err(e) => Err(self.err(e)),
        }
    }

    /// How to compute the statistics the log keeps for a file of `snapshot`'s table.
    pub fn stats_plan(&self, snapshot: &SnapshotRef) -> Result<StatsPlan, TableError> {
        let txn = snapshot
            .clone()
            .update_table(UpdateTableOperation::Write, ENGINE_INFO, true)
            .build(self.engine.as_ref(), Box::new(FileSystemCommitter::new()))
            .map_err(|e| self.err(e))?;
        let state = txn.write_state().map_err(|e| self.err(e))?;
        let context = state
            .write_context_builder()
            .with_partition_values(HashMap::from([(
                PARTITION_COLUMN.to_owned(),
                Scalar::Date(0),
            )]))
            .build()
            .map_err(|e| self.err(e))?;
        Ok(StatsPlan {
            columns: context.stats_columns().to_vec(),
            physical: context.physical_data_schema().clone(),
        })
    }

    /// The version recorded for `app_id` by `txn` actions up to `snapshot`.
    pub fn app_version(
        &self,
        snapshot: &SnapshotRef,
        app_id: &str,
    ) -> Result<Option<i64>, TableError> {
        snapshot
            .get_app_id_version(app_id, self.engine.as_ref())
            .map_err(|e| self.err(e))
    }

    /// Commits on top of `snapshot`. Blocking.
    pub fn commit(&self, snapshot: &SnapshotRef, commit: Commit) -> Result<Outcome, TableError> {
        let mut builder = snapshot.clone().update_table(
            commit.operation.kernel(),
            ENGINE_INFO,
            commit.data_change,
        );
        for (app, version) in &commit.txns {
            builder = builder.with_transaction_id(app.clone(), *version);
        }
        if !commit.info.is_empty() {
            builder = builder.with_operation_parameters(
                commit
                    .info
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone()))),
            );
        }
        let mut txn = builder
            .build(self.engine.as_ref(), Box::new(FileSystemCommitter::new()))
            .map_err(|e| self.err(e))?;
        if !commit.adds.is_empty() {
            let state = txn.write_state().map_err(|e| self.err(e))?;
            for file in &commit.adds {
                let days = date_days(&file.date).ok_or_else(|| TableError::Invalid {
                    url: self.url.to_string(),
                    reason: format!(
                        "{}: partition date {:?} is not YYYY-MM-DD",
                        file.path, file.date
                    ),
                })?;
                let context = state
                    .write_context_builder()
                    .with_partition_values(HashMap::from([(
                        PARTITION_COLUMN.to_owned(),
                        Scalar::Date(days),
                    )]))
                    .build()
                    .map_err(|e| self.err(e))?;
                let location = self.url.join(&file.path).map_err(|e| TableError::Invalid {
                    url: self.url.to_string(),
                    reason: format!("{}: {e}", file.path),
                })?;
                let meta = DataFileMetadata::new(
                    FileMeta::new(location, file.modified_ms, file.size),
                    file.stats.clone(),
                );
                let add = build_add_file_metadata(meta, &context).map_err(|e| self.err(e))?;
                txn.add_files(add);
            }
        }
        if !commit.removes.is_empty() {
            let wanted: HashSet<&str> = commit.removes.iter().map(String::as_str).collect();
            let mut found = 0;
            for removal in self.select_files(snapshot, &wanted)? {
                found += removal.1;
                txn.remove_files(removal.0);
            }
            if found != wanted.len() {
                // A file to remove is gone from the snapshot: another commit removed it.
                return Ok(Outcome::Conflict {
                    version: snapshot.version() + 1,
                });
            }
        }
        match txn.commit(self.engine.as_ref()) {
            Ok(CommitResult::Committed(c)) => Ok(Outcome::Committed {
                version: c.commit_version(),
            }),
            Ok(CommitResult::Conflicted(c)) => Ok(Outcome::Conflict {
                version: c.conflict_version(),
            }),
            Ok(CommitResult::Retryable(r)) => Err(TableError::Retryable {
                url: self.url.to_string(),
                version: snapshot.version() + 1,
                reason: r.error.to_string(),
            }),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The scan rows of `snapshot` whose path is in `wanted`, as removals, with how many
    /// each batch selects.
    fn select_files(
        &self,
        snapshot: &SnapshotRef,
        wanted: &HashSet<&str>,
    ) -> Result<Vec<(FilteredEngineData, usize)>, TableError> {
        let scan = snapshot
            .clone()
            .scan_builder()
            .build()
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for batch in scan
            .scan_metadata(self.engine.as_ref())
            .map_err(|e| self.err(e))?
        {
            let (data, selection) = batch.map_err(|e| self.err(e))?.scan_files.into_parts();
            let paths = {
                let arrow = data
                    .any_ref()
                    .downcast_ref::<ArrowEngineData>()
                    .ok_or_else(|| TableError::Invalid {
                        url: self.url.to_string(),
                        reason: "scan rows are not Arrow data".into(),
                    })?;
                let column = arrow.record_batch().column_by_name("path").ok_or_else(|| {
                    TableError::Invalid {
                        url: self.url.to_string(),
                        reason: "scan rows have no path".into(),
                    }
                })?;
                column.as_string::<i32>().clone()
            };
            // A selection vector shorter than the rows selects the rest.
            let keep: Vec<bool> = (0..paths.len())
                .map(|i| {
                    selection.get(i).copied().unwrap_or(true)
                        && paths.is_valid(i)
                        && wanted.contains(paths.value(i))
                })
                .collect();
            let n = keep.iter().filter(|k| **k).count();
            if n > 0 {
                let filtered = FilteredEngineData::try_new(data, keep).map_err(|e| self.err(e))?;
                out.push((filtered, n));
            }
        }
        Ok(out)
    }

    /// The files of `snapshot`.
    pub fn files(&self, snapshot: &SnapshotRef) -> Result<Vec<LiveFile>, TableError> {
        let scan = snapshot
            .clone()
            .scan_builder()
            .build()
            .map_err(|e| self.err(e))?;
        let mut files = Vec::new();
        for batch in scan
            .scan_metadata(self.engine.as_ref())
            .map_err(|e| self.err(e))?
        {
            files = batch
                .map_err(|e| self.err(e))?
                .visit_scan_files(files, |files: &mut Vec<LiveFile>, f| {
                    files.push(LiveFile {
                        date: f
                            .partition_values
                            .get(PARTITION_COLUMN)
                            .cloned()
                            .unwrap_or_default(),
                        size: f.size.max(0) as u64,
                        rows: f.stats.as_ref().map(|s| s.num_records),
                        path: f.path,
                    })
                })
                .map_err(|e| self.err(e))?;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Writes a checkpoint of `snapshot`, so that readers replay the log from it. Blocking.
    pub fn checkpoint(&self, snapshot: &SnapshotRef) -> Result<bool, TableError> {
        let (result, _) = snapshot
            .checkpoint(self.engine.as_ref(), None)
            .map_err(|e| self.err(e))?;
        Ok(matches!(result, CheckpointWriteResult::Written))
    }
}

/// The runtime the kernel runs its I/O on, one for the process. Its own, so that the
/// kernel's blocking calls can be made from any thread that may block; and never dropped,
/// since a runtime cannot be dropped from inside another one's tasks.
fn kernel_executor() -> Result<Arc<TokioMultiThreadExecutor>, delta_kernel::KernelError> {
    static EXECUTOR: Mutex<Option<Arc<TokioMultiThreadExecutor>>> = Mutex::new(None);
    let mut slot = EXECUTOR.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = slot.as_ref() {
        return Ok(e.clone());
    }
    let executor = Arc::new(TokioMultiThreadExecutor::new_owned_runtime(Some(2), None)?);
    *slot = Some(executor.clone());
    Ok(executor)
}

fn kernel_err(url: &Url, e: delta_kernel::KernelError) -> TableError {
    TableError::Kernel {
        url: url.to_string(),
        source: Box::new(e),
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn date_days(date: &str) -> Option<i32> {
    let mut parts = date.splitn(3, '-');
    let (y, m, d): (i64, i64, i64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    if date.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(date_days("1970-01-01"), Some(0));
        assert_eq!(date_days("2025-07-01"), Some(20_270));
        assert_eq!(date_days("2024-02-29"), Some(19_782));
        assert_eq!(date_days("2025-13-01"), None);
        assert_eq!(date_days("2025-1-01"), None);
    }
}
