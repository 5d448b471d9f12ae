//! Fold each dossier's events into one fact, in event time and source order.
//!
//! Events arrive file by file, in no useful order, so the fold is order-independent: every
//! field is a "latest by key" or "earliest by time" choice, never an accumulation. That
//! also makes it idempotent: an event seen twice (a source re-sending a record, or a
//! replayed file) changes nothing. The event id is a hash of exactly the fields the fold
//! orders by (source, dossier, status, event time), so deduplicating by event id and
//! folding this way keep the same events; no set of ids is held, and memory grows with
//! dossiers, not with events.

use arrow::array::{
    Array, AsArray, BooleanArray, DictionaryArray, Int32Array, Int64Array, Int8Array, ListArray,
    RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Int32Type, TimestampMicrosecondType};

use crate::quality::{self, FoldQuality};

mod fact;
mod intern;
mod shard;

pub use fact::*;
pub use intern::{FxHasher, FxMap, Interner, Sym, NO_SYM};
pub use shard::{Part, Shard};

/// The `events` columns the fold reads; the reader projects nothing else.
pub const COLUMNS: &[&str] = &[
    "event_kind",
    "source_system",
    "dossier_code",
    "procedure_code",
    "procedure_name",
    "field_code",
    "field_name",
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

/// Lineage columns the fold reads when a file has them: `arrived_at` is newer than the
/// first files, so a file without it is read with the column as null.
pub const OPTIONAL_COLUMNS: &[&str] = &["source_topic", "ingested_at", "arrived_at"];

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error("events column {column}: {reason}")]
    Column {
        column: &'static str,
        reason: String,
    },
}

/// A text column of codes, as interned symbols. A dictionary column (how the reader asks
/// for [`DICTIONARY_COLUMNS`]) is interned once per distinct value per batch; a plain one,
/// row by row.
enum Codes<'a> {
    Dict {
        keys: &'a Int32Array,
        syms: Vec<Sym>,
    },
    Plain(&'a StringArray),
}

impl<'a> Codes<'a> {
    fn new(b: &'a RecordBatch, name: &'static str, syms: &mut Interner) -> Result<Self, FoldError> {
        let c = col(b, name)?;
        if let Some(d) = c.as_any().downcast_ref::<DictionaryArray<Int32Type>>() {
            let values = d
                .values()
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| FoldError::Column {
                    column: name,
                    reason: format!("dictionary of {}, not text", d.values().data_type()),
                })?;
            let map = (0..values.len())
                .map(|j| syms.intern(s(values, j)))
                .collect();
            return Ok(Codes::Dict {
                keys: d.keys(),
                syms: map,
            });
        }
        typed(b, name).map(Codes::Plain)
    }

    /// The symbol of row `i`; `current` is kept when it already stands for the value.
    fn sym(&self, i: usize, current: Sym, syms: &mut Interner) -> Sym {
        match self {
            Codes::Dict { keys, syms: map } => {
                if keys.is_valid(i) {
                    map[keys.value(i) as usize]
                } else {
                    NO_SYM
                }
            }
            Codes::Plain(a) => syms.reintern(current, s(a, i)),
        }
    }
}

/// The text columns read as dictionaries.
pub const DICTIONARY_COLUMNS: &[&str] = &[
    "event_kind",
    "source_system",
    "procedure_code",
    "procedure_name",
    "field_code",
    "field_name",
    "agency_code",
    "channel",
    "source_topic",
];

/// The fold's state: one fact per dossier code.
#[derive(Debug)]
pub struct Folder {
    pub part: Part,
    pub facts: FxMap<Box<str>, Fact>,
    pub syms: Interner,
    /// Events read, and events of dossiers other shards own.
    pub events_read: u64,
    pub events_skipped: u64,
    /// Per-event data-quality counts (sync delays, repeats, rows per topic).
    pub quality: FoldQuality,
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
    pub fn new(part: Part) -> Self {
        Folder {
            part,
            facts: FxMap::default(),
            syms: Interner::default(),
            events_read: 0,
            events_skipped: 0,
            quality: FoldQuality::default(),
        }
    }

    /// Fold one batch of `events` (projected to [`COLUMNS`]).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), FoldError> {
        let syms = &mut self.syms;
        let kind = Codes::new(batch, "event_kind", syms)?;
        let system = Codes::new(batch, "source_system", syms)?;
        let code: &StringArray = typed(batch, "dossier_code")?;
        let procedure = Codes::new(batch, "procedure_code", syms)?;
        let procedure_name = Codes::new(batch, "procedure_name", syms)?;
        let field = Codes::new(batch, "field_code", syms)?;
        let field_name = Codes::new(batch, "field_name", syms)?;
        let agency = Codes::new(batch, "agency_code", syms)?;
        let channel = Codes::new(batch, "channel", syms)?;
        let snapshot = syms.intern(Some("snapshot"));
        let channels = [
            (syms.intern(Some("in_person")), CHANNEL_IN_PERSON),
            (syms.intern(Some("online")), CHANNEL_ONLINE),
            (syms.intern(Some("postal")), CHANNEL_POSTAL),
        ];
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
        let sup_before = sup.column(2).as_primitive::<TimestampMicrosecondType>();
        let sup_after = sup.column(3).as_primitive::<TimestampMicrosecondType>();
        // Lineage columns older files lack: a missing one reads as null.
        let opt_ts = |name| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        };
        let (arrived, ingested) = (opt_ts("arrived_at"), opt_ts("ingested_at"));
        let topic = match batch.column_by_name("source_topic") {
            Some(_) => Some(Codes::new(batch, "source_topic", syms)?),
            None => None,
        };

        for i in 0..batch.num_rows() {
            self.events_read += 1;
            let dossier = code.value(i);
            if !self.part.owns(dossier) {
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
            let stage = quality::stage(st);
            if stage > fact.peak_stage {
                fact.peak_stage = stage;
                fact.peak_at = key.time;
            } else if stage == fact.peak_stage && stage > 0 {
                fact.peak_at = fact.peak_at.min(key.time);
            }
            let kind_sym = kind.sym(i, NO_SYM, syms);
            let is_snapshot = kind_sym == snapshot;
            let ag = agency.sym(i, fact.agency, syms);
            let src = system.sym(i, fact.source_system, syms);
            let arrival = arrived
                .and_then(|a| ts(a, i))
                .or_else(|| ingested.and_then(|a| ts(a, i)));
            let topic_sym = topic.as_ref().map_or(NO_SYM, |t| t.sym(i, NO_SYM, syms));
            self.quality.event(quality::EventQ {
                dossier,
                kind: kind_sym,
                source: src,
                topic: topic_sym,
                agency: ag,
                agency_code: (ag != NO_SYM).then(|| syms.get(ag)).flatten(),
                status: st,
                time: key.time,
                arrival,
            });
            if is_snapshot && ag != NO_SYM {
                // Every snapshot counts here, stale or not: who received the dossier and who
                // held it when do not depend on the order snapshots arrive in.
                fact.see_agency(key, ag, syms);
            }
            let snapshot_due = ts(due, i);
            if let (true, Some(d)) = (is_snapshot, snapshot_due) {
                // Every snapshot, stale or not: the first due date is the earliest one's.
                fact.see_due(key.time, d);
            }
            if !is_snapshot || fact.snapshot.is_some_and(|k| k > key) {
                continue;
            }
            // The newest snapshot is the dossier as the source last described it.
            fact.snapshot = Some(key);
            fact.snapshot_status = st;
            fact.source_system = src;
            fact.procedure = procedure.sym(i, fact.procedure, syms);
            fact.procedure_name = procedure_name.sym(i, fact.procedure_name, syms);
            fact.field = field.sym(i, fact.field, syms);
            fact.field_name = field_name.sym(i, fact.field_name, syms);
            let ch = channel.sym(i, NO_SYM, syms);
            fact.channel = channels
                .iter()
                .find(|(sym, _)| *sym == ch)
                .map_or(CHANNEL_UNKNOWN, |(_, c)| *c);
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
            fact.due_at = snapshot_due;
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
                        due_before: sup_before.is_valid(j).then(|| sup_before.value(j)),
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
