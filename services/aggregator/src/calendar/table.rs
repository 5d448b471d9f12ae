//! The holiday table's format (`config/calendar/vn-public-sector.toml`).
//!
//! One `[years.YYYY]` table per year with `days_off` (Monday–Friday dates only) and
//! `worked_saturdays` (both required, possibly empty), each entry `{ date, name }` with an
//! optional `decided` (the date the swap or day off was decided, when that was during the
//! year it changes), plus optional `notice`, `source_url` and `provisional` (why the year
//! is not final, for a year whose notice is not out). An optional top-level
//! `[culture_day]` table (`day_off`, `from_year`) makes 24 November a day off. Unknown keys
//! are errors. The years must be consecutive. Every date must belong to its year's key,
//! `days_off` must be weekdays, `worked_saturdays` Saturdays, no date may be in both lists,
//! and nothing may be decided after its date.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, Weekday};

use super::{is_weekend, CalendarError};

/// Keys of a `[years.YYYY]` table, and of each `{ date, name }` entry.
const YEAR_FIELDS: [&str; 5] = [
    "notice",
    "source_url",
    "provisional",
    "days_off",
    "worked_saturdays",
];
const YEAR_REQUIRED: [&str; 2] = ["days_off", "worked_saturdays"];
const ENTRY_FIELDS: [&str; 3] = ["date", "name", "decided"];
const ENTRY_REQUIRED: [&str; 2] = ["date", "name"];
const CULTURE_DAY_FIELDS: [&str; 2] = ["day_off", "from_year"];

/// One day off or worked Saturday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub date: NaiveDate,
    /// When it was decided, if the table says so.
    pub decided: Option<NaiveDate>,
}

/// One `[years.YYYY]` table.
#[derive(Debug, Clone, Default)]
pub(super) struct Year {
    pub off: Vec<Entry>,
    pub worked: Vec<Entry>,
    /// Why the year is provisional; `None` for a year with its notice.
    pub provisional: Option<String>,
}

/// The whole table: years never empty and consecutive.
#[derive(Debug, Clone, Default)]
pub(super) struct Table {
    pub years: BTreeMap<i32, Year>,
    /// The first year 24 November is a day off, when `[culture_day] day_off = true`.
    pub culture_day_from: Option<i32>,
}

/// Parse and check the table.
pub(super) fn parse(text: &str) -> Result<Table, CalendarError> {
    let mut top: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| CalendarError::Toml(e.to_string()))?;
    if let Some(key) = top.keys().find(|k| *k != "years" && *k != "culture_day") {
        return Err(CalendarError::UnknownTopLevelKey { key: key.clone() });
    }
    let culture_day_from = culture_day(top.remove("culture_day"))?;
    let years_table = match top.remove("years") {
        None => return Err(CalendarError::NoYears),
        Some(toml::Value::Table(t)) => t,
        Some(other) => {
            return Err(CalendarError::Toml(format!(
                "`years` must be a table of [years.YYYY] tables, got {}",
                other.type_str()
            )))
        }
    };

    let mut years: BTreeMap<i32, Year> = BTreeMap::new();
    for (key, value) in years_table {
        let year = parse_year_key(&key)?;
        // The table is read by hand rather than through serde: a value passed through
        // serde a second time loses its TOML date type, and serde's type errors do not
        // name the field.
        let toml::Value::Table(mut t) = value else {
            return Err(CalendarError::YearFields {
                year,
                message: format!("`years.{key}` must be a table, got {}", value.type_str()),
            });
        };
        check_keys(&t, &YEAR_FIELDS, &YEAR_REQUIRED)
            .map_err(|message| CalendarError::YearFields { year, message })?;
        // Provenance is for people; only its shape is checked.
        check_text(year, "notice", t.get("notice"))?;
        check_text(year, "source_url", t.get("source_url"))?;
        check_text(year, "provisional", t.get("provisional"))?;
        let provisional = t
            .get("provisional")
            .and_then(|v| v.as_str())
            .map(|s| s.trim().to_string());
        if provisional.as_deref() == Some("") {
            return Err(CalendarError::YearFields {
                year,
                message: "`provisional` must say why the year is not final".into(),
            });
        }
        let off = check_list(year, "days_off", t.remove("days_off"))?;
        let worked = check_list(year, "worked_saturdays", t.remove("worked_saturdays"))?;
        // Conflicts first: a date in both lists is the clearest diagnosis of either.
        if let Some(date) = off
            .iter()
            .map(|e| e.date)
            .find(|d| worked.iter().any(|w| w.date == *d))
        {
            return Err(CalendarError::OffAndWorked { year, date });
        }
        if let Some(date) = off.iter().map(|e| e.date).find(|d| is_weekend(*d)) {
            return Err(CalendarError::DayOffOnWeekend {
                year,
                date,
                weekday: date.weekday(),
            });
        }
        if let Some(date) = worked
            .iter()
            .map(|e| e.date)
            .find(|d| d.weekday() != Weekday::Sat)
        {
            return Err(CalendarError::NotSaturday {
                year,
                date,
                weekday: date.weekday(),
            });
        }
        years.insert(
            year,
            Year {
                off,
                worked,
                provisional,
            },
        );
    }

    let (&first_year, &last_year) = match (years.keys().next(), years.keys().next_back()) {
        (Some(f), Some(l)) => (f, l),
        _ => return Err(CalendarError::NoYears),
    };
    if let Some(missing) = (first_year..=last_year).find(|y| !years.contains_key(y)) {
        return Err(CalendarError::YearGap {
            first: first_year,
            last: last_year,
            missing,
        });
    }
    Ok(Table {
        years,
        culture_day_from,
    })
}

/// `[culture_day]`: `day_off` (true or false) and `from_year`; the first year 24 November
/// is a day off, or `None` when it is not one.
fn culture_day(value: Option<toml::Value>) -> Result<Option<i32>, CalendarError> {
    let bad = |message: String| CalendarError::CultureDay { message };
    let t = match value {
        None => return Ok(None),
        Some(toml::Value::Table(t)) => t,
        Some(other) => return Err(bad(format!("must be a table, got {}", other.type_str()))),
    };
    check_keys(&t, &CULTURE_DAY_FIELDS, &CULTURE_DAY_FIELDS).map_err(bad)?;
    let day_off = t["day_off"].as_bool().ok_or_else(|| {
        bad(format!(
            "`day_off` must be true or false, got {}",
            t["day_off"]
        ))
    })?;
    let from_year = t["from_year"]
        .as_integer()
        .and_then(|y| i32::try_from(y).ok())
        .filter(|y| (1000..=9999).contains(y))
        .ok_or_else(|| {
            bad(format!(
                "`from_year` must be a year, got {}",
                t["from_year"]
            ))
        })?;
    Ok(day_off.then_some(from_year))
}

fn parse_year_key(key: &str) -> Result<i32, CalendarError> {
    let bad = || CalendarError::BadYearKey { key: key.into() };
    if key.len() != 4 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    key.parse().map_err(|_| bad())
}

/// Rejects keys outside `allowed` and reports the first of `required` that is absent, in
/// serde's wording so both kinds of table read alike.
fn check_keys(t: &toml::Table, allowed: &[&str], required: &[&str]) -> Result<(), String> {
    if let Some(k) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
        let expected: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
        return Err(format!(
            "unknown field `{k}`, expected one of {}",
            expected.join(", ")
        ));
    }
    match required.iter().find(|r| !t.contains_key(**r)) {
        Some(r) => Err(format!("missing field `{r}`")),
        None => Ok(()),
    }
}

/// Checks a year's provenance fields are strings when present.
fn check_text(year: i32, field: &str, value: Option<&toml::Value>) -> Result<(), CalendarError> {
    match value {
        None | Some(toml::Value::String(_)) => Ok(()),
        Some(other) => Err(CalendarError::YearFields {
            year,
            message: format!("`{field}` must be a string, got {}", other.type_str()),
        }),
    }
}

/// Converts one list's entries to dates, checking each is a plain date of `year`, once.
fn check_list(
    year: i32,
    list: &'static str,
    value: Option<toml::Value>,
) -> Result<Vec<Entry>, CalendarError> {
    let fields = |message: String| CalendarError::YearFields { year, message };
    let entries = match value {
        Some(toml::Value::Array(entries)) => entries,
        Some(other) => {
            return Err(fields(format!(
                "`{list}` must be an array of {{ date, name }}, got {}",
                other.type_str()
            )))
        }
        None => return Err(fields(format!("missing field `{list}`"))),
    };
    let mut dates: Vec<Entry> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let at = |message: String| fields(format!("{list}[{index}]: {message}"));
        let toml::Value::Table(entry) = entry else {
            return Err(at(format!(
                "must be {{ date = YYYY-MM-DD, name = \"...\" }}, got {}",
                entry.type_str()
            )));
        };
        check_keys(entry, &ENTRY_FIELDS, &ENTRY_REQUIRED).map_err(at)?;
        let (date_value, name) = (&entry["date"], &entry["name"]);
        if !matches!(name, toml::Value::String(n) if !n.trim().is_empty()) {
            return Err(at(format!("`name` must be a non-empty string, got {name}")));
        }
        let not_a_date = || CalendarError::NotADate {
            year,
            list,
            index,
            value: date_value.to_string(),
        };
        let date = plain_date(date_value).ok_or_else(not_a_date)?;
        if date.year() != year {
            return Err(CalendarError::WrongYear { year, list, date });
        }
        if dates.iter().any(|e| e.date == date) {
            return Err(CalendarError::DuplicateDate { year, list, date });
        }
        let decided = match entry.get("decided") {
            None => None,
            Some(v) => Some(plain_date(v).ok_or_else(|| {
                at(format!(
                    "`decided` must be a plain date like 2024-04-12, got {v}"
                ))
            })?),
        };
        if let Some(decided) = decided.filter(|d| *d > date) {
            return Err(at(format!("decided on {decided}, after its date {date}")));
        }
        dates.push(Entry { date, decided });
    }
    Ok(dates)
}

/// A plain TOML date (no time, no offset).
fn plain_date(v: &toml::Value) -> Option<NaiveDate> {
    match v {
        toml::Value::Datetime(toml::value::Datetime {
            date: Some(d),
            time: None,
            offset: None,
        }) => NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day)),
        _ => None,
    }
}
