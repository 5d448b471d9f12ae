//! The region the generator plays: the agencies of the shipped agency reference
//! (`config/agencies.toml`, the demo region across the July 2025 reorganization), each
//! with habits of its own, receiving dossiers only while it is valid, and the successor a
//! dossier it holds goes to when it ends.

use chrono::NaiveDate;
use sohoa_aggregator::agencies::{Agencies, Level};

use super::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Department,
    District,
    Commune,
}

/// One successor of an agency that ends: its index in the plan, its share of the fields
/// no successor lists, and the fields it takes whole.
#[derive(Debug, Clone)]
pub(super) struct Next {
    pub agency: usize,
    pub share: f64,
    pub fields: Vec<String>,
}

/// One agency and its habits.
#[derive(Debug, Clone)]
pub(super) struct Agency {
    pub code: String,
    /// Its names, each from the day it applies (`None`: always), oldest first.
    pub names: Vec<(Option<NaiveDate>, String)>,
    pub kind: Kind,
    /// The days it receives dossiers, inclusive; `None`: open-ended.
    pub valid_from: Option<NaiveDate>,
    pub valid_to: Option<NaiveDate>,
    pub successors: Vec<Next>,
    pub online: f64,
    pub digitized: f64,
    pub e_result: f64,
    pub late: f64,
    pub paid_online: f64,
    /// Days its syncs to the national portal lag behind (the provinces' complaint).
    pub sync_delay_days: f64,
    /// Its software sends decomposed Vietnamese and untidy codes.
    pub messy: bool,
}

impl Agency {
    pub fn valid_on(&self, d: NaiveDate) -> bool {
        self.valid_from.is_none_or(|f| f <= d) && self.valid_to.is_none_or(|t| d <= t)
    }

    /// The name as a period ending on `d` shows it: the latest begun by then (else the
    /// first).
    pub fn name_on(&self, d: NaiveDate) -> &str {
        self.names
            .iter()
            .rev()
            .find(|(from, _)| from.is_none_or(|f| f <= d))
            .unwrap_or(&self.names[0])
            .1
            .as_str()
    }

    /// How many dossiers it sees, relatively: communes see the most.
    pub fn weight(&self) -> f64 {
        match self.kind {
            Kind::Department => 0.6,
            Kind::District => 1.0,
            Kind::Commune => 1.6,
        }
    }
}

/// Procedures each kind of agency handles (codes of `config/procedures.toml`).
pub(super) fn procedures_of(kind: Kind) -> &'static [&'static str] {
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
pub(super) fn field_of(procedure: &str) -> (&'static str, &'static str) {
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

/// The agencies of the reference that receive dossiers (departments, districts,
/// communes and wards), in the reference's order, with random habits. The versions of a
/// code make one agency, valid from the first's start to the last's end.
pub(super) fn agencies(reference: &Agencies, rng: &mut Rng) -> Vec<Agency> {
    let mut out: Vec<Agency> = Vec::new();
    for e in reference.entries() {
        let kind = match e.level {
            Level::Department => Kind::Department,
            Level::District => Kind::District,
            Level::Commune | Level::Ward => Kind::Commune,
            Level::Province | Level::Other => continue,
        };
        if let Some(a) = out.iter_mut().find(|a| a.code == e.code) {
            a.names.push((e.valid_from, e.name.clone()));
            a.valid_to = e.valid_to;
            continue;
        }
        let slow_sync = rng.chance(0.2);
        out.push(Agency {
            code: e.code.clone(),
            names: vec![(e.valid_from, e.name.clone())],
            kind,
            valid_from: e.valid_from,
            valid_to: e.valid_to,
            successors: Vec::new(),
            online: 0.15 + 0.7 * rng.f(),
            digitized: 0.35 + 0.6 * rng.f(),
            e_result: 0.4 + 0.55 * rng.f(),
            late: 0.01 + 0.2 * rng.f() * rng.f(),
            paid_online: 0.2 + 0.7 * rng.f(),
            sync_delay_days: if slow_sync { 2.0 + 5.0 * rng.f() } else { 0.02 },
            messy: rng.chance(0.25),
        });
    }
    // Successors last: they may come later in the file. Only the current version has any.
    for e in reference.entries() {
        let Some(from) = out.iter().position(|a| a.code == e.code) else {
            continue;
        };
        let next: Vec<Next> = e
            .successors
            .iter()
            .filter_map(|s| {
                let agency = out.iter().position(|a| a.code == s.code)?;
                Some(Next {
                    agency,
                    share: s.share.unwrap_or(1.0),
                    fields: s.fields.clone(),
                })
            })
            .collect();
        if !next.is_empty() {
            out[from].successors = next;
        }
    }
    out
}

/// Where a dossier of field `field` held by `a` goes when `a` ends: the successor listing
/// its field, else one of the others, drawn by their shares.
pub(super) fn successor(a: &Agency, field: &str, rng: &mut Rng) -> Option<usize> {
    if let Some(n) = a
        .successors
        .iter()
        .find(|n| n.fields.iter().any(|f| f == field))
    {
        return Some(n.agency);
    }
    let rest: Vec<&Next> = a
        .successors
        .iter()
        .filter(|n| n.fields.is_empty())
        .collect();
    let mut pick = rng.f() * rest.iter().map(|n| n.share).sum::<f64>();
    for n in &rest {
        pick -= n.share;
        if pick < 0.0 {
            return Some(n.agency);
        }
    }
    rest.last().map(|n| n.agency)
}
