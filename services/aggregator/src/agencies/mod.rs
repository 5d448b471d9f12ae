//! The agency reference: the agencies a province's dossiers pass through, when each was
//! valid, which province it belongs to, and what became of it. The province maintains it
//! (`config/agencies.toml` is the embedded default, for the demo region), as TOML, CSV or
//! Parquet; the README describes the format.
//!
//! It answers, for the rest of the aggregator:
//! - a code's name on a date (a code may have versions: renamed on a date, same code);
//! - its province (a province-level entry is its own);
//! - the current unit an old agency became (*restating*): successors are followed to an
//!   agency with none. A split sends a dossier to the successor that lists its field, or
//!   else shares the dossiers out by a stable hash of the dossier code (see
//!   [`split_bucket`]), so a dossier always goes to one unit, whole;
//! - whether one agency is on another's successor line (a handover between them is
//!   expected, not a data-quality issue), and the day an agency ended.
//!
//! # Layout
//! - `error`: why a reference is rejected, naming the entry;
//! - `parse`: the three spellings into entries;
//! - this file: the checks across entries, and the lookups.

mod error;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use sha2::Digest;

pub use error::AgencyError;
pub use parse::normalise;

/// An agency's level of government.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// A province itself (its People's Committee).
    Province,
    /// A provincial department (sở) or an equivalent provincial agency.
    Department,
    /// A district, town or provincial city committee (abolished on 1 July 2025).
    District,
    Commune,
    Ward,
    Other,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Province,
        Level::Department,
        Level::District,
        Level::Commune,
        Level::Ward,
        Level::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Province => "province",
            Level::Department => "department",
            Level::District => "district",
            Level::Commune => "commune",
            Level::Ward => "ward",
            Level::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s.trim())
    }
}

/// One successor of an agency that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Successor {
    pub code: String,
    /// Its share of the dossiers of the fields no successor lists, when several share
    /// them (a split).
    pub share: Option<f64>,
    /// The fields (`MaLinhVuc`) whose dossiers it takes, whole.
    pub fields: Vec<String>,
}

/// One entry of the reference: one agency, or one version of an agency's code.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Where it is in the file: `agencies[3]`, `line 5`, `row 3`.
    pub at: String,
    /// Trimmed and upper-cased, as the decoder writes the feed's codes.
    pub code: String,
    pub name: String,
    pub level: Level,
    /// The province's code (a province-level entry's is its own); `None`: the configured
    /// province.
    pub province: Option<String>,
    /// First and last day of validity, inclusive; `None`: open-ended.
    pub valid_from: Option<NaiveDate>,
    pub valid_to: Option<NaiveDate>,
    pub successors: Vec<Successor>,
    /// The entry could not be confirmed against an official list (the demo region's
    /// new communes, say).
    pub illustrative: bool,
    /// The public source it comes from (a resolution's number, say).
    pub source: Option<String>,
}

impl Entry {
    fn range(&self) -> String {
        let d = |d: Option<NaiveDate>| d.map_or("…".to_string(), |d| d.to_string());
        format!("{} to {}", d(self.valid_from), d(self.valid_to))
    }
}

/// A code's id in the reference: an index into [`Agencies::code`].
pub type AgencyId = u32;

#[derive(Debug, Clone)]
struct Code {
    code: String,
    /// Entries of the code, oldest first; the last is the current version, the only one
    /// with successors.
    versions: Vec<usize>,
    /// The current version's successors, as ids.
    successors: Vec<AgencyId>,
    /// The province, as an id.
    province: Option<AgencyId>,
    /// The current unit every dossier of this code goes to, when no split on the way
    /// depends on the dossier.
    fixed: Option<AgencyId>,
}

/// The agency reference, checked.
#[derive(Debug, Clone, Default)]
pub struct Agencies {
    entries: Vec<Entry>,
    codes: Vec<Code>,
    by_code: HashMap<String, AgencyId>,
    /// The province agencies missing from the reference count under.
    default_province: Option<AgencyId>,
}

/// A dossier's place in [0, 2³²) for shares: the first four bytes of the SHA-256 of its
/// code, big-endian. Anyone can recompute it (`hashlib.sha256(code.encode())`), and it
/// does not depend on the order or the shard a dossier is read in.
pub fn split_bucket(dossier: &str) -> u32 {
    let h = sha2::Sha256::digest(dossier.as_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

impl Agencies {
    /// The reference shipped with sohoa: the demo region, `config/agencies.toml`.
    pub fn embedded() -> Result<Agencies, AgencyError> {
        Agencies::from_toml(include_str!("../../../../config/agencies.toml"))
    }

    pub fn from_toml(text: &str) -> Result<Agencies, AgencyError> {
        Agencies::new(parse::toml_entries(text)?)
    }

    pub fn from_csv(data: &[u8]) -> Result<Agencies, AgencyError> {
        Agencies::new(parse::csv_entries(data)?)
    }

    pub fn from_parquet(data: bytes::Bytes) -> Result<Agencies, AgencyError> {
        Agencies::new(parse::parquet_entries(data)?)
    }

    /// Read by the name's extension: `.csv`, `.parquet`, anything else as TOML.
    pub fn from_file(name: &str, data: Vec<u8>) -> Result<Agencies, AgencyError> {
        let lower = name.to_lowercase();
        if lower.ends_with(".csv") {
            Agencies::from_csv(&data)
        } else if lower.ends_with(".parquet") {
            Agencies::from_parquet(data.into())
        } else {
            let text = String::from_utf8(data)
                .map_err(|e| AgencyError::File(format!("not UTF-8 text: {e}")))?;
            Agencies::from_toml(&text)
        }
    }

    /// Check the entries across each other, and index them.
    pub fn new(entries: Vec<Entry>) -> Result<Agencies, AgencyError> {
        let mut a = Agencies {
            entries,
            ..Agencies::default()
        };
        let mut versions: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, e) in a.entries.iter().enumerate() {
            versions.entry(e.code.as_str()).or_default().push(i);
        }
        for (code, mut v) in versions {
            v.sort_by_key(|&i| (a.entries[i].valid_from, i));
            check_versions(&a.entries, &v)?;
            let id = a.codes.len() as AgencyId;
            a.by_code.insert(code.to_string(), id);
            a.codes.push(Code {
                code: code.to_string(),
                versions: v,
                successors: Vec::new(),
                province: None,
                fixed: None,
            });
        }
        for id in 0..a.codes.len() {
            let e = a.current_entry(id as AgencyId).clone();
            let lookup = |what, missing: &str| {
                a.by_code
                    .get(missing)
                    .copied()
                    .ok_or_else(|| AgencyError::UnknownCode {
                        at: e.at.clone(),
                        code: e.code.clone(),
                        what,
                        missing: missing.to_string(),
                    })
            };
            let successors = e
                .successors
                .iter()
                .map(|s| lookup("successor", &s.code))
                .collect::<Result<Vec<_>, _>>()?;
            let province = match (&e.province, e.level) {
                (_, Level::Province) => Some(id as AgencyId),
                (Some(p), _) => {
                    let p = lookup("province", p)?;
                    if a.current_entry(p).level != Level::Province {
                        return Err(AgencyError::Entry {
                            at: e.at.clone(),
                            code: e.code.clone(),
                            message: format!(
                                "`province` {:?} is not a province-level entry",
                                a.codes[p as usize].code
                            ),
                        });
                    }
                    Some(p)
                }
                (None, _) => None,
            };
            a.codes[id].successors = successors;
            a.codes[id].province = province;
        }
        a.check_cycles()?;
        for id in 0..a.codes.len() {
            a.codes[id].fixed = a.fixed_current(id as AgencyId);
        }
        let current: Vec<AgencyId> = (0..a.codes.len() as AgencyId)
            .filter(|&id| {
                a.current_entry(id).level == Level::Province
                    && a.codes[id as usize].successors.is_empty()
            })
            .collect();
        if let [only] = current.as_slice() {
            a.default_province = Some(*only);
        }
        tracing::debug!(
            entries = a.entries.len(),
            codes = a.codes.len(),
            "agency reference loaded"
        );
        Ok(a)
    }

    /// Make `code` (a province-level entry) the province agencies missing from the
    /// reference count under, and whose name titles the report; empty keeps the default:
    /// the reference's only current province.
    pub fn with_province(mut self, code: &str) -> Result<Agencies, AgencyError> {
        if code.trim().is_empty() {
            return Ok(self);
        }
        let id = self
            .id(code)
            .filter(|&id| self.level(id) == Level::Province);
        match id {
            Some(id) => {
                self.default_province = Some(id);
                Ok(self)
            }
            None => Err(AgencyError::Province(format!(
                "{code:?} is not a province-level entry of the agency reference"
            ))),
        }
    }

    fn check_cycles(&self) -> Result<(), AgencyError> {
        // 0 unvisited, 1 on the path, 2 done.
        let mut state = vec![0u8; self.codes.len()];
        let mut path: Vec<AgencyId> = Vec::new();
        fn visit(
            a: &Agencies,
            id: AgencyId,
            state: &mut [u8],
            path: &mut Vec<AgencyId>,
        ) -> Result<(), AgencyError> {
            match state[id as usize] {
                2 => return Ok(()),
                1 => {
                    let start = path.iter().position(|&p| p == id).unwrap_or(0);
                    let mut codes: Vec<String> = path[start..]
                        .iter()
                        .map(|&p| a.code(p).to_string())
                        .collect();
                    codes.push(a.code(id).to_string());
                    return Err(AgencyError::Cycle { codes });
                }
                _ => {}
            }
            state[id as usize] = 1;
            path.push(id);
            for &s in &a.codes[id as usize].successors {
                visit(a, s, state, path)?;
            }
            path.pop();
            state[id as usize] = 2;
            Ok(())
        }
        for id in 0..self.codes.len() as AgencyId {
            visit(self, id, &mut state, &mut path)?;
        }
        Ok(())
    }

    /// The current unit of `id` when every step there has one successor for all dossiers.
    fn fixed_current(&self, mut id: AgencyId) -> Option<AgencyId> {
        loop {
            match self.codes[id as usize].successors.as_slice() {
                [] => return Some(id),
                [one] => id = *one,
                _ => return None,
            }
        }
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How many distinct codes.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The id of a code, matched trimmed and upper-cased.
    pub fn id(&self, code: &str) -> Option<AgencyId> {
        match self.by_code.get(code) {
            Some(&id) => Some(id),
            None => self.by_code.get(&normalise(code)).copied(),
        }
    }

    pub fn code(&self, id: AgencyId) -> &str {
        &self.codes[id as usize].code
    }

    fn current_entry(&self, id: AgencyId) -> &Entry {
        let v = &self.codes[id as usize].versions;
        &self.entries[*v.last().expect("a code has a version")]
    }

    pub fn level(&self, id: AgencyId) -> Level {
        self.current_entry(id).level
    }

    /// The name of the code's version valid on `date`; between or outside versions, the
    /// latest one begun by then (else the first).
    pub fn name_on(&self, id: AgencyId, date: NaiveDate) -> &str {
        let v = &self.codes[id as usize].versions;
        let begun = v
            .iter()
            .rev()
            .find(|&&i| self.entries[i].valid_from.is_none_or(|f| f <= date));
        &self.entries[*begun.unwrap_or(&v[0])].name
    }

    /// The current version's name.
    pub fn name(&self, id: AgencyId) -> &str {
        &self.current_entry(id).name
    }

    /// The province of an agency; for one the reference lacks, the configured one.
    pub fn province_of(&self, id: Option<AgencyId>) -> Option<AgencyId> {
        match id {
            Some(id) => self.codes[id as usize].province.or(self.default_province),
            None => self.default_province,
        }
    }

    /// The province agencies missing from the reference count under.
    pub fn default_province(&self) -> Option<AgencyId> {
        self.default_province
    }

    /// The last day of the code's current version, when it ended.
    pub fn valid_to(&self, id: AgencyId) -> Option<NaiveDate> {
        self.current_entry(id).valid_to
    }

    /// Whether the code has successors: it ended and its dossiers went on elsewhere.
    pub fn has_successors(&self, id: AgencyId) -> bool {
        !self.codes[id as usize].successors.is_empty()
    }

    /// The current unit of `id` for every dossier, when no split on the way depends on
    /// the dossier.
    pub fn fixed(&self, id: AgencyId) -> Option<AgencyId> {
        self.codes[id as usize].fixed
    }

    /// The current unit a dossier of field `field` (code `dossier`) filed under `id`
    /// belongs to: successors followed until one has none.
    pub fn restate(&self, mut id: AgencyId, field: Option<&str>, dossier: &str) -> AgencyId {
        let mut bucket = None;
        loop {
            let code = &self.codes[id as usize];
            if code.successors.len() <= 1 {
                match code.successors.first() {
                    Some(&next) => id = next,
                    None => return id,
                }
                continue;
            }
            let succ = &self.current_entry(id).successors;
            let by_field =
                field.and_then(|f| succ.iter().position(|s| s.fields.iter().any(|x| x == f)));
            let i = by_field.unwrap_or_else(|| {
                let b = *bucket.get_or_insert_with(|| split_bucket(dossier));
                pick_share(succ, b)
            });
            id = code.successors[i];
        }
    }

    /// Whether `to` is on `from`'s successor line: reached from it by following
    /// successors (any branch of a split).
    pub fn succeeds(&self, from: AgencyId, to: AgencyId) -> bool {
        let mut stack = vec![from];
        let mut seen = vec![false; self.codes.len()];
        while let Some(id) = stack.pop() {
            for &s in &self.codes[id as usize].successors {
                if s == to {
                    return true;
                }
                if !std::mem::replace(&mut seen[s as usize], true) {
                    stack.push(s);
                }
            }
        }
        false
    }

    /// The days agencies with successors ended on (the day after their last), with how
    /// many ended then: the breaks a trend chart marks.
    pub fn breaks(&self) -> Vec<(NaiveDate, usize)> {
        let mut out: BTreeMap<NaiveDate, usize> = BTreeMap::new();
        for id in 0..self.codes.len() as AgencyId {
            if let (true, Some(to)) = (self.has_successors(id), self.valid_to(id)) {
                if let Some(next) = to.succ_opt() {
                    *out.entry(next).or_default() += 1;
                }
            }
        }
        out.into_iter().collect()
    }
}

/// The successor a bucket falls to among those without fields, by cumulative share.
fn pick_share(succ: &[Successor], bucket: u32) -> usize {
    let rest: Vec<usize> = (0..succ.len())
        .filter(|&i| succ[i].fields.is_empty())
        .collect();
    let mut upper = 0.0;
    for &i in &rest {
        upper += succ[i].share.unwrap_or(1.0);
        if (bucket as f64) < upper * 4_294_967_296.0 {
            return i;
        }
    }
    *rest
        .last()
        .expect("validated: one successor takes the other fields")
}

/// The versions of one code, oldest first: each range ends before the next begins, and
/// only the last has successors; all are in one province (the level may change: a
/// commune that became a ward).
fn check_versions(entries: &[Entry], v: &[usize]) -> Result<(), AgencyError> {
    for pair in v.windows(2) {
        let (a, b) = (&entries[pair[0]], &entries[pair[1]]);
        if (a.valid_from, a.valid_to) == (b.valid_from, b.valid_to) {
            return Err(AgencyError::DuplicateCode {
                code: a.code.clone(),
                first: a.at.clone(),
                second: b.at.clone(),
            });
        }
        let a_end = a.valid_to.unwrap_or(NaiveDate::MAX);
        if b.valid_from.is_none_or(|f| f <= a_end) {
            return Err(AgencyError::OverlappingValidity {
                code: a.code.clone(),
                first: a.at.clone(),
                first_range: a.range(),
                second: b.at.clone(),
                second_range: b.range(),
            });
        }
        if !a.successors.is_empty() {
            return Err(AgencyError::Entry {
                at: a.at.clone(),
                code: a.code.clone(),
                message: format!(
                    "only the latest version of a code has successors, and {} is later",
                    b.at
                ),
            });
        }
        // The rollups carry a code's open dossiers from period to period within its
        // province: a code that changed province would move them without a flow.
        if a.province != b.province {
            return Err(AgencyError::Entry {
                at: b.at.clone(),
                code: b.code.clone(),
                message: format!(
                    "a code stays in one province across versions, as at {}",
                    a.at
                ),
            });
        }
    }
    Ok(())
}
