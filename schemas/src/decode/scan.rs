//! A JSON reader for the raw shapes, written for the one job the ingestor does most.
//!
//! In a profile, serde_json's generic visitor calls and its token-by-token walk over
//! skipped values were about half of decoding a national sync record. This reader fills
//! the same [`Raw`] shapes directly, which made decode + normalize faster (the decode bench in
//! BENCHMARKS.md); most of what is left is scanning each string's bytes.
//!
//! It never judges a message bad. On anything it is not sure of (a syntax error, a lone
//! surrogate, a number serde_json might read differently, nesting past [`MAX_DEPTH`]) it
//! gives up with `None`, and the caller decodes the message again with serde_json, which
//! is the reference: it either reads the same values or says what is wrong and where.
//! A differential test and the fuzz target hold the two to the same result on valid
//! input, and check that this reader never accepts what serde_json rejects.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering};

use super::raw::Raw;

/// Deeper nesting is left to serde_json, whose own limit is 128: a message nested this
/// deep is hostile or broken, and the reader's recursion stays small.
const MAX_DEPTH: u32 = 64;

/// A value this reader can fill from JSON.
pub(crate) trait Scan<'a>: Sized {
    fn scan(r: &mut Reader<'a>) -> Option<Self>;
}

/// Reads one whole message as `T`: the value, then nothing but whitespace.
pub(crate) fn parse<'a, T: Scan<'a>>(text: &'a str) -> Option<T> {
    let mut r = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let value = T::scan(&mut r)?;
    match r.peek() {
        None => Some(value),
        Some(_) => None,
    }
}

/// A cursor over a message already checked to be UTF-8.
pub(crate) struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: u32,
}

/// Which key followed each key of one object shape, the last time one was read: a guess at
/// the next key, checked with one comparison of its quoted bytes before anything is
/// scanned.
///
/// A producer writes its keys in one order, so after the first message nearly every key
/// is found this way, where each used to be scanned as a string and then compared with
/// the shape's names one by one. In profiles of a replica this took about a sixth off
/// reading JSON, and decode + normalize ran 7 to 10% faster (BENCHMARKS.md). The
/// guess only saves work: a key is taken from it only when the bytes at the cursor are
/// exactly that key and its closing quote, so a wrong or stale guess (another producer's
/// order, another thread's update) costs one comparison and never changes what is read.
/// It is shared by every thread without locking: a relaxed atomic byte per slot, written
/// only when a guess missed.
pub(crate) struct KeyOrder {
    /// Slot 0 is the start of an object, slot `i + 1` follows name `i`, and the last slot
    /// follows a key not in the names. Each holds a name's index, or `NO_GUESS`.
    next: [AtomicU8; KeyOrder::SLOTS],
}

impl KeyOrder {
    const SLOTS: usize = 64;
    /// The most names a shape may have: one slot for the start, one for unknown keys.
    pub(crate) const MAX_NAMES: usize = Self::SLOTS - 2;
    const NO_GUESS: u8 = u8::MAX;

    pub(crate) const fn new() -> Self {
        KeyOrder {
            next: [const { AtomicU8::new(Self::NO_GUESS) }; Self::SLOTS],
        }
    }

    fn guess(&self, slot: usize) -> usize {
        usize::from(self.next[slot].load(Ordering::Relaxed))
    }

    fn learn(&self, slot: usize, found: Option<usize>) {
        // Names are at most MAX_NAMES, so an index always fits below NO_GUESS.
        let value = found.map_or(Self::NO_GUESS, |i| i as u8);
        // Written only when it changes, so threads reading the same order share the
        // cache line without bouncing it.
        if self.next[slot].load(Ordering::Relaxed) != value {
            self.next[slot].store(value, Ordering::Relaxed);
        }
    }
}

/// Two slices of the same length are equal, compared a word at a time with the last word
/// overlapping: for a key of 5 to 30 bytes this is two to four comparisons, inline, where
/// `==` calls `memcmp`, whose share of a replica's CPU doubled, to 4%, when every guessed
/// key went through it.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let n = b.len();
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes"));
    match n {
        0..=3 => a == b,
        4..=8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => {
            let mut i = 0;
            while i + 8 < n {
                if word(a, i) != word(b, i) {
                    return false;
                }
                i += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes that end the plain run of a string: the quote, the backslash, and the control
/// characters JSON forbids unescaped.
fn special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

impl<'a> Reader<'a> {
    /// The next byte after any whitespace, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b' ' | b'\n' | b'\r' | b'\t' => self.pos += 1,
                _ => return Some(b),
            }
        }
        None
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// The position of the next quote, backslash or control byte, eight bytes at a time.
    /// Each mask's lowest set bit is exact (a borrow only sets bits above a true match),
    /// so the lowest bit of their union is the first special byte.
    fn plain_run(&self, mut i: usize) -> usize {
        let b = self.bytes;
        while let Some(chunk) = b.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let quote = w ^ (LO * u64::from(b'"'));
            let slash = w ^ (LO * u64::from(b'\\'));
            let found = (quote.wrapping_sub(LO) & !quote
                | slash.wrapping_sub(LO) & !slash
                | w.wrapping_sub(LO * 0x20) & !w)
                & HI;
            if found != 0 {
                return i + (found.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        while i < b.len() && !special(b[i]) {
            i += 1;
        }
        i
    }

    /// A string, borrowed unless it has escapes.
    pub(crate) fn string(&mut self) -> Option<Cow<'a, str>> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos + 1;
        let end = self.plain_run(start);
        match *self.bytes.get(end)? {
            b'"' => {
                self.pos = end + 1;
                // Quote and backslash are ASCII, so both ends are on char boundaries.
                Some(Cow::Borrowed(&self.text[start..end]))
            }
            b'\\' => {
                let mut owned = String::with_capacity(end - start + 16);
                owned.push_str(&self.text[start..end]);
                self.pos = end;
                self.escaped(&mut owned)?;
                Some(Cow::Owned(owned))
            }
            _ => None,
        }
    }

    /// The rest of a string from its first backslash, unescaped into `out`.
    fn escaped(&mut self, out: &mut String) -> Option<()> {
        loop {
            match *self.bytes.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                b'\\' => {
                    let c = match *self.bytes.get(self.pos + 1)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            self.pos += 2;
                            out.push(self.unicode_escape()?);
                            continue;
                        }
                        _ => return None,
                    };
                    out.push(c);
                    self.pos += 2;
                }
                _ => {
                    let end = self.plain_run(self.pos);
                    if end == self.pos {
                        return None; // a control byte
                    }
                    out.push_str(&self.text[self.pos..end]);
                    self.pos = end;
                }
            }
        }
    }

    /// After `\u`: one code point, from a surrogate pair where it takes two escapes. A
    /// lone surrogate is left to serde_json to judge.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if !(0xD800..0xDC00).contains(&first) {
            return char::from_u32(first);
        }
        if self.bytes.get(self.pos..self.pos + 2)? != b"\\u" {
            return None;
        }
        self.pos += 2;
        let second = self.hex4()?;
        if !(0xDC00..0xE000).contains(&second) {
            return None;
        }
        char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4)?;
        let mut v = 0;
        for &d in digits {
            v = v * 16 + char::from(d).to_digit(16)?;
        }
        self.pos += 4;
        Some(v)
    }

    /// A number as serde_json reads it: integers that fit are `Int`, `-0` is a float,
    /// and a fraction or an exponent makes a float. Floats are read only where any
    /// correct parser gives the same value (15 significant digits, a power of ten up to
    /// 22); longer ones go to serde_json.
    fn number(&mut self) -> Option<Raw<'a>> {
        let b = self.bytes;
        let start = self.pos;
        let negative = b[start] == b'-';
        let mut i = start + usize::from(negative);
        let int_start = i;
        // Wraps past 19 digits, where it is not used.
        let mut magnitude: u64 = 0;
        match *b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => {
                while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
                    magnitude = magnitude.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                    i += 1;
                }
            }
            _ => return None,
        }
        let int_digits = i - int_start;
        let mut digits = int_digits;
        let mut exp10: i64 = 0;
        let mut float = false;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let frac_start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == frac_start {
                return None;
            }
            digits += i - frac_start;
            exp10 -= (i - frac_start) as i64;
            float = true;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            let minus = b.get(i) == Some(&b'-');
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let exp_start = i;
            let mut e: i64 = 0;
            while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
                e = (e * 10 + i64::from(d - b'0')).min(1_000);
                i += 1;
            }
            if i == exp_start {
                return None;
            }
            exp10 += if minus { -e } else { e };
            float = true;
        }
        self.pos = i;
        let text = &self.text[start..i];
        if float {
            if digits > 15 || !(-22..=22).contains(&exp10) {
                return None;
            }
            return text.parse().ok().map(Raw::Float);
        }
        // Up to 19 digits always fits a u64; serde_json turns longer ones into floats.
        if int_digits > 19 {
            return None;
        }
        if !negative {
            return Some(Raw::from_u64(magnitude));
        }
        // serde_json's rule: a negative that does not fit an i64, and -0, are floats.
        let negated = (magnitude as i64).wrapping_neg();
        Some(if negated >= 0 {
            Raw::Float(-(magnitude as f64))
        } else {
            Raw::Int(negated)
        })
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// An object of a known shape: hands `field` each key's index in `names` (each name
    /// written with its quotes, as `"\"MaHoSo\""`), or `None` for a key not among them;
    /// `field` must consume the value. `order` learns the order keys come in, so most keys
    /// are recognised with one comparison (see [`KeyOrder`]).
    pub(crate) fn fields(
        &mut self,
        names: &[&[u8]],
        order: &KeyOrder,
        mut field: impl FnMut(&mut Self, Option<usize>) -> Option<()>,
    ) -> Option<()> {
        debug_assert!(names.len() <= KeyOrder::MAX_NAMES);
        let unknown_slot = KeyOrder::SLOTS - 1;
        let mut slot = 0;
        self.delimited(b'{', b'}', |r| {
            if r.peek()? != b'"' {
                return None;
            }
            // Loaded once: another thread may change the slot meanwhile.
            let guess = order.guess(slot);
            let found = match names.get(guess) {
                Some(name)
                    if r.bytes
                        .get(r.pos..r.pos + name.len())
                        .is_some_and(|b| same(b, name)) =>
                {
                    r.pos += name.len();
                    Some(guess)
                }
                _ => {
                    let key = r.string()?;
                    let found = names
                        .iter()
                        .position(|n| &n[1..n.len() - 1] == key.as_bytes());
                    order.learn(slot, found);
                    found
                }
            };
            slot = found.map_or(unknown_slot, |i| i + 1);
            r.expect(b':')?;
            field(r, found)
        })
    }

    /// An array, with `item` consuming each element.
    pub(crate) fn array(&mut self, item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.delimited(b'[', b']', item)
    }

    /// `open`, items separated by commas, `close`: the shape objects and arrays share.
    fn delimited(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.expect(open)?;
        self.enter()?;
        if self.peek()? == close {
            self.pos += 1;
        } else {
            loop {
                item(self)?;
                match self.peek()? {
                    b',' => self.pos += 1,
                    b if b == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// An array of `T`.
    pub(crate) fn list<T: Scan<'a>>(&mut self) -> Option<Vec<T>> {
        let mut items = Vec::new();
        self.array(|r| {
            items.push(T::scan(r)?);
            Some(())
        })?;
        Some(items)
    }

    /// Any value, checked and dropped: fields sohoa does not read, and personal data.
    pub(crate) fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            // Its keys are checked like any string, and dropped with their values.
            b'{' => self.delimited(b'{', b'}', |r| {
                r.string()?;
                r.expect(b':')?;
                r.skip()
            }),
            b'[' => self.array(Self::skip),
            _ => self.scalar().map(drop),
        }
    }

    /// Anything but an object or an array.
    fn scalar(&mut self) -> Option<Raw<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Raw::Str),
            b't' => self.literal(b"true").map(|()| Raw::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Raw::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Raw::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }
}

impl<'a> Scan<'a> for Raw<'a> {
    fn scan(r: &mut Reader<'a>) -> Option<Self> {
        match r.peek()? {
            b'{' => r.skip().map(|()| Raw::Object),
            b'[' => r.skip().map(|()| Raw::Array),
            _ => r.scalar(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Option<Raw<'_>> {
        parse::<Raw>(json)
    }

    #[test]
    fn scalars_read_as_serde_json_reads_them() {
        let cases = [
            "0",
            "-0",
            "17",
            "-17",
            "999999999999999999",
            "-999999999999999999",
            "9223372036854775807",
            "9223372036854775808",
            "9999999999999999999",
            "-9223372036854775808",
            "-9223372036854775809",
            "1.5",
            "-0.0",
            "2e3",
            "2E-3",
            "1.25e+2",
            "123456789012345",
            "0.000001",
            "true",
            "false",
            "null",
            r#""plain""#,
            r#""Nguyễn Văn An""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u00e1\u1ea1 \ud83d\ude00""#,
            r#"  "padded"  "#,
            "[1, [2, {\"a\": [3]}], \"x\"]",
            "{\"k\": {\"nested\": true}, \"e\": {}}",
            "[]",
        ];
        for json in cases {
            let fast = raw(json).unwrap_or_else(|| panic!("{json} was not read"));
            let slow: Raw = serde_json::from_str(json).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{json}");
        }
        assert_eq!(raw(r#""é\n""#), Some(Raw::Str("é\n".into())));
        assert!(matches!(
            raw(r#""abc""#),
            Some(Raw::Str(Cow::Borrowed("abc")))
        ));
    }

    /// Each of these is either wrong or read differently by another parser; the reader
    /// must give up and leave the verdict to serde_json.
    #[test]
    fn gives_up_on_what_it_is_not_sure_of() {
        let cases = [
            "",
            "   ",
            "01",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "1e+",
            "12345678901234567890",
            "0.1234567890123456",
            "1e23",
            "1e400",
            "tru",
            "nul",
            "NaN",
            "Infinity",
            r#""unterminated"#,
            "\"tab\tinside\"",
            r#""\x""#,
            r#""\u12""#,
            r#""\ud800""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{1:2}",
            "[1]]",
            "{} {}",
            "[",
        ];
        for json in cases {
            assert_eq!(raw(json), None, "{json:?} was read");
        }
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(raw(&deep), None);
        let shallow = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(raw(&shallow), Some(Raw::Array));
    }

    #[test]
    fn the_plain_run_stops_at_the_first_special_byte() {
        // Every position in a 20-byte run, so the eight-byte steps and the tail both see
        // each kind of special byte.
        for at in 0..20 {
            for special in [b'"', b'\\', 0x01, 0x1f] {
                let mut bytes = vec![b'a'; 20];
                bytes[at] = special;
                if at + 3 < 20 {
                    bytes[at + 3] = b'"';
                }
                let text = String::from_utf8(bytes).unwrap();
                let r = Reader {
                    text: &text,
                    bytes: text.as_bytes(),
                    pos: 0,
                    depth: 0,
                };
                assert_eq!(r.plain_run(0), at, "{special:#x} at {at}");
            }
        }
        // Bytes just past the specials (0x20, 0x23, 0x5d) and high UTF-8 bytes are plain.
        let text = "\u{20}#]ếạ\u{7f}\u{80}đ\"";
        let r = Reader {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            depth: 0,
        };
        assert_eq!(r.plain_run(0), text.len() - 1);
    }

    #[test]
    fn words_compare_like_slices_at_every_length_and_position() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
            assert!(same(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same(&a, &b), "length {n}, differing at {at}");
            }
        }
    }

    /// The names of a made-up shape: two of them are prefixes of others.
    const NAMES: &[&[u8]] = &[
        b"\"TrangThai\"",
        b"\"TrangThaiHoSo\"",
        b"\"MaHoSo\"",
        b"\"Gia\"",
    ];

    /// Each key of `json`, an object of [`NAMES`], as its index, with its value.
    fn keyed<'a>(json: &'a str, order: &KeyOrder) -> Option<Vec<(Option<usize>, Raw<'a>)>> {
        let mut r = Reader {
            text: json,
            bytes: json.as_bytes(),
            pos: 0,
            depth: 0,
        };
        let mut seen = Vec::new();
        r.fields(NAMES, order, |r, index| {
            seen.push((index, Raw::scan(r)?));
            Some(())
        })?;
        r.peek().is_none().then_some(seen)
    }

    #[test]
    fn keys_read_from_a_guess_are_the_keys_read_by_name() {
        let order = KeyOrder::new();
        let s = |v: &str| Raw::Str(Cow::Owned(v.into()));
        let json = r#"{"MaHoSo":"a","TrangThaiHoSo":3,"TrangThai":4,"Khac":5,"Gia":6}"#;
        let expected = vec![
            (Some(2), s("a")),
            (Some(1), Raw::Int(3)),
            (Some(0), Raw::Int(4)),
            (None, Raw::Int(5)),
            (Some(3), Raw::Int(6)),
        ];
        // The first read learns the order by name, the second reads from the guesses.
        assert_eq!(keyed(json, &order), Some(expected.clone()));
        assert_eq!(order.guess(0), 2, "MaHoSo comes first");
        assert_eq!(order.guess(3), 1, "TrangThaiHoSo follows MaHoSo");
        assert_eq!(order.guess(2), 0, "TrangThai follows TrangThaiHoSo");
        assert_eq!(
            order.guess(KeyOrder::SLOTS - 1),
            3,
            "Gia follows an unknown key"
        );
        assert_eq!(keyed(json, &order), Some(expected));

        // Every guess wrong now: a name whose guess is its prefix (TrangThai before
        // TrangThaiHoSo), and the other way round, a longer key starting with the guess,
        // an escaped key, spaces, and a repeated key (the last one wins later, in the
        // struct, as with serde_json).
        let other =
            r#"{ "TrangThai" : 4 , "Ma\u0048oSo":"b", "TrangThaiHoSoX":1, "Gia":6,"MaHoSo":"c"}"#;
        assert_eq!(
            keyed(other, &order),
            Some(vec![
                (Some(0), Raw::Int(4)),
                (Some(2), s("b")),
                (None, Raw::Int(1)),
                (Some(3), Raw::Int(6)),
                (Some(2), s("c")),
            ])
        );
        let prefix = r#"{"TrangThaiHoSo":1,"TrangThai":2}"#;
        assert_eq!(order.guess(0), 0, "TrangThai is now guessed first");
        assert_eq!(
            keyed(prefix, &order),
            Some(vec![(Some(1), Raw::Int(1)), (Some(0), Raw::Int(2))])
        );

        // A guessed key cut short, or without its colon, is no object.
        for broken in [
            r#"{"MaHoSo""#,
            r#"{"MaHo"#,
            r#"{"TrangThaiHoSo" 1}"#,
            r#"{"TrangThaiHoSo":"#,
        ] {
            assert_eq!(keyed(broken, &order), None, "{broken}");
        }
    }
}
