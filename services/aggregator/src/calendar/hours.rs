//! Office hours: the sessions of a working day, and the office time inside them.

use chrono::{NaiveTime, Timelike};

use super::{CalendarError, US_PER_SEC};

/// Office hours: the sessions of a working day, in Vietnam local time, sorted and not
/// overlapping. Working time only passes inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficeHours {
    sessions: Vec<(NaiveTime, NaiveTime)>,
    /// The sessions as µs since local midnight, for arithmetic.
    bounds_us: Vec<(i64, i64)>,
    /// Office time before each session starts, µs; `cum_us[i]` belongs to `bounds_us[i]`.
    cum_us: Vec<i64>,
    pub(super) day_us: i64,
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
    pub(super) fn before(&self, tod_us: i64) -> i64 {
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
    pub(super) fn instant_at(&self, target_us: i64) -> i64 {
        for (&(s, e), &cum) in self.bounds_us.iter().zip(&self.cum_us) {
            if target_us <= cum + (e - s) {
                return s + (target_us - cum);
            }
        }
        // Unreachable for target_us <= day_us; the closing time is the safe answer.
        self.bounds_us.last().map_or(0, |&(_, e)| e)
    }
}
