//! The folded fact of one dossier, and what it is made of.

use super::Sym;

/// Orders events of one dossier: event time, then source order. The later sync of two
/// events stamped with the same time wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct EventKey {
    pub time: i64,
    pub partition: i32,
    pub offset: i64,
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
#[derive(Debug, Clone, Default)]
pub struct Fact {
    /// The latest snapshot's key; `None` while only progress events were seen.
    pub snapshot: Option<EventKey>,
    /// The latest event of any kind, and its status.
    pub last: EventKey,
    pub status: i8,
    pub source_system: Sym,
    pub agency: Sym,
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
    /// ...the first agency a snapshot named (symbol + 1, 0 for none)...
    pub first_agency: u32,
    /// ...the latest snapshot's status (the dates below are that snapshot's)...
    pub snapshot_status: i8,
    /// ...and whether a snapshot named another one (`quality::Q_*` bits).
    pub qflags: u8,
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
}
