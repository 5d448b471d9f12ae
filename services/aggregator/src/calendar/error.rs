//! Why office hours, a holiday table or a calendar computation was rejected.

use chrono::{NaiveDate, Weekday};

/// Why office hours, a holiday table or a calendar computation was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// An office-hours session is malformed, empty, out of order or overlapping.
    #[error("office_hours[{index}] = {entry:?}: {reason}")]
    OfficeHours {
        /// Position of the session in the list, from 0.
        index: usize,
        /// The session as given.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The office-hours list has no session, so no working time could ever pass.
    #[error("office_hours: at least one session (like \"07:00-11:30\") is needed")]
    NoSessions,
    /// The holiday table is not valid TOML.
    #[error("holiday table: {0}")]
    Toml(String),
    /// The holiday table has a top-level key other than `years` and `culture_day`.
    #[error("holiday table: unknown top-level key `{key}`; only [years.YYYY] tables and [culture_day] are allowed")]
    UnknownTopLevelKey {
        /// The unexpected key.
        key: String,
    },
    /// The `[culture_day]` table is malformed; `message` names the field.
    #[error("holiday table, [culture_day]: {message}")]
    CultureDay {
        /// What is wrong, naming the field.
        message: String,
    },
    /// The holiday table has no `[years.YYYY]` table at all.
    #[error("holiday table: no [years.YYYY] table")]
    NoYears,
    /// A key under `years` is not a four-digit year.
    #[error("holiday table: `years.{key}` is not a year")]
    BadYearKey {
        /// The key as written.
        key: String,
    },
    /// A year's table or one of its entries does not have the expected fields (unknown,
    /// missing or mistyped field); `message` names the field and, for an entry, its list
    /// and position.
    #[error("holiday table, year {year}: {message}")]
    YearFields {
        /// The `[years.YYYY]` key.
        year: i32,
        /// The parser's description, naming the field.
        message: String,
    },
    /// An entry's `date` is not a plain TOML date: a string, a number, or a date-time with a
    /// time or an offset.
    #[error("holiday table, year {year}, {list}[{index}]: date must be a plain date like 2025-01-27, got {value}")]
    NotADate {
        /// The `[years.YYYY]` key.
        year: i32,
        /// `days_off` or `worked_saturdays`.
        list: &'static str,
        /// Position in the list, from 0.
        index: usize,
        /// The value as written.
        value: String,
    },
    /// A date is listed under another year's key.
    #[error("holiday table, year {year}, {list}: {date} is not in {year}")]
    WrongYear {
        /// The `[years.YYYY]` key.
        year: i32,
        /// `days_off` or `worked_saturdays`.
        list: &'static str,
        /// The offending date.
        date: NaiveDate,
    },
    /// A `worked_saturdays` date is not a Saturday.
    #[error("holiday table, year {year}, worked_saturdays: {date} is a {weekday}, not a Saturday")]
    NotSaturday {
        /// The `[years.YYYY]` key.
        year: i32,
        /// The offending date.
        date: NaiveDate,
        /// Its actual weekday.
        weekday: Weekday,
    },
    /// A `days_off` date falls on a weekend, which is off anyway: the table must list the
    /// compensating weekday instead, so a weekend entry hides a missing day off.
    #[error("holiday table, year {year}, days_off: {date} is a {weekday}; list only Monday–Friday dates (for a holiday on a weekend, list its compensating weekday)")]
    DayOffOnWeekend {
        /// The `[years.YYYY]` key.
        year: i32,
        /// The offending date.
        date: NaiveDate,
        /// Its actual weekday.
        weekday: Weekday,
    },
    /// A date is both a day off and a worked Saturday.
    #[error("holiday table, year {year}: {date} is both in days_off and in worked_saturdays")]
    OffAndWorked {
        /// The `[years.YYYY]` key.
        year: i32,
        /// The offending date.
        date: NaiveDate,
    },
    /// A date appears twice in the same list.
    #[error("holiday table, year {year}, {list}: {date} is listed twice")]
    DuplicateDate {
        /// The `[years.YYYY]` key.
        year: i32,
        /// `days_off` or `worked_saturdays`.
        list: &'static str,
        /// The repeated date.
        date: NaiveDate,
    },
    /// The table's years are not consecutive.
    #[error("holiday table: covers {first}–{last} but year {missing} is missing")]
    YearGap {
        /// First year in the table.
        first: i32,
        /// Last year in the table.
        last: i32,
        /// The first year absent in between.
        missing: i32,
    },
    /// A computation needs a year the table does not cover.
    #[error("year {year} is not in the holiday table; add its days off from the official notice")]
    YearMissing {
        /// The year needed.
        year: i32,
    },
    /// An instant lies beyond the dates chrono can represent.
    #[error("instant {us} µs since the Unix epoch is outside the representable dates")]
    InstantOutOfRange {
        /// The instant, µs since the Unix epoch, UTC.
        us: i64,
    },
    /// A duration argument is negative.
    #[error("{what} must not be negative, got {value}")]
    Negative {
        /// Which argument.
        what: &'static str,
        /// The value given.
        value: i64,
    },
    /// Adding a duration to an instant overflows an `i64` of microseconds.
    #[error("{what} = {value} added to instant {from_us} µs overflows")]
    Overflow {
        /// Which argument.
        what: &'static str,
        /// The value given.
        value: i64,
        /// The starting instant.
        from_us: i64,
    },
}
