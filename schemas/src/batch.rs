//! Events appended straight into Arrow column builders.
//!
//! Building rows and converting them afterwards costs more than the Parquet encoding
//! itself, so decoded events go column by column into builders and never exist as a
//! second row representation. Columns are assembled in the order of the schema derived
//! from the JSON Schema; a column the schema has and the builder lacks is an error, which
//! the schema-agreement tests catch.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Int16Builder, Int32Builder, Int64Builder, Int8Builder, ListBuilder,
    StringBuilder, StructBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::event::{ApplicantType, Channel, DossierEvent, Lineage, SCHEMA_VERSION};
use crate::json_schema::{events_schema, UTC};

/// Room the column builders start with. Arrow's default (1,024 values per column) costs
/// about 200 KB per builder before any row arrives, and an ingestor holds one builder per
/// partition and date: hundreds of them, mostly small. They grow by doubling as needed.
const INITIAL_ROWS: usize = 32;

fn ts() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(INITIAL_ROWS).with_timezone(UTC)
}

/// Accumulates events as Arrow columns for one output file.
pub struct EventBatchBuilder {
    schema: SchemaRef,
    rows: usize,
    estimated_bytes: usize,
    schema_version: Int16Builder,
    event_id: StringBuilder,
    event_kind: StringBuilder,
    source_system: StringBuilder,
    dossier_code: StringBuilder,
    procedure_code: StringBuilder,
    procedure_name: StringBuilder,
    field_code: StringBuilder,
    field_name: StringBuilder,
    agency_code: StringBuilder,
    channel: StringBuilder,
    status_code: Int8Builder,
    status: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    filed_at: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    due_at: TimestampMicrosecondBuilder,
    finished_at: TimestampMicrosecondBuilder,
    returned_at: TimestampMicrosecondBuilder,
    refused_at: TimestampMicrosecondBuilder,
    supplements: ListBuilder<StructBuilder>,
    document_count: Int32Builder,
    has_submitted_file: BooleanBuilder,
    has_digitized_component: BooleanBuilder,
    has_reused_component: BooleanBuilder,
    from_national_warehouse: BooleanBuilder,
    result_document_count: Int32Builder,
    result_file_count: Int32Builder,
    has_e_result: BooleanBuilder,
    paid_online: BooleanBuilder,
    fee_bearing: BooleanBuilder,
    applicant_type: StringBuilder,
    applicant_pseudonym: StringBuilder,
    step_started_at: TimestampMicrosecondBuilder,
    step_due_at: TimestampMicrosecondBuilder,
    source_topic: StringBuilder,
    source_partition: Int32Builder,
    source_offset: Int64Builder,
    ingested_at: TimestampMicrosecondBuilder,
    arrived_at: TimestampMicrosecondBuilder,
}

impl Default for EventBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn supplements_builder(schema: &SchemaRef) -> ListBuilder<StructBuilder> {
    let field = schema
        .field_with_name("supplements")
        .expect("the schema has a supplements column");
    let DataType::List(item) = field.data_type() else {
        panic!("supplements is a list in the schema");
    };
    let DataType::Struct(fields) = item.data_type() else {
        panic!("supplements items are structs in the schema");
    };
    ListBuilder::with_capacity(StructBuilder::from_fields(fields.clone(), 0), INITIAL_ROWS)
        .with_field(item.clone())
}

impl EventBatchBuilder {
    pub fn new() -> Self {
        let schema = events_schema();
        EventBatchBuilder {
            supplements: supplements_builder(&schema),
            schema,
            rows: 0,
            estimated_bytes: 0,
            schema_version: Int16Builder::with_capacity(INITIAL_ROWS),
            event_id: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            event_kind: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            source_system: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            dossier_code: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            procedure_code: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            procedure_name: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            field_code: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            field_name: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            agency_code: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            channel: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            status_code: Int8Builder::with_capacity(INITIAL_ROWS),
            status: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            event_time: ts(),
            filed_at: ts(),
            received_at: ts(),
            due_at: ts(),
            finished_at: ts(),
            returned_at: ts(),
            refused_at: ts(),
            document_count: Int32Builder::with_capacity(INITIAL_ROWS),
            has_submitted_file: BooleanBuilder::with_capacity(INITIAL_ROWS),
            has_digitized_component: BooleanBuilder::with_capacity(INITIAL_ROWS),
            has_reused_component: BooleanBuilder::with_capacity(INITIAL_ROWS),
            from_national_warehouse: BooleanBuilder::with_capacity(INITIAL_ROWS),
            result_document_count: Int32Builder::with_capacity(INITIAL_ROWS),
            result_file_count: Int32Builder::with_capacity(INITIAL_ROWS),
            has_e_result: BooleanBuilder::with_capacity(INITIAL_ROWS),
            paid_online: BooleanBuilder::with_capacity(INITIAL_ROWS),
            fee_bearing: BooleanBuilder::with_capacity(INITIAL_ROWS),
            applicant_type: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            applicant_pseudonym: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            step_started_at: ts(),
            step_due_at: ts(),
            source_topic: StringBuilder::with_capacity(INITIAL_ROWS, INITIAL_ROWS * 16),
            source_partition: Int32Builder::with_capacity(INITIAL_ROWS),
            source_offset: Int64Builder::with_capacity(INITIAL_ROWS),
            ingested_at: ts(),
            arrived_at: ts(),
        }
    }

    /// Rows appended since the last `finish`.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// A cheap estimate of the memory the buffered rows hold, for flush-on-size and the
    /// backpressure cap. It counts string bytes plus a fixed cost per row.
    pub fn estimated_bytes(&self) -> usize {
        self.estimated_bytes
    }

    pub fn append(&mut self, e: &DossierEvent<'_>, lineage: &Lineage<'_>) {
        fn opt(b: &mut StringBuilder, v: &Option<std::borrow::Cow<'_, str>>) -> usize {
            b.append_option(v.as_deref());
            v.as_ref().map_or(0, |s| s.len())
        }
        let mut strings = 0;
        self.schema_version.append_value(SCHEMA_VERSION);
        self.event_id.append_value(&e.event_id);
        self.event_kind.append_value(e.kind.as_str());
        self.source_system.append_value(&e.source_system);
        self.dossier_code.append_value(&e.dossier_code);
        strings += e.event_id.len() + e.source_system.len() + e.dossier_code.len();
        strings += opt(&mut self.procedure_code, &e.procedure_code);
        strings += opt(&mut self.procedure_name, &e.procedure_name);
        strings += opt(&mut self.field_code, &e.field_code);
        strings += opt(&mut self.field_name, &e.field_name);
        strings += opt(&mut self.agency_code, &e.agency_code);
        self.channel.append_option(e.channel.map(Channel::as_str));
        self.status_code.append_value(e.status.code());
        self.status.append_value(e.status.as_str());
        self.event_time.append_value(e.event_time);
        self.filed_at.append_option(e.filed_at);
        self.received_at.append_option(e.received_at);
        self.due_at.append_option(e.due_at);
        self.finished_at.append_option(e.finished_at);
        self.returned_at.append_option(e.returned_at);
        self.refused_at.append_option(e.refused_at);
        {
            let list = self.supplements.values();
            for s in &e.supplements {
                list.field_builder::<TimestampMicrosecondBuilder>(0)
                    .expect("requested_at")
                    .append_value(s.requested_at);
                list.field_builder::<TimestampMicrosecondBuilder>(1)
                    .expect("completed_at")
                    .append_option(s.completed_at);
                list.field_builder::<TimestampMicrosecondBuilder>(2)
                    .expect("due_before")
                    .append_option(s.due_before);
                list.field_builder::<TimestampMicrosecondBuilder>(3)
                    .expect("due_after")
                    .append_option(s.due_after);
                list.append(true);
            }
            self.supplements.append(true);
        }
        self.document_count
            .append_value(clamp_i32(e.document_count));
        let f = &e.flags;
        self.has_submitted_file.append_value(f.has_submitted_file);
        self.has_digitized_component
            .append_value(f.has_digitized_component);
        self.has_reused_component
            .append_value(f.has_reused_component);
        self.from_national_warehouse
            .append_value(f.from_national_warehouse);
        self.result_document_count
            .append_value(clamp_i32(e.result_document_count));
        self.result_file_count
            .append_value(clamp_i32(e.result_file_count));
        self.has_e_result.append_value(f.has_e_result);
        self.paid_online.append_value(f.paid_online);
        self.fee_bearing.append_value(f.fee_bearing);
        self.applicant_type
            .append_option(e.applicant_type.map(ApplicantType::as_str));
        self.applicant_pseudonym
            .append_option(e.applicant_pseudonym.as_deref());
        self.step_started_at.append_option(e.step_started_at);
        self.step_due_at.append_option(e.step_due_at);
        self.source_topic.append_value(lineage.topic);
        self.source_partition.append_value(lineage.partition);
        self.source_offset.append_value(lineage.offset);
        self.ingested_at.append_value(lineage.ingested_at);
        self.arrived_at.append_value(lineage.arrived_at);
        strings += lineage.topic.len() + e.applicant_pseudonym.as_ref().map_or(0, |p| p.len());
        self.rows += 1;
        // ~24 fixed-width columns, validity bits, string offsets and supplement structs,
        // times 1.5 for the builders' spare capacity (they grow by doubling): a test keeps
        // this within 30% of the memory the finished columns hold.
        self.estimated_bytes += (strings + 200 + e.supplements.len() * 36) * 3 / 2;
    }

    /// The buffered rows as one batch with the events schema; the builder starts empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let mut cols: HashMap<&'static str, ArrayRef> = HashMap::with_capacity(48);
        macro_rules! take {
            ($($name:ident),+ $(,)?) => {
                $( cols.insert(stringify!($name), Arc::new(self.$name.finish()) as ArrayRef); )+
            };
        }
        take!(
            schema_version,
            event_id,
            event_kind,
            source_system,
            dossier_code,
            procedure_code,
            procedure_name,
            field_code,
            field_name,
            agency_code,
            channel,
            status_code,
            status,
            event_time,
            filed_at,
            received_at,
            due_at,
            finished_at,
            returned_at,
            refused_at,
            supplements,
            document_count,
            has_submitted_file,
            has_digitized_component,
            has_reused_component,
            from_national_warehouse,
            result_document_count,
            result_file_count,
            has_e_result,
            paid_online,
            fee_bearing,
            applicant_type,
            applicant_pseudonym,
            step_started_at,
            step_due_at,
            source_topic,
            source_partition,
            source_offset,
            ingested_at,
            arrived_at,
        );
        self.rows = 0;
        self.estimated_bytes = 0;
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                cols.remove(f.name().as_str()).ok_or_else(|| {
                    ArrowError::SchemaError(format!("no builder for column {}", f.name()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(extra) = cols.keys().next() {
            return Err(ArrowError::SchemaError(format!(
                "builder column {extra} is not in the schema"
            )));
        }
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

fn clamp_i32(n: u32) -> i32 {
    n.min(i32::MAX as u32) as i32
}
