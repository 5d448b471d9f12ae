//! The reference file's three spellings (TOML, CSV, Parquet) read into one list of
//! entries, each field checked and every mistake named with the entry's place and code.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use chrono::NaiveDate;

use super::{AgencyError, Entry, Level, Successor};

/// The fields an entry may have; `code`, `name` and `level` are required.
pub const FIELDS: [&str; 9] = [
    "code",
    "name",
    "level",
    "province",
    "valid_from",
    "valid_to",
    "successors",
    "illustrative",
    "source",
];

/// One entry as the file spells it, before its values are checked.
#[derive(Default)]
struct Raw {
    at: String,
    code: Option<String>,
    name: Option<String>,
    level: Option<String>,
    province: Option<String>,
    valid_from: Option<String>,
    valid_to: Option<String>,
    /// Successors already split into code and options.
    successors: Vec<Successor>,
    illustrative: Option<bool>,
    source: Option<String>,
}

/// Codes are matched as the decoder writes them: trimmed and upper-cased.
pub fn normalise(code: &str) -> String {
    code.trim().to_uppercase()
}

fn entry_error(at: &str, code: Option<&str>, message: String) -> AgencyError {
    AgencyError::Entry {
        at: at.to_string(),
        code: code.unwrap_or_default().to_string(),
        message,
    }
}

impl Raw {
    fn bad(&self, message: String) -> AgencyError {
        entry_error(&self.at, self.code.as_deref(), message)
    }

    /// Set a text field from the file; empty text counts as absent.
    fn set(&mut self, field: &str, value: String) -> Result<(), String> {
        let value = value.trim().to_string();
        if value.is_empty() {
            return Ok(());
        }
        let slot = match field {
            "code" => &mut self.code,
            "name" => &mut self.name,
            "level" => &mut self.level,
            "province" => &mut self.province,
            "valid_from" => &mut self.valid_from,
            "valid_to" => &mut self.valid_to,
            "source" => &mut self.source,
            "illustrative" => {
                self.illustrative = Some(match value.to_lowercase().as_str() {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => {
                        return Err(format!(
                            "`illustrative` must be true or false, got {value:?}"
                        ))
                    }
                });
                return Ok(());
            }
            "successors" => {
                self.successors = successors_text(&value)?;
                return Ok(());
            }
            other => return Err(format!("unknown field `{other}`")),
        };
        *slot = Some(value);
        Ok(())
    }

    fn check(self) -> Result<Entry, AgencyError> {
        let required = |v: &Option<String>, field: &str| {
            v.clone()
                .ok_or_else(|| self.bad(format!("`{field}` is missing or empty")))
        };
        let code = normalise(&required(&self.code, "code")?);
        if code.contains(char::is_whitespace) {
            return Err(self.bad(format!("`code` {code:?} contains whitespace")));
        }
        let name = required(&self.name, "name")?;
        let level = required(&self.level, "level")?;
        let level = Level::parse(&level).ok_or_else(|| {
            self.bad(format!(
                "`level` {level:?} is not one of {}",
                Level::ALL.map(|l| format!("{:?}", l.as_str())).join(", ")
            ))
        })?;
        let date = |v: &Option<String>, field: &str| -> Result<Option<NaiveDate>, AgencyError> {
            v.as_deref()
                .map(|s| {
                    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                        self.bad(format!("`{field}` {s:?} is not a date (YYYY-MM-DD)"))
                    })
                })
                .transpose()
        };
        let (valid_from, valid_to) = (
            date(&self.valid_from, "valid_from")?,
            date(&self.valid_to, "valid_to")?,
        );
        if let (Some(f), Some(t)) = (valid_from, valid_to) {
            if t < f {
                return Err(self.bad(format!("`valid_to` {t} is before `valid_from` {f}")));
            }
        }
        let province = self.province.as_deref().map(normalise);
        if level == Level::Province && province.as_ref().is_some_and(|p| *p != code) {
            return Err(self.bad(
                "a province-level entry is its own province: leave `province` out".to_string(),
            ));
        }
        check_successors(&code, &self.successors).map_err(|m| self.bad(m))?;
        if !self.successors.is_empty() && valid_to.is_none() {
            return Err(self.bad(
                "`successors` without `valid_to`: an agency is succeeded when it ends".into(),
            ));
        }
        Ok(Entry {
            at: self.at,
            code,
            name,
            level,
            province,
            valid_from,
            valid_to,
            successors: self.successors,
            illustrative: self.illustrative.unwrap_or(false),
            source: self.source,
        })
    }
}

/// The successors of one entry must say how a dossier picks one: at most one successor
/// takes the fields no other one lists, or several share them with shares that add up
/// to 1; a field is listed once; a successor with fields has no share.
fn check_successors(code: &str, successors: &[Successor]) -> Result<(), String> {
    let mut fields = BTreeSet::new();
    let mut codes = BTreeSet::new();
    for s in successors {
        if !codes.insert(s.code.as_str()) {
            return Err(format!("successor {:?} is listed twice", s.code));
        }
        if s.code == code {
            return Err("an agency cannot succeed itself".into());
        }
        if !s.fields.is_empty() && s.share.is_some() {
            return Err(format!(
                "successor {:?} has both `fields` and `share`: it takes its fields whole",
                s.code
            ));
        }
        for f in &s.fields {
            if !fields.insert(f.as_str()) {
                return Err(format!("field {f:?} goes to two successors"));
            }
        }
        if let Some(share) = s.share {
            if !(share > 0.0 && share <= 1.0) {
                return Err(format!(
                    "successor {:?}: `share` must be above 0 and at most 1, got {share}",
                    s.code
                ));
            }
        }
    }
    let rest: Vec<&Successor> = successors.iter().filter(|s| s.fields.is_empty()).collect();
    match rest.as_slice() {
        [] if !successors.is_empty() => Err(
            "every successor lists `fields`: one must take the dossiers of the other fields"
                .into(),
        ),
        [] => Ok(()),
        [one] if one.share.is_some_and(|s| s < 1.0) => Err(format!(
            "successor {:?} is the only one for the other fields, so it takes them all: drop its share",
            one.code
        )),
        [_] => Ok(()),
        several => {
            if let Some(s) = several.iter().find(|s| s.share.is_none()) {
                return Err(format!(
                    "successor {:?} needs a `share`: the dossiers of a split agency are shared out",
                    s.code
                ));
            }
            let total: f64 = several.iter().filter_map(|s| s.share).sum();
            if (total - 1.0).abs() > 1e-9 {
                return Err(format!("the shares add up to {total}, not 1"));
            }
            Ok(())
        }
    }
}

/// Successors in the CSV and Parquet spelling: `CODE`, `CODE share=0.4` or
/// `CODE fields=LDVL,BTXH`, separated by `;`.
fn successors_text(text: &str) -> Result<Vec<Successor>, String> {
    let mut out = Vec::new();
    for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let mut words = item.split_whitespace();
        let code = normalise(words.next().unwrap_or_default());
        let mut s = Successor {
            code,
            share: None,
            fields: Vec::new(),
        };
        for w in words {
            match w.split_once('=') {
                Some(("share", v)) => {
                    s.share = Some(v.parse().map_err(|_| {
                        format!("successor {:?}: share {v:?} is not a number", s.code)
                    })?)
                }
                Some(("fields", v)) => {
                    s.fields = v
                        .split(',')
                        .map(normalise)
                        .filter(|f| !f.is_empty())
                        .collect()
                }
                _ => {
                    return Err(format!(
                        "successor {item:?}: {w:?} is neither share=<fraction> nor fields=<codes>"
                    ))
                }
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// The `[[agencies]]` tables of a TOML file.
pub fn toml_entries(text: &str) -> Result<Vec<Entry>, AgencyError> {
    let file: toml::Table = toml::from_str(text).map_err(|e| AgencyError::File(e.to_string()))?;
    if let Some(k) = file.keys().find(|k| *k != "agencies") {
        return Err(AgencyError::File(format!(
            "unknown top-level key `{k}`: the file holds `[[agencies]]` tables"
        )));
    }
    let Some(list) = file.get("agencies") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| AgencyError::File("`agencies` must be a list of tables".into()))?;
    list.iter()
        .enumerate()
        .map(|(i, v)| toml_entry(format!("agencies[{i}]"), v))
        .collect()
}

fn toml_entry(at: String, v: &toml::Value) -> Result<Entry, AgencyError> {
    let code = v.get("code").and_then(|c| c.as_str());
    let bad = |m: String| entry_error(&at, code, m);
    let table = v
        .as_table()
        .ok_or_else(|| bad("an entry must be a table".into()))?;
    let mut raw = Raw {
        at: at.clone(),
        ..Raw::default()
    };
    for (k, v) in table {
        let text = match (k.as_str(), v) {
            ("successors", v) => {
                raw.successors = toml_successors(v).map_err(&bad)?;
                continue;
            }
            ("illustrative", toml::Value::Boolean(b)) => {
                raw.illustrative = Some(*b);
                continue;
            }
            ("illustrative", v) => {
                return Err(bad(format!(
                    "`illustrative` must be true or false, got {v}"
                )))
            }
            (_, toml::Value::String(s)) => s.clone(),
            ("valid_from" | "valid_to", toml::Value::Datetime(d)) => d.to_string(),
            (k, v) if FIELDS.contains(&k) => {
                return Err(bad(format!("`{k}` must be text, got {v}")))
            }
            (k, _) => return Err(bad(format!("unknown field `{k}`"))),
        };
        raw.set(k, text).map_err(&bad)?;
    }
    raw.check()
}

/// `successors = ["CODE", { code = "CODE", share = 0.4 }, { code = "CODE", fields = [...] }]`.
fn toml_successors(v: &toml::Value) -> Result<Vec<Successor>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("`successors` must be a list, got {v}"))?;
    list.iter()
        .map(|s| match s {
            toml::Value::String(code) => Ok(Successor {
                code: normalise(code),
                share: None,
                fields: Vec::new(),
            }),
            toml::Value::Table(t) => {
                if let Some(k) = t
                    .keys()
                    .find(|k| !["code", "share", "fields"].contains(&k.as_str()))
                {
                    return Err(format!("successor: unknown field `{k}`"));
                }
                let code = t
                    .get("code")
                    .and_then(|c| c.as_str())
                    .ok_or("a successor table needs `code` as text")?;
                let share = match t.get("share") {
                    None => None,
                    Some(toml::Value::Float(f)) => Some(*f),
                    Some(toml::Value::Integer(i)) => Some(*i as f64),
                    Some(other) => {
                        return Err(format!(
                            "successor {code:?}: `share` must be a number, got {other}"
                        ))
                    }
                };
                let fields = match t.get("fields") {
                    None => Vec::new(),
                    Some(toml::Value::Array(a)) => a
                        .iter()
                        .map(|f| {
                            f.as_str().map(normalise).ok_or(format!(
                                "successor {code:?}: `fields` must be a list of codes"
                            ))
                        })
                        .collect::<Result<_, _>>()?,
                    Some(other) => {
                        return Err(format!(
                            "successor {code:?}: `fields` must be a list of codes, got {other}"
                        ))
                    }
                };
                Ok(Successor {
                    code: normalise(code),
                    share,
                    fields,
                })
            }
            other => Err(format!("a successor is a code or a table, got {other}")),
        })
        .collect()
}

/// A CSV file with a header row naming the columns (any order; `code`, `name` and
/// `level` required).
pub fn csv_entries(data: &[u8]) -> Result<Vec<Entry>, AgencyError> {
    let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(data);
    let header: Vec<String> = r
        .headers()
        .map_err(|e| AgencyError::File(format!("CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    check_columns(&header)?;
    let mut out = Vec::new();
    for record in r.records() {
        let record = record.map_err(|e| AgencyError::File(format!("CSV: {e}")))?;
        let line = record.position().map_or(0, |p| p.line());
        let values = record.iter().map(|v| Some(v.to_string())).collect();
        out.push(row_entry(format!("line {line}"), &header, values)?);
    }
    Ok(out)
}

fn check_columns(header: &[String]) -> Result<(), AgencyError> {
    if let Some(c) = header.iter().find(|c| !FIELDS.contains(&c.as_str())) {
        return Err(AgencyError::File(format!(
            "unknown column `{c}`; the columns are {}",
            FIELDS.join(", ")
        )));
    }
    for required in ["code", "name", "level"] {
        if !header.iter().any(|c| c == required) {
            return Err(AgencyError::File(format!("no `{required}` column")));
        }
    }
    Ok(())
}

fn row_entry(
    at: String,
    header: &[String],
    values: Vec<Option<String>>,
) -> Result<Entry, AgencyError> {
    let code = header
        .iter()
        .position(|c| c == "code")
        .and_then(|i| values.get(i).cloned().flatten());
    let mut raw = Raw {
        at,
        code: code.clone(),
        ..Raw::default()
    };
    for (col, v) in header.iter().zip(values) {
        if let Some(v) = v {
            raw.set(col, v).map_err(|m| raw.bad(m))?;
        }
    }
    raw.check()
}

/// A Parquet file with the CSV's columns: text, dates (or text) and a boolean
/// `illustrative` (or text).
pub fn parquet_entries(data: bytes::Bytes) -> Result<Vec<Entry>, AgencyError> {
    let bad = |e: String| AgencyError::File(format!("Parquet: {e}"));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .and_then(|b| b.build())
        .map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let header: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        check_columns(&header)?;
        let columns = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8).map_err(|e| bad(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            let values = columns
                .iter()
                .map(|c| {
                    let s = c.as_string::<i32>();
                    s.is_valid(i).then(|| s.value(i).to_string())
                })
                .collect();
            out.push(row_entry(format!("row {}", out.len()), &header, values)?);
        }
    }
    Ok(out)
}
