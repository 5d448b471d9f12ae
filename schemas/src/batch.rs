//! Events appended straight into Arrow column builders.
//!
//! Building rows and converting them afterwards costs more than the Parquet encoding
//! itself, so decoded events go column by column into builders and never exist as a
//! second row representation. Columns are assembled in the order of the schema derived
//! from the JSON Schema; a column the schema has and the builder lacks is an error, which
//! the schema-agreement tests catch.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::builder::{BooleanBufferBuilder, NullBufferBuilder};
use arrow::array::{
    ArrayRef, ArrowPrimitiveType, BooleanArray, ListArray, PrimitiveArray, StringArray, StructArray,
};
use arrow::buffer::{Buffer, OffsetBuffer};
use arrow::datatypes::{
    DataType, FieldRef, Fields, Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef,
    TimestampMicrosecondType,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::event::{ApplicantType, Channel, DossierEvent, Lineage, SCHEMA_VERSION};
use crate::json_schema::{events_schema, UTC};

// The columns are built here rather than with Arrow's builders, which do not say how much
// memory they hold (a string builder's capacity is private): the ingestor caps its buffers
// by what they really hold, and holds one builder per partition and date, often tens of
// thousands. Every column starts with no allocation at all and grows by doubling: a buffer
// of a date that gets a handful of rows costs a few KB, where room for 32 rows up front cost
// 20 KB whatever came. Finishing hands the same allocations to the arrays, without a copy.

/// Whether appending a value (a null if `null`) to `nulls` allocates: it allocates at its
/// first null, then grows.
#[inline]
fn nulls_grow(nulls: &NullBufferBuilder, null: bool) -> bool {
    match nulls.as_slice() {
        None => null,
        Some(_) => nulls.len() == nulls.allocated_size() * 8,
    }
}

/// A column of a primitive type. The append methods say whether they allocated.
struct Prim<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    nulls: NullBufferBuilder,
}

impl<T: ArrowPrimitiveType> Prim<T> {
    fn new() -> Self {
        Prim {
            values: Vec::new(),
            nulls: NullBufferBuilder::new(0),
        }
    }

    #[inline]
    fn push(&mut self, v: T::Native) -> bool {
        let grows = self.values.len() == self.values.capacity() || nulls_grow(&self.nulls, false);
        self.values.push(v);
        self.nulls.append_non_null();
        grows
    }

    #[inline]
    fn push_opt(&mut self, v: Option<T::Native>) -> bool {
        match v {
            Some(v) => self.push(v),
            None => {
                let grows =
                    self.values.len() == self.values.capacity() || nulls_grow(&self.nulls, true);
                self.values.push(T::Native::default());
                self.nulls.append_null();
                grows
            }
        }
    }

    fn allocated(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<T::Native>() + self.nulls.allocated_size()
    }

    fn finish(&mut self) -> PrimitiveArray<T> {
        PrimitiveArray::new(std::mem::take(&mut self.values).into(), self.nulls.finish())
    }
}

/// A timestamp column, in microseconds, UTC.
struct Times(Prim<TimestampMicrosecondType>);

impl Times {
    fn new() -> Self {
        Times(Prim::new())
    }

    #[inline]
    fn push(&mut self, v: i64) -> bool {
        self.0.push(v)
    }

    #[inline]
    fn push_opt(&mut self, v: Option<i64>) -> bool {
        self.0.push_opt(v)
    }

    fn allocated(&self) -> usize {
        self.0.allocated()
    }

    fn finish(&mut self) -> PrimitiveArray<TimestampMicrosecondType> {
        self.0.finish().with_timezone(UTC)
    }
}

/// A string column.
struct Strings {
    values: Vec<u8>,
    /// Empty until the first value, then one more than the values.
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl Strings {
    fn new() -> Self {
        Strings {
            values: Vec::new(),
            offsets: Vec::new(),
            nulls: NullBufferBuilder::new(0),
        }
    }

    /// Whether the next offset allocates (with one false alarm per growth, when the first
    /// offset is still to come).
    #[inline]
    fn offsets_grow(&self) -> bool {
        self.offsets.len() + 2 > self.offsets.capacity()
    }

    #[inline]
    fn end(&mut self) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let end = i32::try_from(self.values.len()).expect("a string column under 2 GB");
        self.offsets.push(end);
    }

    #[inline]
    fn push(&mut self, v: &str) -> bool {
        let grows = self.values.capacity() - self.values.len() < v.len()
            || self.offsets_grow()
            || nulls_grow(&self.nulls, false);
        self.values.extend_from_slice(v.as_bytes());
        self.nulls.append_non_null();
        self.end();
        grows
    }

    #[inline]
    fn push_opt(&mut self, v: Option<&str>) -> bool {
        match v {
            Some(v) => self.push(v),
            None => {
                let grows = self.offsets_grow() || nulls_grow(&self.nulls, true);
                self.nulls.append_null();
                self.end();
                grows
            }
        }
    }

    fn allocated(&self) -> usize {
        self.values.capacity()
            + self.offsets.capacity() * std::mem::size_of::<i32>()
            + self.nulls.allocated_size()
    }

    fn finish(&mut self) -> StringArray {
        let mut offsets = std::mem::take(&mut self.offsets);
        if offsets.is_empty() {
            offsets.push(0);
        }
        let offsets = OffsetBuffer::new(offsets.into());
        let values = Buffer::from_vec(std::mem::take(&mut self.values));
        // SAFETY: the values are whole `&str`s one after another, and the offsets (checked
        // above to start at 0 and never decrease) fall between them, so every value is
        // valid UTF-8. Checking it again would read every string byte once more per flush.
        unsafe { StringArray::new_unchecked(offsets, values, self.nulls.finish()) }
    }
}

/// A column of booleans, never null.
struct Bools(BooleanBufferBuilder);

impl Bools {
    fn new() -> Self {
        Bools(BooleanBufferBuilder::new(0))
    }

    #[inline]
    fn push(&mut self, v: bool) -> bool {
        let grows = self.0.len() == self.0.capacity();
        self.0.append(v);
        grows
    }

    fn allocated(&self) -> usize {
        self.0.capacity() / 8
    }

    fn finish(&mut self) -> BooleanArray {
        BooleanArray::new(self.0.finish(), None)
    }
}

/// The supplements column: a list of structs of four timestamps, neither ever null.
struct Supplements {
    item: FieldRef,
    fields: Fields,
    offsets: Vec<i32>,
    requested_at: Times,
    completed_at: Times,
    due_before: Times,
    due_after: Times,
}

impl Supplements {
    fn new(schema: &SchemaRef) -> Self {
        let field = schema
            .field_with_name("supplements")
            .expect("the schema has a supplements column");
        let DataType::List(item) = field.data_type() else {
            panic!("supplements is a list in the schema");
        };
        let DataType::Struct(fields) = item.data_type() else {
            panic!("supplements items are structs in the schema");
        };
        Supplements {
            item: item.clone(),
            fields: fields.clone(),
            offsets: Vec::new(),
            requested_at: Times::new(),
            completed_at: Times::new(),
            due_before: Times::new(),
            due_after: Times::new(),
        }
    }

    #[inline]
    fn push(&mut self, supplements: &[crate::event::Supplement]) -> bool {
        let mut grows = self.offsets.len() + 2 > self.offsets.capacity();
        for s in supplements {
            grows |= self.requested_at.push(s.requested_at);
            grows |= self.completed_at.push_opt(s.completed_at);
            grows |= self.due_before.push_opt(s.due_before);
            grows |= self.due_after.push_opt(s.due_after);
        }
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let end = self.requested_at.0.values.len();
        self.offsets
            .push(i32::try_from(end).expect("supplements under 2^31"));
        grows
    }

    fn allocated(&self) -> usize {
        self.offsets.capacity() * std::mem::size_of::<i32>()
            + self.requested_at.allocated()
            + self.completed_at.allocated()
            + self.due_before.allocated()
            + self.due_after.allocated()
    }

    fn finish(&mut self) -> Result<ListArray, ArrowError> {
        let mut offsets = std::mem::take(&mut self.offsets);
        if offsets.is_empty() {
            offsets.push(0);
        }
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.requested_at.finish()),
            Arc::new(self.completed_at.finish()),
            Arc::new(self.due_before.finish()),
            Arc::new(self.due_after.finish()),
        ];
        let items = StructArray::try_new(self.fields.clone(), children, None)?;
        ListArray::try_new(
            self.item.clone(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(items) as ArrayRef,
            None,
        )
    }
}

/// Accumulates events as Arrow columns for one output file.
pub struct EventBatchBuilder {
    schema: SchemaRef,
    rows: usize,
    /// What [`Self::allocated_bytes`] says: measured again only when an append allocated.
    allocated: usize,
    schema_version: Prim<Int16Type>,
    event_id: Strings,
    event_kind: Strings,
    source_system: Strings,
    dossier_code: Strings,
    procedure_code: Strings,
    procedure_name: Strings,
    field_code: Strings,
    field_name: Strings,
    agency_code: Strings,
    channel: Strings,
    status_code: Prim<Int8Type>,
    status: Strings,
    event_time: Times,
    filed_at: Times,
    received_at: Times,
    due_at: Times,
    finished_at: Times,
    returned_at: Times,
    refused_at: Times,
    supplements: Supplements,
    document_count: Prim<Int32Type>,
    has_submitted_file: Bools,
    has_digitized_component: Bools,
    has_reused_component: Bools,
    from_national_warehouse: Bools,
    result_document_count: Prim<Int32Type>,
    result_file_count: Prim<Int32Type>,
    has_e_result: Bools,
    paid_online: Bools,
    fee_bearing: Bools,
    applicant_type: Strings,
    applicant_pseudonym: Strings,
    step_started_at: Times,
    step_due_at: Times,
    source_topic: Strings,
    source_partition: Prim<Int32Type>,
    source_offset: Prim<Int64Type>,
    ingested_at: Times,
    arrived_at: Times,
}

/// Calls `$m!` with every column's name, in one place for the measure and the finish.
macro_rules! columns {
    ($m:ident) => {
        $m!(
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
        )
    };
}

impl Default for EventBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBatchBuilder {
    pub fn new() -> Self {
        let schema = events_schema();
        let mut b = EventBatchBuilder {
            supplements: Supplements::new(&schema),
            schema,
            rows: 0,
            allocated: 0,
            schema_version: Prim::new(),
            event_id: Strings::new(),
            event_kind: Strings::new(),
            source_system: Strings::new(),
            dossier_code: Strings::new(),
            procedure_code: Strings::new(),
            procedure_name: Strings::new(),
            field_code: Strings::new(),
            field_name: Strings::new(),
            agency_code: Strings::new(),
            channel: Strings::new(),
            status_code: Prim::new(),
            status: Strings::new(),
            event_time: Times::new(),
            filed_at: Times::new(),
            received_at: Times::new(),
            due_at: Times::new(),
            finished_at: Times::new(),
            returned_at: Times::new(),
            refused_at: Times::new(),
            document_count: Prim::new(),
            has_submitted_file: Bools::new(),
            has_digitized_component: Bools::new(),
            has_reused_component: Bools::new(),
            from_national_warehouse: Bools::new(),
            result_document_count: Prim::new(),
            result_file_count: Prim::new(),
            has_e_result: Bools::new(),
            paid_online: Bools::new(),
            fee_bearing: Bools::new(),
            applicant_type: Strings::new(),
            applicant_pseudonym: Strings::new(),
            step_started_at: Times::new(),
            step_due_at: Times::new(),
            source_topic: Strings::new(),
            source_partition: Prim::new(),
            source_offset: Prim::new(),
            ingested_at: Times::new(),
            arrived_at: Times::new(),
        };
        b.allocated = b.measure();
        b
    }

    /// Bytes the builder holds: its own size (it is as large as a small buffer's columns,
    /// so it counts wherever it lives) and every column's allocated capacity, spare room
    /// included. Exact as far as the allocator is asked (a test checks it against one); the
    /// allocator's own rounding is not in it.
    pub fn allocated_bytes(&self) -> usize {
        self.allocated
    }

    fn measure(&self) -> usize {
        let mut bytes = std::mem::size_of::<Self>() + self.supplements.allocated();
        macro_rules! add {
            ($($name:ident),+ $(,)?) => {
                $( bytes += self.$name.allocated(); )+
            };
        }
        columns!(add);
        bytes
    }

    /// Rows appended since the last `finish`.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn append(&mut self, e: &DossierEvent<'_>, lineage: &Lineage<'_>) {
        // Each column says whether it allocated, so that the columns are measured again
        // only then: a few times per doubling rather than for every row.
        let f = &e.flags;
        let grew = self.schema_version.push(SCHEMA_VERSION)
            | self.event_id.push(&e.event_id)
            | self.event_kind.push(e.kind.as_str())
            | self.source_system.push(&e.source_system)
            | self.dossier_code.push(&e.dossier_code)
            | self.procedure_code.push_opt(e.procedure_code.as_deref())
            | self.procedure_name.push_opt(e.procedure_name.as_deref())
            | self.field_code.push_opt(e.field_code.as_deref())
            | self.field_name.push_opt(e.field_name.as_deref())
            | self.agency_code.push_opt(e.agency_code.as_deref())
            | self.channel.push_opt(e.channel.map(Channel::as_str))
            | self.status_code.push(e.status.code())
            | self.status.push(e.status.as_str())
            | self.event_time.push(e.event_time)
            | self.filed_at.push_opt(e.filed_at)
            | self.received_at.push_opt(e.received_at)
            | self.due_at.push_opt(e.due_at)
            | self.finished_at.push_opt(e.finished_at)
            | self.returned_at.push_opt(e.returned_at)
            | self.refused_at.push_opt(e.refused_at)
            | self.supplements.push(&e.supplements)
            | self.document_count.push(clamp_i32(e.document_count))
            | self.has_submitted_file.push(f.has_submitted_file)
            | self.has_digitized_component.push(f.has_digitized_component)
            | self.has_reused_component.push(f.has_reused_component)
            | self.from_national_warehouse.push(f.from_national_warehouse)
            | self
                .result_document_count
                .push(clamp_i32(e.result_document_count))
            | self.result_file_count.push(clamp_i32(e.result_file_count))
            | self.has_e_result.push(f.has_e_result)
            | self.paid_online.push(f.paid_online)
            | self.fee_bearing.push(f.fee_bearing)
            | self
                .applicant_type
                .push_opt(e.applicant_type.map(ApplicantType::as_str))
            | self
                .applicant_pseudonym
                .push_opt(e.applicant_pseudonym.as_deref())
            | self.step_started_at.push_opt(e.step_started_at)
            | self.step_due_at.push_opt(e.step_due_at)
            | self.source_topic.push(lineage.topic)
            | self.source_partition.push(lineage.partition)
            | self.source_offset.push(lineage.offset)
            | self.ingested_at.push(lineage.ingested_at)
            | self.arrived_at.push(lineage.arrived_at);
        self.rows += 1;
        if grew {
            self.allocated = self.measure();
        }
    }

    /// The buffered rows as one batch with the events schema; the builder starts empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let mut cols: HashMap<&'static str, ArrayRef> = HashMap::with_capacity(48);
        macro_rules! take {
            ($($name:ident),+ $(,)?) => {
                $( cols.insert(stringify!($name), Arc::new(self.$name.finish()) as ArrayRef); )+
            };
        }
        columns!(take);
        cols.insert("supplements", Arc::new(self.supplements.finish()?));
        self.rows = 0;
        self.allocated = self.measure();
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
