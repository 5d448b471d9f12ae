//! The calendar's arithmetic and the holiday table's checks.

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

    let e = table("[years.2025]\nnotice = 1\ndays_off = []\nworked_saturdays = []\n").unwrap_err();
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
