//! Keyed pseudonyms for applicant ID numbers.
//!
//! The same ID number always maps to the same pseudonym under one key, so analysts can
//! count repeat applicants, but without the key nobody can test a guessed ID number
//! against the data (a plain hash of a 12-digit number is trivially reversible).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The environment variable the key is read from.
pub const KEY_ENV: &str = "SOHOA_PSEUDONYM_KEY";

/// Keys shorter than this are refused: HMAC security rests on the key's entropy.
pub const MIN_KEY_BYTES: usize = 16;

/// The Parquet key-value metadata entry (and Arrow schema metadata entry) that names the
/// fingerprint of the key a file's pseudonyms were made with.
pub const KEY_FINGERPRINT_METADATA: &str = "sohoa.pseudonym_key";

/// What a key's fingerprint is the MAC of.
const FINGERPRINT_INPUT: &[u8] = b"sohoa pseudonym key fingerprint v1";

/// Keeps digests of raw bytes apart from pseudonyms: an ID number's pseudonym and the
/// digest of the same bytes must differ.
const DIGEST_DOMAIN: &[u8] = b"sohoa raw digest v1\0";

/// The well-known key of development mode. Pseudonyms made with it protect nothing.
const DEVELOPMENT_KEY: &[u8] = b"sohoa-development-key-NOT-FOR-PRODUCTION";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PseudonymError {
    #[error("{KEY_ENV} is not set: set it to a secret of at least {MIN_KEY_BYTES} bytes (for example `openssl rand -hex 32`), or run in development mode")]
    MissingKey,
    #[error("{KEY_ENV} is too short ({len} bytes): use at least {MIN_KEY_BYTES} bytes")]
    ShortKey { len: usize },
    #[error("{KEY_ENV} is set and development mode is on ({DEVELOPMENT_SETTING}): choose one. Development mode would pseudonymize with the public key and ignore the real one")]
    BothKeys,
}

/// Where development mode is switched on, for messages.
pub const DEVELOPMENT_SETTING: &str = "privacy.development_mode, SOHOA__PRIVACY__DEVELOPMENT_MODE";

/// Turns ID numbers into HMAC-SHA256 pseudonyms. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct Pseudonymizer {
    // A keyed MAC is cloned per use: cheaper than re-deriving the key pads each time.
    mac: Hmac<Sha256>,
    development: bool,
}

impl Pseudonymizer {
    /// A pseudonymizer keyed with `key`.
    pub fn new(key: &[u8]) -> Result<Self, PseudonymError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(PseudonymError::ShortKey { len: key.len() });
        }
        Ok(Pseudonymizer {
            mac: Hmac::new_from_slice(key).expect("HMAC takes keys of any length"),
            development: false,
        })
    }

    /// The key from `SOHOA_PSEUDONYM_KEY`; a missing key is an error, never a default.
    pub fn from_env() -> Result<Self, PseudonymError> {
        match std::env::var_os(KEY_ENV) {
            Some(k) if !k.is_empty() => Self::new(k.as_encoded_bytes()),
            _ => Err(PseudonymError::MissingKey),
        }
    }

    /// The key a service is configured with: the public development key in development
    /// mode, else `SOHOA_PSEUDONYM_KEY`. Both at once is an error rather than a silent
    /// choice: data pseudonymized with the public key must never pass for production data.
    pub fn configured(development_mode: bool) -> Result<Self, PseudonymError> {
        let key_set = std::env::var_os(KEY_ENV).is_some_and(|k| !k.is_empty());
        match (development_mode, key_set) {
            (true, true) => Err(PseudonymError::BothKeys),
            (true, false) => Ok(Self::development()),
            (false, _) => Self::from_env(),
        }
    }

    /// Development mode: a fixed, public key. Only for the demo and tests; it logs loudly
    /// so it cannot slip into production unnoticed.
    pub fn development() -> Self {
        tracing::warn!(
            mode = "development",
            "pseudonyms use the public development key: applicant ID numbers are NOT protected; \
             set {KEY_ENV} for real data"
        );
        Pseudonymizer {
            mac: Hmac::new_from_slice(DEVELOPMENT_KEY).expect("HMAC takes keys of any length"),
            development: true,
        }
    }

    pub fn is_development(&self) -> bool {
        self.development
    }

    /// Names the key without revealing it: the first 8 hex digits of the HMAC of a fixed
    /// string. Written into every file sohoa stores, so that tables pseudonymized under
    /// different keys (the public development key above all) are never mixed unnoticed.
    pub fn fingerprint(&self) -> String {
        let mut mac = self.mac.clone();
        mac.update(FINGERPRINT_INPUT);
        crate::normalize::to_hex(&mac.finalize().into_bytes()[..4])
    }

    /// The fingerprint of the public development key.
    pub fn development_fingerprint() -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(DEVELOPMENT_KEY).expect("HMAC takes keys of any length");
        mac.update(FINGERPRINT_INPUT);
        crate::normalize::to_hex(&mac.finalize().into_bytes()[..4])
    }

    /// A keyed digest of raw bytes (a rejected line, say): equal inputs give equal digests
    /// under one key, so a rejected record can be matched to its source line by whoever
    /// holds the key, while the digest alone reveals nothing of a short ID inside it.
    pub fn digest(&self, bytes: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(DIGEST_DOMAIN);
        mac.update(bytes);
        crate::normalize::to_hex(&mac.finalize().into_bytes())
    }

    /// The pseudonym of an ID number: spaces, dots and dashes removed, upper-cased, then
    /// HMAC-SHA256, as 64 hex digits. Returns `None` for an empty ID.
    pub fn pseudonym(&self, id_number: &str) -> Option<String> {
        let mut mac = self.mac.clone();
        let any = if id_number.is_ascii() {
            feed_ascii(&mut mac, id_number.as_bytes())
        } else {
            feed_chars(&mut mac, id_number)
        };
        any.then(|| crate::normalize::to_hex(&mac.finalize().into_bytes()))
    }
}

/// The MAC is fed in runs of up to this many bytes, not a character at a time: each
/// `update` has a fixed cost that outweighed hashing a 12-digit ID.
const RUN: usize = 64;

/// [`feed_chars`] for an ASCII ID, the usual case, a byte at a time: decoding and encoding
/// each char, and copying it with a slice copy of variable length, were a third of the
/// pseudonym's cost outside SHA-256.
fn feed_ascii(mac: &mut Hmac<Sha256>, id: &[u8]) -> bool {
    let mut run = [0u8; RUN];
    let (mut len, mut any) = (0, false);
    for &b in id {
        // The ASCII chars `char::is_whitespace` takes: tab to carriage return, and space.
        if matches!(b, b'\t'..=b'\r' | b' ' | b'.' | b'-') {
            continue;
        }
        any = true;
        if len == RUN {
            mac.update(&run);
            len = 0;
        }
        run[len] = b.to_ascii_uppercase();
        len += 1;
    }
    mac.update(&run[..len]);
    any
}

/// Feeds the ID without whitespace, dots and dashes, upper-cased (ASCII letters only);
/// `false` if nothing is left.
fn feed_chars(mac: &mut Hmac<Sha256>, id: &str) -> bool {
    let mut any = false;
    let mut run = [0u8; RUN];
    let mut len = 0;
    for c in id.chars() {
        if c.is_whitespace() || matches!(c, '.' | '-') {
            continue;
        }
        any = true;
        let mut utf8 = [0u8; 4];
        let bytes = c.to_ascii_uppercase().encode_utf8(&mut utf8).as_bytes();
        if len + bytes.len() > run.len() {
            mac.update(&run[..len]);
            len = 0;
        }
        run[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    }
    mac.update(&run[..len]);
    any
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field("key", &"[redacted]")
            .field("development", &self.development)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINGERPRINT_OF_TEST_KEY: &str = "4b745989";

    #[test]
    fn pseudonyms_are_keyed_and_stable() {
        let a = Pseudonymizer::new(b"0123456789abcdef-key-a").unwrap();
        let b = Pseudonymizer::new(b"0123456789abcdef-key-b").unwrap();
        let p = a.pseudonym("082123456789").unwrap();
        assert_eq!(p.len(), 64);
        assert!(p.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.pseudonym(" 082 123 456 789 ").unwrap(), p);
        assert_ne!(b.pseudonym("082123456789").unwrap(), p);
        assert!(!p.contains("082123456789"));
        assert_eq!(a.pseudonym("  "), None);
        // Longer than one run of the buffer, with characters of several UTF-8 lengths.
        let long = "ab-c.dé ".repeat(20);
        let mut mac = a.mac.clone();
        mac.update("ABCDé".repeat(20).as_bytes());
        let expected = crate::normalize::to_hex(&mac.finalize().into_bytes());
        assert_eq!(a.pseudonym(&long).unwrap(), expected);
    }

    /// Every ASCII byte, alone and among digits, and IDs longer than a run: the byte path
    /// must feed the MAC what the char path feeds it.
    #[test]
    fn ascii_ids_are_fed_as_the_char_path_feeds_them() {
        let p = Pseudonymizer::new(b"0123456789abcdef-key-a").unwrap();
        let both = |id: &str| {
            assert!(id.is_ascii());
            let (mut a, mut c) = (p.mac.clone(), p.mac.clone());
            let (any_a, any_c) = (feed_ascii(&mut a, id.as_bytes()), feed_chars(&mut c, id));
            assert_eq!(any_a, any_c, "{id:?}");
            assert_eq!(
                a.finalize().into_bytes(),
                c.finalize().into_bytes(),
                "{id:?}"
            );
        };
        let mut ids: Vec<String> = Vec::new();
        for b in 0u8..128 {
            let c = char::from(b);
            ids.push(c.to_string());
            ids.push(format!("08{c}21 23{c}"));
        }
        for n in [0, 1, 12, 63, 64, 65, 127, 128, 129, 200] {
            ids.push("ab-c.d e\t".chars().cycle().take(n).collect());
            ids.push("x".repeat(n));
        }
        for id in &ids {
            both(id);
        }
        // A vertical tab is whitespace to `char`, and not to `u8::is_ascii_whitespace`.
        assert_eq!(p.pseudonym("\u{b}082\u{b}"), p.pseudonym("082"));
    }

    #[test]
    fn known_vector_matches_python_hmac() {
        // HMAC-SHA256(key = "sohoa-test-key-16bytes", "082123456789"), computed with
        // Python's hmac module, guards against accidentally hashing a different message.
        let p = Pseudonymizer::new(b"sohoa-test-key-16bytes").unwrap();
        assert_eq!(
            p.pseudonym("082123456789").unwrap(),
            "d2f3333ed28a0221ae536956dc11efc6506948afd7aa019fe0ca4fc23be830b7"
        );
    }

    #[test]
    fn short_or_missing_keys_are_refused() {
        assert_eq!(
            Pseudonymizer::new(b"short").unwrap_err(),
            PseudonymError::ShortKey { len: 5 }
        );
        let msg = PseudonymError::MissingKey.to_string();
        assert!(msg.contains("SOHOA_PSEUDONYM_KEY"), "{msg}");
    }

    #[test]
    fn fingerprints_name_the_key_and_the_development_key_is_known() {
        let a = Pseudonymizer::new(b"0123456789abcdef-key-a").unwrap();
        let b = Pseudonymizer::new(b"0123456789abcdef-key-b").unwrap();
        assert_eq!(a.fingerprint().len(), 8);
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        let dev = Pseudonymizer::development();
        assert_eq!(dev.fingerprint(), Pseudonymizer::development_fingerprint());
        assert_ne!(a.fingerprint(), dev.fingerprint());
        // HMAC-SHA256(key, "sohoa pseudonym key fingerprint v1")[..4], from Python's hmac.
        assert_eq!(
            Pseudonymizer::new(b"sohoa-test-key-16bytes")
                .unwrap()
                .fingerprint(),
            FINGERPRINT_OF_TEST_KEY
        );
        assert_ne!(
            a.digest(b"082123456789"),
            a.pseudonym("082123456789").unwrap()
        );
        assert_ne!(a.digest(b"x"), b.digest(b"x"));
    }

    #[test]
    fn both_keys_at_once_are_refused() {
        // Only this test sets the variable in this process, and it reads it back at once.
        std::env::set_var(KEY_ENV, "0123456789abcdef-a-real-key");
        let both = Pseudonymizer::configured(true);
        let real = Pseudonymizer::configured(false).map(|p| p.is_development());
        std::env::remove_var(KEY_ENV);
        assert_eq!(both.unwrap_err(), PseudonymError::BothKeys);
        assert_eq!(real, Ok(false));
        assert!(PseudonymError::BothKeys
            .to_string()
            .contains("SOHOA__PRIVACY__DEVELOPMENT_MODE"));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let p = Pseudonymizer::new(b"super-secret-key-material").unwrap();
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("super-secret"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
    }
}
