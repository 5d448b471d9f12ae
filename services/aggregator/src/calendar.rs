//! The working-day calendar of Vietnamese state agencies: which dates are working days,
//! how much office time lies between two instants, and due dates counted in working time
//! or calendar days.
//!
//! The days off come from a per-year table (`config/calendar/vn-public-sector.toml`),
//! never from rules: each year's Tết days and swaps are fixed by an official notice, and
//! the table already holds Art. 111(3)'s compensating days. A date in a year the table
//! does not cover is an error naming the year.
//!
//! Instants are `i64` microseconds since the Unix epoch, UTC. Vietnam is UTC+7 all year
//! (no daylight saving), so local dates and office hours use a fixed offset.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Weekday};

/// Vietnam's offset from UTC, in seconds (UTC+7, no daylight saving).
pub const VN_UTC_OFFSET_SECS: i64 = 7 * 3600;

const US_PER_SEC: i64 = 1_000_000;
const DAY_US: i64 = 86_400 * US_PER_SEC;
const OFFSET_US: i64 = VN_UTC_OFFSET_SECS * US_PER_SEC;

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
    /// The holiday table has a top-level key other than `years`.
    #[error("holiday table: unknown top-level key `{key}`; only [years.YYYY] tables are allowed")]
    UnknownTopLevelKey {
        /// The unexpected key.
        key: String,
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

/// Office hours: the sessions of a working day, in Vietnam local time, sorted and not
/// overlapping. Working time only passes inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficeHours {
    sessions: Vec<(NaiveTime, NaiveTime)>,
    /// The sessions as µs since local midnight, for arithmetic.
    bounds_us: Vec<(i64, i64)>,
    /// Office time before each session starts, µs; `cum_us[i]` belongs to `bounds_us[i]`.
    cum_us: Vec<i64>,
    day_us: i64,
}

impl Default for OfficeHours {
    /// 07:00–11:30 and 13:30–17:00, the hours one-stop shops commonly publish (8 h a day).
    fn default() -> OfficeHours {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN);
        OfficeHours::from_sessions(vec![(t(7, 0), t(11, 30)), (t(13, 30), t(17, 0))])
    }
}

impl OfficeHours {
    /// Parse sessions like `["07:00-11:30", "13:30-17:00"]` (local time, `HH:MM-HH:MM`,
    /// spaces allowed around the parts). Sessions must be given in order, each starting no
    /// earlier than the previous one ends; touching sessions are allowed. Errors name the
    /// bad entry by position and text.
    pub fn parse(sessions: &[String]) -> Result<OfficeHours, CalendarError> {
        if sessions.is_empty() {
            return Err(CalendarError::NoSessions);
        }
        let mut parsed: Vec<(NaiveTime, NaiveTime)> = Vec::with_capacity(sessions.len());
        for (index, entry) in sessions.iter().enumerate() {
            let bad = |reason: String| CalendarError::OfficeHours {
                index,
                entry: entry.clone(),
                reason,
            };
            let (a, b) = entry
                .split_once('-')
                .ok_or_else(|| bad("expected HH:MM-HH:MM".into()))?;
            let time = |s: &str| {
                NaiveTime::parse_from_str(s.trim(), "%H:%M")
                    .map_err(|_| bad(format!("{:?} is not a time HH:MM", s.trim())))
            };
            let (start, end) = (time(a)?, time(b)?);
            if start >= end {
                return Err(bad(format!("start {start} is not before end {end}")));
            }
            if let Some(&(_, prev_end)) = parsed.last() {
                if start < prev_end {
                    return Err(bad(format!(
                        "starts at {start}, before the previous session ends at {prev_end}"
                    )));
                }
            }
            parsed.push((start, end));
        }
        Ok(OfficeHours::from_sessions(parsed))
    }

    /// Builds the arithmetic tables from sessions already known to be valid.
    fn from_sessions(sessions: Vec<(NaiveTime, NaiveTime)>) -> OfficeHours {
        let us = |t: NaiveTime| {
            i64::from(t.num_seconds_from_midnight()) * US_PER_SEC
                + i64::from(t.nanosecond() / 1_000)
        };
        let bounds_us: Vec<(i64, i64)> = sessions.iter().map(|&(s, e)| (us(s), us(e))).collect();
        let mut cum_us = Vec::with_capacity(bounds_us.len());
        let mut total = 0;
        for &(s, e) in &bounds_us {
            cum_us.push(total);
            total += e - s;
        }
        OfficeHours {
            sessions,
            bounds_us,
            cum_us,
            day_us: total,
        }
    }

    /// The sessions, local time, sorted and non-overlapping.
    pub fn sessions(&self) -> &[(NaiveTime, NaiveTime)] {
        &self.sessions
    }

    /// Seconds of office time in one working day (28 800, i.e. 8 h, for the default hours).
    pub fn seconds_per_day(&self) -> i64 {
        self.day_us / US_PER_SEC
    }

    /// Office time in `[00:00, tod)` of a working day, µs; `tod` in `[0, DAY_US]`.
    fn before(&self, tod_us: i64) -> i64 {
        let mut acc = 0;
        for &(s, e) in &self.bounds_us {
            if tod_us <= s {
                break;
            }
            acc += tod_us.min(e) - s;
        }
        acc
    }

    /// The earliest time of day at which `target_us` (in `(0, day_us]`) of the day's office
    /// time has passed: always inside a session or at its end, never at the next opening.
    fn instant_at(&self, target_us: i64) -> i64 {
        for (&(s, e), &cum) in self.bounds_us.iter().zip(&self.cum_us) {
            if target_us <= cum + (e - s) {
                return s + (target_us - cum);
            }
        }
        // Unreachable for target_us <= day_us; the closing time is the safe answer.
        self.bounds_us.last().map_or(0, |&(_, e)| e)
    }
}

/// Keys of a `[years.YYYY]` table, and of each `{ date, name }` entry.
const YEAR_FIELDS: [&str; 4] = ["notice", "source_url", "days_off", "worked_saturdays"];
const YEAR_REQUIRED: [&str; 2] = ["days_off", "worked_saturdays"];
const ENTRY_FIELDS: [&str; 2] = ["date", "name"];

/// A working-day calendar: office hours plus, for every date of the years the holiday table
/// covers, whether it is a working day.
#[derive(Debug, Clone)]
pub struct Calendar {
    hours: OfficeHours,
    first_year: i32,
    last_year: i32,
    /// 1 January of `first_year`, as days since 1970-01-01.
    first_day: i64,
    /// One flag per date from 1 January of `first_year` to 31 December of `last_year`.
    working: Vec<bool>,
    /// `prefix[i]` = working days among the first `i` dates, so a span's count is a
    /// subtraction and the n-th working day after a date is a binary search.
    prefix: Vec<u32>,
}

impl Calendar {
    /// Parse the holiday table format of `config/calendar/vn-public-sector.toml`: one
    /// `[years.YYYY]` table per year with `days_off` (Monday–Friday dates only) and
    /// `worked_saturdays` (both required, possibly empty), each entry `{ date, name }`, plus
    /// optional `notice` and `source_url`. Unknown keys are errors. The years must be
    /// consecutive. Every date must belong to its year's key, `days_off` must be weekdays,
    /// `worked_saturdays` Saturdays, and no date may be in both lists.
    pub fn from_toml(text: &str, hours: OfficeHours) -> Result<Calendar, CalendarError> {
        let mut top: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| CalendarError::Toml(e.to_string()))?;
        if let Some(key) = top.keys().find(|k| *k != "years") {
            return Err(CalendarError::UnknownTopLevelKey { key: key.clone() });
        }
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

        let mut years: BTreeMap<i32, (Vec<NaiveDate>, Vec<NaiveDate>)> = BTreeMap::new();
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
            let off = check_list(year, "days_off", t.remove("days_off"))?;
            let worked = check_list(year, "worked_saturdays", t.remove("worked_saturdays"))?;
            // Conflicts first: a date in both lists is the clearest diagnosis of either.
            if let Some(&date) = off.iter().find(|d| worked.contains(d)) {
                return Err(CalendarError::OffAndWorked { year, date });
            }
            if let Some(&date) = off.iter().find(|d| is_weekend(**d)) {
                return Err(CalendarError::DayOffOnWeekend {
                    year,
                    date,
                    weekday: date.weekday(),
                });
            }
            if let Some(&date) = worked.iter().find(|d| d.weekday() != Weekday::Sat) {
                return Err(CalendarError::NotSaturday {
                    year,
                    date,
                    weekday: date.weekday(),
                });
            }
            years.insert(year, (off, worked));
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

        let jan1 = |y: i32| NaiveDate::from_ymd_opt(y, 1, 1);
        let (Some(start), Some(end)) = (jan1(first_year), jan1(last_year + 1)) else {
            return Err(CalendarError::BadYearKey {
                key: format!("{first_year}..{last_year}"),
            });
        };
        let len = usize::try_from((end - start).num_days()).unwrap_or(0);
        let mut working: Vec<bool> = start
            .iter_days()
            .take(len)
            .map(|d| !is_weekend(d))
            .collect();
        for (off, worked) in years.values() {
            for d in off {
                working[(*d - start).num_days() as usize] = false;
            }
            for d in worked {
                working[(*d - start).num_days() as usize] = true;
            }
        }
        let mut prefix = Vec::with_capacity(len + 1);
        let mut count = 0u32;
        prefix.push(0);
        for &w in &working {
            count += u32::from(w);
            prefix.push(count);
        }
        tracing::debug!(
            first_year,
            last_year,
            working_days = count,
            "holiday table loaded"
        );
        Ok(Calendar {
            hours,
            first_year,
            last_year,
            first_day: (start - unix_epoch()).num_days(),
            working,
            prefix,
        })
    }

    /// The holiday table shipped with sohoa (`config/calendar/vn-public-sector.toml`).
    pub fn embedded(hours: OfficeHours) -> Result<Calendar, CalendarError> {
        Calendar::from_toml(
            include_str!("../../../config/calendar/vn-public-sector.toml"),
            hours,
        )
    }

    /// The office hours working time is counted in.
    pub fn office_hours(&self) -> &OfficeHours {
        &self.hours
    }

    /// The years the table covers; always consecutive, since gaps are rejected at load.
    pub fn years(&self) -> RangeInclusive<i32> {
        self.first_year..=self.last_year
    }

    /// Whether `d` is a working day: Monday–Friday not in `days_off`, or a worked Saturday.
    /// A date outside the table's years is [`CalendarError::YearMissing`].
    pub fn is_working_day(&self, d: NaiveDate) -> Result<bool, CalendarError> {
        let day = (d - unix_epoch()).num_days();
        Ok(self.working[self.index(day)?])
    }

    /// The Vietnam local date of an instant (µs since the Unix epoch, UTC). Instants beyond
    /// chrono's date range saturate to `NaiveDate::MIN` / `NaiveDate::MAX`.
    pub fn local_date(us: i64) -> NaiveDate {
        match us
            .checked_add(OFFSET_US)
            .and_then(DateTime::from_timestamp_micros)
        {
            Some(t) => t.date_naive(),
            None if us < 0 => NaiveDate::MIN,
            None => NaiveDate::MAX,
        }
    }

    /// Office time, in whole seconds (rounded down), in `[from_us, to_us)`: its overlap with
    /// the office sessions of every working day. A dossier received after closing therefore
    /// starts counting the next working morning, and lunch breaks, weekends and days off
    /// never count. `to_us <= from_us` gives 0. The days of both ends must be in the table;
    /// the days in between are a prefix-sum subtraction, so the cost does not grow with the
    /// span.
    pub fn working_seconds(&self, from_us: i64, to_us: i64) -> Result<i64, CalendarError> {
        if to_us <= from_us {
            return Ok(0);
        }
        let (start_day, start_tod) = split_local(from_us)?;
        // The interval is half-open, so an end at midnight ends the previous day: a span
        // reaching exactly 1 January after the table's last year stays computable.
        let (end_day, end_tod) = split_local(to_us - 1)?;
        let end_tod = end_tod + 1;
        let si = self.index(start_day)?;
        let ei = self.index(end_day)?;
        let h = &self.hours;
        let us = if si == ei {
            if self.working[si] {
                h.before(end_tod) - h.before(start_tod)
            } else {
                0
            }
        } else {
            let first = if self.working[si] {
                h.day_us - h.before(start_tod)
            } else {
                0
            };
            let last = if self.working[ei] {
                h.before(end_tod)
            } else {
                0
            };
            let middle = i64::from(self.prefix[ei] - self.prefix[si + 1]) * h.day_us;
            first + middle + last
        };
        Ok(us / US_PER_SEC)
    }

    /// The earliest instant at which `secs` seconds of office time have passed since
    /// `from_us`, so that `working_seconds(from_us, result) == secs`. Starting outside
    /// office hours counts from the next session's opening; a count that runs out exactly
    /// at a closing time returns that closing time, not the next opening. `secs == 0`
    /// returns `from_us` unchanged (nothing to wait for, wherever it falls). For a due date
    /// of n working days: `add_working_seconds(received, n * seconds_per_day())`, which
    /// lands at the same time of day n working days later when received inside office
    /// hours. Negative `secs` is an error; so is a result past the table's last year.
    pub fn add_working_seconds(&self, from_us: i64, secs: i64) -> Result<i64, CalendarError> {
        if secs < 0 {
            return Err(CalendarError::Negative {
                what: "secs",
                value: secs,
            });
        }
        if secs == 0 {
            return Ok(from_us);
        }
        let overflow = CalendarError::Overflow {
            what: "secs",
            value: secs,
            from_us,
        };
        let mut remaining = secs.checked_mul(US_PER_SEC).ok_or(overflow)?;
        let (day, tod) = split_local(from_us)?;
        let i = self.index(day)?;
        let h = &self.hours;
        if self.working[i] {
            let used = h.before(tod);
            let available = h.day_us - used;
            if remaining <= available {
                return Ok(self.to_utc(i, h.instant_at(used + remaining)));
            }
            remaining -= available;
        }
        // `remaining` > 0 now: whole working days pass, then a part (in (0, day]) of one more.
        let full_days = (remaining - 1) / h.day_us;
        let last_part = remaining - full_days * h.day_us;
        let j = self.nth_working_day_from(i + 1, full_days + 1)?;
        Ok(self.to_utc(j, h.instant_at(last_part)))
    }

    /// `from_us` plus `days` calendar days (same local time of day), moved forward day by
    /// day to the first working day if it lands on a day off; the time of day is kept, so a
    /// rolled date is due at the hour it would have been due, not at the next opening.
    /// Only the landing date needs to be in the table. `days == 0` returns `from_us`
    /// unchanged, like `add_working_seconds` with 0; negative `days` is an error.
    pub fn add_calendar_days(&self, from_us: i64, days: i64) -> Result<i64, CalendarError> {
        if days < 0 {
            return Err(CalendarError::Negative {
                what: "days",
                value: days,
            });
        }
        if days == 0 {
            return Ok(from_us);
        }
        let overflow = CalendarError::Overflow {
            what: "days",
            value: days,
            from_us,
        };
        let landed = days
            .checked_mul(DAY_US)
            .and_then(|d| from_us.checked_add(d))
            .ok_or(overflow.clone())?;
        let (day, _) = split_local(landed)?;
        let i = self.index(day)?;
        let j = self.nth_working_day_from(i, 1)?;
        let shift = i64::try_from(j - i).map_err(|_| overflow.clone())? * DAY_US;
        landed.checked_add(shift).ok_or(overflow)
    }

    /// Position in `working` of a local day (days since 1970-01-01), or the missing year.
    fn index(&self, day: i64) -> Result<usize, CalendarError> {
        let offset = day - self.first_day;
        match usize::try_from(offset) {
            Ok(i) if i < self.working.len() => Ok(i),
            _ => Err(match year_of_day(day) {
                Some(year) => CalendarError::YearMissing { year },
                None => CalendarError::InstantOutOfRange {
                    us: day.saturating_mul(DAY_US).saturating_sub(OFFSET_US),
                },
            }),
        }
    }

    /// Index of the `n`-th (from 1) working day at or after index `from`.
    fn nth_working_day_from(&self, from: usize, n: i64) -> Result<usize, CalendarError> {
        let target = i64::from(self.prefix[from]) + n;
        let total = i64::from(self.prefix[self.working.len()]);
        if target > total {
            return Err(CalendarError::YearMissing {
                year: self.last_year + 1,
            });
        }
        // The smallest k with prefix[k] >= target has its working day at k - 1.
        Ok(self.prefix.partition_point(|&p| i64::from(p) < target) - 1)
    }

    /// The UTC instant of local time-of-day `tod_us` on the date at index `i`.
    fn to_utc(&self, i: usize, tod_us: i64) -> i64 {
        (self.first_day + i as i64) * DAY_US + tod_us - OFFSET_US
    }
}

fn unix_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN)
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// Splits an instant into its local day (days since 1970-01-01) and µs since local midnight.
fn split_local(us: i64) -> Result<(i64, i64), CalendarError> {
    let local = us
        .checked_add(OFFSET_US)
        .ok_or(CalendarError::InstantOutOfRange { us })?;
    Ok((local.div_euclid(DAY_US), local.rem_euclid(DAY_US)))
}

/// The year of a local day (days since 1970-01-01), if chrono can represent it.
fn year_of_day(day: i64) -> Option<i32> {
    let delta = chrono::TimeDelta::try_days(day)?;
    unix_epoch().checked_add_signed(delta).map(|d| d.year())
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
) -> Result<Vec<NaiveDate>, CalendarError> {
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
    let mut dates: Vec<NaiveDate> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let at = |message: String| fields(format!("{list}[{index}]: {message}"));
        let toml::Value::Table(entry) = entry else {
            return Err(at(format!(
                "must be {{ date = YYYY-MM-DD, name = \"...\" }}, got {}",
                entry.type_str()
            )));
        };
        check_keys(entry, &ENTRY_FIELDS, &ENTRY_FIELDS).map_err(at)?;
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
        let date = match date_value {
            toml::Value::Datetime(toml::value::Datetime {
                date: Some(d),
                time: None,
                offset: None,
            }) => NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
                .ok_or_else(not_a_date)?,
            _ => return Err(not_a_date()),
        };
        if date.year() != year {
            return Err(CalendarError::WrongYear { year, list, date });
        }
        if dates.contains(&date) {
            return Err(CalendarError::DuplicateDate { year, list, date });
        }
        dates.push(date);
    }
    Ok(dates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours() -> OfficeHours {
        OfficeHours::parse(&["07:00-11:30".to_string(), "13:30-17:00".to_string()]).unwrap()
    }

    fn cal() -> Calendar {
        Calendar::embedded(hours()).unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// µs since the epoch of a Vietnam local date and time.
    fn vn(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        date(y, m, d)
            .and_hms_opt(h, min, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
            - OFFSET_US
    }

    const H: i64 = 3600;

    /// A one-year table with the given body, for the validation tests.
    fn table(body: &str) -> Result<Calendar, CalendarError> {
        Calendar::from_toml(body, hours())
    }

    #[test]
    fn office_hours_parse_and_day_length() {
        let h = hours();
        assert_eq!(h.seconds_per_day(), 28_800);
        assert_eq!(h, OfficeHours::default());
        assert_eq!(h.sessions().len(), 2);
        let one = OfficeHours::parse(&[" 08:00 - 12:00 ".to_string()]).unwrap();
        assert_eq!(one.seconds_per_day(), 4 * H);
    }

    #[test]
    fn office_hours_errors_name_the_entry() {
        let e = OfficeHours::parse(&["07:00-11:30".into(), "13:30-1700".into()]).unwrap_err();
        assert!(
            matches!(e, CalendarError::OfficeHours { index: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("13:30-1700"), "{e}");
        let e = OfficeHours::parse(&["11:30-07:00".into()]).unwrap_err();
        assert!(e.to_string().contains("office_hours[0]"), "{e}");
        let e = OfficeHours::parse(&["07:00-12:00".into(), "11:00-17:00".into()]).unwrap_err();
        assert!(
            matches!(e, CalendarError::OfficeHours { index: 1, .. }),
            "{e}"
        );
        let e = OfficeHours::parse(&["07:00".into()]).unwrap_err();
        assert!(
            matches!(e, CalendarError::OfficeHours { index: 0, .. }),
            "{e}"
        );
        assert_eq!(OfficeHours::parse(&[]), Err(CalendarError::NoSessions));
    }

    #[test]
    fn embedded_table_covers_2022_to_2026() {
        assert_eq!(cal().years(), 2022..=2026);
    }

    #[test]
    fn working_days_2025() {
        let c = cal();
        // Tết Ất Tỵ: Monday 27 – Friday 31 January off; Friday 24 and Monday 3 Feb worked.
        assert_eq!(c.is_working_day(date(2025, 1, 24)), Ok(true));
        for d in 27..=31 {
            assert_eq!(c.is_working_day(date(2025, 1, d)), Ok(false), "Jan {d}");
        }
        assert_eq!(c.is_working_day(date(2025, 2, 3)), Ok(true));
        // The swap: Saturday 26 April worked, Friday 2 May off.
        assert_eq!(c.is_working_day(date(2025, 4, 26)), Ok(true));
        assert_eq!(c.is_working_day(date(2025, 5, 2)), Ok(false));
        // An ordinary Saturday and Sunday.
        assert_eq!(c.is_working_day(date(2025, 4, 19)), Ok(false));
        assert_eq!(c.is_working_day(date(2025, 4, 27)), Ok(false));
        // A plain Tuesday.
        assert_eq!(c.is_working_day(date(2025, 3, 4)), Ok(true));
    }

    #[test]
    fn year_outside_table_is_missing_never_guessed() {
        let c = cal();
        for y in [2021, 2027] {
            let e = c.is_working_day(date(y, 6, 2)).unwrap_err();
            assert_eq!(e, CalendarError::YearMissing { year: y });
            assert!(e.to_string().contains(&y.to_string()), "{e}");
        }
        assert_eq!(
            c.working_seconds(vn(2021, 12, 31, 8, 0), vn(2022, 1, 4, 8, 0)),
            Err(CalendarError::YearMissing { year: 2021 })
        );
        // 15 working days from mid-December 2026 run into 2027.
        assert_eq!(
            c.add_working_seconds(vn(2026, 12, 21, 8, 0), 15 * 28_800),
            Err(CalendarError::YearMissing { year: 2027 })
        );
    }

    #[test]
    fn local_date_uses_utc_plus_7() {
        // 2023-02-24 17:00 UTC is already Saturday 00:00 in Vietnam.
        let us = date(2023, 2, 24)
            .and_hms_opt(17, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        assert_eq!(Calendar::local_date(us), date(2023, 2, 25));
        assert_eq!(Calendar::local_date(us - 1), date(2023, 2, 24));
        assert_eq!(Calendar::local_date(i64::MAX), NaiveDate::MAX);
    }

    #[test]
    fn working_seconds_over_a_weekend() {
        // Friday 16:00 → Monday 08:00: Fri 16–17 plus Mon 07–08.
        let c = cal();
        assert_eq!(
            c.working_seconds(vn(2023, 2, 24, 16, 0), vn(2023, 2, 27, 8, 0)),
            Ok(2 * H)
        );
    }

    #[test]
    fn working_seconds_after_closing_starts_next_morning() {
        // Received Tuesday 18:00, ended Wednesday 09:00: only Wed 07–09 counts.
        let c = cal();
        assert_eq!(
            c.working_seconds(vn(2023, 2, 21, 18, 0), vn(2023, 2, 22, 9, 0)),
            Ok(2 * H)
        );
    }

    #[test]
    fn working_seconds_skips_lunch() {
        // 10:00 → 15:00 on one day: 10:00–11:30 and 13:30–15:00.
        let c = cal();
        assert_eq!(
            c.working_seconds(vn(2023, 2, 21, 10, 0), vn(2023, 2, 21, 15, 0)),
            Ok(3 * H)
        );
        // Entirely inside the lunch break.
        assert_eq!(
            c.working_seconds(vn(2023, 2, 21, 11, 45), vn(2023, 2, 21, 13, 15)),
            Ok(0)
        );
        // Reversed or empty intervals.
        assert_eq!(
            c.working_seconds(vn(2023, 2, 21, 15, 0), vn(2023, 2, 21, 10, 0)),
            Ok(0)
        );
    }

    #[test]
    fn working_seconds_across_tet_2023() {
        // Tết Quý Mão: off Friday 20 – Thursday 26 January 2023 (with the weekend 21–22).
        // Thursday 19 Jan 15:00 → Friday 27 Jan 09:00 is Thu 15–17 plus Fri 07–09.
        let c = cal();
        assert_eq!(
            c.working_seconds(vn(2023, 1, 19, 15, 0), vn(2023, 1, 27, 9, 0)),
            Ok(4 * H)
        );
        // Whole middle days count 8 h each: Mon 16 Jan 07:00 → Mon 30 Jan 07:00 holds
        // 16–19 Jan, 27 Jan (Friday) = 5 working days.
        assert_eq!(
            c.working_seconds(vn(2023, 1, 16, 7, 0), vn(2023, 1, 30, 7, 0)),
            Ok(5 * 28_800)
        );
    }

    #[test]
    fn working_seconds_ending_at_midnight_after_last_year() {
        let c = cal();
        // Thursday 31 Dec 2026 16:00 → 1 Jan 2027 00:00 local: only 2026 is needed.
        assert_eq!(
            c.working_seconds(vn(2026, 12, 31, 16, 0), vn(2027, 1, 1, 0, 0)),
            Ok(H)
        );
    }

    #[test]
    fn add_one_working_day_from_friday_afternoon() {
        // Friday 24 Feb 2023 16:00 + 8 h: Fri 16–17, Mon 07–11:30, Mon 13:30–16:00.
        let c = cal();
        let due = c
            .add_working_seconds(vn(2023, 2, 24, 16, 0), 28_800)
            .unwrap();
        assert_eq!(due, vn(2023, 2, 27, 16, 0));
        // The exact instant: Monday 27 Feb 2023 09:00 UTC.
        let utc = date(2023, 2, 27).and_hms_opt(9, 0, 0).unwrap().and_utc();
        assert_eq!(due, utc.timestamp_micros());
    }

    #[test]
    fn add_from_saturday_starts_monday_morning() {
        let c = cal();
        // Saturday 25 Feb 2023 10:00 + 1 h = Monday 08:00.
        assert_eq!(
            c.add_working_seconds(vn(2023, 2, 25, 10, 0), H),
            Ok(vn(2023, 2, 27, 8, 0))
        );
        // + 1 working day ends at Monday's closing, not Tuesday's opening.
        assert_eq!(
            c.add_working_seconds(vn(2023, 2, 25, 10, 0), 28_800),
            Ok(vn(2023, 2, 27, 17, 0))
        );
    }

    #[test]
    fn add_ends_at_closing_not_next_opening() {
        let c = cal();
        // Tuesday 07:00 + 4.5 h = 11:30, the end of the morning session.
        assert_eq!(
            c.add_working_seconds(vn(2023, 2, 21, 7, 0), 4 * H + 1800),
            Ok(vn(2023, 2, 21, 11, 30))
        );
        // During lunch + 1 h = 14:30.
        assert_eq!(
            c.add_working_seconds(vn(2023, 2, 21, 12, 0), H),
            Ok(vn(2023, 2, 21, 14, 30))
        );
    }

    #[test]
    fn add_zero_and_negative() {
        let c = cal();
        let sat = vn(2023, 2, 25, 10, 0);
        assert_eq!(c.add_working_seconds(sat, 0), Ok(sat));
        assert!(matches!(
            c.add_working_seconds(sat, -1),
            Err(CalendarError::Negative {
                what: "secs",
                value: -1
            })
        ));
        assert!(matches!(
            c.add_working_seconds(sat, i64::MAX),
            Err(CalendarError::Overflow { .. })
        ));
    }

    #[test]
    fn add_across_tet_2025() {
        let c = cal();
        // Thursday 23 Jan 2025 10:00 + 3 working days: the 1st ends Fri 24 Jan 10:00, the
        // 2nd Mon 3 Feb 10:00 (27–31 Jan off), the 3rd Tue 4 Feb 10:00.
        assert_eq!(
            c.add_working_seconds(vn(2025, 1, 23, 10, 0), 3 * 28_800),
            Ok(vn(2025, 2, 4, 10, 0))
        );
        // Received during Tết: counting starts Monday 3 Feb 07:00.
        assert_eq!(
            c.add_working_seconds(vn(2025, 1, 29, 9, 0), 2 * H),
            Ok(vn(2025, 2, 3, 9, 0))
        );
    }

    #[test]
    fn add_uses_worked_saturday_2025() {
        // Friday 25 Apr 2025 10:00 + 1 working day lands on the worked Saturday 26 Apr.
        let c = cal();
        assert_eq!(
            c.add_working_seconds(vn(2025, 4, 25, 10, 0), 28_800),
            Ok(vn(2025, 4, 26, 10, 0))
        );
        // Tuesday 29 Apr 10:00 + 1 working day: 30 Apr – 4 May off → Monday 5 May 10:00.
        assert_eq!(
            c.add_working_seconds(vn(2025, 4, 29, 10, 0), 28_800),
            Ok(vn(2025, 5, 5, 10, 0))
        );
    }

    #[test]
    fn add_then_measure_round_trips() {
        // From inside office hours, measuring up to the computed instant gives back the
        // duration, for a spread of starts across all years and durations up to 40 days.
        let c = cal();
        let starts_tod = [(7, 0), (8, 17), (11, 29), (13, 30), (16, 59)];
        let mut checked = 0;
        let mut day = date(2022, 1, 3);
        while day < date(2026, 10, 1) {
            if c.is_working_day(day).unwrap() {
                for &(h, m) in &starts_tod {
                    let from = vn(day.year(), day.month(), day.day(), h, m) + 123_456;
                    for secs in [
                        1,
                        59,
                        3_600,
                        16_200,
                        28_799,
                        28_800,
                        28_801,
                        100_000,
                        40 * 28_800,
                    ] {
                        let to = c.add_working_seconds(from, secs).unwrap();
                        assert!(to > from);
                        assert_eq!(
                            c.working_seconds(from, to),
                            Ok(secs),
                            "{day} {h}:{m} +{secs}"
                        );
                        // Earliest: one µs earlier, the duration has not yet passed.
                        assert_eq!(c.working_seconds(from, to - 1), Ok(secs - 1));
                        checked += 1;
                    }
                }
            }
            day = day + chrono::Days::new(3);
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn add_calendar_days_rolls_onto_a_working_day() {
        let c = cal();
        // Monday 13 Jan 2025 10:00 + 15 days = Tuesday 28 Jan (Tết) → Monday 3 Feb 10:00.
        assert_eq!(
            c.add_calendar_days(vn(2025, 1, 13, 10, 0), 15),
            Ok(vn(2025, 2, 3, 10, 0))
        );
        // Landing on a working day keeps date and time: Mon 3 Mar + 10 days = Thu 13 Mar.
        assert_eq!(
            c.add_calendar_days(vn(2025, 3, 3, 18, 30), 10),
            Ok(vn(2025, 3, 13, 18, 30))
        );
        // Landing on the worked Saturday 26 Apr 2025 stays there.
        assert_eq!(
            c.add_calendar_days(vn(2025, 4, 16, 9, 0), 10),
            Ok(vn(2025, 4, 26, 9, 0))
        );
        // Only the landing date needs the table: from 2021 into 2022 works.
        assert_eq!(
            c.add_calendar_days(vn(2021, 12, 28, 9, 0), 10),
            Ok(vn(2022, 1, 7, 9, 0))
        );
        assert_eq!(
            c.add_calendar_days(vn(2026, 12, 28, 9, 0), 10),
            Err(CalendarError::YearMissing { year: 2027 })
        );
        let t = vn(2025, 2, 1, 9, 0);
        assert_eq!(c.add_calendar_days(t, 0), Ok(t));
        assert!(c.add_calendar_days(t, -1).is_err());
    }

    #[test]
    fn table_validation_names_year_and_date() {
        let e = table(
            "[years.2025]\ndays_off = [{ date = 2024-12-31, name = \"x\" }]\nworked_saturdays = []\n",
        )
        .unwrap_err();
        assert!(
            matches!(e, CalendarError::WrongYear { year: 2025, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("2024-12-31"), "{e}");

        let e = table(
            "[years.2025]\ndays_off = []\nworked_saturdays = [{ date = 2025-04-27, name = \"x\" }]\n",
        )
        .unwrap_err();
        assert_eq!(
            e,
            CalendarError::NotSaturday {
                year: 2025,
                date: date(2025, 4, 27),
                weekday: Weekday::Sun
            }
        );

        let e = table(
            "[years.2025]\ndays_off = [{ date = 2025-04-26, name = \"x\" }]\nworked_saturdays = [{ date = 2025-04-26, name = \"y\" }]\n",
        )
        .unwrap_err();
        assert_eq!(
            e,
            CalendarError::OffAndWorked {
                year: 2025,
                date: date(2025, 4, 26)
            }
        );

        let e = table(
            "[years.2025]\ndays_off = [{ date = 2025-01-26, name = \"x\" }]\nworked_saturdays = []\n",
        )
        .unwrap_err();
        assert!(
            matches!(e, CalendarError::DayOffOnWeekend { year: 2025, .. }),
            "{e}"
        );

        let e = table(
            "[years.2025]\ndays_off = [{ date = 2025-01-27T00:00:00, name = \"x\" }]\nworked_saturdays = []\n",
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                CalendarError::NotADate {
                    year: 2025,
                    index: 0,
                    ..
                }
            ),
            "{e}"
        );
        let e = table(
            "[years.2025]\ndays_off = [{ date = \"2025-01-27\", name = \"x\" }]\nworked_saturdays = []\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("days_off[0]: date must be a plain date"),
            "{e}"
        );

        let e = table(
            "[years.2025]\ndays_off = [{ date = 2025-01-27, name = \"x\" }, { date = 2025-01-27, name = \"x\" }]\nworked_saturdays = []\n",
        )
        .unwrap_err();
        assert!(
            matches!(e, CalendarError::DuplicateDate { year: 2025, .. }),
            "{e}"
        );
    }

    #[test]
    fn table_structure_errors() {
        let e = table("[years.2025]\ndays_off = []\nworked_saturday = []\n").unwrap_err();
        assert!(
            matches!(e, CalendarError::YearFields { year: 2025, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("worked_saturday"), "{e}");

        let e = table("[years.2025]\ndays_off = []\n").unwrap_err();
        assert!(e.to_string().contains("worked_saturdays"), "{e}");

        let e = table("[years.2025]\ndays_off = [{ date = 2025-01-27 }]\nworked_saturdays = []\n")
            .unwrap_err();
        assert!(
            e.to_string().contains("days_off[0]: missing field `name`"),
            "{e}"
        );

        let e = table("[years.2025]\ndays_off = 3\nworked_saturdays = []\n").unwrap_err();
        assert!(e.to_string().contains("`days_off` must be an array"), "{e}");

        let e =
            table("[years.2025]\nnotice = 1\ndays_off = []\nworked_saturdays = []\n").unwrap_err();
        assert!(e.to_string().contains("`notice` must be a string"), "{e}");

        let e = table("[years.25]\ndays_off = []\nworked_saturdays = []\n").unwrap_err();
        assert_eq!(e, CalendarError::BadYearKey { key: "25".into() });

        let e = table(
            "[years.2024]\ndays_off = []\nworked_saturdays = []\n[years.2026]\ndays_off = []\nworked_saturdays = []\n",
        )
        .unwrap_err();
        assert_eq!(
            e,
            CalendarError::YearGap {
                first: 2024,
                last: 2026,
                missing: 2025
            }
        );

        assert_eq!(table("").err(), Some(CalendarError::NoYears));
        assert!(matches!(
            table("[holidays]\n"),
            Err(CalendarError::UnknownTopLevelKey { .. })
        ));
        assert!(matches!(
            table("[years.2025\n"),
            Err(CalendarError::Toml(_))
        ));
    }

    #[test]
    fn minimal_table_counts_weekdays() {
        // A year with no days off: Mon 6 Jan 2025 07:00 → Mon 13 Jan 07:00 = 5 days.
        let c = table("[years.2025]\ndays_off = []\nworked_saturdays = []\n").unwrap();
        assert_eq!(c.years(), 2025..=2025);
        assert_eq!(
            c.working_seconds(vn(2025, 1, 6, 7, 0), vn(2025, 1, 13, 7, 0)),
            Ok(5 * 28_800)
        );
        assert_eq!(c.is_working_day(date(2025, 1, 29)), Ok(true));
    }
}
