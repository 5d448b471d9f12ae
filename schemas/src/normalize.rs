//! Normalization shared by every decoder: text to NFC, codes trimmed and upper-cased,
//! times to UTC, and the stable event id.
//!
//! Each function returns the input borrowed when it is already clean, which is the common
//! case, so normalization costs a scan rather than a copy.

use std::borrow::Cow;

use sha2::{Digest, Sha256};
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use crate::error::Reason;
use crate::event::Micros;

/// Vietnam is UTC+7 all year (no daylight saving).
pub const VN_OFFSET_SECS: i64 = 7 * 3600;

/// Years outside this range are typing mistakes or placeholder dates (1900-01-01, 2100-…),
/// never real dossier times.
pub const MIN_YEAR: i32 = 2000;
pub const MAX_YEAR: i32 = 2099;

/// Things a decoder fixed or tolerated; counted, never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Warning {
    /// A field the decoder does not know. Tolerated so sources can add fields.
    UnknownField,
    /// Text arrived decomposed (NFD) or otherwise not NFC and was recomposed.
    TextNormalized,
    /// A code carried stray spaces or lower case.
    CodeCleaned,
    /// A number arrived as a string, or a date in a secondary format.
    Coerced,
    /// A code outside its list where the field is not needed for scoring; stored as null.
    UnknownCodeNulled,
    /// The due date is before the receipt: kept as sent, flagged for data quality.
    DueBeforeReceipt,
}

impl Warning {
    pub const ALL: [Warning; 6] = [
        Warning::UnknownField,
        Warning::TextNormalized,
        Warning::CodeCleaned,
        Warning::Coerced,
        Warning::UnknownCodeNulled,
        Warning::DueBeforeReceipt,
    ];

    /// Stable name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Warning::UnknownField => "unknown_field",
            Warning::TextNormalized => "text_normalized",
            Warning::CodeCleaned => "code_cleaned",
            Warning::Coerced => "coerced",
            Warning::UnknownCodeNulled => "unknown_code_nulled",
            Warning::DueBeforeReceipt => "due_before_receipt",
        }
    }
}

/// Counts of each [`Warning`], cheap enough to keep per message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warnings([u32; 6]);

impl Warnings {
    pub fn add(&mut self, w: Warning) {
        self.add_n(w, 1);
    }

    pub fn add_n(&mut self, w: Warning, n: u32) {
        self.0[w as usize] = self.0[w as usize].saturating_add(n);
    }

    pub fn get(&self, w: Warning) -> u32 {
        self.0[w as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|&n| n as u64).sum()
    }

    pub fn merge(&mut self, other: &Warnings) {
        for w in Warning::ALL {
            self.add_n(w, other.get(w));
        }
    }

    /// The non-zero counts, by name.
    pub fn iter(&self) -> impl Iterator<Item = (Warning, u32)> + '_ {
        Warning::ALL
            .into_iter()
            .map(|w| (w, self.get(w)))
            .filter(|&(_, n)| n > 0)
    }
}

/// Unicode NFC, trimmed. Empty text becomes `None`.
pub fn text<'a>(s: Cow<'a, str>, warnings: &mut Warnings) -> Option<Cow<'a, str>> {
    let s = trim_cow(s);
    if s.is_empty() {
        return None;
    }
    if plain_latin(s.as_bytes()) || is_nfc_quick(s.chars()) == IsNormalized::Yes {
        return Some(s);
    }
    let nfc: String = s.nfc().collect();
    if nfc != *s {
        warnings.add(Warning::TextNormalized);
    }
    Some(Cow::Owned(nfc))
}

/// Whether `utf8` holds only characters below U+0300 or in Latin Extended Additional
/// (U+1E00 to U+1EFF): all of them NFC whatever follows, since none combines. Those ranges
/// hold every precomposed Vietnamese letter, so most text passes here with one byte scan,
/// where the general check looked up each character's properties (a twentieth of decoding).
fn plain_latin(utf8: &[u8]) -> bool {
    let mut i = 0;
    while i < utf8.len() {
        match utf8[i] {
            0..0x80 => i += 1,
            // Lead bytes of U+0080 to U+02FF.
            0xC2..=0xCB => i += 2,
            // U+1E00 to U+1EFF.
            0xE1 if matches!(utf8.get(i + 1), Some(0xB8..=0xBB)) => i += 3,
            _ => return false,
        }
    }
    true
}

/// A code: NFC, trimmed, upper-cased. Empty codes become `None`.
pub fn code<'a>(s: Cow<'a, str>, warnings: &mut Warnings) -> Option<Cow<'a, str>> {
    let original_len = s.len();
    let s = text(s, warnings)?;
    let trimmed = s.len() != original_len;
    let has_lower = if s.is_ascii() {
        s.bytes().any(|b| b.is_ascii_lowercase())
    } else {
        s.chars().any(char::is_lowercase)
    };
    if trimmed || has_lower {
        warnings.add(Warning::CodeCleaned);
    }
    if !has_lower {
        return Some(s);
    }
    Some(Cow::Owned(s.to_uppercase()))
}

fn trim_cow(s: Cow<'_, str>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(o) => {
            let t = o.trim();
            if t.len() == o.len() {
                Cow::Owned(o)
            } else {
                Cow::Owned(t.to_owned())
            }
        }
    }
}

/// Parse a time as the sources send it, into UTC microseconds.
///
/// Accepted, in order of how common they are in real feeds:
/// - `yyyyMMddHHmmss`, Vietnam local time (the national sync format);
/// - ISO-8601 / RFC 3339 with an offset or `Z`;
/// - with a [`Warning::Coerced`]: `yyyyMMdd` (midnight, Vietnam time), `yyyyMMddHHmm`,
///   ISO-8601 without an offset (Vietnam time), and `dd/MM/yyyy[ HH:mm[:ss]]`.
///
/// Returns `Ok(None)` for an empty string, which sources use for "no date".
pub fn time(raw: &str, warnings: &mut Warnings) -> Result<Option<Micros>, Reason> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let b = s.as_bytes();
    let all_digits = b.iter().all(u8::is_ascii_digit);
    let parsed = if all_digits && b.len() == 14 {
        local_digits(b)
    } else if all_digits && (b.len() == 8 || b.len() == 12) {
        warnings.add(Warning::Coerced);
        local_digits(b)
    } else if b.len() >= 10 && b[4] == b'-' {
        iso(s, warnings)
    } else if b.len() >= 10 && b[2] == b'/' && b[5] == b'/' {
        warnings.add(Warning::Coerced);
        day_first(s)
    } else {
        None
    };
    let Some((year, micros)) = parsed else {
        return Err(Reason::BadDate(raw.to_owned()));
    };
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return Err(Reason::DateOutOfRange {
            value: raw.to_owned(),
            min: MIN_YEAR,
            max: MAX_YEAR,
        });
    }
    Ok(Some(micros))
}

fn num(b: &[u8]) -> u32 {
    b.iter().fold(0, |n, d| n * 10 + (d - b'0') as u32)
}

/// `yyyyMMdd[HHmm[ss]]` in Vietnam time.
fn local_digits(b: &[u8]) -> Option<(i32, Micros)> {
    let y = num(&b[0..4]) as i32;
    let (mo, d) = (num(&b[4..6]), num(&b[6..8]));
    let (h, mi) = if b.len() >= 12 {
        (num(&b[8..10]), num(&b[10..12]))
    } else {
        (0, 0)
    };
    let sec = if b.len() == 14 { num(&b[12..14]) } else { 0 };
    civil_to_micros(y, mo, d, h, mi, sec, VN_OFFSET_SECS).map(|m| (y, m))
}

/// `dd/MM/yyyy[ HH:mm[:ss]]` in Vietnam time, as some provincial exports write it.
fn day_first(s: &str) -> Option<(i32, Micros)> {
    let (date, clock) = s.split_once(' ').unwrap_or((s, ""));
    let mut it = date.split('/');
    let d: u32 = it.next()?.parse().ok()?;
    let mo: u32 = it.next()?.parse().ok()?;
    let y: i32 = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    let mut c = clock.trim().split(':').filter(|p| !p.is_empty());
    let h: u32 = c.next().map_or(Some(0), |p| p.parse().ok())?;
    let mi: u32 = c.next().map_or(Some(0), |p| p.parse().ok())?;
    let sec: u32 = c.next().map_or(Some(0), |p| p.parse().ok())?;
    civil_to_micros(y, mo, d, h, mi, sec, VN_OFFSET_SECS).map(|m| (y, m))
}

fn iso(s: &str, warnings: &mut Warnings) -> Option<(i32, Micros)> {
    use chrono::{Datelike, NaiveDateTime};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some((t.year(), t.timestamp_micros()));
    }
    // Without an offset the source means Vietnam time; say so with a warning.
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            warnings.add(Warning::Coerced);
            let utc = t.and_utc().timestamp_micros() - VN_OFFSET_SECS * 1_000_000;
            return Some((t.year(), utc));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        warnings.add(Warning::Coerced);
        let utc = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros() - VN_OFFSET_SECS * 1_000_000;
        return Some((d.year(), utc));
    }
    None
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm):
/// integer-only, so the hot path needs no calendar library.
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    // In i64 from the start: `y - 1` overflows i32 for the year i32::MIN, which a source
    // can send (`01/01/-2147483648`).
    let y = y as i64;
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn civil_to_micros(
    y: i32,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    offset_secs: i64,
) -> Option<Micros> {
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59
    {
        return None;
    }
    // Checked: a year a few hundred thousand away overflows microseconds since 1970; such
    // a value is no date at all.
    let secs = days_from_civil(y, mo, d)
        .checked_mul(86_400)?
        .checked_add((h * 3600 + mi * 60 + s) as i64 - offset_secs)?;
    secs.checked_mul(1_000_000)
}

/// The Vietnam-local calendar date of a UTC instant, as days since 1970-01-01.
pub fn vn_day(micros: Micros) -> i64 {
    (micros / 1_000_000 + VN_OFFSET_SECS).div_euclid(86_400)
}

/// The stable id of an event that carries no id of its own: a record sent twice hashes
/// to the same id, so the aggregator's dedupe drops the copy.
pub fn event_id(source: &str, dossier: &str, status_code: i8, event_time: Micros) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0x1f]);
    h.update(dossier.as_bytes());
    h.update([0x1f, status_code as u8]);
    h.update(event_time.to_be_bytes());
    to_hex(&h.finalize()[..16])
}

/// Lower-case hex. `hex::encode` goes through a char iterator, which showed up in the
/// decode profile; a table lookup into one allocation does not.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = vec![0u8; bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[(b >> 4) as usize];
        pair[1] = DIGITS[(b & 0xf) as usize];
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_normalization::char::canonical_combining_class;

    fn t(s: &str) -> Result<Option<Micros>, Reason> {
        time(s, &mut Warnings::default())
    }

    #[test]
    fn the_plain_latin_fast_path_only_passes_text_that_is_already_nfc() {
        for c in (0..0x3000).filter_map(char::from_u32) {
            let s = c.to_string();
            if plain_latin(s.as_bytes()) {
                // A string of such characters is NFC when each is, and none combines.
                assert_eq!(is_nfc_quick(s.chars()), IsNormalized::Yes, "{c:?}");
                assert_eq!(canonical_combining_class(c), 0, "{c:?}");
                assert!((c as u32) < 0x300 || (0x1E00..0x1F00).contains(&(c as u32)));
            }
        }
        let vietnamese = "Đăng ký biến động quyền sử dụng đất, Huỳnh Minh Đức";
        assert!(plain_latin(vietnamese.as_bytes()));
        assert!(!plain_latin(
            "Tiếng Việt".nfd().collect::<String>().as_bytes()
        ));
        assert!(!plain_latin("中文".as_bytes()));
        assert!(!plain_latin("a\u{301}".as_bytes()), "a combining mark");
        let mut w = Warnings::default();
        let decomposed: String = "Việt".nfd().collect();
        assert_eq!(
            text(Cow::Owned(decomposed), &mut w).as_deref(),
            Some("Việt")
        );
        assert_eq!(w.get(Warning::TextNormalized), 1);
    }

    #[test]
    fn vietnam_local_time_becomes_utc() {
        // 2023-02-23 08:05:12 at UTC+7 is 01:05:12 UTC.
        assert_eq!(t("20230223080512"), Ok(Some(1_677_114_312_000_000)));
        assert_eq!(t("2023-02-23T01:05:12Z"), Ok(Some(1_677_114_312_000_000)));
        assert_eq!(
            t("2023-02-23T08:05:12+07:00"),
            Ok(Some(1_677_114_312_000_000))
        );
        assert_eq!(t(""), Ok(None));
        assert_eq!(t("   "), Ok(None));
    }

    #[test]
    fn secondary_formats_are_accepted_with_a_warning() {
        let mut w = Warnings::default();
        let midnight = time("20230223", &mut w).unwrap().unwrap();
        assert_eq!(midnight, time("20230223000000", &mut w).unwrap().unwrap());
        assert_eq!(
            time("23/02/2023 08:05:12", &mut w),
            Ok(Some(1_677_114_312_000_000))
        );
        assert_eq!(
            time("2023-02-23T08:05:12", &mut w),
            Ok(Some(1_677_114_312_000_000))
        );
        assert_eq!(w.get(Warning::Coerced), 3);
    }

    #[test]
    fn impossible_dates_are_rejected() {
        for bad in [
            "20231345",
            "20231301000000",
            "20230230120000",
            "20230101250000",
            "2023-13-01T00:00:00Z",
            "tomorrow",
            "2023022308051",
            "31/02/2023",
        ] {
            assert!(
                matches!(t(bad), Err(Reason::BadDate(_))),
                "{bad} parsed as {:?}",
                t(bad)
            );
        }
        assert!(matches!(
            t("19000101000000"),
            Err(Reason::DateOutOfRange { .. })
        ));
        assert!(matches!(
            t("21000101000000"),
            Err(Reason::DateOutOfRange { .. })
        ));
        assert_eq!(t("20240229000000").map(|o| o.is_some()), Ok(true));
    }

    #[test]
    fn extreme_years_are_rejected_not_overflowed() {
        // Found by the bad-input corpus (tests/bad-input): these panicked with an
        // arithmetic overflow in debug builds.
        for bad in [
            "01/01/-2147483648",
            "01/03/2147483647",
            "31/12/-2147483648 23:59:59",
        ] {
            assert!(
                matches!(t(bad), Err(Reason::BadDate(_))),
                "{bad} parsed as {:?}",
                t(bad)
            );
        }
        assert!(matches!(
            t("01/01/99999"),
            Err(Reason::DateOutOfRange { .. })
        ));
        assert!(days_from_civil(i32::MIN, 1, 1) < 0);
    }

    #[test]
    fn codes_are_trimmed_and_upper_cased() {
        let mut w = Warnings::default();
        let c = code(" 000.00.30.h55-230110-0042 ".into(), &mut w).unwrap();
        assert_eq!(c, "000.00.30.H55-230110-0042");
        assert_eq!(w.get(Warning::CodeCleaned), 1);
        let clean = code("1.001193".into(), &mut w).unwrap();
        assert!(matches!(clean, Cow::Borrowed(_)));
        assert_eq!(w.get(Warning::CodeCleaned), 1);
        assert_eq!(code("   ".into(), &mut w), None);
    }

    #[test]
    fn text_is_recomposed_to_nfc() {
        let mut w = Warnings::default();
        let nfd: String = "Đăng ký khai sinh".nfd().collect();
        assert_ne!(nfd, "Đăng ký khai sinh");
        assert_eq!(text(nfd.into(), &mut w).unwrap(), "Đăng ký khai sinh");
        assert_eq!(w.get(Warning::TextNormalized), 1);
        let nfc = text("Hộ tịch".into(), &mut w).unwrap();
        assert!(matches!(nfc, Cow::Borrowed(_)));
    }

    #[test]
    fn local_day_uses_vietnam_time() {
        // 2023-02-23 23:30 in Vietnam is still the 23rd there, the 23rd 16:30 UTC.
        let late = t("20230223233000").unwrap().unwrap();
        let early = t("20230224003000").unwrap().unwrap();
        assert_eq!(vn_day(late), days_from_civil(2023, 2, 23));
        assert_eq!(vn_day(early), days_from_civil(2023, 2, 24));
    }

    #[test]
    fn event_ids_are_stable_and_distinct() {
        let a = event_id("dvcqg", "X-1", 4, 1);
        assert_eq!(a, event_id("dvcqg", "X-1", 4, 1));
        assert_eq!(a.len(), 32);
        assert_ne!(a, event_id("dvcqg", "X-1", 5, 1));
        assert_ne!(a, event_id("dvcqg", "X-1", 4, 2));
        assert_ne!(a, event_id("other", "X-1", 4, 1));
    }
}
