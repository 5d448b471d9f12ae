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
fn embedded_table_covers_2022_to_2027_with_2027_provisional() {
    let c = cal();
    assert_eq!(c.years(), 2022..=2027);
    let provisional: Vec<i32> = c.provisional_years().keys().copied().collect();
    assert_eq!(provisional, [2027]);
    assert!(c.provisional_years()[&2027].contains("Tết"));
}

#[test]
fn provisional_2027_holds_the_fixed_holidays_only() {
    let c = cal();
    // 1 Jan (Friday), Hùng Kings (Friday 16 Apr), 30 Apr (Friday), 1 May on a Saturday
    // so Monday 3 May, 2 Sep (Thursday).
    for (m, d) in [(1, 1), (4, 16), (4, 30), (5, 3), (9, 2)] {
        assert_eq!(c.is_working_day(date(2027, m, d)), Ok(false), "{m}-{d}");
    }
    // The day next to 2 September is left to the notice, and so is Tết.
    for (m, d) in [(9, 1), (9, 3), (2, 5), (2, 8), (2, 9)] {
        assert_eq!(c.is_working_day(date(2027, m, d)), Ok(true), "{m}-{d}");
    }
}

#[test]
fn a_swap_decided_during_the_year_applies_to_due_dates_given_after_it() {
    // The 2024 swap (Monday 29 April off, Saturday 4 May worked) was decided on 12 April.
    let c = cal();
    let before = c.known_on(date(2024, 4, 10));
    assert_eq!(before.is_working_day(date(2024, 4, 29)), Ok(true));
    assert_eq!(before.is_working_day(date(2024, 5, 4)), Ok(false));
    for on in [date(2024, 4, 12), date(2024, 6, 1)] {
        assert_eq!(c.known_on(on).is_working_day(date(2024, 4, 29)), Ok(false));
        assert_eq!(c.known_on(on).is_working_day(date(2024, 5, 4)), Ok(true));
    }
    // Received Wednesday 10 April 2024 10:00, 12 working days: Monday 29 April 10:00 as
    // the table stood then; the whole table would say Thursday 2 May.
    let received = vn(2024, 4, 10, 10, 0);
    assert_eq!(
        before.add_working_seconds(received, 12 * 28_800),
        Ok(vn(2024, 4, 29, 10, 0))
    );
    assert_eq!(
        c.add_working_seconds(received, 12 * 28_800),
        Ok(vn(2024, 5, 2, 10, 0))
    );
    // The 2026 New Year swap was decided on 25 December 2025.
    assert_eq!(
        c.known_on(date(2025, 12, 20))
            .is_working_day(date(2026, 1, 2)),
        Ok(true)
    );
    assert_eq!(
        c.known_on(date(2025, 12, 25))
            .is_working_day(date(2026, 1, 2)),
        Ok(false)
    );
}

#[test]
fn culture_day_is_off_only_when_switched_on() {
    let body = |on: bool| {
        format!(
            "[culture_day]\nday_off = {on}\nfrom_year = 2026\n\
             [years.2025]\ndays_off = []\nworked_saturdays = []\n\
             [years.2026]\ndays_off = []\nworked_saturdays = []\n\
             [years.2027]\ndays_off = []\nworked_saturdays = []\n"
        )
    };
    let off = table(&body(false)).unwrap();
    assert_eq!(off.is_working_day(date(2026, 11, 24)), Ok(true));
    let on = table(&body(true)).unwrap();
    // Tuesday 24 Nov 2026 and Wednesday 24 Nov 2027 off; 2025 is before from_year.
    assert_eq!(on.is_working_day(date(2026, 11, 24)), Ok(false));
    assert_eq!(on.is_working_day(date(2027, 11, 24)), Ok(false));
    assert_eq!(on.is_working_day(date(2025, 11, 24)), Ok(true));
    // The shipped table leaves it off: its passage into law was not confirmed.
    assert_eq!(cal().is_working_day(date(2026, 11, 24)), Ok(true));
    let e = table("[culture_day]\nday_off = \"yes\"\nfrom_year = 2026\n[years.2026]\ndays_off = []\nworked_saturdays = []\n")
        .unwrap_err();
    assert!(
        e.to_string().contains("`day_off` must be true or false"),
        "{e}"
    );
    let e = table(
        "[culture_day]\nday_off = true\n[years.2026]\ndays_off = []\nworked_saturdays = []\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("missing field `from_year`"), "{e}");
}

#[test]
fn a_weekend_culture_day_is_taken_the_monday_after() {
    // 24 November 2029 is a Saturday.
    let body = "[culture_day]\nday_off = true\nfrom_year = 2029\n\
                [years.2029]\ndays_off = []\nworked_saturdays = []\n";
    let c = table(body).unwrap();
    assert_eq!(c.is_working_day(date(2029, 11, 26)), Ok(false));
    assert_eq!(c.is_working_day(date(2029, 11, 23)), Ok(true));
}

#[test]
fn decided_and_provisional_are_checked() {
    let e = table("[years.2024]\ndays_off = [{ date = 2024-04-29, name = \"x\", decided = 2024-05-01 }]\nworked_saturdays = []\n")
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("days_off[0]: decided on 2024-05-01, after its date 2024-04-29"),
        "{e}"
    );
    let e = table("[years.2024]\ndays_off = [{ date = 2024-04-29, name = \"x\", decided = \"April\" }]\nworked_saturdays = []\n")
        .unwrap_err();
    assert!(
        e.to_string().contains("`decided` must be a plain date"),
        "{e}"
    );
    let e = table("[years.2027]\nprovisional = \" \"\ndays_off = []\nworked_saturdays = []\n")
        .unwrap_err();
    assert!(e.to_string().contains("`provisional` must say why"), "{e}");
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
    for y in [2021, 2028] {
        let e = c.is_working_day(date(y, 6, 2)).unwrap_err();
        assert_eq!(e, CalendarError::YearMissing { year: y });
        assert!(e.to_string().contains(&y.to_string()), "{e}");
    }
    assert_eq!(
        c.working_seconds(vn(2021, 12, 31, 8, 0), vn(2022, 1, 4, 8, 0)),
        Err(CalendarError::YearMissing { year: 2021 })
    );
    // 15 working days from mid-December 2027 run into 2028.
    assert_eq!(
        c.add_working_seconds(vn(2027, 12, 20, 8, 0), 15 * 28_800),
        Err(CalendarError::YearMissing { year: 2028 })
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
    // Friday 31 Dec 2027 16:00 → 1 Jan 2028 00:00 local: only 2027 is needed.
    assert_eq!(
        c.working_seconds(vn(2027, 12, 31, 16, 0), vn(2028, 1, 1, 0, 0)),
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
        c.add_calendar_days(vn(2027, 12, 28, 9, 0), 10),
        Err(CalendarError::YearMissing { year: 2028 })
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
