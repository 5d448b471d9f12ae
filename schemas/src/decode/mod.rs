//! Source decoders, behind one trait, chosen per topic in config.
//!
//! A decoder turns one message into any number of events: an envelope of the national
//! sync feed holds many records, and one bad record must not take the good ones with it.
//! So a decoder never fails as a whole; it reports events, rejected records and warnings.

mod canonical;
mod dvcqg;
mod raw;
mod scan;

use std::sync::Arc;

use serde::Deserialize;

pub use canonical::CanonicalDecoder;
#[doc(hidden)]
pub use dvcqg::readers_agree;
pub use dvcqg::DvcqgDecoder;

use crate::error::DecodeError;
use crate::event::DossierEvent;
use crate::normalize::Warnings;
use crate::pseudonym::Pseudonymizer;

/// What one message decoded into.
#[derive(Debug, Default)]
pub struct DecodeOutput<'a> {
    /// Events that decoded and normalized, in source order.
    pub events: Vec<DossierEvent<'a>>,
    /// Records (or the whole message, path `$`) that could not become events.
    pub rejects: Vec<DecodeError>,
    /// What was fixed or tolerated along the way.
    pub warnings: Warnings,
}

impl<'a> DecodeOutput<'a> {
    pub fn clear(&mut self) {
        self.events.clear();
        self.rejects.clear();
        self.warnings = Warnings::default();
    }

    /// A record's event, or why it could not become one.
    pub(crate) fn push(&mut self, r: Result<DossierEvent<'a>, DecodeError>) {
        match r {
            Ok(e) => {
                // Most messages hold one event. A first push would make room for four,
                // 1.6 KB, past mimalloc's small-object path; allocating them was 1.5% of a
                // replica's CPU. One event is 392 bytes.
                if self.events.capacity() == 0 {
                    self.events.reserve_exact(1);
                }
                self.events.push(e)
            }
            Err(e) => self.rejects.push(e),
        }
    }
}

/// A source format. Implementations must never panic, whatever the bytes.
pub trait Decoder: Send + Sync + std::fmt::Debug {
    /// The config name of the format.
    fn format(&self) -> DecoderKind;

    /// Decode one message, appending to `out`.
    fn decode<'a>(&self, bytes: &'a [u8], out: &mut DecodeOutput<'a>);
}

/// The formats a topic can name in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// The national sync record (DongBoHoSoMC) and progress updates (CapNhatTienDoHoSoMC).
    Dvcqg,
    /// JSON that already follows the canonical v1 JSON Schema.
    Canonical,
}

impl DecoderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecoderKind::Dvcqg => "dvcqg",
            DecoderKind::Canonical => "canonical",
        }
    }
}

impl std::str::FromStr for DecoderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dvcqg" => Ok(DecoderKind::Dvcqg),
            "canonical" => Ok(DecoderKind::Canonical),
            other => Err(format!(
                "unknown decoder {other:?} (expected dvcqg or canonical)"
            )),
        }
    }
}

/// What every decoder needs besides the bytes.
#[derive(Debug, Clone)]
pub struct DecoderContext {
    /// The `source_system` written into each event (defaults to the format's name).
    pub source_system: Arc<str>,
    /// Pseudonymizes applicant ID numbers.
    pub pseudonymizer: Arc<Pseudonymizer>,
}

/// The message as text. Checking UTF-8 once for the whole message, then parsing with
/// `serde_json::from_str`, spares serde_json a second check of every string it reads.
/// The check is SIMD: the standard library's took a twentieth of an ingestor's CPU on
/// Vietnamese text, whose accented letters keep it off its ASCII fast path.
pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    if let Ok(text) = simdutf8::basic::from_utf8(bytes) {
        return Ok(text);
    }
    // The fast check says only that the bytes are invalid; the standard one says where.
    std::str::from_utf8(bytes).map_err(|e| {
        crate::error::Loc::ROOT.error(crate::error::Reason::Syntax(format!(
            "not UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        )))
    })
}

/// Build the decoder a topic's config names.
pub fn build(kind: DecoderKind, ctx: DecoderContext) -> Box<dyn Decoder> {
    match kind {
        DecoderKind::Dvcqg => Box::new(DvcqgDecoder::new(ctx)),
        DecoderKind::Canonical => Box::new(CanonicalDecoder::new()),
    }
}
