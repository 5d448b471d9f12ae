//! Bad input: every rejection names the field and the reason, and is classified.

mod common;

use common::decoder;
use sohoa_schemas::{DecodeOutput, DecoderKind, ErrorClass};

fn rejects(kind: DecoderKind, json: &str) -> Vec<String> {
    let mut out = DecodeOutput::default();
    let bytes: &'static [u8] = Box::leak(json.as_bytes().to_vec().into_boxed_slice());
    decoder(kind).decode(bytes, &mut out);
    assert!(out
        .rejects
        .iter()
        .all(|r| r.class() == ErrorClass::Permanent));
    out.rejects.iter().map(ToString::to_string).collect()
}

const BASE: &str = r#""MaHoSo":"X-1","DonViXuLy":"A","NgayTiepNhan":"20230301080000""#;

#[test]
fn dvcqg_errors_name_the_path_and_the_reason() {
    let cases: &[(String, &str)] = &[
        ("{".into(), "$: invalid JSON: EOF while parsing an object at line 1 column 1"),
        ("42".into(), "$: 42 is not a record, an array of records, or an envelope"),
        (format!("{{{BASE},\"TrangThaiHoSo\":11}}"), "TrangThaiHoSo: 11 is not a status code (1 to 10)"),
        (format!("{{{BASE}}}"), "TrangThaiHoSo: is missing"),
        (r#"{"TrangThaiHoSo":2,"NgayTiepNhan":"20230301080000"}"#.into(), "MaHoSo: is missing"),
        (r#"{"MaHoSo":"  ","TrangThaiHoSo":2,"NgayTiepNhan":"20230301080000"}"#.into(), "MaHoSo: is empty"),
        (format!("{{{BASE},\"TrangThaiHoSo\":2,\"KenhThucHien\":9}}"), "KenhThucHien: 9 is not a channel code (1 in person, 2 online, 3 postal)"),
        (format!("{{{BASE},\"TrangThaiHoSo\":\"abc\"}}"), "TrangThaiHoSo: \"abc\" is not an integer"),
        (format!("{{{BASE},\"TrangThaiHoSo\":2,\"TaiLieuNop\":5}}"), "TaiLieuNop: 5 is not an array"),
        (format!("{{{BASE},\"TrangThaiHoSo\":2,\"TaiLieuNop\":[{{\"IsDeleted\":false}},\"x\"]}}"), "TaiLieuNop[1]: \"x\" is not an object"),
        (format!("{{{BASE},\"TrangThaiHoSo\":2,\"DanhSachLePhi\":[{{\"Gia\":\"free\"}}]}}"), "DanhSachLePhi[0].Gia: \"free\" is not a number"),
        (format!("{{{BASE},\"TrangThaiHoSo\":2,\"DanhSachHoSoBoSung\":[{{\"NgayTiepNhanBoSung\":\"20230302080000\"}}]}}"), "DanhSachHoSoBoSung[0].NgayBoSung: is missing"),
        (format!("{{{BASE},\"TrangThaiHoSo\":2,\"NgayHenTra\":\"21000101000000\"}}"), "NgayHenTra: \"21000101000000\" is outside the accepted years 2000-2099"),
        (r#"{"MaHoSo":"X","TrangThaiHoSo":2}"#.into(), "$: holds no date to take the event time from (need at least NgayNopHoSo or NgayTiepNhan)"),
        (r#"{"service":"Khac","data":[]}"#.into(), "service: unknown service \"Khac\" (expected DongBoHoSoMC or CapNhatTienDoHoSoMC)"),
        (r#"{"service":"DongBoHoSoMC","data":{"a":1}}"#.into(), "data: an object is not an array"),
        (r#"{"service":"CapNhatTienDoHoSoMC","data":[{"MaHoSo":"X","TrangThai":4}]}"#.into(), "data[0].ThoiDiemXuLy: is missing"),
    ];
    for (input, expected) in cases {
        assert_eq!(
            rejects(DecoderKind::Dvcqg, input),
            vec![expected.to_string()],
            "input: {input}"
        );
    }
}

#[test]
fn empty_envelopes_and_arrays_yield_nothing_and_reject_nothing() {
    for input in [
        r#"{"service":"DongBoHoSoMC","data":[]}"#,
        "[]",
        r#"{"service":"DongBoHoSoMC","data":null}"#,
    ] {
        let mut out = DecodeOutput::default();
        decoder(DecoderKind::Dvcqg).decode(input.as_bytes(), &mut out);
        assert!(out.events.is_empty() && out.rejects.is_empty(), "{input}");
    }
}

#[test]
fn invalid_utf8_and_deep_nesting_are_rejected_not_panics() {
    let mut out = DecodeOutput::default();
    decoder(DecoderKind::Dvcqg).decode(b"{\"MaHoSo\":\"\xff\xfe\"}", &mut out);
    assert_eq!(out.rejects.len(), 1);
    assert!(
        out.rejects[0].to_string().starts_with("$: invalid JSON"),
        "{}",
        out.rejects[0]
    );
    assert!(
        out.rejects[0]
            .to_string()
            .contains("not UTF-8: invalid byte at offset 11"),
        "{}",
        out.rejects[0]
    );

    // Deep nesting where nothing is read is skipped without recursion.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut out = DecodeOutput::default();
    decoder(DecoderKind::Dvcqg).decode(deep.as_bytes(), &mut out);
    assert_eq!(out.rejects[0].to_string(), "[0]: an array is not an object");

    // Deep nesting through fields that are read hits serde_json's recursion limit.
    let deep = format!("{}{}", "{\"data\":[".repeat(50_000), "]}".repeat(50_000));
    let mut out = DecodeOutput::default();
    decoder(DecoderKind::Dvcqg).decode(deep.as_bytes(), &mut out);
    assert!(
        out.rejects[0].to_string().contains("recursion limit"),
        "{}",
        out.rejects[0]
    );
}

#[test]
fn canonical_errors_come_from_the_json_schema_with_a_path() {
    let ok = include_str!("../../tests/fixtures/canonical/one-event.json");
    assert!(rejects(DecoderKind::Canonical, ok).is_empty());

    let bad_status = ok.replace("\"status_code\": 10", "\"status_code\": 12");
    let r = rejects(DecoderKind::Canonical, &bad_status);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].starts_with("status_code: 12 is greater than the maximum of 10"),
        "{r:?}"
    );

    let bad_time = ok.replace("\"2023-02-23T01:05:12Z\"", "\"yesterday\"");
    let r = rejects(DecoderKind::Canonical, &bad_time);
    assert!(
        r[0].starts_with("received_at: \"yesterday\" is not a \"date-time\""),
        "{r:?}"
    );

    let mismatch = ok.replace("\"status\": \"returned\"", "\"status\": \"received\"");
    let r = rejects(DecoderKind::Canonical, &mismatch);
    assert_eq!(
        r,
        vec!["status: \"received\" does not match status_code 10 (returned)".to_string()]
    );

    let nested = ok.replace(
        "\"supplements\": []",
        "\"supplements\": [{\"completed_at\": null}]",
    );
    let r = rejects(DecoderKind::Canonical, &nested);
    assert!(
        r[0].starts_with("supplements[0]: \"requested_at\" is a required property"),
        "{r:?}"
    );
}

#[test]
fn ten_megabyte_messages_decode_or_reject_without_trouble() {
    let big = format!(
        r#"{{"MaHoSo":"X-1","TrangThaiHoSo":2,"NgayTiepNhan":"20230301080000","GhiChu":"{}"}}"#,
        "ghi chú ".repeat(1_300_000)
    );
    assert!(big.len() > 10_000_000);
    let mut out = DecodeOutput::default();
    decoder(DecoderKind::Dvcqg).decode(big.as_bytes(), &mut out);
    assert_eq!(
        (out.events.len(), out.rejects.len()),
        (1, 0),
        "free text is skipped, not kept"
    );
    let truncated = &big[..big.len() - 10];
    let mut out = DecodeOutput::default();
    decoder(DecoderKind::Dvcqg).decode(truncated.as_bytes(), &mut out);
    assert_eq!(out.events.len(), 0);
    assert_eq!(out.rejects[0].kind(), "syntax");
}
