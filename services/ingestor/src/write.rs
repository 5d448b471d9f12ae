//! Parquet encoding of one output file: rows sorted by agency and time, zstd, statistics
//! with the page index, dictionary-encoded codes and plain identifiers.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn, SortOptions};
use arrow::datatypes::{Fields, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::{ColumnPath, SchemaDescriptor};
use sohoa_schemas::pseudonym::KEY_FINGERPRINT_METADATA;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("zstd level {0} is invalid")]
    Level(i32),
}

/// Columns whose values are (nearly) all distinct within a file. A dictionary of them is
/// as large as the values themselves, and building it costs a hash per value: without it,
/// a file of 1,000 events is 3% smaller and encodes in about 8% less CPU.
const IDENTIFIERS: &[&str] = &[
    "event_id",
    "dossier_code",
    "applicant_pseudonym",
    "source_offset",
];

/// `batch` with its schema naming the key fingerprint `fp` (if any), so that
/// [`FileFormat::encode`] writes it into the file.
pub fn with_key_fingerprint(
    batch: &RecordBatch,
    fp: Option<&str>,
) -> Result<RecordBatch, WriteError> {
    let Some(fp) = fp else {
        return Ok(batch.clone());
    };
    let mut metadata = batch.schema().metadata().clone();
    metadata.insert(KEY_FINGERPRINT_METADATA.to_owned(), fp.to_owned());
    let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
    Ok(batch.clone().with_schema(schema)?)
}

fn fingerprint_entry(fp: &str) -> KeyValue {
    KeyValue::new(KEY_FINGERPRINT_METADATA.to_owned(), fp.to_owned())
}

/// How files are encoded.
///
/// The Parquet schema and the Arrow schema that files carry in their metadata are worked
/// out once here, not for each file: `ArrowWriter` otherwise converts the schema and
/// serialises it (flatbuffers, then base64) every time, which was a tenth of the fixed
/// cost of a file in the encode bench, and the ingest bench writes a file per thousand
/// messages. The files are byte for byte the same (tested below).
#[derive(Debug, Clone)]
pub struct FileFormat {
    /// With the encoded Arrow schema in its key-value metadata.
    props: Arc<WriterProperties>,
    schema: SchemaRef,
    parquet_schema: SchemaDescriptor,
    sort_keys: [usize; 2],
}

/// `schema` without its columns' metadata. Readers restore the Arrow types from the
/// schema encoded in each file, and take the columns' descriptions from the table's
/// schema in the Delta log. Copied into every file, the descriptions were 11 KB of a
/// 17 KB footer, which a reader parses for each file it opens: a flush of a feed spread
/// over many dates writes many small files. Nested fields keep theirs: they are part of
/// the column's type, which must read back as the events schema's.
fn undocumented(schema: &Schema) -> Schema {
    Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_metadata(std::collections::HashMap::new())
            })
            .collect::<Fields>(),
        schema.metadata().clone(),
    )
}

impl FileFormat {
    /// `key_fingerprint` names the pseudonym key of the rows (see
    /// [`sohoa_schemas::Pseudonymizer::fingerprint`]); every file carries it in its
    /// metadata. `None` for files whose rows bring their own (compaction's).
    pub fn new(
        schema: &Schema,
        row_group_rows: usize,
        zstd_level: i32,
        key_fingerprint: Option<&str>,
    ) -> Result<Self, WriteError> {
        let agency = schema.index_of("agency_code")?;
        let time = schema.index_of("event_time")?;
        let level = ZstdLevel::try_new(zstd_level).map_err(|_| WriteError::Level(zstd_level))?;
        let mut props = WriterProperties::builder();
        for column in IDENTIFIERS {
            props = props.set_column_dictionary_enabled(ColumnPath::from(*column), false);
        }
        let props = props
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
            .set_key_value_metadata(key_fingerprint.map(|fp| vec![fingerprint_entry(fp)]))
            .build();
        // What `ArrowWriter::try_new` would do for each file.
        let parquet_schema = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(schema)?;
        let mut props = props;
        add_encoded_arrow_schema_to_metadata(&undocumented(schema), &mut props);
        Ok(FileFormat {
            props: Arc::new(props),
            schema: Arc::new(schema.clone()),
            parquet_schema,
            sort_keys: [agency, time],
        })
    }

    /// The order of the rows sorted by agency then event time, nulls first.
    fn sort_order(&self, batch: &RecordBatch) -> Result<UInt32Array, WriteError> {
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
        Ok(lexsort_to_indices(&columns, None)?)
    }

    /// The rows sorted by agency then event time, nulls first.
    #[cfg(test)]
    fn sorted(&self, batch: &RecordBatch) -> Result<RecordBatch, WriteError> {
        Ok(take_record_batch(batch, &self.sort_order(batch)?)?)
    }

    /// Sort by agency then event time, and encode as one Parquet file.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Bytes, WriteError> {
        Ok(self.encode_measured(batch)?.0)
    }

    /// [`Self::encode`], and the bytes the file's buffer holds until it is dropped: its
    /// capacity, which the first guess of its size can leave at twice its length.
    pub fn encode_measured(&self, batch: &RecordBatch) -> Result<(Bytes, usize), WriteError> {
        let order = self.sort_order(batch)?;
        let schema = batch.schema();
        let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 4 + 4096);
        let props = (*self.props).clone();
        // The schemas worked out in `new` describe only batches of that schema. Others
        // (compaction reads files whose schema metadata may differ) are written as
        // `ArrowWriter` writes them, which replaces the encoded schema in `props`.
        let mut writer = if *schema == *self.schema {
            let options = ArrowWriterOptions::new()
                .with_properties(props)
                .with_parquet_schema(self.parquet_schema.clone())
                .with_skip_arrow_metadata(true);
            ArrowWriter::try_new_with_options(&mut buf, schema, options)?
        } else {
            // Rows read back from stored files keep the key they were pseudonymized with.
            let props = match schema.metadata().get(KEY_FINGERPRINT_METADATA) {
                Some(fp) => props
                    .into_builder()
                    .set_key_value_metadata(Some(vec![fingerprint_entry(fp)]))
                    .build(),
                None => props,
            };
            ArrowWriter::try_new(&mut buf, schema, Some(props))?
        };
        // The sorted rows are gathered a slice at a time: a sorted copy of the whole batch
        // doubled the memory of a large date's flush. The writer still cuts row groups
        // at `row_group_rows`, whatever the slices.
        let mut start = 0;
        while start < order.len() {
            let len = SORTED_SLICE_ROWS.min(order.len() - start);
            writer.write(&take_record_batch(batch, &order.slice(start, len))?)?;
            start += len;
        }
        writer.close()?;
        let held = buf.capacity();
        Ok((Bytes::from(buf), held))
    }
}

/// Rows gathered into sorted order at a time: a few megabytes of decoded rows.
const SORTED_SLICE_ROWS: usize = 8192;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parquet::file::reader::{FileReader, SerializedFileReader};
    use sohoa_schemas::{
        build_decoder, events_schema, DecodeOutput, DecoderContext, DecoderKind, EventBatchBuilder,
        Lineage, Pseudonymizer,
    };

    use super::*;

    /// The fixture's events as one unsorted batch.
    fn fixture_batch() -> RecordBatch {
        let decoder = build_decoder(
            DecoderKind::Dvcqg,
            DecoderContext {
                source_system: Arc::from("dvcqg"),
                pseudonymizer: Arc::new(Pseudonymizer::new(b"test-key-0123456789").unwrap()),
            },
        );
        let mut out = DecodeOutput::default();
        decoder.decode(
            include_bytes!("../../../tests/fixtures/dvcqg/samples-envelope.json"),
            &mut out,
        );
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        let mut builder = EventBatchBuilder::new();
        for (offset, e) in out.events.iter().enumerate() {
            let lineage = Lineage {
                topic: "dossiers",
                partition: 0,
                offset: offset as i64,
                ingested_at: 0,
                arrived_at: 0,
            };
            builder.append(e, &lineage);
        }
        builder.finish().unwrap()
    }

    #[test]
    fn identifiers_are_written_without_a_dictionary_and_codes_with_one() {
        let schema = events_schema();
        for column in IDENTIFIERS {
            assert!(schema.index_of(column).is_ok(), "{column} is not a column");
        }
        let batch = fixture_batch();
        let data = FileFormat::new(&schema, 1024, 1, Some("0123abcd"))
            .unwrap()
            .encode(&batch)
            .unwrap();
        let reader = SerializedFileReader::new(data).unwrap();
        let row_group = reader.metadata().row_group(0);
        assert_eq!(row_group.num_rows(), batch.num_rows() as i64);
        let dictionary = |name: &str| {
            let chunk = row_group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap_or_else(|| panic!("no column chunk {name}"));
            chunk.dictionary_page_offset().is_some()
        };
        for column in IDENTIFIERS {
            assert!(!dictionary(column), "{column} has a dictionary");
        }
        for column in ["agency_code", "procedure_code", "status"] {
            assert!(dictionary(column), "{column} has no dictionary");
        }
    }

    /// The schemas worked out once must give the files `ArrowWriter` writes when it works
    /// them out itself.
    #[test]
    fn files_are_those_the_writer_makes_from_the_schema_itself() {
        let schema = events_schema();
        let format = FileFormat::new(&schema, 1024, 1, Some("0123abcd")).unwrap();
        let batch = fixture_batch();
        // The ingest path's batches take the schemas worked out in `new`.
        assert!(*batch.schema() == *format.schema);
        let fast = format.encode(&batch).unwrap();

        let sorted = format.sorted(&batch).unwrap();
        let sorted = RecordBatch::try_new(
            Arc::new(undocumented(&sorted.schema())),
            sorted.columns().to_vec(),
        )
        .unwrap();
        // `try_new` converts the schema, encodes it again and replaces the one in `props`.
        let props = (*format.props).clone();
        let mut plain = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut plain, sorted.schema(), Some(props)).unwrap();
        writer.write(&sorted).unwrap();
        writer.close().unwrap();
        assert!(fast.len() > 1000);
        assert!(
            fast[..] == plain[..],
            "{} against {} bytes",
            fast.len(),
            plain.len()
        );

        // And the Arrow schema is there for readers that restore Arrow types from it,
        // with the schema's metadata and without the columns' descriptions.
        let arrow_schema =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(fast.clone())
                .unwrap()
                .schema()
                .clone();
        assert!(!schema.metadata().is_empty());
        for (key, value) in schema.metadata() {
            assert_eq!(arrow_schema.metadata().get(key), Some(value), "{key}");
        }
        assert!(!schema
            .field_with_name("dossier_code")
            .unwrap()
            .metadata()
            .is_empty());
        for (read, written) in arrow_schema.fields().iter().zip(schema.fields()) {
            assert!(
                read.metadata().is_empty(),
                "{} keeps its description",
                read.name()
            );
            assert_eq!(read.data_type(), written.data_type());
        }
        let reader = SerializedFileReader::new(fast).unwrap();
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap();
        assert!(kv
            .iter()
            .any(|kv| kv.key == parquet::arrow::ARROW_SCHEMA_META_KEY));
        let fingerprint = kv.iter().find(|kv| kv.key == KEY_FINGERPRINT_METADATA);
        assert_eq!(
            fingerprint.and_then(|kv| kv.value.as_deref()),
            Some("0123abcd")
        );
    }

    /// A batch of several slices is written as the whole sorted batch: the same rows in the
    /// same order, in row groups of `row_group_rows`, whether or not they are a multiple of
    /// the slice.
    #[test]
    fn a_batch_gathered_in_slices_is_written_as_the_whole_sorted_batch() {
        let one = fixture_batch();
        let copies = 2 * SORTED_SLICE_ROWS / one.num_rows() + 1;
        let batch = arrow::compute::concat_batches(&one.schema(), vec![&one; copies]).unwrap();
        assert!(batch.num_rows() > 2 * SORTED_SLICE_ROWS);
        for row_group_rows in [2 * SORTED_SLICE_ROWS, 10_000] {
            let format = FileFormat::new(&events_schema(), row_group_rows, 1, None).unwrap();
            let data = format.encode(&batch).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
                    .unwrap();
            assert_eq!(
                reader.metadata().num_row_groups(),
                batch.num_rows().div_ceil(row_group_rows)
            );
            let read: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
            let read = arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
            let sorted = format.sorted(&batch).unwrap();
            assert_eq!(read.num_rows(), sorted.num_rows());
            assert_eq!(
                read.columns(),
                sorted.columns(),
                "{row_group_rows} rows a group"
            );
        }
    }

    /// Rows read back from a file keep the fingerprint of the key they were pseudonymized
    /// with, when their schema carries it (compaction puts it there: a reader's batches
    /// come without the file's metadata).
    #[test]
    fn rows_read_back_keep_their_key_fingerprint() {
        let first = FileFormat::new(&events_schema(), 1024, 1, Some("0123abcd"))
            .unwrap()
            .encode(&fixture_batch())
            .unwrap();
        let read = |data: Bytes| {
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
                    .unwrap();
            let fp = reader
                .schema()
                .metadata()
                .get(KEY_FINGERPRINT_METADATA)
                .cloned();
            let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
            (fp, batches)
        };
        let (fp, batches) = read(first);
        assert_eq!(fp.as_deref(), Some("0123abcd"));
        let compactor = FileFormat::new(&events_schema(), 1024, 1, None).unwrap();
        let bare = compactor.encode(&batches[0]).unwrap();
        assert_eq!(read(bare).0, None, "the batch alone names no key");
        let keyed = with_key_fingerprint(&batches[0], fp.as_deref()).unwrap();
        let again = compactor.encode(&keyed).unwrap();
        assert_eq!(read(again).0.as_deref(), Some("0123abcd"));
    }

    /// A batch of another schema (here, with schema-level metadata) is written with its
    /// own schema, not the one worked out in `new`.
    #[test]
    fn a_batch_of_another_schema_is_written_with_its_own() {
        let format = FileFormat::new(&events_schema(), 1024, 1, None).unwrap();
        let batch = fixture_batch();
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("origin".to_string(), "compaction".to_string());
        let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
        let other = RecordBatch::try_new(schema, batch.columns().to_vec()).unwrap();
        let data = format.encode(&other).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data).unwrap();
        assert_eq!(
            reader.schema().metadata().get("origin").map(String::as_str),
            Some("compaction")
        );
        let read: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        assert_eq!(
            read.iter().map(RecordBatch::num_rows).sum::<usize>(),
            batch.num_rows()
        );
    }
}
