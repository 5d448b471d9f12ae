//! Fold each dossier's events into one fact, in event time and source order.
//!
//! Events arrive file by file, in no useful order, so the fold is order-independent: every
//! field is a "latest by key" or "earliest by time" choice, never an accumulation. That
//! also makes it idempotent: an event seen twice (a source re-sending a record, or a
//! replayed file) changes nothing. The event id is a hash of exactly the fields the fold
//! orders by (source, dossier, status, event time), so deduplicating by event id and
//! folding this way keep the same events; no set of ids is held, and memory grows with
//! dossiers, not with events.

use std::collections::HashMap;

use arrow::array::{
    Array, AsArray, BooleanArray, Int32Array, Int64Array, Int8Array, ListArray, RecordBatch,
    StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow::datatypes::TimestampMicrosecondType;

/// The `events` columns the fold reads; the reader projects nothing else.
pub const COLUMNS: &[&str] = &[
    "event_kind",
    "source_system",
    "dossier_code",
    "procedure_code",
    "procedure_name",
    "agency_code",
    "channel",
    "status_code",
    "event_time",
    "received_at",
    "due_at",
    "finished_at",
    "returned_at",
    "refused_at",
    "supplements",
    "has_submitted_file",
    "has_digitized_component",
    "has_reused_component",
    "from_national_warehouse",
    "has_e_result",
    "result_document_count",
    "paid_online",
    "fee_bearing",
    "source_partition",
    "source_offset",
];

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error("events column {column}: {reason}")]
    Column {
        column: &'static str,
        reason: String,
    },
}

/// An interned string: agency, procedure and system codes repeat across many dossiers.
pub type Sym = u32;
pub const NO_SYM: Sym = u32::MAX;

#[derive(Debug, Default)]
pub struct Interner {
    ids: HashMap<Box<str>, Sym>,
    names: Vec<Box<str>>,
}

impl Interner {
    pub fn intern(&mut self, s: Option<&str>) -> Sym {
        let Some(s) = s else { return NO_SYM };
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as Sym;
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    pub fn get(&self, id: Sym) -> Option<&str> {
        self.names.get(id as usize).map(|s| &**s)
    }
}

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
    /// Set when the source itself moved the due date for this pause.
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
    pub channel: u8,
    pub flags: u8,
    pub received_at: Option<i64>,
    pub due_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub returned_at: Option<i64>,
    pub refused_at: Option<i64>,
    pub supplements: Box<[Supplement]>,
    /// Earliest time each ending status (7 withdrawn, 8 stopped, 9 processed, 10 returned)
    /// was seen, from any event: the clock's end when a snapshot lacks the date.
    pub first_seen: [Option<i64>; 4],
    /// Events folded in, repeats included.
    pub events: u32,
}

impl Fact {
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

/// Which dossiers this run keeps: all, or shard `index` of `count` by a hash of the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// FNV-1a of the dossier code: stable across runs, machines and versions.
    pub fn owns(&self, dossier_code: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in dossier_code.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % u64::from(self.count)) as u32 == self.index
    }
}

/// The fold's state: one fact per dossier code.
#[derive(Debug)]
pub struct Folder {
    pub shard: Shard,
    pub facts: HashMap<Box<str>, Fact>,
    pub syms: Interner,
    /// Events read, and events of dossiers other shards own.
    pub events_read: u64,
    pub events_skipped: u64,
}

fn col<'a>(b: &'a RecordBatch, name: &'static str) -> Result<&'a dyn Array, FoldError> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or(FoldError::Column {
            column: name,
            reason: "missing from the file".into(),
        })
}

fn typed<'a, T: 'static>(b: &'a RecordBatch, name: &'static str) -> Result<&'a T, FoldError> {
    col(b, name)?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| FoldError::Column {
            column: name,
            reason: format!(
                "unexpected type {}",
                col(b, name)
                    .map(|c| c.data_type().to_string())
                    .unwrap_or_default()
            ),
        })
}

fn ts(a: &TimestampMicrosecondArray, i: usize) -> Option<i64> {
    a.is_valid(i).then(|| a.value(i))
}

fn s(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

fn b(a: &BooleanArray, i: usize) -> bool {
    a.is_valid(i) && a.value(i)
}

impl Folder {
    pub fn new(shard: Shard) -> Self {
        Folder {
            shard,
            facts: HashMap::new(),
            syms: Interner::default(),
            events_read: 0,
            events_skipped: 0,
        }
    }

    /// Fold one batch of `events` (projected to [`COLUMNS`]).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), FoldError> {
        let kind: &StringArray = typed(batch, "event_kind")?;
        let system: &StringArray = typed(batch, "source_system")?;
        let code: &StringArray = typed(batch, "dossier_code")?;
        let procedure: &StringArray = typed(batch, "procedure_code")?;
        let procedure_name: &StringArray = typed(batch, "procedure_name")?;
        let agency: &StringArray = typed(batch, "agency_code")?;
        let channel: &StringArray = typed(batch, "channel")?;
        let status: &Int8Array = typed(batch, "status_code")?;
        let time: &TimestampMicrosecondArray = typed(batch, "event_time")?;
        let received: &TimestampMicrosecondArray = typed(batch, "received_at")?;
        let due: &TimestampMicrosecondArray = typed(batch, "due_at")?;
        let finished: &TimestampMicrosecondArray = typed(batch, "finished_at")?;
        let returned: &TimestampMicrosecondArray = typed(batch, "returned_at")?;
        let refused: &TimestampMicrosecondArray = typed(batch, "refused_at")?;
        let supplements: &ListArray = typed(batch, "supplements")?;
        let flag_cols: [(&BooleanArray, u8); 7] = [
            (typed(batch, "has_submitted_file")?, FLAG_SUBMITTED_FILE),
            (typed(batch, "has_digitized_component")?, FLAG_DIGITIZED),
            (typed(batch, "has_reused_component")?, FLAG_REUSED),
            (
                typed(batch, "from_national_warehouse")?,
                FLAG_NATIONAL_WAREHOUSE,
            ),
            (typed(batch, "has_e_result")?, FLAG_E_RESULT),
            (typed(batch, "paid_online")?, FLAG_PAID_ONLINE),
            (typed(batch, "fee_bearing")?, FLAG_FEE_BEARING),
        ];
        let result_docs: &Int32Array = typed(batch, "result_document_count")?;
        let partition: &Int32Array = typed(batch, "source_partition")?;
        let offset: &Int64Array = typed(batch, "source_offset")?;
        let sup: &StructArray = supplements.values().as_struct();
        let sup_req = sup.column(0).as_primitive::<TimestampMicrosecondType>();
        let sup_done = sup.column(1).as_primitive::<TimestampMicrosecondType>();
        let sup_after = sup.column(3).as_primitive::<TimestampMicrosecondType>();

        for i in 0..batch.num_rows() {
            self.events_read += 1;
            let dossier = code.value(i);
            if !self.shard.owns(dossier) {
                self.events_skipped += 1;
                continue;
            }
            let key = EventKey {
                time: time.value(i),
                partition: if partition.is_valid(i) {
                    partition.value(i)
                } else {
                    -1
                },
                offset: if offset.is_valid(i) {
                    offset.value(i)
                } else {
                    -1
                },
            };
            let st = status.value(i);
            let fact = match self.facts.get_mut(dossier) {
                Some(f) => f,
                None => self.facts.entry(dossier.into()).or_default(),
            };
            fact.events += 1;
            if fact.events == 1 || key >= fact.last {
                fact.last = key;
                fact.status = st;
            }
            if (7..=10).contains(&st) {
                let slot = &mut fact.first_seen[(st - 7) as usize];
                *slot = Some(slot.map_or(key.time, |t| t.min(key.time)));
            }
            if kind.value(i) != "snapshot" || fact.snapshot.is_some_and(|k| k > key) {
                continue;
            }
            // The newest snapshot is the dossier as the source last described it.
            fact.snapshot = Some(key);
            fact.source_system = self.syms.intern(s(system, i));
            fact.agency = self.syms.intern(s(agency, i));
            fact.procedure = self.syms.intern(s(procedure, i));
            fact.procedure_name = self.syms.intern(s(procedure_name, i));
            fact.channel = match s(channel, i) {
                Some("online") => CHANNEL_ONLINE,
                Some("postal") => CHANNEL_POSTAL,
                Some("in_person") => CHANNEL_IN_PERSON,
                _ => CHANNEL_UNKNOWN,
            };
            let mut flags = 0;
            for (a, f) in &flag_cols {
                if b(a, i) {
                    flags |= f;
                }
            }
            if result_docs.is_valid(i) && result_docs.value(i) > 0 {
                flags |= FLAG_HAS_RESULT_DOCUMENT;
            }
            fact.flags = flags;
            fact.received_at = ts(received, i);
            fact.due_at = ts(due, i);
            fact.finished_at = ts(finished, i);
            fact.returned_at = ts(returned, i);
            fact.refused_at = ts(refused, i);
            fact.supplements = if supplements.is_valid(i) {
                let (start, end) = (
                    supplements.value_offsets()[i] as usize,
                    supplements.value_offsets()[i + 1] as usize,
                );
                (start..end)
                    .filter(|&j| sup_req.is_valid(j))
                    .map(|j| Supplement {
                        requested_at: sup_req.value(j),
                        completed_at: sup_done.is_valid(j).then(|| sup_done.value(j)),
                        due_after: sup_after.is_valid(j).then(|| sup_after.value(j)),
                    })
                    .collect()
            } else {
                Box::new([])
            };
        }
        Ok(())
    }
}
