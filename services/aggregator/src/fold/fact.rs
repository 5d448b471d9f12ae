//! The folded fact of one dossier, and what it is made of.

use super::{Interner, Sym, NO_SYM};

/// Orders events of one dossier: event time, then source order. The later sync of two
/// events stamped with the same time wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct EventKey {
    pub time: i64,
    pub partition: i32,
    pub offset: i64,
}

/// One agency that snapshots of a dossier named: the earliest and the latest of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub agency: Sym,
    pub first: EventKey,
    pub last: EventKey,
}

/// A supplement request, as the latest snapshot lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supplement {
    pub requested_at: i64,
    pub completed_at: Option<i64>,
    /// Set when the source itself moved the due date for this pause: from
    /// (`NgayHenTraTruoc`) and to (`NgayHenTraMoi`).
    pub due_before: Option<i64>,
    pub due_after: Option<i64>,
}

pub const FLAG_SUBMITTED_FILE: u8 = 1;
pub const FLAG_DIGITIZED: u8 = 2;
pub const FLAG_REUSED: u8 = 4;
pub const FLAG_NATIONAL_WAREHOUSE: u8 = 8;
pub const FLAG_E_RESULT: u8 = 16;
pub const FLAG_PAID_ONLINE: u8 = 32;
pub const FLAG_FEE_BEARING: u8 = 64;
pub const FLAG_HAS_RESULT_DOCUMENT: u8 = 128;

/// Channel codes kept in a byte.
pub const CHANNEL_UNKNOWN: u8 = 0;
pub const CHANNEL_IN_PERSON: u8 = 1;
pub const CHANNEL_ONLINE: u8 = 2;
pub const CHANNEL_POSTAL: u8 = 3;

/// Everything the rules need about one dossier.
#[derive(Debug, Clone)]
pub struct Fact {
    /// The latest snapshot's key; `None` while only progress events were seen.
    pub snapshot: Option<EventKey>,
    /// The latest event of any kind, and its status.
    pub last: EventKey,
    pub status: i8,
    pub source_system: Sym,
    /// The agency of the latest snapshot that names one: who holds the dossier last.
    pub agency: Sym,
    /// The agency of the earliest snapshot that names one: who received it; `NO_SYM`
    /// until a snapshot names one...
    pub receiving: Sym,
    /// ...the keys of the earliest and the latest snapshots naming one...
    pub named_first: EventKey,
    pub named_last: EventKey,
    /// ...and, once snapshots named more than one agency, each one's earliest and latest
    /// snapshot, so the holder at any moment can be told (see [`Fact::holders`]). Empty
    /// for the common dossier, which one agency holds throughout.
    pub holders: Box<[Held]>,
    pub procedure: Sym,
    pub procedure_name: Sym,
    /// The field (`MaLinhVuc`) and its name (`TenLinhVuc`), as the latest snapshot gave them.
    pub field: Sym,
    pub field_name: Sym,
    pub channel: u8,
    pub flags: u8,
    pub received_at: Option<i64>,
    /// The latest snapshot's due date (`NgayHenTra`).
    pub due_at: Option<i64>,
    /// The due date of the earliest snapshot that had one, and that snapshot's event
    /// time: what the dossier is judged by, whatever later snapshots move it to.
    pub first_due: Option<i64>,
    pub first_due_time: i64,
    /// Every distinct due date a snapshot showed, sorted; left empty while that is only
    /// `first_due`, so the common dossier allocates nothing for it.
    pub dues: Box<[i64]>,
    pub finished_at: Option<i64>,
    pub returned_at: Option<i64>,
    pub refused_at: Option<i64>,
    pub supplements: Box<[Supplement]>,
    /// Earliest time each ending status (7 withdrawn, 8 stopped, 9 processed, 10 returned)
    /// was seen, from any event: the clock's end when a snapshot lacks the date.
    pub first_seen: [Option<i64>; 4],
    /// Events folded in, repeats included.
    pub events: u32,
    /// Data-quality state, each field order-independent like the rest (see `quality`):
    /// the furthest life-cycle stage any event showed ([`crate::quality::stage`], 0 for
    /// none) and the earliest event time it was shown at...
    pub peak_stage: u8,
    pub peak_at: i64,
    /// ...and the latest snapshot's status (the dates above are that snapshot's).
    pub snapshot_status: i8,
}

impl Default for Fact {
    /// Nothing seen yet; codes not given (`NO_SYM`), not the first interned one.
    fn default() -> Fact {
        Fact {
            snapshot: None,
            last: EventKey::default(),
            status: 0,
            source_system: NO_SYM,
            agency: NO_SYM,
            receiving: NO_SYM,
            named_first: EventKey::default(),
            named_last: EventKey::default(),
            holders: Box::new([]),
            procedure: NO_SYM,
            procedure_name: NO_SYM,
            field: NO_SYM,
            field_name: NO_SYM,
            channel: 0,
            flags: 0,
            received_at: None,
            due_at: None,
            first_due: None,
            first_due_time: 0,
            dues: Box::new([]),
            finished_at: None,
            returned_at: None,
            refused_at: None,
            supplements: Box::new([]),
            first_seen: [None; 4],
            events: 0,
            peak_stage: 0,
            peak_at: 0,
            snapshot_status: 0,
        }
    }
}

impl Fact {
    /// Note the due date of a snapshot with event time `time`. Order-independent like the
    /// rest of the fold: the first due date is the earliest snapshot's, the others a set.
    /// A snapshot's event time is the latest date it holds, so several snapshots often
    /// share one (a re-sync with nothing new but the due date, say) and their order is
    /// unknown; among them the earliest due date is taken as the first, because a due
    /// date only moves later.
    pub fn see_due(&mut self, time: i64, due: i64) {
        let Some(first) = self.first_due else {
            self.first_due = Some(due);
            self.first_due_time = time;
            return;
        };
        if due != first || !self.dues.is_empty() {
            let mut all = if self.dues.is_empty() {
                vec![first]
            } else {
                self.dues.to_vec()
            };
            if let Err(i) = all.binary_search(&due) {
                all.insert(i, due);
                self.dues = all.into_boxed_slice();
            }
        }
        if (time, due) < (self.first_due_time, first) {
            self.first_due = Some(due);
            self.first_due_time = time;
        }
    }

    /// Every distinct due date the snapshots showed, sorted.
    pub fn due_values(&self) -> &[i64] {
        if self.dues.is_empty() {
            self.first_due.as_slice()
        } else {
            &self.dues
        }
    }

    /// Note that a snapshot with key `key` named agency `agency`. Order-independent like
    /// the rest of the fold: each agency keeps its earliest and latest snapshot, and the
    /// receiving and holding agencies are those of the earliest and the latest overall.
    /// Snapshots with equal keys (a feed without source offsets) are ordered by code, so
    /// every order of arrival picks the same.
    pub fn see_agency(&mut self, key: EventKey, agency: Sym, syms: &Interner) {
        if self.receiving == NO_SYM {
            (self.receiving, self.agency) = (agency, agency);
            (self.named_first, self.named_last) = (key, key);
            return;
        }
        let order = |k: EventKey, a: Sym| (k, syms.get(a));
        if self.holders.is_empty() {
            if agency == self.receiving {
                self.named_first = self.named_first.min(key);
                self.named_last = self.named_last.max(key);
                return;
            }
            self.holders = Box::new([Held {
                agency: self.receiving,
                first: self.named_first,
                last: self.named_last,
            }]);
        }
        match self.holders.iter_mut().find(|h| h.agency == agency) {
            Some(h) => {
                h.first = h.first.min(key);
                h.last = h.last.max(key);
            }
            None => {
                let mut v = std::mem::take(&mut self.holders).into_vec();
                v.push(Held {
                    agency,
                    first: key,
                    last: key,
                });
                self.holders = v.into_boxed_slice();
            }
        }
        let first = self
            .holders
            .iter()
            .min_by(|a, b| order(a.first, a.agency).cmp(&order(b.first, b.agency)));
        let last = self
            .holders
            .iter()
            .max_by(|a, b| order(a.last, a.agency).cmp(&order(b.last, b.agency)));
        if let (Some(f), Some(l)) = (first, last) {
            (self.receiving, self.named_first) = (f.agency, f.first);
            (self.agency, self.named_last) = (l.agency, l.last);
        }
    }

    /// The agencies that held the dossier, in order, each from the key of the snapshot
    /// that first showed it holding it: from each agency's earliest and latest snapshot,
    /// the agency of the latest snapshot at or before a moment holds it then. Exact unless
    /// a dossier went back and forth between two agencies more than once.
    pub fn holders(&self, syms: &Interner) -> Vec<(EventKey, Sym)> {
        if self.holders.is_empty() {
            return if self.receiving == NO_SYM {
                Vec::new()
            } else {
                vec![(self.named_first, self.receiving)]
            };
        }
        let mut points: Vec<(EventKey, Sym)> = self
            .holders
            .iter()
            .flat_map(|h| [(h.first, h.agency), (h.last, h.agency)])
            .collect();
        points.sort_by(|a, b| (a.0, syms.get(a.1)).cmp(&(b.0, syms.get(b.1))));
        points.dedup_by(|b, a| a.1 == b.1);
        points
    }

    /// Earliest time status `code` (7 to 10) was seen.
    pub fn first_seen(&self, code: i8) -> Option<i64> {
        (7..=10)
            .contains(&code)
            .then(|| self.first_seen[(code - 7) as usize])
            .flatten()
    }

    pub fn flag(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_dates_fold_the_same_in_any_order_and_twice() {
        // Two snapshots share the earliest event time: the earlier due date is the first.
        let seen = [(10, 700), (10, 500), (30, 900)];
        let mut states = Vec::new();
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1], [1, 0, 2]] {
            let mut f = Fact::default();
            for i in order {
                f.see_due(seen[i].0, seen[i].1);
            }
            states.push((f.first_due, f.first_due_time, f.due_values().to_vec()));
        }
        let mut twice = Fact::default();
        for i in [1, 0, 2, 0, 1, 2] {
            twice.see_due(seen[i].0, seen[i].1);
        }
        states.push((
            twice.first_due,
            twice.first_due_time,
            twice.due_values().to_vec(),
        ));
        for s in &states {
            assert_eq!(*s, (Some(500), 10, vec![500, 700, 900]));
        }
        // One value only: nothing allocated for the set.
        let mut one = Fact::default();
        one.see_due(5, 900);
        one.see_due(1, 900);
        assert!(one.dues.is_empty());
        assert_eq!((one.first_due_time, one.due_values()), (1, &[900][..]));
    }

    /// Every order of `seen` (key time, agency), folded into one fact.
    fn agencies_in_every_order(seen: &[(i64, &str)]) -> Vec<Fact> {
        let mut syms = Interner::default();
        let named: Vec<(EventKey, Sym)> = seen
            .iter()
            .enumerate()
            .map(|(i, (t, a))| {
                let key = EventKey {
                    time: *t,
                    partition: 0,
                    offset: i as i64,
                };
                (key, syms.intern(Some(a)))
            })
            .collect();
        let mut orders: Vec<Vec<usize>> = vec![(0..named.len()).collect()];
        orders.push((0..named.len()).rev().collect());
        for k in 1..named.len() {
            let mut o: Vec<usize> = (0..named.len()).collect();
            o.rotate_left(k);
            orders.push(o);
        }
        orders
            .into_iter()
            .map(|o| {
                let mut f = Fact::default();
                // Twice, as a replayed file would.
                for &i in o.iter().chain(&o) {
                    f.see_agency(named[i].0, named[i].1, &syms);
                }
                f
            })
            .collect()
    }

    #[test]
    fn who_received_and_who_held_fold_the_same_in_any_order() {
        // A district received it, a ward took it over, and (a data quirk) the district
        // named it once more before the ward ended it.
        let seen = [
            (10, "D"),
            (20, "D"),
            (30, "W"),
            (40, "D"),
            (50, "W"),
            (60, "W"),
        ];
        let facts = agencies_in_every_order(&seen);
        let mut syms = Interner::default();
        let (d, w) = (syms.intern(Some("D")), syms.intern(Some("W")));
        for f in &facts {
            assert_eq!((f.receiving, f.agency), (d, w));
            assert_eq!((f.named_first.time, f.named_last.time), (10, 60));
            let held: Vec<(i64, Sym)> =
                f.holders(&syms).iter().map(|(k, a)| (k.time, *a)).collect();
            // D from 10, W from 30 (its first), D again at 40 (its last), W again from 60:
            // W's snapshot at 50 lies between its first and its last, so the return is
            // dated by the last, the limit of keeping two keys per agency.
            assert_eq!(held, [(10, d), (30, w), (40, d), (60, w)]);
        }
        // One agency throughout: nothing allocated, one holder.
        let facts = agencies_in_every_order(&[(5, "D"), (1, "D"), (9, "D")]);
        for f in &facts {
            assert!(f.holders.is_empty());
            assert_eq!(
                f.holders(&syms)
                    .iter()
                    .map(|(k, a)| (k.time, *a))
                    .collect::<Vec<_>>(),
                [(1, d)]
            );
        }
        assert!(Fact::default().holders(&syms).is_empty());
    }
}
