//! What one output file costs to encode, by its size: decoded rows of the ingest bench's
//! national sync record are sorted and encoded as one Parquet file (zstd, statistics and
//! page index: the ingestor's `FileFormat`, with `config/default.toml`'s settings), at file
//! sizes from 100 to 100,000 rows. Encoding is CPU only; the storage write is not in it.
//!
//! A file has a fixed cost (a column writer, a dictionary, zstd pages, statistics and
//! metadata for each of its 40-odd columns) on top of a cost per row. The ingest bench's
//! 512 partitions give files of about 500 rows, where the fixed part was about a third of
//! the encoding (BENCHMARKS.md); this bench measures the split, fitted as
//! `per_row + fixed / rows` per row.
//!
//! Run: `cargo bench -p sohoa --bench encode` (release).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use sohoa_ingestor::write::FileFormat;
use sohoa_runtime::config::Config;
use sohoa_schemas::{
    build_decoder, events_schema, DecodeOutput, DecoderContext, DecoderKind, EventBatchBuilder,
    Lineage, Pseudonymizer,
};

mod common;
use common::record;

// The `sohoa` binary's allocator: a file's fixed cost includes many small allocations
// (glibc's malloc and free were a quarter of the encoding's CPU for 100-row files).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: &[usize] = &[100, 250, 500, 1_000, 2_000, 5_000, 20_000, 100_000];

fn main() {
    let cfg = Config::load(None).expect("the embedded default config");
    let format = FileFormat::new(
        &events_schema(),
        cfg.flush.row_group_rows,
        cfg.flush.zstd_level,
        Some(&Pseudonymizer::development_fingerprint()),
    )
    .expect("file format");
    let decoder = build_decoder(
        DecoderKind::Dvcqg,
        DecoderContext {
            source_system: Arc::from("dvcqg"),
            pseudonymizer: Arc::new(Pseudonymizer::new(b"benchmark-key-0123456789").unwrap()),
        },
    );
    println!(
        "zstd level {}, row groups of {} rows",
        cfg.flush.zstd_level, cfg.flush.row_group_rows
    );
    let mut points = Vec::new();
    for &rows in SIZES {
        // One partition's file for one day: the ingest bench's records of even index are
        // all of one day, of six agencies.
        let texts: Vec<String> = (0..rows).map(|k| record(2 * k)).collect();
        let mut builder = EventBatchBuilder::new();
        let mut out = DecodeOutput::default();
        for (k, text) in texts.iter().enumerate() {
            out.clear();
            decoder.decode(text.as_bytes(), &mut out);
            assert!(out.rejects.is_empty(), "{:?}", out.rejects);
            let lineage = Lineage {
                topic: "bench.dossiers",
                partition: 7,
                offset: k as i64,
                ingested_at: 0,
                arrived_at: 0,
            };
            for e in &out.events {
                builder.append(e, &lineage);
            }
        }
        let batch = builder.finish().expect("batch");
        assert_eq!(batch.num_rows(), rows);
        // Each measurement encodes at least 200,000 rows; the best of five is kept.
        let reps = (200_000 / rows).max(2);
        let mut size = 0;
        let _ = format.encode(&batch).expect("encode");
        let best = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..reps {
                    size = black_box(format.encode(&batch).expect("encode")).len();
                }
                t.elapsed().as_secs_f64() / reps as f64
            })
            .fold(f64::MAX, f64::min);
        points.push((rows as f64, best));
        println!(
            "{rows:>7} rows per file: {:>8.1} µs per file, {:>5.2} µs per row, {:>4.0} bytes per row",
            best * 1e6,
            best * 1e6 / rows as f64,
            size as f64 / rows as f64
        );
    }
    // Least squares of the time per row against 1 / rows: `per_row + fixed / rows`. Fitting
    // the time per file instead would let the largest files' noise decide the fixed part.
    let pts: Vec<(f64, f64)> = points.iter().map(|(r, t)| (1.0 / r, t / r)).collect();
    let n = pts.len() as f64;
    let (mx, my) = pts
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x / n, sy + y / n));
    let (sxy, sxx) = pts.iter().fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        (sxy + (x - mx) * (y - my), sxx + (x - mx) * (x - mx))
    });
    let fixed = sxy / sxx;
    let per_row = my - fixed * mx;
    println!(
        "fit: {:.0} µs per file + {:.2} µs per row; at 500 rows the fixed part is {:.0}% of a file's encoding",
        fixed * 1e6,
        per_row * 1e6,
        100.0 * fixed / (fixed + per_row * 500.0)
    );
}
