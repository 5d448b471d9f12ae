//! Golden tests: hand-written source payloads, and the exact events they must become.

mod common;

use std::borrow::Cow;

use common::{decode, fixture, vn, TEST_KEY};
use sohoa_schemas::event::{ApplicantType, Channel, EventKind, Status, Supplement};
use sohoa_schemas::{DecoderKind, Pseudonymizer, Warning};

fn pseudonym(id: &str) -> String {
    Pseudonymizer::new(TEST_KEY).unwrap().pseudonym(id).unwrap()
}

#[test]
fn national_sample_envelope_lands_field_by_field() {
    let out = decode(DecoderKind::Dvcqg, fixture("dvcqg/samples-envelope.json"));
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    assert_eq!(out.events.len(), 3);

    // 1. Online birth registration, finished early, digitized, reused, e-result.
    let e = &out.events[0];
    assert_eq!(e.kind, EventKind::Snapshot);
    assert_eq!(&*e.source_system, "dvcqg");
    assert_eq!(e.dossier_code, "000.00.12.H55-230223-0001");
    assert_eq!(e.procedure_code.as_deref(), Some("1.001193"));
    assert_eq!(e.procedure_name.as_deref(), Some("Đăng ký khai sinh"));
    assert_eq!(e.field_code.as_deref(), Some("HTTP"));
    assert_eq!(e.field_name.as_deref(), Some("Hộ tịch"));
    assert_eq!(e.agency_code.as_deref(), Some("000.00.12.H55"));
    assert_eq!(e.channel, Some(Channel::Online));
    assert_eq!(e.status, Status::Returned);
    assert_eq!(e.filed_at, Some(vn(2023, 2, 22, 20, 15, 0)));
    assert_eq!(e.received_at, Some(vn(2023, 2, 23, 8, 5, 12)));
    assert_eq!(e.due_at, Some(vn(2023, 2, 24, 16, 30, 0)));
    assert_eq!(e.finished_at, Some(vn(2023, 2, 24, 10, 0, 0)));
    assert_eq!(e.returned_at, Some(vn(2023, 2, 24, 14, 30, 0)));
    assert_eq!(e.refused_at, None);
    // The latest date the snapshot carries is the return.
    assert_eq!(e.event_time, vn(2023, 2, 24, 14, 30, 0));
    assert!(e.supplements.is_empty());
    assert_eq!(e.document_count, 1);
    assert!(e.flags.has_submitted_file);
    assert!(e.flags.has_digitized_component);
    assert!(e.flags.has_reused_component);
    assert!(!e.flags.from_national_warehouse);
    assert_eq!((e.result_document_count, e.result_file_count), (1, 1));
    assert!(e.flags.has_e_result);
    assert!(!e.flags.paid_online);
    assert!(!e.flags.fee_bearing);
    assert_eq!(e.applicant_type, Some(ApplicantType::Citizen));
    assert_eq!(
        e.applicant_pseudonym.as_deref(),
        Some(pseudonym("082123456789").as_str())
    );

    // 2. In-person construction permit: stray spaces and lower case in the code, one
    //    supplement across Tết with the due date already moved, a deleted document, a fee
    //    paid online through the province's portal.
    let e = &out.events[1];
    assert_eq!(e.dossier_code, "000.00.30.H55-230110-0042");
    assert_eq!(e.channel, Some(Channel::InPerson));
    assert_eq!(e.status, Status::Processed);
    assert_eq!(e.due_at, Some(vn(2023, 2, 15, 17, 0, 0)));
    assert_eq!(e.finished_at, Some(vn(2023, 2, 20, 9, 0, 0)));
    assert_eq!(
        e.supplements,
        vec![Supplement {
            requested_at: vn(2023, 1, 16, 9, 0, 0),
            completed_at: Some(vn(2023, 1, 30, 9, 0, 0)),
            due_before: Some(vn(2023, 2, 8, 17, 0, 0)),
            due_after: Some(vn(2023, 2, 15, 17, 0, 0)),
        }]
    );
    assert_eq!(e.document_count, 1, "the deleted document is not counted");
    assert!(e.flags.has_submitted_file);
    assert!(e.flags.has_digitized_component, "DuocSoHoa = 1 on f-9");
    assert!(!e.flags.has_reused_component);
    assert!(e.flags.paid_online, "DuocThanhToanTrucTuyen = 2");
    assert!(e.flags.fee_bearing);
    assert!(!e.flags.has_e_result);
    assert_eq!(e.field_name, None);

    // 3. Notarised copy withdrawn by the applicant: null channel, only a zero fee.
    let e = &out.events[2];
    assert_eq!(e.status, Status::Withdrawn);
    assert_eq!(
        e.channel,
        Some(Channel::InPerson),
        "null channel means in person"
    );
    assert!(!e.flags.fee_bearing, "a fee of 0 is not fee-bearing");
    assert!(!e.flags.paid_online);
    assert_eq!(e.document_count, 0);
    assert!(!e.flags.has_submitted_file);
    assert_eq!(e.event_time, vn(2023, 3, 1, 9, 0, 0));

    assert_eq!(out.warnings.get(Warning::CodeCleaned), 1);
    assert_eq!(out.warnings.get(Warning::UnknownField), 0);
}

#[test]
fn messy_record_is_cleaned_and_counted() {
    let out = decode(DecoderKind::Dvcqg, fixture("dvcqg/messy-record.json"));
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    let [e] = &out.events[..] else {
        panic!("one event expected")
    };
    assert_eq!(e.dossier_code, "000.00.15.H55-240205-0003");
    assert_eq!(e.procedure_code.as_deref(), Some("1.004227"));
    assert_eq!(e.field_code.as_deref(), Some("DD"));
    assert_eq!(e.agency_code.as_deref(), Some("000.00.15.H55"));
    // NFD in, NFC out, byte for byte.
    assert_eq!(
        e.procedure_name.as_deref(),
        Some("Cấp giấy chứng nhận quyền sử dụng đất")
    );
    assert_eq!(e.field_name.as_deref(), Some("Đất đai"));
    assert_eq!(e.channel, Some(Channel::Online), "\"2\" as a string");
    assert_eq!(e.status, Status::SupplementRequested);
    assert_eq!(e.applicant_type, Some(ApplicantType::Business));
    assert_eq!(e.filed_at, Some(vn(2024, 2, 5, 7, 45, 0)));
    assert_eq!(e.received_at, Some(vn(2024, 2, 5, 8, 0, 0)));
    assert_eq!(
        e.due_at,
        Some(vn(2024, 3, 5, 0, 0, 0)),
        "yyyyMMdd is midnight"
    );
    assert_eq!(e.finished_at, None, "empty string is no date");
    assert_eq!(e.returned_at, None);
    assert_eq!(e.supplements.len(), 2);
    assert_eq!(e.supplements[1].completed_at, None);
    assert_eq!(
        e.event_time,
        vn(2024, 2, 20, 14, 30, 0),
        "the second supplement request"
    );
    assert!(e.flags.from_national_warehouse);
    assert!(!e.flags.has_digitized_component);
    assert!(e.flags.fee_bearing, "\"25000.5\" as a string");
    assert!(e.flags.paid_online);
    assert_eq!((e.result_document_count, e.result_file_count), (1, 0));
    assert!(!e.flags.has_e_result, "an empty result link is no e-result");
    // The ID number came only through DinhDanhCHS, with spaces.
    assert_eq!(
        e.applicant_pseudonym.as_deref(),
        Some(pseudonym("082555666777").as_str())
    );

    let w = out.warnings;
    assert_eq!(
        w.get(Warning::UnknownField),
        3,
        "two top-level, one in TaiLieuNop"
    );
    assert_eq!(w.get(Warning::TextNormalized), 2);
    assert_eq!(w.get(Warning::CodeCleaned), 4);
    assert!(w.get(Warning::Coerced) >= 5, "{w:?}");

    // Personal data never reaches the event.
    let json = e.to_json();
    for secret in [
        "Dung",
        "0912000004",
        "dung@example",
        "082 555",
        "082555666777",
    ] {
        assert!(!json.contains(secret), "{secret} leaked into {json}");
    }
}

#[test]
fn progress_updates_become_progress_events() {
    let out = decode(DecoderKind::Dvcqg, fixture("dvcqg/progress-envelope.json"));
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    assert_eq!(out.events.len(), 3);
    let steps: Vec<_> = out
        .events
        .iter()
        .map(|e| (e.kind, e.dossier_code.as_ref(), e.status, e.event_time))
        .collect();
    assert_eq!(
        steps,
        vec![
            (
                EventKind::Progress,
                "000.00.12.H55-230223-0001",
                Status::Received,
                vn(2023, 2, 23, 8, 5, 12)
            ),
            (
                EventKind::Progress,
                "000.00.12.H55-230223-0001",
                Status::Processed,
                vn(2023, 2, 24, 10, 0, 0)
            ),
            (
                EventKind::Progress,
                "000.00.30.H55-230110-0042",
                Status::SupplementRequested,
                vn(2023, 1, 16, 9, 0, 0)
            ),
        ]
    );
    assert_eq!(
        out.events[1].step_started_at,
        Some(vn(2023, 2, 23, 9, 0, 0))
    );
    assert_eq!(out.events[1].step_due_at, Some(vn(2023, 2, 24, 16, 30, 0)));
    assert_eq!(out.events[0].channel, None);
    let json = out.events[0].to_json();
    assert!(
        !json.contains("Cán bộ"),
        "the handler's name leaked: {json}"
    );
}

#[test]
fn one_bad_record_does_not_take_the_good_ones_with_it() {
    let out = decode(DecoderKind::Dvcqg, fixture("dvcqg/array-one-bad.json"));
    let codes: Vec<_> = out.events.iter().map(|e| e.dossier_code.as_ref()).collect();
    assert_eq!(
        codes,
        ["000.00.12.H55-230301-0001", "000.00.12.H55-230301-0003"]
    );
    assert_eq!(out.rejects.len(), 1);
    assert_eq!(
        out.rejects[0].to_string(),
        "[1].NgayTiepNhan: \"20231345\" is not a date (expected yyyyMMddHHmmss in Vietnam time, or ISO-8601 with an offset)"
    );
}

#[test]
fn a_record_sent_twice_keeps_its_event_id() {
    let bytes = fixture("dvcqg/samples-envelope.json");
    let a = decode(DecoderKind::Dvcqg, bytes);
    let b = decode(DecoderKind::Dvcqg, bytes);
    let ids = |o: &sohoa_schemas::DecodeOutput| {
        o.events
            .iter()
            .map(|e| e.event_id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    let mut unique = ids(&a);
    unique.dedup();
    assert_eq!(unique.len(), 3);
}

#[test]
fn clean_input_is_borrowed_not_copied() {
    let out = decode(DecoderKind::Dvcqg, fixture("dvcqg/samples-envelope.json"));
    let e = &out.events[0];
    assert!(matches!(e.dossier_code, Cow::Borrowed(_)));
    assert!(matches!(e.procedure_name, Some(Cow::Borrowed(_))));
}
