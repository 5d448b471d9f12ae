//! The working-day calendar of Vietnamese state agencies: which dates are working days,
//! how much office time lies between two instants, and due dates counted in working time
//! or calendar days.
//!
//! The days off come from a per-year table (`config/calendar/vn-public-sector.toml`),
//! never from rules: each year's Tết days and swaps are fixed by an official notice, and
//! the table already holds Art. 111(3)'s compensating days. A date in a year the table
//! does not cover is an error naming the year; the rules set such a dossier aside rather
//! than stop. A year without its notice is marked provisional, and a day decided during
//! the year is left out of [`Calendar::known_on`] before its decision.
//!
//! Instants are `i64` microseconds since the Unix epoch, UTC. Vietnam is UTC+7 all year
//! (no daylight saving), so local dates and office hours use a fixed offset.

mod error;
mod hours;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use chrono::{DateTime, Datelike, NaiveDate, Weekday};

pub use error::CalendarError;
pub use hours::OfficeHours;

/// Vietnam's offset from UTC, in seconds (UTC+7, no daylight saving).
pub const VN_UTC_OFFSET_SECS: i64 = 7 * 3600;

const US_PER_SEC: i64 = 1_000_000;
const DAY_US: i64 = 86_400 * US_PER_SEC;
const OFFSET_US: i64 = VN_UTC_OFFSET_SECS * US_PER_SEC;

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
    /// Years whose notice is not out, and why.
    provisional: BTreeMap<i32, String>,
    /// The table as it stood before each date something in it was decided (ascending):
    /// what a due date given before that decision was computed with.
    earlier: Vec<(NaiveDate, Calendar)>,
}

impl Calendar {
    /// Parse the holiday table format of `config/calendar/vn-public-sector.toml` (see
    /// [`table`] for its rules) and lay out its working days.
    pub fn from_toml(text: &str, hours: OfficeHours) -> Result<Calendar, CalendarError> {
        let t = table::parse(text)?;
        let mut decisions: Vec<NaiveDate> = t
            .years
            .values()
            .flat_map(|y| y.off.iter().chain(&y.worked))
            .filter_map(|e| e.decided)
            .collect();
        decisions.sort_unstable();
        decisions.dedup();
        let mut earlier = Vec::with_capacity(decisions.len());
        for &d in &decisions {
            // Known before `d`: what had been decided by the day before.
            let known = |e: &table::Entry| e.decided.is_none_or(|x| x < d);
            earlier.push((d, Calendar::layout(&t, hours.clone(), known)?));
        }
        let mut cal = Calendar::layout(&t, hours, |_| true)?;
        cal.earlier = earlier;
        cal.provisional = t
            .years
            .iter()
            .filter_map(|(y, v)| v.provisional.clone().map(|p| (*y, p)))
            .collect();
        tracing::debug!(
            first_year = cal.first_year,
            last_year = cal.last_year,
            working_days = cal.prefix.last().copied().unwrap_or(0),
            provisional = ?cal.provisional.keys().collect::<Vec<_>>(),
            decisions = decisions.len(),
            "holiday table loaded"
        );
        Ok(cal)
    }

    /// The working days of `t`, with the entries `keep` accepts.
    fn layout(
        t: &table::Table,
        hours: OfficeHours,
        keep: impl Fn(&table::Entry) -> bool,
    ) -> Result<Calendar, CalendarError> {
        let (&first_year, &last_year) = match (t.years.keys().next(), t.years.keys().next_back()) {
            (Some(f), Some(l)) => (f, l),
            _ => return Err(CalendarError::NoYears),
        };
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
        let at = |d: NaiveDate| (d - start).num_days() as usize;
        for y in t.years.values() {
            for e in y.off.iter().filter(|e| keep(e)) {
                working[at(e.date)] = false;
            }
            for e in y.worked.iter().filter(|e| keep(e)) {
                working[at(e.date)] = true;
            }
        }
        if let Some(from) = t.culture_day_from {
            for year in from.max(first_year)..=last_year {
                // A holiday on a weekly rest day is taken on the next working day
                // (Labour Code 2019, Art. 111(3)): the Monday after.
                let Some(mut d) = NaiveDate::from_ymd_opt(year, 11, 24) else {
                    continue;
                };
                while is_weekend(d) {
                    d = d.succ_opt().unwrap_or(d);
                }
                working[at(d)] = false;
            }
        }
        let mut prefix = Vec::with_capacity(len + 1);
        let mut count = 0u32;
        prefix.push(0);
        for &w in &working {
            count += u32::from(w);
            prefix.push(count);
        }
        Ok(Calendar {
            hours,
            first_year,
            last_year,
            first_day: (start - unix_epoch()).num_days(),
            working,
            prefix,
            provisional: BTreeMap::new(),
            earlier: Vec::new(),
        })
    }

    /// The table as it stood on `d`: without what was decided after it. A due date given
    /// on `d` was computed with it; working time that really passed is counted with the
    /// whole table (`self`).
    pub fn known_on(&self, d: NaiveDate) -> &Calendar {
        self.earlier
            .iter()
            .find(|(decided, _)| *decided > d)
            .map_or(self, |(_, c)| c)
    }

    /// The years whose notice is not out yet, and why: their working days may change.
    pub fn provisional_years(&self) -> &BTreeMap<i32, String> {
        &self.provisional
    }

    /// The holiday table shipped with sohoa (`config/calendar/vn-public-sector.toml`).
    pub fn embedded(hours: OfficeHours) -> Result<Calendar, CalendarError> {
        Calendar::from_toml(
            include_str!("../../../../config/calendar/vn-public-sector.toml"),
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
