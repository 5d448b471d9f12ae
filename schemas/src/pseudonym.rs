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

/// The well-known key of development mode. Pseudonyms made with it protect nothing.
const DEVELOPMENT_KEY: &[u8] = b"sohoa-development-key-NOT-FOR-PRODUCTION";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PseudonymError {
    #[error("{KEY_ENV} is not set: set it to a secret of at least {MIN_KEY_BYTES} bytes (for example `openssl rand -hex 32`), or run in development mode")]
    MissingKey,
    #[error("{KEY_ENV} is too short ({len} bytes): use at least {MIN_KEY_BYTES} bytes")]
    ShortKey { len: usize },
}

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

    /// The pseudonym of an ID number: spaces, dots and dashes removed, upper-cased, then
    /// HMAC-SHA256, as 64 hex digits. Returns `None` for an empty ID.
    pub fn pseudonym(&self, id_number: &str) -> Option<String> {
        let mut mac = self.mac.clone();
        let mut any = false;
        // The MAC is fed in runs, not a character at a time: each `update` has a fixed
        // cost that outweighed hashing a 12-digit ID.
        let mut run = [0u8; 64];
        let mut len = 0;
        for c in id_number.chars() {
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
        any.then(|| crate::normalize::to_hex(&mac.finalize().into_bytes()))
    }
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
    fn debug_output_hides_the_key() {
        let p = Pseudonymizer::new(b"super-secret-key-material").unwrap();
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("super-secret"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
    }
}
