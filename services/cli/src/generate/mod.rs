//! `sohoa generate`: a synthetic but realistic province feed, deterministic for a seed.
//!
//! One province (Tiền Giang's departments, district and commune people's committees), the
//! procedures of the catalogue with their statutory times, and a year of dossiers going
//! through the real statuses, synced to the national portal as `DongBoHoSoMC` snapshots.
//! Feeds carry dirt as real ones do: malformed messages, repeats, snapshots out of order,
//! decomposed (NFD) text, stray spaces in codes, and agencies that sync days late.
//!
//! The generator keeps the ground truth of what it produced, so tests can check the
//! pipeline's metrics against it.

use std::io::Write;

use anyhow::{Context, Result};
use chrono::{Datelike, NaiveDate};
use sohoa_aggregator::calendar::{Calendar, OfficeHours};
use sohoa_aggregator::catalog::{Catalog, Procedure};

mod snapshot;
mod truth;

use snapshot::snapshot;
pub use truth::GroundTruth;

#[derive(clap::Args, Clone)]
pub struct GenerateArgs {
    /// How many dossiers.
    #[arg(long, default_value_t = 100_000)]
    pub dossiers: usize,
    /// The same seed gives the same feed, byte for byte.
    #[arg(long, default_value_t = 766)]
    pub seed: u64,
    /// The year the dossiers are received in (the holiday table must cover it).
    #[arg(long, default_value_t = 2025)]
    pub year: i32,
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Department,
    District,
    Commune,
}

/// One agency and its habits.
#[derive(Debug, Clone)]
struct Agency {
    code: String,
    name: String,
    kind: Kind,
    online: f64,
    digitized: f64,
    e_result: f64,
    late: f64,
    paid_online: f64,
    /// Days its syncs to the national portal lag behind (the provinces' complaint).
    sync_delay_days: f64,
    /// Its software sends decomposed Vietnamese and untidy codes.
    messy: bool,
}

const DEPARTMENTS: &[&str] = &[
    "Sở Tư pháp",
    "Sở Kế hoạch và Đầu tư",
    "Sở Xây dựng",
    "Sở Tài nguyên và Môi trường",
    "Sở Y tế",
    "Sở Giao thông vận tải",
];
const DISTRICTS: &[&str] = &[
    "UBND thành phố Mỹ Tho",
    "UBND thị xã Gò Công",
    "UBND thị xã Cai Lậy",
    "UBND huyện Cái Bè",
    "UBND huyện Cai Lậy",
    "UBND huyện Châu Thành",
    "UBND huyện Chợ Gạo",
    "UBND huyện Gò Công Tây",
    "UBND huyện Gò Công Đông",
    "UBND huyện Tân Phú Đông",
    "UBND huyện Tân Phước",
];
const COMMUNES: &[&str] = &[
    "UBND phường 1, Mỹ Tho",
    "UBND phường 5, Mỹ Tho",
    "UBND xã Đạo Thạnh",
    "UBND xã Tân Mỹ Chánh",
    "UBND xã Long Định",
    "UBND xã Bình Đức",
    "UBND thị trấn Chợ Gạo",
    "UBND xã Tân Thới",
];

/// Procedures each kind of agency handles (codes of `config/procedures.toml`).
fn procedures_of(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Department => &[
            "1.004227", "1.005194", "1.009994", "2.000488", "1.001776", "2.000591", "1.002809",
        ],
        Kind::District => &[
            "2.000720", "2.001610", "2.002040", "1.004227", "1.005194", "1.004194", "2.000815",
        ],
        Kind::Commune => &[
            "1.001193", "1.000894", "1.000656", "2.000815", "2.000884", "1.004222",
        ],
    }
}

/// The field (`MaLinhVuc`, `TenLinhVuc`) of each procedure the feed uses. Illustrative
/// codes, like the catalogue's.
fn field_of(procedure: &str) -> (&'static str, &'static str) {
    match procedure {
        "1.001193" | "1.000894" | "1.000656" => ("HTTP", "Hộ tịch"),
        "2.000815" | "2.000884" => ("CT", "Chứng thực"),
        "2.000720" | "2.001610" | "2.002040" => ("DKKD", "Đăng ký kinh doanh"),
        "1.004227" | "1.005194" => ("DD", "Đất đai"),
        "1.009994" => ("XD", "Hoạt động xây dựng"),
        "2.000488" => ("LLTP", "Lý lịch tư pháp"),
        "1.004194" | "1.004222" => ("CTRU", "Cư trú"),
        "1.001776" => ("BTXH", "Bảo trợ xã hội"),
        "1.002809" => ("DB", "Đường bộ"),
        "2.000591" => ("ATTP", "An toàn thực phẩm"),
        _ => ("KHAC", "Khác"),
    }
}

fn agencies(rng: &mut Rng) -> Vec<Agency> {
    let mut out = Vec::new();
    let groups = [
        (Kind::Department, DEPARTMENTS, "000.00"),
        (Kind::District, DISTRICTS, "000.20"),
        (Kind::Commune, COMMUNES, "000.30"),
    ];
    for (kind, names, prefix) in groups {
        for (i, name) in names.iter().enumerate() {
            let slow_sync = rng.chance(0.2);
            out.push(Agency {
                code: format!("{prefix}.{:02}.H55", 10 + i),
                name: (*name).to_string(),
                kind,
                online: 0.15 + 0.7 * rng.f(),
                digitized: 0.35 + 0.6 * rng.f(),
                e_result: 0.4 + 0.55 * rng.f(),
                late: 0.01 + 0.2 * rng.f() * rng.f(),
                paid_online: 0.2 + 0.7 * rng.f(),
                sync_delay_days: if slow_sync { 2.0 + 5.0 * rng.f() } else { 0.02 },
                messy: rng.chance(0.25),
            });
        }
    }
    out
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

/// A supplement request: when asked, when answered (never, if `None`), and the due date
/// the source moved (before, after), if it did.
type SupplementPlan = (i64, Option<i64>, Option<(i64, i64)>);

/// How long a pause lasts in office time, and the due date it moves to: the source
/// software moves a due date by the pause's working time, never by calendar time.
fn moved_by_pause(cal: &Calendar, due: i64, asked: i64, answered: i64) -> Result<i64> {
    let pause = cal.working_seconds(asked, answered)?;
    Ok(cal.add_working_seconds(due, pause)?)
}

/// One dossier's whole life, decided up front.
struct Dossier {
    code: String,
    procedure: Procedure,
    channel: u8,
    received: i64,
    /// The due date (`NgayHenTra`) at receipt...
    due: i64,
    /// ...and each later move of it: (from, new due date).
    due_moves: Vec<(i64, i64)>,
    /// Status changes: (time, status).
    steps: Vec<(i64, u8)>,
    supplements: Vec<SupplementPlan>,
    finished: Option<i64>,
    returned: Option<i64>,
    refused: Option<i64>,
    submitted_file: bool,
    digitized_component: bool,
    reused: bool,
    e_result: bool,
    fee: u64,
    paid_online: bool,
    applicant_id: String,
}

impl Dossier {
    /// The due date a snapshot taken at `at` shows.
    fn due_at(&self, at: i64) -> i64 {
        self.due_moves
            .iter()
            .filter(|(from, _)| *from <= at)
            .map(|(_, due)| *due)
            .next_back()
            .unwrap_or(self.due)
    }
}

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

fn working_day_between(cal: &Calendar, rng: &mut Rng, from: NaiveDate, days: i64) -> NaiveDate {
    loop {
        let d = from + chrono::Duration::days(rng.below(days as u64) as i64);
        if cal.is_working_day(d).unwrap_or(false) {
            return d;
        }
    }
}

/// The first day of Tết in `year` (the longest run of days off in January or February).
fn tet_start(cal: &Calendar, year: i32) -> NaiveDate {
    let mut best = (NaiveDate::from_ymd_opt(year, 2, 1).expect("valid"), 0);
    let mut run = (best.0, 0);
    let mut d = NaiveDate::from_ymd_opt(year, 1, 2).expect("valid");
    while d.month() <= 2 {
        let off = d.weekday().number_from_monday() <= 5 && !cal.is_working_day(d).unwrap_or(true);
        if off {
            if run.1 == 0 {
                run.0 = d;
            }
            run.1 += 1;
            if run.1 > best.1 {
                best = run;
            }
        } else if d.weekday().number_from_monday() <= 5 {
            run.1 = 0;
        }
        d = d.succ_opt().expect("valid");
    }
    best.0
}

/// Generate a feed.
pub fn generate(dossiers: usize, seed: u64, year: i32) -> Result<Feed> {
    let cal = Calendar::embedded(OfficeHours::default()).context("the holiday table")?;
    let catalog = Catalog::embedded().context("the procedure catalogue")?;
    let mut rng = Rng::new(seed);
    let agencies = agencies(&mut rng);
    let jan1 = NaiveDate::from_ymd_opt(year, 1, 1).context("year")?;
    let tet = tet_start(&cal, year);
    let year_days = if NaiveDate::from_ymd_opt(year, 12, 31).map(|d| d.ordinal()) == Some(366) {
        366
    } else {
        365
    };
    // The feed stops at the year's last minute, as a year-end review sees it: dossiers
    // received late in December are still open, and slow agencies' last syncs are missing.
    let as_of = vn_us(jan1 + chrono::Duration::days(year_days - 1), 23, 59);
    // Agencies differ in size: communes see the most dossiers.
    let weights: Vec<f64> = agencies
        .iter()
        .map(|a| match a.kind {
            Kind::Department => 0.6,
            Kind::District => 1.0,
            Kind::Commune => 1.6,
        })
        .collect();
    let total_weight: f64 = weights.iter().sum();

    let mut truth = GroundTruth {
        seed,
        year,
        as_of: fmt(as_of),
        dossiers: dossiers as u64,
        ..Default::default()
    };
    let mut messages: Vec<Message> = Vec::with_capacity(dossiers * 6);
    for n in 0..dossiers {
        let mut pick = rng.f() * total_weight;
        let ai = weights
            .iter()
            .position(|w| {
                pick -= w;
                pick < 0.0
            })
            .unwrap_or(agencies.len() - 1);
        let a = &agencies[ai];
        let codes = procedures_of(a.kind);
        let Some(procedure) = catalog
            .get(codes[rng.below(codes.len() as u64) as usize])
            .cloned()
        else {
            continue;
        };
        let day = working_day_between(&cal, &mut rng, jan1, year_days);
        let received = vn_us(day, 7, 30) + (rng.below(8 * 60) as i64) * 60_000_000;
        let due = procedure.due_from(received, &cal)?;
        let mut d = Dossier {
            code: format!("{}-{}-{:06}", a.code, day.format("%y%m%d"), n),
            channel: if rng.chance(a.online) {
                2
            } else if rng.chance(0.03) {
                3
            } else {
                1
            },
            received,
            due,
            due_moves: Vec::new(),
            steps: vec![(received, 2)],
            supplements: Vec::new(),
            finished: None,
            returned: None,
            refused: None,
            submitted_file: rng.chance(a.digitized),
            digitized_component: rng.chance(a.digitized * 0.8),
            reused: rng.chance(a.digitized * 0.5),
            e_result: false,
            fee: if procedure.code.starts_with('1') && rng.chance(0.6) {
                50_000
            } else {
                0
            },
            paid_online: false,
            applicant_id: format!("0821{:08}", rng.below(100_000_000)),
            procedure,
        };
        d.paid_online = d.fee > 0 && rng.chance(a.paid_online);
        let mut now = received + HOUR / 2;
        d.steps.push((now, 4));
        let fate = rng.f();
        // Dossiers received in the weeks before Tết are late far more often.
        let before_tet = (tet - day).num_days();
        let late_p = if (0..21).contains(&before_tet) {
            (a.late * 4.0).min(0.8)
        } else {
            a.late
        };
        if fate < 0.02 {
            d.steps.push((now + DAY, 7)); // withdrawn
        } else if fate < 0.03 {
            d.refused = Some(now + 2 * DAY);
            d.steps.push((now + 2 * DAY, 8));
        } else {
            // The due date the dossier is judged by: the one given at receipt, extended by
            // every answered pause's working time, whether the source moved it or not.
            let mut judged_due = d.due;
            if rng.chance(0.15) {
                let asked = cal.add_working_seconds(now, 4 * 3600)?;
                let answered = (!rng.chance(0.1)).then(|| asked + (1 + rng.below(6) as i64) * DAY);
                d.steps.push((asked, 5));
                match answered {
                    Some(ans) => {
                        judged_due = moved_by_pause(&cal, judged_due, asked, ans)?;
                        // Half the time the source records the move (`NgayHenTraMoi`).
                        let moved = rng.chance(0.5).then_some((d.due, judged_due));
                        if let Some((_, new_due)) = moved {
                            d.due_moves.push((ans, new_due));
                        }
                        d.supplements.push((asked, answered, moved));
                        d.steps.push((ans, 4));
                        now = ans;
                        if rng.chance(0.15) {
                            let again = ans + DAY;
                            let back = again + (1 + rng.below(3) as i64) * DAY;
                            d.steps.push((again, 5));
                            d.supplements.push((again, Some(back), None));
                            d.steps.push((back, 4));
                            now = back;
                        }
                    }
                    None => {
                        d.supplements.push((asked, None, None));
                        now = i64::MAX; // never answered: stays waiting
                    }
                }
            }
            if now != i64::MAX {
                let finished = if rng.chance(late_p) {
                    // Late by one to five working days, and never before the last answer.
                    let days = (1 + rng.below(5) as i64) * 8 * 3600;
                    let late = cal.add_working_seconds(judged_due.max(now), days)?;
                    if rng.chance(0.4) {
                        // The agency misses the date, apologises and sets a new one that it
                        // then keeps ("hẹn lại"): a snapshot moves the due date with no
                        // supplement behind it. The dossier stays late.
                        let at = (judged_due + HOUR).max(now);
                        let new_due =
                            cal.add_working_seconds(late, rng.below(3) as i64 * 8 * 3600)?;
                        d.due_moves.push((at, new_due));
                        d.steps.push((at, 4));
                    }
                    late
                } else {
                    let span = (judged_due - now).max(HOUR);
                    now + (rng.f() * span as f64) as i64
                };
                let returned = finished + (rng.below(24) as i64) * HOUR;
                if finished <= as_of {
                    d.finished = Some(finished);
                    d.steps.push((finished, 9));
                    d.e_result = d.procedure.result_is_document && rng.chance(a.e_result);
                }
                if returned <= as_of && d.finished.is_some() {
                    d.returned = Some(returned);
                    d.steps.push((returned, 10));
                }
            }
        }
        // A new appointment can come after a second pause began: keep both in time order.
        d.steps.sort_by_key(|s| s.0);
        d.due_moves.sort_by_key(|m| m.0);
        emit(&d, a, &mut rng, (&cal, as_of), &mut messages, &mut truth);
    }
    messages.sort_by_key(|m| m.sent_at);
    truth.messages = messages.len() as u64;
    for a in &agencies {
        truth.agencies.entry(a.code.clone()).or_default().name = a.name.clone();
    }
    Ok(Feed {
        messages,
        truth,
        as_of,
    })
}

/// The snapshot after each status change, as the agency's software syncs it, plus the
/// dirt; and the dossier's ground truth from the snapshots that made it into the feed.
fn emit(
    d: &Dossier,
    a: &Agency,
    rng: &mut Rng,
    (cal, as_of): (&Calendar, i64),
    out: &mut Vec<Message>,
    truth: &mut GroundTruth,
) {
    let mut synced: Vec<usize> = Vec::new();
    for (i, &(at, status)) in d.steps.iter().enumerate() {
        let delay = (a.sync_delay_days * rng.f() * 2.0 * DAY as f64) as i64
            + rng.below(600) as i64 * 1_000_000;
        let sent_at = at + delay;
        if sent_at > as_of {
            continue;
        }
        let payload = snapshot(d, a, at, status, i > 0);
        let key = d.code.clone();
        if rng.chance(0.01) {
            // A message cut short in transit: it must land in the dead-letter topic.
            let cut = payload.len() / 2;
            let broken = payload
                .char_indices()
                .take_while(|(j, _)| *j < cut)
                .map(|(_, c)| c)
                .collect();
            out.push(Message {
                key: key.clone(),
                payload: broken,
                sent_at,
            });
            truth.malformed += 1;
        }
        if rng.chance(0.02) {
            // Sent twice, the second time a little later (a retry).
            out.push(Message {
                key: key.clone(),
                payload: payload.clone(),
                sent_at: sent_at + 5_000_000,
            });
            truth.repeats += 1;
        }
        out.push(Message {
            key,
            payload,
            sent_at,
        });
        synced.push(i);
    }
    if !synced.is_empty() {
        truth::record(d, a, &synced, cal, as_of, truth);
    }
}

/// `sohoa generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    let feed = generate(args.dossiers, args.seed, args.year)?;
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
