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

        // JSON Schema counts 10.0 as an integer, so integral floats pass validation: read
        // them as integers (with a warning) rather than as 0 or a panic.
        let status_code = int_of(&obj["status_code"], w).unwrap_or_default();
        let status = Status::from_code(status_code).ok_or_else(|| {
            loc.key("status_code").error(Reason::UnknownCode {
                value: status_code.to_string(),
                expected: "a status code (1 to 10)",
            })
        })?;
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
        let count = |k: &str, w: &mut Warnings| {
            int_of(&obj[k], w).map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
        };
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
            // The schema's date-time format and chrono's RFC 3339 parser may disagree on an
            // odd value: that is a bad date, never a panic.
            event_time: time_of(v, "event_time").ok_or_else(|| {
                loc.key("event_time")
                    .error(Reason::BadDate(str_of(obj, "event_time")))
            })?,
            filed_at: time_of(v, "filed_at"),
            received_at: time_of(v, "received_at"),
            due_at: time_of(v, "due_at"),
            finished_at: time_of(v, "finished_at"),
            returned_at: time_of(v, "returned_at"),
            refused_at: time_of(v, "refused_at"),
            supplements,
            document_count: count("document_count", w),
            result_document_count: count("result_document_count", w),
            result_file_count: count("result_file_count", w),
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
        // The schema checks the format; the range check is sohoa's own, on every time, as
        // the dvcqg decoder does: a received_at in 1900 would otherwise reach the
        // aggregator, whose calendar has no such year.
        for (k, t) in [
            ("event_time", Some(event.event_time)),
            ("filed_at", event.filed_at),
            ("received_at", event.received_at),
            ("due_at", event.due_at),
            ("finished_at", event.finished_at),
            ("returned_at", event.returned_at),
            ("refused_at", event.refused_at),
            ("step_started_at", event.step_started_at),
            ("step_due_at", event.step_due_at),
        ] {
            if let Some(t) = t {
                check_year(t).map_err(|r| loc.key(k).error(r))?;
            }
        }
        let supplements_loc = loc.key("supplements");
        for (i, s) in event.supplements.iter().enumerate() {
            let item = supplements_loc.index(i);
            for (k, t) in [
                ("requested_at", Some(s.requested_at)),
                ("completed_at", s.completed_at),
                ("due_before", s.due_before),
                ("due_after", s.due_after),
            ] {
                if let Some(t) = t {
                    check_year(t).map_err(|r| item.key(k).error(r))?;
                }
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
        match &value {
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let r = self.one(v, &root.index(i), &mut out.warnings);
                    out.push(r);
                }
            }
            v => {
                let r = self.one(v, &root, &mut out.warnings);
                out.push(r)
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

/// An integer the schema accepted: an integer, or a float with no fraction (JSON Schema's
/// `integer` includes 1.0), which is counted as coerced.
fn int_of(v: &Value, w: &mut Warnings) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        w.add(Warning::Coerced);
        Some(f as i64)
    } else {
        None
    }
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
    // The Vietnam-local year, as the dvcqg decoder checks it, so every event it accepts
    // (20000101050000 is still 1999 in UTC) decodes again here.
    let local = t.saturating_add(normalize::VN_OFFSET_SECS * 1_000_000);
    let year = chrono::DateTime::from_timestamp_micros(local).map_or(0, |d| d.year());
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
    use crate::decode::{DecodeOutput, Decoder};
    use crate::normalize::Warning;

    const ONE: &str = include_str!("../../../tests/fixtures/canonical/one-event.json");

    /// The sample event with `edit` applied, decoded.
    fn decode_edited(edit: impl FnOnce(&mut serde_json::Value)) -> DecodeOutput<'static> {
        let mut v: serde_json::Value = serde_json::from_str(ONE).unwrap();
        edit(&mut v);
        let bytes: &'static [u8] = Box::leak(v.to_string().into_bytes().into_boxed_slice());
        let mut out = DecodeOutput::default();
        super::CanonicalDecoder::new().decode(bytes, &mut out);
        out
    }

    #[test]
    fn integral_floats_are_integers_not_a_panic_nor_zero() {
        // Found by the bad-input corpus: JSON Schema's `integer` admits 10.0, which
        // panicked on status_code and was read as 0 for the counts.
        let out = decode_edited(|v| {
            v["status_code"] = serde_json::json!(10.0);
            v["document_count"] = serde_json::json!(3.0);
        });
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        assert_eq!(out.events[0].status.code(), 10);
        assert_eq!(out.events[0].document_count, 3);
        assert_eq!(out.warnings.get(Warning::Coerced), 2);
    }

    #[test]
    fn every_time_is_range_checked_not_only_event_time() {
        // Found by the bad-input corpus: a received_at in 1900 or a supplement in 2100
        // went through, while the dvcqg decoder rejects them.
        let out = decode_edited(|v| v["received_at"] = "1900-01-01T00:00:00Z".into());
        let kinds: Vec<_> = out.rejects.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            kinds,
            ["received_at: \"1900-01-01T00:00:00Z\" is outside the accepted years 2000-2099"]
        );
        let out = decode_edited(|v| {
            v["supplements"] = serde_json::json!([{"requested_at": "2100-01-01T00:00:00Z"}])
        });
        assert_eq!(out.rejects.len(), 1);
        assert_eq!(out.rejects[0].path, "supplements[0].requested_at");
        assert_eq!(out.rejects[0].kind(), "date_out_of_range");
        // The year is Vietnam's, as the dvcqg decoder reads it: 05:00 on 1 January 2000
        // in Vietnam is still 1999 in UTC, and accepted.
        let out = decode_edited(|v| v["filed_at"] = "1999-12-31T22:00:00Z".into());
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    }

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
