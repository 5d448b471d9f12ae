//! Events that already follow the canonical v1 JSON Schema, from sources that publish it
//! directly (or from sohoa's own `decode` output).
//!
//! Input is validated against the embedded JSON Schema, formats included, then passed
//! through the same normalization as every other source. One object or an array of
//! objects per message; each object stands or falls on its own. The `readOnly` lineage
//! fields are ignored: the ingestor sets them.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{DecodeOutput, Decoder, DecoderKind};
use crate::error::{DecodeError, Loc, Reason};
use crate::event::{
    ApplicantType, Channel, DossierEvent, EventKind, Flags, Micros, Status, Supplement,
};
use crate::json_schema::{event_property_names, event_validator};
use crate::normalize::{self, Warning, Warnings};

/// Decoder for canonical v1 JSON.
#[derive(Debug)]
pub struct CanonicalDecoder {
    known: Vec<&'static str>,
}

impl Default for CanonicalDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CanonicalDecoder {
    /// Canonical events carry their own `source_system` and pseudonyms, so this decoder
    /// needs no context.
    pub fn new() -> Self {
        CanonicalDecoder {
            known: event_property_names(),
        }
    }

    fn one(
        &self,
        v: &Value,
        loc: &Loc<'_>,
        w: &mut Warnings,
    ) -> Result<DossierEvent<'static>, DecodeError> {
        let validator = event_validator();
        if let Some(err) = validator.iter_errors(v).next() {
            let pointer = err.instance_path().to_string();
            let path = pointer_to_path(&loc.to_string(), &pointer);
            return Err(DecodeError::new(path, Reason::Schema(err.to_string())));
        }
        let obj = v.as_object().expect("the schema requires an object");
        let unknown = obj
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .count();
        w.add_n(Warning::UnknownField, unknown as u32);

        let status_code = obj["status_code"].as_i64().unwrap_or_default();
        let status = Status::from_code(status_code).expect("the schema bounds status_code");
        if obj["status"].as_str() != Some(status.as_str()) {
            return Err(loc.key("status").error(Reason::Inconsistent(format!(
                "{:?} does not match status_code {status_code} ({})",
                obj["status"].as_str().unwrap_or_default(),
                status.as_str()
            ))));
        }
        let dossier_code = normalize::code(Cow::Owned(str_of(obj, "dossier_code")), w)
            .ok_or_else(|| loc.key("dossier_code").error(Reason::Empty))?;
        let supplements = obj["supplements"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|s| Supplement {
                        requested_at: time_of(s, "requested_at").unwrap_or_default(),
                        completed_at: time_of(s, "completed_at"),
                        due_before: time_of(s, "due_before"),
                        due_after: time_of(s, "due_after"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let flag = |k: &str| obj[k].as_bool().unwrap_or_default();
        let count = |k: &str| obj[k].as_u64().unwrap_or_default() as u32;
        let code = |k: &str, w: &mut Warnings| {
            opt_str(obj, k).and_then(|s| normalize::code(Cow::Owned(s), w))
        };
        let text = |k: &str, w: &mut Warnings| {
            opt_str(obj, k).and_then(|s| normalize::text(Cow::Owned(s), w))
        };
        let event = DossierEvent {
            event_id: Cow::Owned(str_of(obj, "event_id")),
            kind: EventKind::from_name(obj["event_kind"].as_str().unwrap_or_default())
                .expect("the schema lists the kinds"),
            source_system: std::sync::Arc::from(str_of(obj, "source_system")),
            dossier_code,
            procedure_code: code("procedure_code", w),
            procedure_name: text("procedure_name", w),
            field_code: code("field_code", w),
            field_name: text("field_name", w),
            agency_code: code("agency_code", w),
            channel: obj
                .get("channel")
                .and_then(Value::as_str)
                .and_then(Channel::from_name),
            status,
            event_time: time_of(v, "event_time").expect("the schema requires event_time"),
            filed_at: time_of(v, "filed_at"),
            received_at: time_of(v, "received_at"),
            due_at: time_of(v, "due_at"),
            finished_at: time_of(v, "finished_at"),
            returned_at: time_of(v, "returned_at"),
            refused_at: time_of(v, "refused_at"),
            supplements,
            document_count: count("document_count"),
            result_document_count: count("result_document_count"),
            result_file_count: count("result_file_count"),
            flags: Flags {
                has_submitted_file: flag("has_submitted_file"),
                has_digitized_component: flag("has_digitized_component"),
                has_reused_component: flag("has_reused_component"),
                from_national_warehouse: flag("from_national_warehouse"),
                has_e_result: flag("has_e_result"),
                paid_online: flag("paid_online"),
                fee_bearing: flag("fee_bearing"),
            },
            applicant_type: obj
                .get("applicant_type")
                .and_then(Value::as_str)
                .and_then(ApplicantType::from_name),
            applicant_pseudonym: opt_str(obj, "applicant_pseudonym"),
            step_started_at: time_of(v, "step_started_at"),
            step_due_at: time_of(v, "step_due_at"),
        };
        // The schema checks the format; the range check is sohoa's own.
        for (k, t) in [
            ("event_time", Some(event.event_time)),
            ("due_at", event.due_at),
        ] {
            if let Some(t) = t {
                check_year(t).map_err(|r| loc.key(k).error(r))?;
            }
        }
        if let (Some(due), Some(received)) = (event.due_at, event.received_at) {
            if due < received {
                w.add(Warning::DueBeforeReceipt);
            }
        }
        Ok(event)
    }
}

impl Decoder for CanonicalDecoder {
    fn format(&self) -> DecoderKind {
        DecoderKind::Canonical
    }

    fn decode<'a>(&self, bytes: &'a [u8], out: &mut DecodeOutput<'a>) {
        let root = Loc::ROOT;
        let text = match super::utf8(bytes) {
            Ok(t) => t,
            Err(e) => return out.rejects.push(e),
        };
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return out.rejects.push(root.error(Reason::Syntax(e.to_string()))),
        };
        let mut push = |r: Result<DossierEvent<'static>, DecodeError>| match r {
            Ok(e) => out.events.push(e),
            Err(e) => out.rejects.push(e),
        };
        match &value {
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    push(self.one(v, &root.index(i), &mut out.warnings));
                }
            }
            v => {
                let r = self.one(v, &root, &mut out.warnings);
                push(r)
            }
        }
    }
}

fn str_of(obj: &Map<String, Value>, k: &str) -> String {
    obj.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn opt_str(obj: &Map<String, Value>, k: &str) -> Option<String> {
    obj.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn time_of(v: &Value, k: &str) -> Option<Micros> {
    let s = v.get(k)?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

fn check_year(t: Micros) -> Result<(), Reason> {
    use chrono::Datelike;
    let year = chrono::DateTime::from_timestamp_micros(t).map_or(0, |d| d.year());
    if (normalize::MIN_YEAR..=normalize::MAX_YEAR).contains(&year) {
        Ok(())
    } else {
        Err(Reason::DateOutOfRange {
            value: crate::event::format_micros(t),
            min: normalize::MIN_YEAR,
            max: normalize::MAX_YEAR,
        })
    }
}

/// `/supplements/0/requested_at` under `[3]` reads `[3].supplements[0].requested_at`.
fn pointer_to_path(prefix: &str, pointer: &str) -> String {
    let mut path = prefix.to_owned();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.bytes().all(|b| b.is_ascii_digit()) && !seg.is_empty() {
            path.push_str(&format!("[{seg}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&seg);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::pointer_to_path;

    #[test]
    fn json_pointers_become_dotted_paths() {
        assert_eq!(
            pointer_to_path("", "/supplements/0/requested_at"),
            "supplements[0].requested_at"
        );
        assert_eq!(pointer_to_path("[3]", "/status"), "[3].status");
        assert_eq!(pointer_to_path("", ""), "");
    }
}
