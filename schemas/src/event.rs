//! The canonical dossier event, in memory.
//!
//! Fields borrow from the message bytes wherever normalization left them unchanged, so a
//! clean record is decoded without copying its strings. The shape follows
//! `json/dossier-event.v1.schema.json`; `batch.rs` and the schema tests keep them in step.

use std::borrow::Cow;
use std::sync::Arc;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

/// The current schema version written into every event.
pub const SCHEMA_VERSION: i16 = 1;

macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The national numeric code.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),+ }
            }

            /// The value for a national numeric code.
            pub fn from_code(code: i64) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }

            /// The canonical snake_case name used in JSON and Parquet.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value for a canonical name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

code_enum! {
    /// `TrangThaiHoSo`, the ten national dossier statuses.
    Status {
        Registered = 1 => "registered",
        Received = 2 => "received",
        NotAccepted = 3 => "not_accepted",
        Processing = 4 => "processing",
        SupplementRequested = 5 => "supplement_requested",
        PaymentRequested = 6 => "payment_requested",
        Withdrawn = 7 => "withdrawn",
        Stopped = 8 => "stopped",
        Processed = 9 => "processed",
        Returned = 10 => "returned",
    }
}

code_enum! {
    /// `KenhThucHien`: how the dossier was submitted.
    Channel {
        InPerson = 1 => "in_person",
        Online = 2 => "online",
        Postal = 3 => "postal",
    }
}

code_enum! {
    /// `LoaiDoiTuong`: who the applicant is.
    ApplicantType {
        Citizen = 1 => "citizen",
        Business = 2 => "business",
        StateAgency = 3 => "state_agency",
        Organisation = 4 => "organisation",
    }
}

/// A full snapshot of the dossier, or one processing step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Snapshot,
    Progress,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Snapshot => "snapshot",
            EventKind::Progress => "progress",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "snapshot" => Some(EventKind::Snapshot),
            "progress" => Some(EventKind::Progress),
            _ => None,
        }
    }
}

/// One supplement request (`DanhSachHoSoBoSung` item).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Supplement {
    pub requested_at: Micros,
    pub completed_at: Option<Micros>,
    pub due_before: Option<Micros>,
    pub due_after: Option<Micros>,
}

/// Indicator flags derived from the document, result, fee and payment lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub has_submitted_file: bool,
    pub has_digitized_component: bool,
    pub has_reused_component: bool,
    pub from_national_warehouse: bool,
    pub has_e_result: bool,
    pub paid_online: bool,
    pub fee_bearing: bool,
}

/// The canonical event. See the JSON Schema for the meaning of each field.
#[derive(Debug, Clone, PartialEq)]
pub struct DossierEvent<'a> {
    pub event_id: Cow<'a, str>,
    pub kind: EventKind,
    /// Shared by every event of a topic: cloning it is a reference-count increment.
    pub source_system: Arc<str>,
    pub dossier_code: Cow<'a, str>,
    pub procedure_code: Option<Cow<'a, str>>,
    pub procedure_name: Option<Cow<'a, str>>,
    pub field_code: Option<Cow<'a, str>>,
    pub field_name: Option<Cow<'a, str>>,
    pub agency_code: Option<Cow<'a, str>>,
    pub channel: Option<Channel>,
    pub status: Status,
    pub event_time: Micros,
    pub filed_at: Option<Micros>,
    pub received_at: Option<Micros>,
    pub due_at: Option<Micros>,
    pub finished_at: Option<Micros>,
    pub returned_at: Option<Micros>,
    pub refused_at: Option<Micros>,
    pub supplements: Vec<Supplement>,
    pub document_count: u32,
    pub result_document_count: u32,
    pub result_file_count: u32,
    pub flags: Flags,
    pub applicant_type: Option<ApplicantType>,
    pub applicant_pseudonym: Option<String>,
    pub step_started_at: Option<Micros>,
    pub step_due_at: Option<Micros>,
}

impl DossierEvent<'_> {
    /// Detach the event from the message bytes it borrows from.
    pub fn into_owned(self) -> DossierEvent<'static> {
        fn own(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        DossierEvent {
            event_id: own(self.event_id),
            kind: self.kind,
            source_system: self.source_system,
            dossier_code: own(self.dossier_code),
            procedure_code: self.procedure_code.map(own),
            procedure_name: self.procedure_name.map(own),
            field_code: self.field_code.map(own),
            field_name: self.field_name.map(own),
            agency_code: self.agency_code.map(own),
            channel: self.channel,
            status: self.status,
            event_time: self.event_time,
            filed_at: self.filed_at,
            received_at: self.received_at,
            due_at: self.due_at,
            finished_at: self.finished_at,
            returned_at: self.returned_at,
            refused_at: self.refused_at,
            supplements: self.supplements,
            document_count: self.document_count,
            result_document_count: self.result_document_count,
            result_file_count: self.result_file_count,
            flags: self.flags,
            applicant_type: self.applicant_type,
            applicant_pseudonym: self.applicant_pseudonym,
            step_started_at: self.step_started_at,
            step_due_at: self.step_due_at,
        }
    }

    /// The event as canonical v1 JSON: what the `canonical` decoder reads back.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }
}

/// Where an event came from in Kafka (or a backfill file), and when it became durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub ingested_at: Micros,
    /// The broker timestamp of the source message, or the ingest time for a backfill
    /// file: the sync delay is this minus the event time.
    pub arrived_at: Micros,
}

/// RFC 3339 in UTC with microseconds only when needed, the form the JSON Schema's
/// `date-time` format and Arrow's JSON reader both accept.
pub fn format_micros(micros: Micros) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => micros.to_string(),
    }
}

struct Time(Option<Micros>);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(t) => s.serialize_str(&format_micros(t)),
            None => s.serialize_none(),
        }
    }
}

impl Serialize for Supplement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("requested_at", &Time(Some(self.requested_at)))?;
        m.serialize_entry("completed_at", &Time(self.completed_at))?;
        m.serialize_entry("due_before", &Time(self.due_before))?;
        m.serialize_entry("due_after", &Time(self.due_after))?;
        m.end()
    }
}

impl Serialize for DossierEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = &self.flags;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("schema_version", &SCHEMA_VERSION)?;
        m.serialize_entry("event_id", &self.event_id)?;
        m.serialize_entry("event_kind", self.kind.as_str())?;
        m.serialize_entry("source_system", &*self.source_system)?;
        m.serialize_entry("dossier_code", &self.dossier_code)?;
        m.serialize_entry("procedure_code", &self.procedure_code)?;
        m.serialize_entry("procedure_name", &self.procedure_name)?;
        m.serialize_entry("field_code", &self.field_code)?;
        m.serialize_entry("field_name", &self.field_name)?;
        m.serialize_entry("agency_code", &self.agency_code)?;
        m.serialize_entry("channel", &self.channel.map(Channel::as_str))?;
        m.serialize_entry("status_code", &self.status.code())?;
        m.serialize_entry("status", self.status.as_str())?;
        m.serialize_entry("event_time", &Time(Some(self.event_time)))?;
        m.serialize_entry("filed_at", &Time(self.filed_at))?;
        m.serialize_entry("received_at", &Time(self.received_at))?;
        m.serialize_entry("due_at", &Time(self.due_at))?;
        m.serialize_entry("finished_at", &Time(self.finished_at))?;
        m.serialize_entry("returned_at", &Time(self.returned_at))?;
        m.serialize_entry("refused_at", &Time(self.refused_at))?;
        m.serialize_entry("supplements", &self.supplements)?;
        m.serialize_entry("document_count", &self.document_count)?;
        m.serialize_entry("has_submitted_file", &f.has_submitted_file)?;
        m.serialize_entry("has_digitized_component", &f.has_digitized_component)?;
        m.serialize_entry("has_reused_component", &f.has_reused_component)?;
        m.serialize_entry("from_national_warehouse", &f.from_national_warehouse)?;
        m.serialize_entry("result_document_count", &self.result_document_count)?;
        m.serialize_entry("result_file_count", &self.result_file_count)?;
        m.serialize_entry("has_e_result", &f.has_e_result)?;
        m.serialize_entry("paid_online", &f.paid_online)?;
        m.serialize_entry("fee_bearing", &f.fee_bearing)?;
        m.serialize_entry(
            "applicant_type",
            &self.applicant_type.map(ApplicantType::as_str),
        )?;
        m.serialize_entry("applicant_pseudonym", &self.applicant_pseudonym)?;
        m.serialize_entry("step_started_at", &Time(self.step_started_at))?;
        m.serialize_entry("step_due_at", &Time(self.step_due_at))?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip() {
        assert_eq!(Status::ALL.len(), 10);
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code() as i64), Some(*s));
            assert_eq!(Status::from_name(s.as_str()), Some(*s));
        }
        assert_eq!(Status::from_code(0), None);
        assert_eq!(Status::from_code(11), None);
        assert_eq!(Status::Returned.as_str(), "returned");
        assert_eq!(Channel::from_code(2), Some(Channel::Online));
    }

    #[test]
    fn times_format_as_rfc3339_utc() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_micros(1_677_114_312_000_000), "2023-02-23T01:05:12Z");
        assert_eq!(format_micros(1_500_000), "1970-01-01T00:00:01.500Z");
    }
}
