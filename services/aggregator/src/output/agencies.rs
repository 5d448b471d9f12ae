//! `handovers/`: one row per change of holder, for SQL that follows a dossier from agency
//! to agency; and `metrics/agencies.*`: the agency reference as a table to join names
//! and provinces from, with the feed's codes it lacks.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Int32Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use bytes::Bytes;

use super::{batch, csv_field, days, encode, strings, utc, DossierOut, OutputError};
use crate::agencies::Agencies;

/// The handover parts: shard `i` of `n` writes `handovers/part-<i>-of-<n>.parquet`.
pub fn handovers_path(index: u32, count: u32) -> String {
    format!("handovers/part-{index:05}-of-{count:05}.parquet")
}

/// `handovers/`: every as-was handover up to the clock's end, with the restated units on
/// either side (equal when the restated view has no handover there).
pub fn handovers_parquet(
    rows: &[DossierOut<'_>],
    agencies: &Agencies,
) -> Result<Bytes, OutputError> {
    let mut code = StringBuilder::new();
    let mut seq = Int32Builder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone(utc());
    let mut date = Date32Builder::new();
    let (mut from, mut to) = (StringBuilder::new(), StringBuilder::new());
    let (mut r_from, mut r_to) = (StringBuilder::new(), StringBuilder::new());
    let mut along = BooleanBuilder::new();
    for r in rows {
        let (was, now) = (&r.place.as_was, r.place.restated());
        let mut before = now.receiving;
        for h in &was.handovers {
            let after = now.holder_after(h.seq);
            code.append_value(r.code);
            seq.append_value(h.seq as i32);
            at.append_value(h.at);
            date.append_value(days(h.date));
            from.append_option(h.from.code(r.syms, agencies));
            to.append_option(h.to.code(r.syms, agencies));
            r_from.append_option(before.code(r.syms, agencies));
            r_to.append_option(after.code(r.syms, agencies));
            along.append_value(h.along);
            before = after;
        }
    }
    let a = |b: &mut dyn arrow::array::ArrayBuilder| b.finish();
    let b = batch(
        "handovers",
        vec![
            ("dossier_code", a(&mut code), false),
            ("handover_seq", a(&mut seq), false),
            ("handed_over_at", a(&mut at), false),
            ("handed_over_date", a(&mut date), false),
            ("from_agency_code", a(&mut from), true),
            ("to_agency_code", a(&mut to), true),
            ("restated_from_agency_code", a(&mut r_from), true),
            ("restated_to_agency_code", a(&mut r_to), true),
            ("along_successor_line", a(&mut along), false),
        ],
    )?;
    encode("handovers", &b)
}

/// The columns of `metrics/agencies.*`.
pub const AGENCY_COLUMNS: [&str; 13] = [
    "code",
    "name",
    "level",
    "province_code",
    "province_name",
    "valid_from",
    "valid_to",
    "successors",
    "current_code",
    "current_name",
    "in_reference",
    "illustrative",
    "source",
];

/// One row per entry of the reference (a code with versions has one per version), then
/// one per code of the feed the reference lacks, under the configured province.
struct AgencyRow {
    text: [Option<String>; 9],
    valid: [Option<chrono::NaiveDate>; 2],
    in_reference: bool,
    illustrative: bool,
}

fn agency_rows(agencies: &Agencies, unknown: &[String]) -> Vec<AgencyRow> {
    let default = agencies.default_province();
    let name = |id| Some(agencies.name(id).to_string());
    let code = |id| Some(agencies.code(id).to_string());
    let mut out: Vec<AgencyRow> = agencies
        .entries()
        .iter()
        .map(|e| {
            let id = agencies.id(&e.code);
            let province = agencies.province_of(id);
            let current = id.and_then(|id| agencies.fixed(id));
            let successors = e
                .successors
                .iter()
                .map(|s| {
                    let mut t = s.code.clone();
                    if let Some(share) = s.share {
                        let _ = write!(t, " share={share}");
                    }
                    if !s.fields.is_empty() {
                        let _ = write!(t, " fields={}", s.fields.join(","));
                    }
                    t
                })
                .collect::<Vec<_>>()
                .join("; ");
            AgencyRow {
                text: [
                    Some(e.code.clone()),
                    Some(e.name.clone()),
                    Some(e.level.as_str().to_string()),
                    province.and_then(code),
                    province.and_then(name),
                    (!successors.is_empty()).then_some(successors),
                    current.and_then(code),
                    current.and_then(name),
                    e.source.clone(),
                ],
                valid: [e.valid_from, e.valid_to],
                in_reference: true,
                illustrative: e.illustrative,
            }
        })
        .collect();
    out.extend(unknown.iter().map(|c| AgencyRow {
        text: [
            Some(c.clone()),
            None,
            None,
            default.and_then(code),
            default.and_then(name),
            None,
            Some(c.clone()),
            None,
            None,
        ],
        valid: [None, None],
        in_reference: false,
        illustrative: false,
    }));
    out
}

/// The text columns of [`AgencyRow::text`], in order.
const TEXT: [&str; 9] = [
    "code",
    "name",
    "level",
    "province_code",
    "province_name",
    "successors",
    "current_code",
    "current_name",
    "source",
];

/// `metrics/agencies.parquet`.
pub fn agencies_parquet(agencies: &Agencies, unknown: &[String]) -> Result<Bytes, OutputError> {
    let rows = agency_rows(agencies, unknown);
    let mut cols: Vec<(&str, ArrayRef, bool)> = Vec::new();
    for col in AGENCY_COLUMNS {
        let array: ArrayRef = match col {
            "valid_from" | "valid_to" => {
                let k = usize::from(col == "valid_to");
                let mut b = Date32Builder::new();
                rows.iter()
                    .for_each(|r| b.append_option(r.valid[k].map(days)));
                Arc::new(b.finish())
            }
            "in_reference" | "illustrative" => {
                let mut b = BooleanBuilder::new();
                for r in &rows {
                    b.append_value(if col == "in_reference" {
                        r.in_reference
                    } else {
                        r.illustrative
                    });
                }
                Arc::new(b.finish())
            }
            _ => {
                let k = TEXT.iter().position(|t| *t == col).expect("a text column");
                strings(rows.iter().map(|r| r.text[k].as_deref()))
            }
        };
        cols.push((col, array, col != "code"));
    }
    encode("agencies", &batch("agencies", cols)?)
}

/// `metrics/agencies.csv`: the same table.
pub fn agencies_csv(agencies: &Agencies, unknown: &[String]) -> String {
    let mut out = AGENCY_COLUMNS.join(",");
    out.push('\n');
    for r in agency_rows(agencies, unknown) {
        for (i, col) in AGENCY_COLUMNS.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match *col {
                "valid_from" => {
                    out.push_str(&r.valid[0].map(|d| d.to_string()).unwrap_or_default())
                }
                "valid_to" => out.push_str(&r.valid[1].map(|d| d.to_string()).unwrap_or_default()),
                "in_reference" => out.push_str(if r.in_reference { "true" } else { "false" }),
                "illustrative" => out.push_str(if r.illustrative { "true" } else { "false" }),
                _ => {
                    let k = TEXT.iter().position(|t| t == col).expect("a text column");
                    csv_field(&mut out, r.text[k].as_deref().unwrap_or(""));
                }
            }
        }
        out.push('\n');
    }
    out
}
