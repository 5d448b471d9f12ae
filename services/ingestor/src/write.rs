//! Parquet encoding of one output file: rows sorted by agency and time, zstd, statistics
//! with the page index, dictionary-encoded codes.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn, SortOptions};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("zstd level {0} is invalid")]
    Level(i32),
}

/// How files are encoded.
#[derive(Debug, Clone)]
pub struct FileFormat {
    props: Arc<WriterProperties>,
    sort_keys: [usize; 2],
}

impl FileFormat {
    pub fn new(
        schema: &arrow::datatypes::Schema,
        row_group_rows: usize,
        zstd_level: i32,
    ) -> Result<Self, WriteError> {
        let agency = schema.index_of("agency_code")?;
        let time = schema.index_of("event_time")?;
        let level = ZstdLevel::try_new(zstd_level).map_err(|_| WriteError::Level(zstd_level))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(row_group_rows))
            // Page-level statistics also write the column and offset indexes (page index),
            // so readers can skip pages, not just row groups.
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_dictionary_enabled(true)
            .set_sorting_columns(Some(vec![
                SortingColumn {
                    column_idx: agency as i32,
                    descending: false,
                    nulls_first: true,
                },
                SortingColumn {
                    column_idx: time as i32,
                    descending: false,
                    nulls_first: true,
                },
            ]))
            .set_created_by(format!("sohoa {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(FileFormat {
            props: Arc::new(props),
            sort_keys: [agency, time],
        })
    }

    /// Sort by agency then event time, and encode as one Parquet file.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Bytes, WriteError> {
        let columns: Vec<SortColumn> = self
            .sort_keys
            .iter()
            .map(|&i| SortColumn {
                values: batch.column(i).clone(),
                options: Some(SortOptions {
                    descending: false,
                    nulls_first: true,
                }),
            })
            .collect();
        let indices = lexsort_to_indices(&columns, None)?;
        let sorted = take_record_batch(batch, &indices)?;
        let mut buf = Vec::with_capacity(sorted.get_array_memory_size() / 4 + 4096);
        let mut writer =
            ArrowWriter::try_new(&mut buf, sorted.schema(), Some((*self.props).clone()))?;
        writer.write(&sorted)?;
        writer.close()?;
        Ok(Bytes::from(buf))
    }
}
