//! `dossiers/`: one judged row per dossier.

use arrow::array::{
    BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder, Int8Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;

use super::{batch, days, utc, writer_props, OutputError, ROW_GROUP_ROWS};
use crate::agencies::Agencies;
use crate::fold::{Fact, Interner, CHANNEL_IN_PERSON, CHANNEL_ONLINE, CHANNEL_POSTAL};
use crate::fold::{FLAG_NATIONAL_WAREHOUSE, NO_SYM};
use crate::placement::Placement;
use crate::rules::{local_date, DueSource, Judged};

const STATUS_NAMES: [&str; 11] = [
    "unknown",
    "registered",
    "received",
    "not_accepted",
    "processing",
    "supplement_requested",
    "payment_requested",
    "withdrawn",
    "stopped",
    "processed",
    "returned",
];

/// One judged dossier, ready to write.
pub struct DossierOut<'a> {
    pub code: &'a str,
    pub fact: &'a Fact,
    pub judged: &'a Judged,
    pub place: &'a Placement,
    /// The interner of the fold part the fact comes from.
    pub syms: &'a Interner,
}

/// Encode the `dossiers` table, a row group at a time, so the Arrow copy of the table
/// never exists whole.
pub fn dossiers_parquet(
    rows: &[DossierOut<'_>],
    as_of: i64,
    agencies: &Agencies,
) -> Result<Bytes, OutputError> {
    let err = |e: parquet::errors::ParquetError| OutputError::Encode {
        table: "dossiers",
        reason: e.to_string(),
    };
    let mut buf = Vec::new();
    let mut chunks = rows.chunks(ROW_GROUP_ROWS);
    let first = dossiers_batch(chunks.next().unwrap_or(&[]), as_of, agencies)?;
    let mut writer =
        ArrowWriter::try_new(&mut buf, first.schema(), Some(writer_props()?)).map_err(err)?;
    writer.write(&first).map_err(err)?;
    for chunk in chunks {
        writer
            .write(&dossiers_batch(chunk, as_of, agencies)?)
            .map_err(err)?;
    }
    writer.close().map_err(err)?;
    Ok(Bytes::from(buf))
}

fn dossiers_batch(
    rows: &[DossierOut<'_>],
    as_of: i64,
    agencies: &Agencies,
) -> Result<RecordBatch, OutputError> {
    let n = rows.len();
    let mut code = StringBuilder::with_capacity(n, n * 24);
    let mut system = StringBuilder::new();
    let (mut agency, mut receiving) = (StringBuilder::new(), StringBuilder::new());
    let (mut restated, mut restated_receiving) = (StringBuilder::new(), StringBuilder::new());
    let mut handovers = Int32Builder::with_capacity(n);
    let mut procedure = StringBuilder::new();
    let mut procedure_name = StringBuilder::new();
    let mut field = StringBuilder::new();
    let mut field_name = StringBuilder::new();
    let mut channel = StringBuilder::new();
    let mut status_code = Int8Builder::with_capacity(n);
    let mut status = StringBuilder::new();
    let ts = || TimestampMicrosecondBuilder::with_capacity(n).with_timezone(utc());
    let (mut received, mut due, mut end, mut judged_due, mut finished, mut returned, mut last) =
        (ts(), ts(), ts(), ts(), ts(), ts(), ts());
    let mut first_due = ts();
    let mut resets = Int32Builder::with_capacity(n);
    let mut judged_at = ts();
    let mut judged_date = Date32Builder::with_capacity(n);
    let mut received_date = Date32Builder::with_capacity(n);
    let mut end_date = Date32Builder::with_capacity(n);
    let mut overdue_from = Date32Builder::with_capacity(n);
    let mut due_source = StringBuilder::new();
    let mut end_reason = StringBuilder::new();
    let mut supplements = Int32Builder::with_capacity(n);
    let mut paused = Int64Builder::with_capacity(n);
    let mut paused_working = Int64Builder::with_capacity(n);
    let mut extension = Int64Builder::with_capacity(n);
    let mut working_days = Float64Builder::with_capacity(n);
    let mut class = StringBuilder::new();
    let mut not_judged = StringBuilder::new();
    let bools = || BooleanBuilder::with_capacity(n);
    let (mut counted, mut online, mut digitized, mut eligible, mut e_result) =
        (bools(), bools(), bools(), bools(), bools());
    let (mut reused, mut warehouse, mut fee, mut paid) = (bools(), bools(), bools(), bools());
    let mut events = Int32Builder::with_capacity(n);
    for r in rows {
        let sym = |s| (s != NO_SYM).then(|| r.syms.get(s)).flatten();
        let (f, j) = (r.fact, r.judged);
        code.append_value(r.code);
        system.append_option(sym(f.source_system));
        let (was, now) = (&r.place.as_was, r.place.restated());
        agency.append_option(was.holder().code(r.syms, agencies));
        receiving.append_option(was.receiving.code(r.syms, agencies));
        restated.append_option(now.holder().code(r.syms, agencies));
        restated_receiving.append_option(now.receiving.code(r.syms, agencies));
        handovers.append_value(was.handovers.len() as i32);
        procedure.append_option(sym(f.procedure));
        procedure_name.append_option(sym(f.procedure_name));
        field.append_option(sym(f.field));
        field_name.append_option(sym(f.field_name));
        channel.append_option(match f.channel {
            CHANNEL_IN_PERSON => Some("in_person"),
            CHANNEL_ONLINE => Some("online"),
            CHANNEL_POSTAL => Some("postal"),
            _ => None,
        });
        status_code.append_value(f.status);
        status.append_value(
            STATUS_NAMES
                .get(f.status as usize)
                .copied()
                .unwrap_or("unknown"),
        );
        received.append_option(j.received_at);
        received_date.append_option(j.received_at.map(|t| days(local_date(t))));
        first_due.append_option(j.first_due_at);
        due.append_option(j.due_at);
        resets.append_value(j.due_resets as i32);
        judged_due.append_option(j.judged_due_at);
        due_source.append_option(j.due_source.map(|s| match s {
            DueSource::Source => "source",
            DueSource::Catalogue => "catalogue",
        }));
        end.append_option(j.end_at);
        end_date.append_option(j.end_at.map(|t| days(local_date(t))));
        end_reason.append_option(j.end_reason.map(|r| r.as_str()));
        finished.append_option(f.finished_at);
        returned.append_option(f.returned_at);
        supplements.append_value(j.supplement_count as i32);
        paused.append_value(j.paused_seconds);
        paused_working.append_value(j.pause_working_seconds);
        extension.append_value(j.due_extension_seconds);
        working_days.append_option(j.working_days);
        class.append_option(j.on_time.map(|c| c.as_str()));
        not_judged.append_option(j.not_judged.map(|r| r.as_str()));
        overdue_from.append_option(j.overdue_from.map(days));
        counted.append_value(j.counted);
        online.append_value(j.online);
        digitized.append_value(j.digitized);
        eligible.append_value(j.e_result_eligible);
        e_result.append_value(j.e_result);
        reused.append_value(j.reused);
        warehouse.append_value(f.flag(FLAG_NATIONAL_WAREHOUSE));
        fee.append_value(j.fee_bearing);
        paid.append_value(j.paid_online);
        events.append_value(f.events as i32);
        last.append_value(f.last.time);
        judged_at.append_value(as_of);
        judged_date.append_value(days(local_date(as_of)));
    }
    let a = |b: &mut dyn arrow::array::ArrayBuilder| b.finish();
    batch(
        "dossiers",
        vec![
            ("dossier_code", a(&mut code), false),
            ("source_system", a(&mut system), true),
            ("agency_code", a(&mut agency), true),
            ("receiving_agency_code", a(&mut receiving), true),
            ("restated_agency_code", a(&mut restated), true),
            (
                "restated_receiving_agency_code",
                a(&mut restated_receiving),
                true,
            ),
            ("handovers", a(&mut handovers), false),
            ("procedure_code", a(&mut procedure), true),
            ("procedure_name", a(&mut procedure_name), true),
            ("field_code", a(&mut field), true),
            ("field_name", a(&mut field_name), true),
            ("channel", a(&mut channel), true),
            ("status_code", a(&mut status_code), false),
            ("status", a(&mut status), false),
            ("received_at", a(&mut received), true),
            ("received_date", a(&mut received_date), true),
            ("first_due_at", a(&mut first_due), true),
            ("due_at", a(&mut due), true),
            ("due_source", a(&mut due_source), true),
            ("judged_due_at", a(&mut judged_due), true),
            ("due_resets", a(&mut resets), false),
            ("end_at", a(&mut end), true),
            ("end_date", a(&mut end_date), true),
            ("end_reason", a(&mut end_reason), true),
            ("finished_at", a(&mut finished), true),
            ("returned_at", a(&mut returned), true),
            ("supplement_count", a(&mut supplements), false),
            ("paused_seconds", a(&mut paused), false),
            ("pause_working_seconds", a(&mut paused_working), false),
            ("due_extension_seconds", a(&mut extension), false),
            ("working_days", a(&mut working_days), true),
            ("on_time_class", a(&mut class), true),
            ("not_judged_reason", a(&mut not_judged), true),
            ("overdue_from", a(&mut overdue_from), true),
            ("counted", a(&mut counted), false),
            ("online", a(&mut online), false),
            ("digitized", a(&mut digitized), false),
            ("e_result_eligible", a(&mut eligible), false),
            ("e_result", a(&mut e_result), false),
            ("reused", a(&mut reused), false),
            ("from_national_warehouse", a(&mut warehouse), false),
            ("fee_bearing", a(&mut fee), false),
            ("paid_online", a(&mut paid), false),
            ("events", a(&mut events), false),
            ("last_event_at", a(&mut last), false),
            ("judged_at", a(&mut judged_at), false),
            ("judged_date", a(&mut judged_date), false),
        ],
    )
}
