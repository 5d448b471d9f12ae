//! The README's worked examples of the progress table ("Carried-over dossiers", "A
//! dossier handed over").
use super::*;
use crate::calendar::{Calendar, OfficeHours};
use crate::catalog::Catalog;
use crate::fold::{EventKey, Fact, CHANNEL_POSTAL};
use crate::model::MetricRow;
use crate::placement::Placer;
use crate::rules::judge;

fn vn(s: &str) -> i64 {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    (t.and_utc().timestamp() - 7 * 3600) * 1_000_000
}

/// A dossier received at `received` through `channel`, due at `due`.
fn fact(channel: u8, received: &str, due: &str) -> Fact {
    Fact {
        snapshot: Some(EventKey::default()),
        status: 4,
        channel,
        received_at: Some(vn(received)),
        due_at: Some(vn(due)),
        first_due: Some(vn(due)),
        ..Fact::default()
    }
}

#[test]
fn a_january_dossier_still_open_in_march_is_carried_over_and_overdue_there() {
    let mut a = fact(CHANNEL_IN_PERSON, "2023-01-10 14:30", "2023-02-03 17:00");
    a.finished_at = Some(vn("2023-04-12 09:00"));
    let mut b = fact(CHANNEL_ONLINE, "2023-02-06 08:00", "2023-02-10 17:00");
    b.finished_at = Some(vn("2023-02-08 10:00"));
    let mut c = fact(CHANNEL_POSTAL, "2023-02-20 08:00", "2023-02-24 17:00");
    c.first_seen[0] = Some(vn("2023-02-21 09:00")); // withdrawn (7)
    let mut d = fact(CHANNEL_IN_PERSON, "2023-02-27 08:00", "2023-03-03 17:00");
    d.first_seen[1] = Some(vn("2023-02-28 09:00")); // stopped (8)

    let mut syms = Interner::default();
    let agency = syms.intern(Some("000.00.30.H55"));
    let codes = Codes {
        field: syms.intern(Some("XD")),
        procedure: syms.intern(Some("1.009994")),
    };
    let hours = OfficeHours::default();
    let cal = Calendar::embedded(hours).unwrap();
    let catalog = Catalog::embedded().unwrap();
    let agencies = Agencies::default();
    let mut g = Grouper::new(&[Period::Month, Period::Year]);
    let mut placer = Placer::new(&agencies, &syms);
    for (i, f) in [&mut a, &mut b, &mut c, &mut d].into_iter().enumerate() {
        f.see_agency(EventKey::default(), agency, &syms);
        let j = judge(f, &syms, &cal, &catalog, vn("2023-04-30 12:00"));
        g.add(codes, &j, &placer.place(&format!("D{i}"), f, &j));
    }
    let r = g
        .base(&syms, &agencies)
        .with_rollups(NaiveDate::from_ymd_opt(2023, 4, 30).unwrap(), &agencies);
    let province = |p: Period| -> Vec<(String, [u64; 10], Option<f64>)> {
        r.rows
            .iter()
            .filter(|m| m.view == View::AsWas && m.period == p && m.agency_code.is_none())
            .map(|m| {
                let c = &m.counts;
                let row = [
                    c.carried_over,
                    c.judged_received(),
                    c.received_online,
                    c.early,
                    c.on_time,
                    c.late,
                    c.withdrawn,
                    c.stopped_or_refused,
                    c.in_progress_in_time,
                    c.in_progress_overdue,
                ];
                (p.label(m.period_start), row, c.on_time_rate())
            })
            .collect()
    };
    // carried, received, online, early, on time, late, withdrawn, stopped, in time,
    // overdue; the on-time rate.
    assert_eq!(
        province(Period::Month),
        [
            ("2023-01".into(), [0, 1, 0, 0, 0, 0, 0, 0, 1, 0], Some(1.0)),
            ("2023-02".into(), [1, 3, 1, 1, 0, 0, 1, 1, 0, 1], Some(0.5)),
            ("2023-03".into(), [1, 0, 0, 0, 0, 0, 0, 0, 0, 1], Some(0.0)),
            ("2023-04".into(), [1, 0, 0, 0, 0, 1, 0, 0, 0, 0], Some(0.0)),
        ]
    );
    assert_eq!(
        province(Period::Year),
        [("2023".into(), [0, 4, 1, 1, 0, 1, 1, 1, 0, 0], Some(0.5))]
    );
    // The field rows walk the same backlog.
    let xd_march = r
        .fields
        .iter()
        .find(|f| {
            f.row.view == View::Restated
                && f.row.agency_code.is_none()
                && Period::Month.label(f.row.period_start) == "2023-03"
        })
        .unwrap();
    assert_eq!(
        (
            xd_march.row.counts.carried_over,
            xd_march.row.counts.in_progress_overdue
        ),
        (1, 1)
    );
    // Every month up to April, without gaps, for the SQL to join.
    let months: Vec<String> = r
        .periods
        .iter()
        .filter(|(p, _)| *p == Period::Month)
        .map(|(p, s)| p.label(*s))
        .collect();
    assert_eq!(months, ["2023-01", "2023-02", "2023-03", "2023-04"]);
}

/// The README's example of a handover: a district ended on 30 June 2025 and its ward took
/// over what it had open.
const DISTRICT_AND_WARD: &str = r#"
[[agencies]]
code = "P"
name = "Province"
level = "province"

[[agencies]]
code = "D"
name = "District"
level = "district"
province = "P"
valid_to = 2025-06-30
successors = ["W"]

[[agencies]]
code = "W"
name = "Ward"
level = "ward"
province = "P"
valid_from = 2025-07-01
"#;

#[test]
fn receipts_stay_with_the_district_and_the_ward_takes_over_what_was_open() {
    let agencies = Agencies::from_toml(DISTRICT_AND_WARD).unwrap();
    let mut syms = Interner::default();
    let (d, w) = (syms.intern(Some("D")), syms.intern(Some("W")));
    let codes = Codes {
        field: syms.intern(Some("DD")),
        procedure: syms.intern(Some("1.004227")),
    };
    // A national sync record has no time of its own: the ward's first snapshot of a
    // dossier it took over carries the dossier's latest date, older than the handover.
    let key = |t: &str, offset| EventKey {
        time: vn(t),
        partition: 0,
        offset,
    };
    // 1: received by the district in May, processed there early.
    let mut one = fact(CHANNEL_ONLINE, "2025-05-05 08:00", "2025-05-12 17:00");
    one.finished_at = Some(vn("2025-05-09 10:00"));
    one.see_agency(key("2025-05-09 10:00", 1), d, &syms);
    // 2: received by the district on 10 June, due 8 July, open on 1 July; the ward
    // processes it early, on 4 July.
    let mut two = fact(CHANNEL_ONLINE, "2025-06-10 08:00", "2025-07-08 17:00");
    two.finished_at = Some(vn("2025-07-04 10:00"));
    two.see_agency(key("2025-06-10 08:00", 2), d, &syms);
    two.see_agency(key("2025-06-10 08:00", 3), w, &syms);
    // 3: received by the district on 20 June, due 27 June, overdue when handed over; the
    // ward processes it late, on 15 July.
    let mut three = fact(CHANNEL_IN_PERSON, "2025-06-20 08:00", "2025-06-27 17:00");
    three.finished_at = Some(vn("2025-07-15 10:00"));
    three.see_agency(key("2025-06-20 08:00", 4), d, &syms);
    three.see_agency(key("2025-07-15 10:00", 5), w, &syms);
    // 4: received by the ward on 2 July, still open and in time on 31 July.
    let mut four = fact(CHANNEL_IN_PERSON, "2025-07-02 08:00", "2025-08-20 17:00");
    four.see_agency(key("2025-07-02 08:00", 6), w, &syms);

    let cal = Calendar::embedded(OfficeHours::default()).unwrap();
    let catalog = Catalog::embedded().unwrap();
    let as_of = vn("2025-07-31 23:00");
    let mut g = Grouper::new(&[Period::Month, Period::Year]);
    let mut placer = Placer::new(&agencies, &syms);
    let mut quality = Vec::new();
    for (i, f) in [&one, &two, &three, &four].into_iter().enumerate() {
        let j = judge(f, &syms, &cal, &catalog, as_of);
        let place = placer.place(&format!("H-{i}"), f, &j);
        quality.push((place.handed_over, place.off_line, place.unknown));
        g.add(codes, &j, &place);
    }
    // Handed over along the successor line: expected, not a data-quality issue.
    assert_eq!(
        quality,
        [
            (false, false, false),
            (true, false, false),
            (true, false, false),
            (false, false, false)
        ]
    );
    let r = g
        .base(&syms, &agencies)
        .with_rollups(NaiveDate::from_ymd_opt(2025, 7, 31).unwrap(), &agencies);
    let row = |view: View, p: Period, label: &str, agency: Option<&str>| -> Option<&MetricRow> {
        r.rows.iter().find(|m| {
            (m.view, m.period) == (view, p)
                && p.label(m.period_start) == label
                && m.agency_code.as_deref() == agency
                && m.procedure_code.is_none()
        })
    };
    // carried, received, online, handed in, early, on time, late, handed out, in time,
    // overdue.
    let line = |m: Option<&MetricRow>| -> [u64; 10] {
        let c = m.map(|m| m.counts).unwrap_or_default();
        [
            c.carried_over,
            c.judged_received(),
            c.online_received,
            c.transferred_in,
            c.early,
            c.on_time,
            c.late,
            c.transferred_out,
            c.in_progress_in_time,
            c.in_progress_overdue,
        ]
    };
    use View::{AsWas, Restated};
    let month = Period::Month;
    // As it was: the district keeps its receipts, June included, and hands two open
    // dossiers (one overdue) to the ward in July, which ends them.
    assert_eq!(
        line(row(AsWas, month, "2025-05", Some("D"))),
        [0, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        line(row(AsWas, month, "2025-06", Some("D"))),
        [0, 2, 1, 0, 0, 0, 0, 0, 1, 1]
    );
    assert_eq!(
        line(row(AsWas, month, "2025-07", Some("D"))),
        [2, 0, 0, 0, 0, 0, 0, 2, 0, 0]
    );
    assert_eq!(
        line(row(AsWas, month, "2025-07", Some("W"))),
        [0, 1, 0, 2, 1, 0, 1, 0, 1, 0]
    );
    let year = Period::Year;
    assert_eq!(
        line(row(AsWas, year, "2025", Some("D"))),
        [0, 3, 2, 0, 1, 0, 0, 2, 0, 0]
    );
    assert_eq!(
        line(row(AsWas, year, "2025", Some("W"))),
        [0, 1, 0, 2, 1, 0, 1, 0, 1, 0]
    );
    // The district's June on-time rate counts the overdue dossier it held then.
    let june = row(AsWas, month, "2025-06", Some("D")).unwrap();
    assert_eq!(june.counts.on_time_rate(), Some(0.5));
    assert_eq!(june.agency_name.as_deref(), Some("District"));
    // Restated, the ward is where the district's dossiers went: no handover at all.
    assert_eq!(row(Restated, month, "2025-06", Some("D")), None);
    assert_eq!(
        line(row(Restated, month, "2025-06", Some("W"))),
        [0, 2, 1, 0, 0, 0, 0, 0, 1, 1]
    );
    assert_eq!(
        line(row(Restated, month, "2025-07", Some("W"))),
        [2, 1, 0, 0, 1, 0, 1, 0, 1, 0]
    );
    assert_eq!(
        line(row(Restated, year, "2025", Some("W"))),
        [0, 4, 2, 0, 2, 0, 1, 0, 1, 0]
    );
    // The province is the same in both views, but for the handover itself.
    for label in ["2025-05", "2025-06", "2025-07"] {
        let mut was = line(row(AsWas, month, label, None));
        let now = line(row(Restated, month, label, None));
        assert_eq!(was[3], was[7], "{label}");
        (was[3], was[7]) = (0, 0);
        assert_eq!(was, now, "{label}");
    }
}
