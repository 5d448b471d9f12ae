//! Personal data out of what is kept of rejected input.
//!
//! A rejected line is still a dossier record: an applicant's name, ID number, phone
//! number and address, in clear. The storage root is where analysts read, so what stays
//! there of a reject is an excerpt in which only values known to be codes, dates and
//! statuses survive; every other string is masked, and so is any run of nine or more
//! digits outside them (ID numbers and phone numbers, written as numbers). Error
//! messages quote the value at fault, so they are masked the same way.

/// Keys whose values are codes, dates, statuses or flags in both source formats: what
/// an operator needs to find the record and see what is wrong with it.
const SAFE_KEYS: &[&str] = &[
    // The national sync record.
    "service",
    "isUpdating",
    "MaHoSo",
    "MaTTHC",
    "TenTTHC",
    "MaLinhVuc",
    "TenLinhVuc",
    "DonViXuLy",
    "KenhThucHien",
    "LoaiDoiTuong",
    "TrangThaiHoSo",
    "NgayNopHoSo",
    "NgayTiepNhan",
    "NgayHenTra",
    "NgayKetThucXuLy",
    "NgayTra",
    "NgayTuChoi",
    "HoSoCoThanhPhanSoHoa",
    "DuocThanhToanTrucTuyen",
    "MaThanhPhanHoSo",
    "DuocSoHoa",
    "DuocTaiSuDung",
    "DuocLayTuKhoDMQG",
    "IsDeleted",
    "TrangThaiBoSung",
    "NgayBoSung",
    "NgayTiepNhanBoSung",
    "NgayHenTraTruoc",
    "NgayHenTraMoi",
    "MaPhiLePhi",
    "HinhThucThu",
    "Gia",
    "LoaiPhiLePhi",
    "MaGiayToKetQua",
    "MaCSDL",
    "ThoiDiemXuLy",
    "TrangThai",
    "NgayBatDau",
    "NgayKetThucTheoQuyDinh",
    // The canonical event.
    "schema_version",
    "event_kind",
    "source_system",
    "status",
    "channel",
];

/// Whether values under `key` are kept: the keys above, and the canonical event's codes
/// and timestamps.
fn safe_key(key: &str) -> bool {
    SAFE_KEYS.contains(&key) || key.ends_with("_code") || key.ends_with("_at")
}

/// What a masked value reads as.
const MASK: &str = "***";

/// Digit runs this long are masked outside safe values: Vietnamese ID numbers have 9 or
/// 12 digits and phone numbers 10 or 11, while dates (8 or 14 digits) only occur under
/// safe keys.
const MIN_MASKED_DIGITS: usize = 9;

/// An excerpt of a raw message, at most `max` bytes long (before masking), with every
/// value that is not a code, date or status masked. Works on broken JSON too: a cut-off
/// line or a stray byte only ends the excerpt's structure early.
pub fn excerpt(raw: &[u8], max: usize) -> String {
    let head = &raw[..raw.len().min(max)];
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len());
    let mut key: Option<String> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            if c.is_ascii_digit() {
                let run_end = text[i..]
                    .find(|d: char| !d.is_ascii_digit())
                    .map_or(text.len(), |n| i + n);
                let run = &text[i..run_end];
                let keep = key.as_deref().is_some_and(safe_key);
                out.push_str(if run.len() >= MIN_MASKED_DIGITS && !keep {
                    MASK
                } else {
                    run
                });
                while chars.peek().is_some_and(|&(j, _)| j < run_end) {
                    chars.next();
                }
            } else {
                out.push(c);
            }
            continue;
        }
        // A string: up to the closing quote that is not escaped, or the end.
        let mut end = text.len();
        let mut escaped = false;
        for (j, d) in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if d == '\\' {
                escaped = true;
            } else if d == '"' {
                end = j;
                break;
            }
        }
        let content = &text[i + 1..end.max(i + 1)];
        let rest = text.get(end + 1..).unwrap_or("");
        let is_key = rest.trim_start().starts_with(':');
        out.push('"');
        if is_key {
            key = Some(content.to_owned());
            out.push_str(content);
        } else if key.as_deref().is_some_and(safe_key) {
            out.push_str(content);
        } else {
            out.push_str(MASK);
        }
        if end < text.len() {
            out.push('"');
        }
    }
    out
}

/// An error message with the value it quotes masked, unless the JSON path it starts with
/// ends at a safe key (`$.data[0].NgayHenTra: "2023-13-45" is not a date` stays whole).
pub fn message(msg: &str) -> String {
    let (path, reason) = msg.split_once(": ").unwrap_or(("", msg));
    let last_key = path
        .rsplit(['.', '['])
        .next()
        .unwrap_or("")
        .trim_end_matches(']');
    if safe_key(last_key) {
        return msg.to_owned();
    }
    let mut out = String::with_capacity(msg.len());
    if !path.is_empty() {
        out.push_str(path);
        out.push_str(": ");
    }
    let mut in_quotes = false;
    let mut digits = String::new();
    let flush_digits = |out: &mut String, digits: &mut String| {
        out.push_str(if digits.len() >= MIN_MASKED_DIGITS {
            MASK
        } else {
            digits
        });
        digits.clear();
    };
    for c in reason.chars() {
        if in_quotes {
            if c == '"' {
                in_quotes = false;
                out.push_str(MASK);
                out.push('"');
            }
            continue;
        }
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        flush_digits(&mut out, &mut digits);
        out.push(c);
        if c == '"' {
            in_quotes = true;
        }
    }
    flush_digits(&mut out, &mut digits);
    if in_quotes {
        out.push_str(MASK);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{"service":"DongBoHoSoMC","data":[{"MaHoSo":"000.00.12.H55-230223-0001","ChuHoSo":"Nguyễn Văn An","SoGiayToChuHoSo":"082123456789","SoDienThoai":912345678,"DiaChi":"12 Lê Lợi, Mỹ Tho","NgayTiepNhan":"20230223080000","TrangThaiHoSo":"4","DinhDanhCHS":[{"SoDinhDanh":"082123456789"}]"#;

    #[test]
    fn names_ids_phones_and_addresses_are_masked_and_codes_and_dates_kept() {
        let e = excerpt(RECORD.as_bytes(), 4096);
        for secret in [
            "Nguyễn",
            "An\"",
            "082123456789",
            "912345678",
            "Lê Lợi",
            "Mỹ Tho",
        ] {
            assert!(!e.contains(secret), "{secret} in {e}");
        }
        for kept in [
            r#""service":"DongBoHoSoMC""#,
            r#""MaHoSo":"000.00.12.H55-230223-0001""#,
            r#""ChuHoSo":"***""#,
            r#""SoDienThoai":***"#,
            r#""NgayTiepNhan":"20230223080000""#,
            r#""TrangThaiHoSo":"4""#,
        ] {
            assert!(e.contains(kept), "{kept} not in {e}");
        }
    }

    #[test]
    fn cut_off_and_broken_input_never_leaks_the_value_it_stops_in() {
        for cut in [30, 60, 75, 90, 100, 120, RECORD.len()] {
            let e = excerpt(&RECORD.as_bytes()[..cut], 4096);
            assert!(!e.contains("Nguy") && !e.contains("0821234"), "{cut}: {e}");
        }
        let e = excerpt(RECORD.as_bytes(), 80);
        assert!(e.len() < 100, "{e}");
        let invalid = b"{\"ChuHoSo\":\"Tr\xff\xfe\xa7n B\xc3\xacnh\",\"SoGiayToChuHoSo\":\"0821234";
        let e = excerpt(invalid, 4096);
        assert!(!e.contains("nh\"") && !e.contains("0821234"), "{e}");
        // Escaped quotes do not end a masked value early.
        let e = excerpt(
            br#"{"GhiChu":"he said \"Nguyen Van B\" here","MaTTHC":"1.001"}"#,
            4096,
        );
        assert_eq!(e, r#"{"GhiChu":"***","MaTTHC":"1.001"}"#);
    }

    #[test]
    fn error_messages_keep_their_path_and_lose_the_value() {
        assert_eq!(
            message(r#"$.data[0].SoGiayToChuHoSo: "Nguyễn Văn An" is not a string of digits"#),
            r#"$.data[0].SoGiayToChuHoSo: "***" is not a string of digits"#
        );
        assert_eq!(
            message("$.data[0].ChuHoSo: 82123456789 is not a string"),
            "$.data[0].ChuHoSo: *** is not a string"
        );
        assert_eq!(
            message(r#"$.data[0].NgayHenTra: "20231345" is not a date"#),
            r#"$.data[0].NgayHenTra: "20231345" is not a date"#
        );
        assert_eq!(
            message("$: invalid JSON: EOF while parsing a string at line 1 column 912"),
            "$: invalid JSON: EOF while parsing a string at line 1 column 912"
        );
        assert_eq!(message(r#"$.x: "unterminated Lê"#), r#"$.x: "***"#);
    }
}
