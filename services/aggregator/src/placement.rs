//! Which agency each of a dossier's counts belongs to, as it was and restated.
//!
//! - The *receiving* agency (the earliest snapshot's) owns the receipt and every
//!   received-based count.
//! - A *handover* is a change of holder between two snapshots. Along a known successor
//!   line (the reference says the first agency ended and the second succeeds it) it is
//!   dated when the first agency ended, the start of the day after its `valid_to`:
//!   a national sync record has no time of its own, so the successor's first snapshot
//!   often carries an older date. Any other handover is dated by the snapshot that shows
//!   the new holder, and is a data-quality issue (`two_agencies`). Handovers after the
//!   clock's end do not move the dossier's counts: the end belongs to whoever held it then.
//! - *Restated*, every agency becomes the current unit that succeeded it. A stay the
//!   dossier left along a successor line restates to where it went (the unit that really
//!   took it, even from a split); any other stay to the reference's current unit, by field
//!   or share for a split. Consecutive stays with the same restated unit merge, so a
//!   handover within one current unit is no handover in the restated view.

use chrono::NaiveDate;

use crate::agencies::{Agencies, AgencyId};
use crate::fold::{Fact, FxMap, Interner, Sym, NO_SYM};
use crate::rules::{local_date, Judged};

/// An agency in a grouping key: as the feed spells it (an interned symbol), or a code of
/// the reference (a current unit the feed never named).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AgencyKey {
    Feed(Sym),
    Ref(AgencyId),
}

impl AgencyKey {
    /// The code, `None` for a dossier no snapshot named an agency for.
    pub fn code<'a>(self, syms: &'a Interner, agencies: &'a Agencies) -> Option<&'a str> {
        match self {
            AgencyKey::Feed(s) => (s != NO_SYM).then(|| syms.get(s)).flatten(),
            AgencyKey::Ref(id) => Some(agencies.code(id)),
        }
    }
}

/// A change of holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    /// When (UTC µs), and its local date, never before the receipt date.
    pub at: i64,
    pub date: NaiveDate,
    pub from: AgencyKey,
    pub to: AgencyKey,
    /// Along a successor line of the reference.
    pub along: bool,
    /// Its place among the dossier's as-was handovers (a restated handover keeps the
    /// as-was one's).
    pub seq: u32,
}

/// Who received a dossier, and who held it from when on, up to the clock's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stays {
    pub receiving: AgencyKey,
    pub handovers: Vec<Handover>,
}

impl Stays {
    /// The holder at the end (or now, while open).
    pub fn holder(&self) -> AgencyKey {
        self.handovers.last().map_or(self.receiving, |h| h.to)
    }

    /// The holder after the as-was handover `seq`: in the restated view, where a handover
    /// within one current unit is none, the unit holding it then.
    pub fn holder_after(&self, seq: u32) -> AgencyKey {
        self.handovers
            .iter()
            .rev()
            .find(|h| h.seq <= seq)
            .map_or(self.receiving, |h| h.to)
    }

    /// The holder at the end of local date `d`.
    pub fn holder_on(&self, d: NaiveDate) -> AgencyKey {
        self.handovers
            .iter()
            .rev()
            .find(|h| h.date <= d)
            .map_or(self.receiving, |h| h.to)
    }
}

/// One dossier's placement in both views, and what it says about data quality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub as_was: Stays,
    /// `None` when restating changes nothing (every agency is a current unit or unknown):
    /// the common case, grouped once for both views.
    pub restated: Option<Stays>,
    /// An agency the reference lacks.
    pub unknown: bool,
    /// A holder change not along a successor line, after the end too.
    pub off_line: bool,
    /// Any holder change, after the end too.
    pub handed_over: bool,
}

impl Placement {
    pub fn restated(&self) -> &Stays {
        self.restated.as_ref().unwrap_or(&self.as_was)
    }
}

/// What the reference says about one feed symbol, looked up once per fold part.
#[derive(Debug, Clone, Copy)]
struct Known {
    id: Option<AgencyId>,
    /// The current unit for every dossier, when no split depends on the dossier.
    fixed: Option<AgencyId>,
}

/// Places the dossiers of one fold part.
pub struct Placer<'a> {
    agencies: &'a Agencies,
    syms: &'a Interner,
    known: FxMap<Sym, Known>,
}

/// The start of the local day after `d`, in UTC µs.
fn day_after_us(d: NaiveDate) -> i64 {
    let next = d.succ_opt().unwrap_or(d);
    let secs = next
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp();
    (secs - sohoa_schemas::normalize::VN_OFFSET_SECS) * 1_000_000
}

impl<'a> Placer<'a> {
    pub fn new(agencies: &'a Agencies, syms: &'a Interner) -> Self {
        Placer {
            agencies,
            syms,
            known: FxMap::default(),
        }
    }

    fn known(&mut self, s: Sym) -> Known {
        let (agencies, syms) = (self.agencies, self.syms);
        *self.known.entry(s).or_insert_with(|| {
            let id = (s != NO_SYM)
                .then(|| syms.get(s))
                .flatten()
                .and_then(|c| agencies.id(c));
            Known {
                id,
                fixed: id.and_then(|id| agencies.fixed(id)),
            }
        })
    }

    /// Place dossier `code`, folded into `f` and judged as `j`.
    pub fn place(&mut self, code: &str, f: &Fact, j: &Judged) -> Placement {
        if f.holders.is_empty() {
            return self.place_one(code, f);
        }
        let held = f.holders(self.syms);
        let received = j.received_at.map(local_date);
        let mut unknown = false;
        let mut off_line = false;
        let mut all: Vec<Handover> = Vec::with_capacity(held.len());
        let mut prev_at = held[0].0.time;
        for (seq, w) in held.windows(2).enumerate() {
            let ((_, from), (key, to)) = (w[0], w[1]);
            let (kf, kt) = (self.known(from), self.known(to));
            let along = match (kf.id, kt.id) {
                (Some(a), Some(b)) => self.agencies.succeeds(a, b),
                _ => false,
            };
            let ended = kf.id.and_then(|a| self.agencies.valid_to(a));
            let at = match (along, ended) {
                (true, Some(to)) => day_after_us(to),
                _ => key.time,
            }
            .max(prev_at);
            prev_at = at;
            off_line |= !along;
            let date = local_date(at);
            all.push(Handover {
                at,
                date: received.map_or(date, |r| date.max(r)),
                from: AgencyKey::Feed(from),
                to: AgencyKey::Feed(to),
                along,
                seq: seq as u32,
            });
        }
        for (_, s) in &held {
            unknown |= self.known(*s).id.is_none();
        }
        let mut handovers = all;
        if let Some(end) = j.end_at {
            handovers.retain(|h| h.at <= end);
        }
        let as_was = Stays {
            receiving: AgencyKey::Feed(held[0].1),
            handovers,
        };
        let restated = self.restate(code, f, &as_was);
        // Restated keys name known codes by the reference, as-was ones by the feed: equal
        // stays compare by code.
        let same = restated.receiving.code(self.syms, self.agencies)
            == as_was.receiving.code(self.syms, self.agencies)
            && restated.handovers.len() == as_was.handovers.len()
            && restated
                .handovers
                .iter()
                .zip(&as_was.handovers)
                .all(|(a, b)| {
                    a.to.code(self.syms, self.agencies) == b.to.code(self.syms, self.agencies)
                });
        Placement {
            restated: (!same).then_some(restated),
            as_was,
            unknown,
            off_line,
            handed_over: true,
        }
    }

    /// The common dossier: one agency throughout (or none named).
    fn place_one(&mut self, code: &str, f: &Fact) -> Placement {
        let as_was = Stays {
            receiving: AgencyKey::Feed(f.agency),
            handovers: Vec::new(),
        };
        let k = self.known(f.agency);
        let restated = match (k.id, k.fixed) {
            (None, _) => None,
            (Some(id), Some(fixed)) if fixed == id => None,
            (Some(_), Some(fixed)) => Some(AgencyKey::Ref(fixed)),
            (Some(id), None) => {
                let field = (f.field != NO_SYM)
                    .then(|| self.syms.get(f.field))
                    .flatten();
                Some(AgencyKey::Ref(self.agencies.restate(id, field, code)))
            }
        };
        Placement {
            restated: restated.map(|r| Stays {
                receiving: r,
                handovers: Vec::new(),
            }),
            as_was,
            unknown: f.agency != NO_SYM && k.id.is_none(),
            off_line: false,
            handed_over: false,
        }
    }

    /// The restated unit of one feed agency for this dossier, as a key: the reference's
    /// code (one key per unit, so neighbouring stays compare equal), or the feed's own
    /// symbol for a code the reference lacks.
    fn current(&mut self, s: Sym, code: &str, field: Option<&str>) -> AgencyKey {
        let k = self.known(s);
        match (k.id, k.fixed) {
            (None, _) => AgencyKey::Feed(s),
            (Some(_), Some(fixed)) => AgencyKey::Ref(fixed),
            (Some(id), None) => AgencyKey::Ref(self.agencies.restate(id, field, code)),
        }
    }

    /// The restated stays: each stay left along a successor line takes the next stay's
    /// unit, the others their own; equal neighbours merge.
    fn restate(&mut self, code: &str, f: &Fact, as_was: &Stays) -> Stays {
        let field = (f.field != NO_SYM)
            .then(|| self.syms.get(f.field))
            .flatten();
        let feed = |k: AgencyKey| match k {
            AgencyKey::Feed(s) => s,
            AgencyKey::Ref(_) => unreachable!("as-was stays are the feed's"),
        };
        let n = as_was.handovers.len();
        let mut units = vec![AgencyKey::Feed(NO_SYM); n + 1];
        units[n] = self.current(feed(as_was.holder()), code, field);
        for k in (0..n).rev() {
            let h = &as_was.handovers[k];
            units[k] = if h.along {
                units[k + 1]
            } else {
                self.current(feed(h.from), code, field)
            };
        }
        let handovers = as_was
            .handovers
            .iter()
            .enumerate()
            .filter(|(k, _)| units[*k] != units[k + 1])
            .map(|(k, h)| Handover {
                from: units[k],
                to: units[k + 1],
                ..*h
            })
            .collect();
        Stays {
            receiving: units[0],
            handovers,
        }
    }
}
