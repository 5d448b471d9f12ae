//! The patched zstd that parquet-rs compresses with (third_party/zstd/PATCH.md): compression
//! contexts are pooled and reused, and decompression contexts are created on first use.
//! A reused context must compress exactly as a fresh one, with nothing left of its previous
//! user's level, parameters or dictionary.

use zstd::bulk::{Compressor, Decompressor};
use zstd::zstd_safe;

/// About 200 KB of repetitive text, so levels and dictionaries change the output.
fn sample() -> Vec<u8> {
    (0..4000)
        .map(|i| {
            format!(
                "dossier 000.00.{:02}.H55-{i:07} status {} agency H55;",
                i % 12,
                i % 10
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// zstd's one-shot API, which makes and frees its own context: no pool involved.
fn fresh(data: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
    zstd_safe::compress(&mut out, data, level).expect("one-shot compression");
    out
}

/// Leave contexts in the pool that a careless reuse would betray: another level, a checksum,
/// and a dictionary.
fn dirty_the_pool(data: &[u8]) {
    let dictionary = &data[..4096];
    let dirty: Vec<Compressor> = (0..16)
        .map(|_| {
            let mut c = Compressor::with_dictionary(19, dictionary).unwrap();
            c.include_checksum(true).unwrap();
            c.compress(data).unwrap();
            c
        })
        .collect();
    drop(dirty);
}

#[test]
fn a_reused_compression_context_compresses_exactly_as_a_fresh_one() {
    let data = sample();
    for level in [1, 3, 9] {
        dirty_the_pool(&data);
        let reused = Compressor::new(level).unwrap().compress(&data).unwrap();
        let expected = fresh(&data, level);
        // Not assert_eq: a mismatch would print both frames, kilobytes each.
        assert!(
            reused == expected,
            "level {level}: a pooled context compresses as a fresh one ({} bytes, fresh {})",
            reused.len(),
            expected.len()
        );
        // No dictionary: a plain decompressor, created lazily, reads it back.
        let back = Decompressor::new()
            .unwrap()
            .decompress(&reused, data.len())
            .unwrap();
        assert_eq!(back, data);
    }
}

#[test]
fn a_dictionary_still_round_trips_through_pooled_and_lazy_contexts() {
    let data = sample();
    let dictionary = &data[..4096];
    dirty_the_pool(&data);
    let packed = Compressor::with_dictionary(3, dictionary)
        .unwrap()
        .compress(&data)
        .unwrap();
    assert!(
        Decompressor::new()
            .unwrap()
            .decompress(&packed, data.len())
            .is_err(),
        "a frame made with a dictionary needs it"
    );
    let back = Decompressor::with_dictionary(dictionary)
        .unwrap()
        .decompress(&packed, data.len())
        .unwrap();
    assert_eq!(back, data);
}
