//! `sohoa generate`: a synthetic but realistic province feed, deterministic for a seed.
//!
//! The demo region of the shipped agency reference (`config/agencies.toml`): Tiền Giang
//! and Đồng Tháp's departments, district and commune committees until they end, and the
//! merged province's departments, wards and communes after. The procedures of the
//! catalogue with their statutory times, and a year (or more) of dossiers going through
//! the real statuses, synced to the national portal as `DongBoHoSoMC` snapshots. An
//! agency receives dossiers only while it is valid; a dossier still open when the agency
//! holding it ends is handed over to a successor, whose software re-syncs it under its
//! own code. Feeds carry dirt as real ones do: malformed messages, repeats, snapshots out
//! of order, decomposed (NFD) text, stray spaces in codes, and agencies that sync days
//! late.
//!
//! The generator keeps the ground truth of what it produced, so tests can check the
//! pipeline's metrics against it.
//!
//! # Layout
//! - `plan`: the agencies, their habits, and their successors;
//! - `life`: one dossier's life, handovers included;
//! - `emit`: its messages, in the order the agencies' software sends them;
//! - `snapshot`: one message;
//! - `truth`: what the feed holds, per year and agency;
//! - `packed`: messages held compressed while they are produced.

use std::io::Write;

use anyhow::{Context, Result};
use chrono::{Datelike, NaiveDate};
use sohoa_aggregator::agencies::Agencies;
use sohoa_aggregator::calendar::{Calendar, OfficeHours};
use sohoa_aggregator::catalog::Catalog;

mod emit;
mod life;
pub mod packed;
mod plan;
mod snapshot;
mod truth;

pub use truth::GroundTruth;

#[derive(clap::Args, Clone)]
pub struct GenerateArgs {
    /// How many dossiers.
    #[arg(long, default_value_t = 100_000)]
    pub dossiers: usize,
    /// The same seed gives the same feed, byte for byte.
    #[arg(long, default_value_t = 766)]
    pub seed: u64,
    /// The (first) year the dossiers are received in (the holiday table must cover it).
    /// 2025 crosses the reorganization of 1 July.
    #[arg(long, default_value_t = 2025)]
    pub year: i32,
    /// How many years, from `--year` on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub years: u32,
    /// Write newline-delimited messages to this file (for backfills)...
    #[arg(long, value_name = "FILE", conflicts_with = "brokers")]
    pub out: Option<std::path::PathBuf>,
    /// ...or produce them to this Kafka cluster, keyed by dossier code (a load generator).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Topic to produce to.
    #[arg(long, default_value = "dvcqg.dossiers")]
    pub topic: String,
    /// Write the ground truth (what was generated, per agency) as JSON here.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<std::path::PathBuf>,
}

/// SplitMix64: small, fast and the same everywhere, so a seed means the same feed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x05ee_d766)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.f() < p
    }
}

/// Vietnam local wall time to UTC µs.
fn vn_us(d: NaiveDate, h: u32, m: u32) -> i64 {
    let t = d.and_hms_opt(h, m, 0).expect("valid time");
    (t.and_utc().timestamp() - sohoa_schemas::normalize::VN_OFFSET_SECS) * 1_000_000
}

/// UTC µs to the national record's `yyyyMMddHHmmss`, Vietnam local time. By hand:
/// chrono's formatter parses its pattern on every call.
fn fmt(us: i64) -> String {
    let secs = us.div_euclid(1_000_000) + sohoa_schemas::normalize::VN_OFFSET_SECS;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let date = NaiveDate::from_num_days_from_ce_opt((days + 719_163) as i32).unwrap_or_default();
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        date.year(),
        date.month(),
        date.day(),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

/// One Kafka message.
pub struct Message {
    pub key: String,
    pub payload: String,
    /// When the agency's software sent it (UTC µs).
    pub sent_at: i64,
}

/// The feed, ready to produce: messages in the order they are sent.
pub struct Feed {
    pub messages: Vec<Message>,
    pub truth: GroundTruth,
    /// The last moment of the feed (UTC µs).
    pub as_of: i64,
}

/// Generate a feed of `dossiers` received over `years` years from `year` on.
pub fn generate(dossiers: usize, seed: u64, year: i32, years: u32) -> Result<Feed> {
    let cal = Calendar::embedded(OfficeHours::default()).context("the holiday table")?;
    let catalog = Catalog::embedded().context("the procedure catalogue")?;
    let reference = Agencies::embedded().context("the agency reference")?;
    let mut rng = Rng::new(seed);
    let agencies = plan::agencies(&reference, &mut rng);
    let jan1 = NaiveDate::from_ymd_opt(year, 1, 1).context("year")?;
    let all_years = truth::years(year, years);
    let tets: Vec<NaiveDate> = all_years
        .iter()
        .map(|&y| life::tet_start(&cal, y))
        .collect();
    let days: i64 = all_years.iter().map(|&y| truth::days_in(y)).sum();
    // The feed stops at the last year's last minute, as a year-end review sees it:
    // dossiers received late in December are still open, and slow agencies' last syncs
    // are missing.
    let as_of = vn_us(jan1 + chrono::Duration::days(days - 1), 23, 59);

    let mut truth = GroundTruth {
        seed,
        years: all_years.clone(),
        as_of: fmt(as_of),
        dossiers: dossiers as u64,
        ..Default::default()
    };
    let mut messages: Vec<Message> = Vec::with_capacity(dossiers * 6);
    for n in 0..dossiers {
        let day = life::working_day_between(&cal, &mut rng, jan1, days);
        // Among the agencies valid that day, by size: communes see the most dossiers.
        let valid: Vec<usize> = (0..agencies.len())
            .filter(|&i| agencies[i].valid_on(day))
            .collect();
        let total: f64 = valid.iter().map(|&i| agencies[i].weight()).sum();
        let mut pick = rng.f() * total;
        let ai = valid
            .iter()
            .copied()
            .find(|&i| {
                pick -= agencies[i].weight();
                pick < 0.0
            })
            .or(valid.last().copied())
            .context("no agency of the reference is valid on a day of the feed")?;
        let codes = plan::procedures_of(agencies[ai].kind);
        let Some(procedure) = catalog
            .get(codes[rng.below(codes.len() as u64) as usize])
            .cloned()
        else {
            continue;
        };
        let tet = tets[(day.year() - year) as usize];
        let start = life::Start {
            agencies: &agencies,
            ai,
            day,
            n,
            procedure,
            tet,
            as_of,
        };
        let d = life::life(start, &cal, &mut rng)?;
        emit::emit(
            &d,
            &agencies,
            &mut rng,
            (&cal, as_of),
            &mut messages,
            &mut truth,
        );
    }
    messages.sort_by_key(|m| m.sent_at);
    truth.messages = messages.len() as u64;
    Ok(Feed {
        messages,
        truth,
        as_of,
    })
}

/// `sohoa generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    let feed = generate(args.dossiers, args.seed, args.year, args.years)?;
    if let Some(path) = &args.truth {
        std::fs::write(path, serde_json::to_vec_pretty(&feed.truth)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match (&args.out, &args.brokers) {
        (Some(path), _) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut w = std::io::BufWriter::new(f);
            for m in &feed.messages {
                writeln!(w, "{}", m.payload)?;
            }
            w.flush()?;
            eprintln!(
                "wrote {} messages ({} dossiers, {} malformed, {} repeats) to {}",
                feed.messages.len(),
                feed.truth.dossiers,
                feed.truth.malformed,
                feed.truth.repeats,
                path.display()
            );
        }
        (None, Some(brokers)) => {
            let n = crate::demo::produce_all(brokers, &args.topic, &feed.messages, |_| {})?;
            eprintln!("produced {n} messages to {} on {brokers}", args.topic);
        }
        (None, None) => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            for m in &feed.messages {
                writeln!(w, "{}", m.payload)?;
            }
            w.flush()?;
        }
    }
    Ok(())
}
