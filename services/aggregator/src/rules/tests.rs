//! The README's worked examples ("The 766 rules"), one test each.
use super::*;
use crate::calendar::OfficeHours;
use crate::fold::FLAG_HAS_RESULT_DOCUMENT;
use crate::fold::{EventKey, Supplement, FLAG_E_RESULT, FLAG_SUBMITTED_FILE};

/// Vietnam local time to UTC µs.
fn vn(s: &str) -> i64 {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    (t.and_utc().timestamp() - 7 * 3600) * 1_000_000
}

fn cal() -> Calendar {
    let hours =
        OfficeHours::parse(&["07:00-11:30".to_string(), "13:30-17:00".to_string()]).unwrap();
    Calendar::embedded(hours).unwrap()
}

struct Case {
    fact: Fact,
    syms: Interner,
}

fn case(procedure: &str, status: i8, received: &str, due: Option<&str>) -> Case {
    let mut syms = Interner::default();
    let fact = Fact {
        snapshot: Some(EventKey::default()),
        status,
        procedure: syms.intern(Some(procedure)),
        received_at: Some(vn(received)),
        due_at: due.map(vn),
        first_due: due.map(vn),
        ..Fact::default()
    };
    Case { fact, syms }
}

fn judge_at(c: &Case, as_of: &str) -> Judged {
    let catalog = Catalog::embedded().unwrap();
    judge(&c.fact, &c.syms, &cal(), &catalog, vn(as_of))
}

#[test]
fn same_date_as_due_is_on_time_earlier_date_is_early() {
    // The sample's birth registration: due 24 Feb 16:30, processed 24 Feb 10:00.
    let mut c = case("1.001193", 10, "2023-02-23 08:05", Some("2023-02-24 16:30"));
    c.fact.finished_at = Some(vn("2023-02-24 10:00"));
    c.fact.returned_at = Some(vn("2023-02-24 14:30"));
    let j = judge_at(&c, "2023-03-31 23:59");
    assert_eq!(j.on_time, Some(OnTime::OnTime));
    // Processed (9) comes before returned (10) in the priority.
    assert_eq!(j.end_reason, Some(EndReason::Processed));
    assert_eq!(j.end_at, Some(vn("2023-02-24 10:00")));
    c.fact.finished_at = Some(vn("2023-02-23 15:00"));
    assert_eq!(
        judge_at(&c, "2023-03-31 23:59").on_time,
        Some(OnTime::Early)
    );
}

#[test]
fn a_pause_the_source_already_added_to_the_due_date_is_not_added_again() {
    // The sample's construction permit: paused 16–30 Jan 2023, the source moved the
    // due date from 8 to 15 Feb, and it finished on 20 Feb: late.
    let mut c = case("1.004227", 9, "2023-01-10 14:30", Some("2023-02-15 17:00"));
    c.fact.finished_at = Some(vn("2023-02-20 09:00"));
    c.fact.supplements = Box::new([Supplement {
        requested_at: vn("2023-01-16 09:00"),
        completed_at: Some(vn("2023-01-30 09:00")),
        due_before: Some(vn("2023-02-08 17:00")),
        due_after: Some(vn("2023-02-15 17:00")),
    }]);
    let j = judge_at(&c, "2023-03-31 23:59");
    assert_eq!(j.on_time, Some(OnTime::Late));
    assert_eq!(j.paused_seconds, 14 * 86_400);
    // 14 calendar days but 5 working days: Tết Quý Mão closed 20–26 January.
    assert_eq!(j.pause_working_seconds, 5 * 28_800);
    assert_eq!(j.due_extension_seconds, 0);
    assert_eq!(j.judged_due_at, Some(vn("2023-02-15 17:00")));
}

#[test]
fn a_pause_the_source_did_not_move_the_due_date_for_extends_it_by_its_working_time() {
    // The sample permit without `NgayHenTraMoi`: due 8 Feb 17:00, paused 16 Jan 09:00 to
    // 30 Jan 09:00 (5 working days: 16 Jan from 09:00, 17–19 Jan, 27 Jan, 30 Jan to 09:00),
    // finished 20 Feb. The due date moves to 15 Feb 17:00, as the source itself moves it:
    // late. Subtracting the 14 calendar days from the end (6 Feb) would call it early.
    let mut c = case("1.004227", 9, "2023-01-10 14:30", Some("2023-02-08 17:00"));
    c.fact.finished_at = Some(vn("2023-02-20 09:00"));
    c.fact.supplements = Box::new([Supplement {
        requested_at: vn("2023-01-16 09:00"),
        completed_at: Some(vn("2023-01-30 09:00")),
        due_before: None,
        due_after: None,
    }]);
    let j = judge_at(&c, "2023-03-31 23:59");
    assert_eq!(j.due_at, Some(vn("2023-02-08 17:00")));
    assert_eq!(j.due_extension_seconds, 5 * 28_800);
    assert_eq!(j.judged_due_at, Some(vn("2023-02-15 17:00")));
    assert_eq!(j.on_time, Some(OnTime::Late));
    // Finished on 15 Feb instead: on time by the extended date.
    c.fact.finished_at = Some(vn("2023-02-15 09:00"));
    assert_eq!(
        judge_at(&c, "2023-03-31 23:59").on_time,
        Some(OnTime::OnTime)
    );
    // Still open on 14 Feb: in time; on 16 Feb: overdue.
    c.fact.finished_at = None;
    c.fact.status = 4;
    assert_eq!(
        judge_at(&c, "2023-02-14 12:00").on_time,
        Some(OnTime::InProgressInTime)
    );
    let j = judge_at(&c, "2023-02-16 08:00");
    assert_eq!(j.on_time, Some(OnTime::InProgressOverdue));
    assert_eq!(
        j.overdue_from,
        Some(NaiveDate::from_ymd_opt(2023, 2, 15).unwrap())
    );
}

#[test]
fn a_dossier_is_judged_by_its_first_due_date_and_a_new_appointment_does_not_save_it() {
    // Received Monday 6 Mar 2023, first given 10 Mar 17:00. On 13 Mar, with no supplement,
    // a later snapshot moves the due date to 17 Mar 17:00 (an apology and new appointment,
    // "hẹn lại"); finished 16 Mar 10:00: late by the first due date.
    let mut c = case("X", 9, "2023-03-06 08:00", Some("2023-03-10 17:00"));
    c.fact.first_due = None;
    c.fact
        .see_due(vn("2023-03-13 09:00"), vn("2023-03-17 17:00"));
    c.fact
        .see_due(vn("2023-03-06 08:00"), vn("2023-03-10 17:00"));
    c.fact.due_at = Some(vn("2023-03-17 17:00"));
    c.fact.finished_at = Some(vn("2023-03-16 10:00"));
    let j = judge_at(&c, "2023-03-31 23:59");
    assert_eq!(j.first_due_at, Some(vn("2023-03-10 17:00")));
    assert_eq!(j.due_at, Some(vn("2023-03-17 17:00")));
    assert_eq!(j.judged_due_at, Some(vn("2023-03-10 17:00")));
    assert_eq!(j.due_resets, 1);
    assert_eq!(j.on_time, Some(OnTime::Late));
    // The same move explained by a supplement (paused 8 Mar 09:00 to 15 Mar 09:00, five
    // working days, recorded as 10 → 17 Mar) is no new appointment: on time by 17 Mar.
    c.fact.supplements = Box::new([Supplement {
        requested_at: vn("2023-03-08 09:00"),
        completed_at: Some(vn("2023-03-15 09:00")),
        due_before: Some(vn("2023-03-10 17:00")),
        due_after: Some(vn("2023-03-17 17:00")),
    }]);
    let j = judge_at(&c, "2023-03-31 23:59");
    assert_eq!(j.judged_due_at, Some(vn("2023-03-17 17:00")));
    assert_eq!((j.due_resets, j.on_time), (0, Some(OnTime::Early)));
}

#[test]
fn one_unanswered_supplement_ends_the_clock_and_two_requests_are_late() {
    let mut c = case("X", 5, "2023-03-06 08:00", Some("2023-03-10 17:00"));
    c.fact.supplements = Box::new([Supplement {
        requested_at: vn("2023-03-08 09:00"),
        completed_at: None,
        due_before: None,
        due_after: None,
    }]);
    let j = judge_at(&c, "2023-03-31 23:59");
    assert_eq!(j.end_reason, Some(EndReason::SupplementUnanswered));
    assert_eq!(j.on_time, Some(OnTime::Early));
    let second = Supplement {
        requested_at: vn("2023-03-09 09:00"),
        completed_at: Some(vn("2023-03-09 15:00")),
        due_before: None,
        due_after: None,
    };
    c.fact.supplements = Box::new([c.fact.supplements[0], second]);
    c.fact.finished_at = Some(vn("2023-03-09 16:00"));
    c.fact.status = 9;
    assert_eq!(judge_at(&c, "2023-03-31 23:59").on_time, Some(OnTime::Late));
}

#[test]
fn withdrawal_ends_the_clock_only_once_received() {
    let mut c = case("X", 7, "2023-03-01 09:00", Some("2023-03-01 16:30"));
    c.fact.first_seen = [Some(vn("2023-03-01 09:00")), None, None, None];
    let j = judge_at(&c, "2023-03-31 23:59");
    assert_eq!(j.end_reason, Some(EndReason::Withdrawn));
    assert_eq!(j.on_time, Some(OnTime::OnTime));
    c.fact.received_at = None;
    let j = judge_at(&c, "2023-03-31 23:59");
    assert_eq!((j.end_at, j.on_time), (None, None));
}

#[test]
fn statuses_1_and_3_are_outside_the_count() {
    for status in [1, 3] {
        let c = case("X", status, "2023-03-01 09:00", Some("2023-03-02 16:30"));
        let j = judge_at(&c, "2023-03-31 23:59");
        assert!(!j.counted);
        assert_eq!(j.on_time, None);
    }
}

#[test]
fn a_missing_due_date_comes_from_the_catalogue_in_working_time() {
    // Birth registration: 1 working day in the catalogue. Received Friday 24 Feb 2023
    // at 16:00, so due Monday 27 Feb 16:00; processed Monday 15:00: on time.
    let catalog = Catalog::embedded().unwrap();
    let p = catalog.get("1.001193").expect("in the catalogue");
    let mut c = case("1.001193", 9, "2023-02-24 16:00", None);
    c.fact.finished_at = Some(vn("2023-02-27 15:00"));
    let j = judge_at(&c, "2023-03-31 23:59");
    assert_eq!(j.due_source, Some(DueSource::Catalogue));
    assert_eq!(
        j.due_at,
        Some(p.due_from(vn("2023-02-24 16:00"), &cal()).unwrap())
    );
    assert_eq!(j.on_time, Some(OnTime::OnTime));
    // Unknown procedure and no due date: not judged.
    let c = case("NOT-IN-CATALOGUE", 9, "2023-02-24 16:00", None);
    assert_eq!(judge_at(&c, "2023-03-31 23:59").on_time, None);
}

#[test]
fn an_open_dossier_is_overdue_from_its_due_date_once_that_has_passed() {
    // Received 30 Jan, due 3 Feb 17:00, still open on 10 Mar: overdue at the end of every
    // day from 3 Feb (the grouping judges each period's end by it).
    let c = case("X", 4, "2023-01-30 09:00", Some("2023-02-03 17:00"));
    let j = judge_at(&c, "2023-03-10 12:00");
    assert_eq!(j.on_time, Some(OnTime::InProgressOverdue));
    assert_eq!(
        j.overdue_from,
        Some(NaiveDate::from_ymd_opt(2023, 2, 3).unwrap())
    );
    // Judged before the due date has passed: in time, and not overdue at any period end
    // up to then, so no date.
    let j = judge_at(&c, "2023-02-03 16:00");
    assert_eq!(
        (j.on_time, j.overdue_from),
        (Some(OnTime::InProgressInTime), None)
    );
    // More than one supplement request: overdue from the receipt date.
    let mut c = c;
    let ask = |t| Supplement {
        requested_at: vn(t),
        completed_at: Some(vn(t) + 3_600_000_000),
        due_before: None,
        due_after: None,
    };
    c.fact.supplements = Box::new([ask("2023-01-31 09:00"), ask("2023-02-01 09:00")]);
    let j = judge_at(&c, "2023-02-02 12:00");
    assert_eq!(
        j.overdue_from,
        Some(NaiveDate::from_ymd_opt(2023, 1, 30).unwrap())
    );
}

#[test]
fn working_days_leave_out_nights_weekends_holidays_and_pauses() {
    // Received Friday 24 Feb 2023 16:00, processed Tuesday 28 Feb 09:00: 1 h Friday,
    // 8 h Monday, 2 h Tuesday = 11 h = 1.375 working days.
    let mut c = case("X", 9, "2023-02-24 16:00", Some("2023-03-03 17:00"));
    c.fact.finished_at = Some(vn("2023-02-28 09:00"));
    // Not in the catalogue: the result is a document when the dossier lists one.
    c.fact.flags = FLAG_SUBMITTED_FILE | FLAG_E_RESULT | FLAG_HAS_RESULT_DOCUMENT;
    let j = judge_at(&c, "2023-03-31 23:59");
    assert_eq!(j.working_days, Some(1.375));
    assert!(j.digitized && j.e_result && j.e_result_eligible);
    c.fact.flags = FLAG_SUBMITTED_FILE;
    let j = judge_at(&c, "2023-03-31 23:59");
    assert!(
        j.digitized && !j.e_result_eligible,
        "no document result to wait for"
    );
}
