//! The procedure catalogue: reference data, maintained by the province, giving each
//! administrative procedure's statutory processing time and whether its result is a
//! document. It supplies due dates for dossiers that arrive without one, and the
//! denominators of indicators 4.1/4.2.
//!
//! Format: `config/procedures.toml`, one `[[procedures]]` table per procedure with exactly
//! `code`, `name`, `statutory`, `unit` and `result_is_document`.

use std::collections::HashMap;

use serde::Deserialize;

use crate::calendar::{Calendar, CalendarError};

/// Why a catalogue was rejected. Errors about one entry name its position in the
/// `[[procedures]]` list (from 0) and, when it has one, its code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The file is not valid TOML, or its top level is not `procedures = [...]`.
    #[error("procedure catalogue: {0}")]
    Toml(String),
    /// One entry is malformed: unknown, missing or mistyped field, or an invalid value.
    #[error("procedure catalogue, procedures[{index}]{}: {message}", code_suffix(.code))]
    Entry {
        /// Position in the `[[procedures]]` list, from 0.
        index: usize,
        /// The entry's code as written, when it has a string one.
        code: Option<String>,
        /// What is wrong, naming the field.
        message: String,
    },
    /// Two entries have the same code (after trimming and upper-casing).
    #[error("procedure catalogue: code `{code}` appears twice, at procedures[{first}] and procedures[{second}]")]
    DuplicateCode {
        /// The normalised code.
        code: String,
        /// Position of its first occurrence.
        first: usize,
        /// Position of the repeat.
        second: usize,
    },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref()
        .map(|c| format!(" (code {c:?})"))
        .unwrap_or_default()
}

/// How a procedure's statutory time is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Working days of office time (`seconds_per_day` each), skipping days off.
    WorkingDays,
    /// Calendar days, the last one moved forward to a working day if it is a day off.
    CalendarDays,
    /// Hours of office time.
    WorkingHours,
}

impl TimeUnit {
    /// The spelling used in the catalogue file: `working_days`, `calendar_days`,
    /// `working_hours`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::WorkingDays => "working_days",
            TimeUnit::CalendarDays => "calendar_days",
            TimeUnit::WorkingHours => "working_hours",
        }
    }

    fn parse(s: &str) -> Option<TimeUnit> {
        [
            TimeUnit::WorkingDays,
            TimeUnit::CalendarDays,
            TimeUnit::WorkingHours,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
    }
}

/// One administrative procedure of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Procedure {
    /// MaTTHC, trimmed and upper-cased.
    pub code: String,
    /// The procedure's name, trimmed.
    pub name: String,
    /// Statutory processing time in `unit`s; at least 1.
    pub statutory: u32,
    /// How `statutory` is counted.
    pub unit: TimeUnit,
    /// Whether the result is a document (indicators 4.1/4.2 count only those).
    pub result_is_document: bool,
}

impl Procedure {
    /// The statutory due instant (µs since the Unix epoch, UTC) of a dossier received at
    /// `received_us`: `statutory` working days of office time, working hours, or calendar
    /// days rolled onto a working day, through `cal`. Received outside office hours, the
    /// working-time units start counting at the next session's opening.
    pub fn due_from(&self, received_us: i64, cal: &Calendar) -> Result<i64, CalendarError> {
        let n = i64::from(self.statutory);
        match self.unit {
            TimeUnit::WorkingDays => {
                cal.add_working_seconds(received_us, n * cal.office_hours().seconds_per_day())
            }
            TimeUnit::WorkingHours => cal.add_working_seconds(received_us, n * 3600),
            TimeUnit::CalendarDays => cal.add_calendar_days(received_us, n),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRaw {
    procedures: Vec<toml::Table>,
}

/// One entry as written. Values stay untyped so that a wrong type is reported with its
/// field's name, which serde's own message would leave out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcedureRaw {
    code: toml::Value,
    name: toml::Value,
    statutory: toml::Value,
    unit: toml::Value,
    result_is_document: toml::Value,
}

/// A string field, trimmed and non-empty.
fn text<'a>(field: &str, v: &'a toml::Value) -> Result<&'a str, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("`{field}` must be a string, got {v}"))?
        .trim();
    if s.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    Ok(s)
}

impl ProcedureRaw {
    fn check(&self) -> Result<Procedure, String> {
        let code = normalise(text("code", &self.code)?);
        if code.contains(char::is_whitespace) {
            return Err(format!("`code` {code:?} contains whitespace"));
        }
        let statutory = self
            .statutory
            .as_integer()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                format!(
                    "`statutory` must be a whole number >= 1 (a same-day procedure is 1 \
                     working day), got {}",
                    self.statutory
                )
            })?;
        let unit = text("unit", &self.unit)?;
        let unit = TimeUnit::parse(unit).ok_or_else(|| {
            format!(
                "`unit` {unit:?} is not one of \"working_days\", \"calendar_days\", \"working_hours\""
            )
        })?;
        let result_is_document = self.result_is_document.as_bool().ok_or_else(|| {
            format!(
                "`result_is_document` must be true or false, got {}",
                self.result_is_document
            )
        })?;
        Ok(Procedure {
            code,
            name: text("name", &self.name)?.to_string(),
            statutory,
            unit,
            result_is_document,
        })
    }
}

/// The procedure catalogue, in file order, looked up by code.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    procedures: Vec<Procedure>,
    by_code: HashMap<String, usize>,
}

impl Catalog {
    /// Parse the `config/procedures.toml` format. The top level must be exactly
    /// `procedures` (possibly empty); each entry exactly the five fields, `code` and
    /// `name` non-empty after trimming, `statutory` at least 1 (write a same-day procedure
    /// as 1 working day, or in hours), `unit` one of `working_days`, `calendar_days`,
    /// `working_hours`. Codes are trimmed and upper-cased, and must be unique.
    pub fn from_toml(text: &str) -> Result<Catalog, CatalogError> {
        let file: FileRaw = toml::from_str(text).map_err(|e| CatalogError::Toml(e.to_string()))?;
        let mut catalog = Catalog::empty();
        for (index, table) in file.procedures.into_iter().enumerate() {
            let code = table
                .get("code")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let bad = |message: String| CatalogError::Entry {
                index,
                code: code.clone(),
                message,
            };
            let raw: ProcedureRaw = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| bad(e.message().trim().to_string()))?;
            let procedure = raw.check().map_err(bad)?;
            if let Some(&first) = catalog.by_code.get(&procedure.code) {
                return Err(CatalogError::DuplicateCode {
                    code: procedure.code,
                    first,
                    second: index,
                });
            }
            catalog.by_code.insert(procedure.code.clone(), index);
            catalog.procedures.push(procedure);
        }
        tracing::debug!(procedures = catalog.len(), "procedure catalogue loaded");
        Ok(catalog)
    }

    /// The catalogue shipped with sohoa (`config/procedures.toml`; illustrative codes).
    pub fn embedded() -> Result<Catalog, CatalogError> {
        Catalog::from_toml(include_str!("../../../config/procedures.toml"))
    }

    /// A catalogue with no procedures: every lookup misses.
    pub fn empty() -> Catalog {
        Catalog::default()
    }

    /// The procedure with this code. The code is matched as the catalogue stores it,
    /// trimmed and upper-cased, so `" 1.001193 "` finds `1.001193`.
    pub fn get(&self, code: &str) -> Option<&Procedure> {
        // Codes from events are usually already clean; normalise (and allocate) only on a miss.
        let i = match self.by_code.get(code) {
            Some(&i) => i,
            None => {
                let clean = normalise(code);
                if clean == code {
                    return None;
                }
                *self.by_code.get(&clean)?
            }
        };
        self.procedures.get(i)
    }

    /// Number of procedures.
    pub fn len(&self) -> usize {
        self.procedures.len()
    }

    /// Whether the catalogue has no procedures.
    pub fn is_empty(&self) -> bool {
        self.procedures.is_empty()
    }

    /// The procedures in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Procedure> {
        self.procedures.iter()
    }
}

fn normalise(code: &str) -> String {
    code.trim().to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{OfficeHours, VN_UTC_OFFSET_SECS};
    use chrono::NaiveDate;

    fn cal() -> Calendar {
        Calendar::embedded(OfficeHours::default()).unwrap()
    }

    /// µs since the epoch of a Vietnam local date and time.
    fn vn(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
            - VN_UTC_OFFSET_SECS * 1_000_000
    }

    fn procedure(code: &str, statutory: u32, unit: TimeUnit) -> Procedure {
        Procedure {
            code: code.into(),
            name: "test".into(),
            statutory,
            unit,
            result_is_document: true,
        }
    }

    const ENTRY: &str = "[[procedures]]\ncode = \"1.000001\"\nname = \"A\"\nstatutory = 3\nunit = \"working_days\"\nresult_is_document = true\n";

    #[test]
    fn embedded_catalogue_loads() {
        let c = Catalog::embedded().unwrap();
        assert!(c.len() >= 15, "{}", c.len());
        assert!(!c.is_empty());
        let birth = c.get("1.001193").unwrap();
        assert_eq!(birth.name, "Đăng ký khai sinh");
        assert_eq!((birth.statutory, birth.unit), (1, TimeUnit::WorkingDays));
        assert!(birth.result_is_document);
        // The file covers every unit and both kinds of result.
        for unit in [
            TimeUnit::WorkingDays,
            TimeUnit::CalendarDays,
            TimeUnit::WorkingHours,
        ] {
            assert!(c.iter().any(|p| p.unit == unit), "{}", unit.as_str());
        }
        assert!(c.iter().any(|p| !p.result_is_document));
        assert_eq!(c.iter().count(), c.len());
    }

    #[test]
    fn codes_are_trimmed_and_upper_cased() {
        let c = Catalog::from_toml(&ENTRY.replace("\"1.000001\"", "\" 1.000001a \"")).unwrap();
        let p = c.get("1.000001A").unwrap();
        assert_eq!(p.code, "1.000001A");
        assert_eq!(c.get(" 1.000001a"), Some(p));
        assert_eq!(c.get("1.000002"), None);
        assert_eq!(Catalog::empty().get("1.000001A"), None);
        assert!(Catalog::empty().is_empty());
    }

    #[test]
    fn unknown_field_is_named() {
        let text = format!(
            "{ENTRY}{}",
            ENTRY.replace("000001", "000002") + "colour = \"red\"\n"
        );
        let e = Catalog::from_toml(&text).unwrap_err();
        assert!(matches!(e, CatalogError::Entry { index: 1, .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("colour") && msg.contains("1.000002"), "{msg}");
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        let e = Catalog::from_toml(&ENTRY.replace("statutory = 3\n", "")).unwrap_err();
        assert!(e.to_string().contains("statutory"), "{e}");
        let e = Catalog::from_toml(&ENTRY.replace("statutory = 3", "statutory = -3")).unwrap_err();
        assert!(matches!(e, CatalogError::Entry { index: 0, .. }), "{e}");
        assert!(e.to_string().contains("`statutory`"), "{e}");
        let e = Catalog::from_toml(&ENTRY.replace("= true", "= \"yes\"")).unwrap_err();
        assert!(e.to_string().contains("`result_is_document`"), "{e}");
        let e = Catalog::from_toml(&ENTRY.replace("statutory = 3", "statutory = 0")).unwrap_err();
        assert!(e.to_string().contains("statutory"), "{e}");
        let e = Catalog::from_toml(&ENTRY.replace("working_days", "days")).unwrap_err();
        assert!(e.to_string().contains("`unit` \"days\""), "{e}");
        let e = Catalog::from_toml(&ENTRY.replace("\"1.000001\"", "\"  \"")).unwrap_err();
        assert!(e.to_string().contains("`code` is empty"), "{e}");
        let e = Catalog::from_toml(&ENTRY.replace("[[procedures]]", "[[procedure]]")).unwrap_err();
        assert!(
            matches!(e, CatalogError::Toml(_)) && e.to_string().contains("procedure"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_code_is_an_error() {
        let text = format!("{ENTRY}{}", ENTRY.replace("\"1.000001\"", "\"1.000001 \""));
        assert_eq!(
            Catalog::from_toml(&text).unwrap_err(),
            CatalogError::DuplicateCode {
                code: "1.000001".into(),
                first: 0,
                second: 1
            }
        );
    }

    #[test]
    fn due_from_working_days() {
        // Land-use transfer, 10 working days, received Thursday 23 Jan 2025 10:00: Tết
        // (27–31 Jan) is skipped, so the 10th working day ends Thursday 13 Feb 10:00.
        let p = procedure("1.005194", 10, TimeUnit::WorkingDays);
        assert_eq!(
            p.due_from(vn(2025, 1, 23, 10, 0), &cal()),
            Ok(vn(2025, 2, 13, 10, 0))
        );
    }

    #[test]
    fn due_from_working_hours() {
        // Certified copy, 2 working hours, received Friday 24 Feb 2023 16:00: Fri 16–17 and
        // Mon 07–08.
        let p = procedure("2.000815", 2, TimeUnit::WorkingHours);
        assert_eq!(
            p.due_from(vn(2023, 2, 24, 16, 0), &cal()),
            Ok(vn(2023, 2, 27, 8, 0))
        );
    }

    #[test]
    fn due_from_calendar_days() {
        // Judicial record, 10 days, received Friday 17 Jan 2025 09:00: 27 Jan is in Tết,
        // so it rolls to Monday 3 Feb 09:00.
        let p = procedure("2.000488", 10, TimeUnit::CalendarDays);
        assert_eq!(
            p.due_from(vn(2025, 1, 17, 9, 0), &cal()),
            Ok(vn(2025, 2, 3, 9, 0))
        );
        // Received Monday 3 Mar 2025: Thursday 13 Mar is a working day, kept as is.
        assert_eq!(
            p.due_from(vn(2025, 3, 3, 9, 0), &cal()),
            Ok(vn(2025, 3, 13, 9, 0))
        );
    }

    #[test]
    fn due_from_outside_table_is_an_error() {
        let p = procedure("1.001193", 1, TimeUnit::WorkingDays);
        assert_eq!(
            p.due_from(vn(2021, 6, 1, 9, 0), &cal()),
            Err(CalendarError::YearMissing { year: 2021 })
        );
    }
}
