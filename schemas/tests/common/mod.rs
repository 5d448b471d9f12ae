//! Helpers shared by the schema crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use sohoa_schemas::{
    build_decoder, DecodeOutput, Decoder, DecoderContext, DecoderKind, Pseudonymizer,
};

/// The key every test pseudonymizes with; never a production key.
pub const TEST_KEY: &[u8] = b"sohoa-test-key-16bytes";

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn decoder(kind: DecoderKind) -> Box<dyn Decoder> {
    build_decoder(
        kind,
        DecoderContext {
            source_system: Arc::from(kind.as_str()),
            pseudonymizer: Arc::new(Pseudonymizer::new(TEST_KEY).unwrap()),
        },
    )
}

/// Read a fixture and keep its bytes for the life of the test, so events can borrow.
pub fn fixture(rel: &str) -> &'static [u8] {
    let path = fixtures().join(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Box::leak(bytes.into_boxed_slice())
}

pub fn decode(kind: DecoderKind, bytes: &'static [u8]) -> DecodeOutput<'static> {
    let mut out = DecodeOutput::default();
    decoder(kind).decode(bytes, &mut out);
    out
}

/// `2023-02-23 08:05:12` Vietnam time as UTC microseconds.
pub fn vn(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    use chrono::TimeZone;
    chrono::FixedOffset::east_opt(7 * 3600)
        .unwrap()
        .with_ymd_and_hms(y, mo, d, h, mi, s)
        .unwrap()
        .timestamp_micros()
}
