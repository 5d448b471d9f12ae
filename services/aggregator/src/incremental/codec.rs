//! The state's objects: one fold part's facts, and its event fingerprints, as varints
//! (zigzag for signed values), times as differences from the fact's last event time, so
//! most are short.

use crate::fold::{EventKey, Fact, Folder, Held, Interner, Part, Supplement, NO_SYM};
use crate::quality::{SourceSet, SourceSets};

const FACTS_MAGIC: &[u8] = b"sohoa-facts-5\n";
const FPS_MAGIC: &[u8] = b"sohoa-fingerprints-1\n";

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn i(&mut self, v: i64) {
        self.u(((v << 1) ^ (v >> 63)) as u64);
    }

    fn s(&mut self, s: &str) {
        self.u(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn key(&mut self, k: &EventKey, base: i64) {
        self.i(k.time.wrapping_sub(base));
        self.i(i64::from(k.partition));
        self.i(k.offset);
    }
}

struct R<'a> {
    d: &'a [u8],
    p: usize,
}

impl<'a> R<'a> {
    fn u(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.d.get(self.p).ok_or("truncated")?;
            self.p += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn i(&mut self) -> Result<i64, String> {
        let v = self.u()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.d.get(self.p).ok_or("truncated")?;
        self.p += 1;
        Ok(b)
    }

    fn s(&mut self) -> Result<&'a str, String> {
        let n = self.u()? as usize;
        let end = self.p.checked_add(n).filter(|&e| e <= self.d.len());
        let bytes = &self.d[self.p..end.ok_or("truncated")?];
        self.p += n;
        std::str::from_utf8(bytes).map_err(|e| e.to_string())
    }

    fn key(&mut self, base: i64) -> Result<EventKey, String> {
        Ok(EventKey {
            time: base.wrapping_add(self.i()?),
            partition: self.i()? as i32,
            offset: self.i()?,
        })
    }

    fn magic(&mut self, m: &[u8]) -> Result<(), String> {
        if self.d.get(..m.len()) != Some(m) {
            return Err("not a state object of this version".into());
        }
        self.p = m.len();
        Ok(())
    }
}

pub(super) fn encode_facts(folder: &Folder) -> Vec<u8> {
    let mut w = W(FACTS_MAGIC.to_vec());
    let names = folder.syms.names();
    w.u(names.len() as u64);
    for n in names {
        w.s(n);
    }
    w.u(folder.facts.len() as u64);
    for (code, f) in &folder.facts {
        // Destructured, so a field added to `Fact` cannot be forgotten here.
        let Fact {
            snapshot,
            last,
            status,
            source_system,
            agency,
            receiving,
            named_first,
            named_last,
            holders,
            procedure,
            procedure_name,
            field,
            field_name,
            channel,
            flags,
            received_at,
            due_at,
            first_due,
            first_due_time,
            dues,
            finished_at,
            returned_at,
            refused_at,
            supplements,
            first_seen,
            events,
            peak_stage,
            peak_at,
            snapshot_status,
        } = f;
        let base = last.time;
        w.s(code);
        w.i(base);
        w.i(i64::from(last.partition));
        w.i(last.offset);
        let times = [
            *received_at,
            *due_at,
            *finished_at,
            *returned_at,
            *refused_at,
            first_seen[0],
            first_seen[1],
            first_seen[2],
            first_seen[3],
        ];
        let mut present = u64::from(snapshot.is_some());
        for (k, t) in times.iter().enumerate() {
            present |= u64::from(t.is_some()) << (k + 1);
        }
        w.u(present);
        if let Some(k) = snapshot {
            w.i(k.time.wrapping_sub(base));
            w.i(i64::from(k.partition));
            w.i(k.offset);
        }
        for t in times.into_iter().flatten() {
            w.i(t.wrapping_sub(base));
        }
        w.i(i64::from(*status));
        w.i(i64::from(*snapshot_status));
        for s in [
            source_system,
            agency,
            procedure,
            procedure_name,
            field,
            field_name,
        ] {
            w.u(u64::from(s.wrapping_add(1)));
        }
        w.0.extend_from_slice(&[*channel, *flags, *peak_stage]);
        w.u(supplements.len() as u64);
        for s in supplements.iter() {
            w.i(s.requested_at.wrapping_sub(base));
            let parts = [s.completed_at, s.due_after, s.due_before];
            let mut bits = 0;
            for (k, t) in parts.iter().enumerate() {
                bits |= u64::from(t.is_some()) << k;
            }
            w.u(bits);
            for t in parts.into_iter().flatten() {
                w.i(t.wrapping_sub(base));
            }
        }
        // The first due date and its snapshot's time, then the other due dates seen.
        match first_due {
            Some(d) => {
                w.u(1);
                w.i(d.wrapping_sub(base));
                w.i(first_due_time.wrapping_sub(base));
            }
            None => w.u(0),
        }
        w.u(dues.len() as u64);
        for d in dues.iter() {
            w.i(d.wrapping_sub(base));
        }
        w.u(u64::from(*events));
        w.i(peak_at.wrapping_sub(base));
        // Who received and who held the dossier: the keys of the snapshots that named them.
        w.u(u64::from(receiving.wrapping_add(1)));
        if *receiving != NO_SYM {
            for k in [named_first, named_last] {
                w.key(k, base);
            }
        }
        w.u(holders.len() as u64);
        for h in holders.iter() {
            w.u(u64::from(h.agency.wrapping_add(1)));
            w.key(&h.first, base);
            w.key(&h.last, base);
        }
    }
    w.0
}

pub(super) fn decode_facts(data: &[u8], part: Part) -> Result<Folder, String> {
    let mut r = R { d: data, p: 0 };
    r.magic(FACTS_MAGIC)?;
    let n = r.u()? as usize;
    let mut names = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        names.push(Box::<str>::from(r.s()?));
    }
    let mut folder = Folder::new(part);
    folder.syms = Interner::from_names(names);
    let n = r.u()? as usize;
    folder.facts.reserve(n.min(1 << 26));
    let sym = |v: u64| (v as u32).wrapping_sub(1);
    for _ in 0..n {
        let code: Box<str> = r.s()?.into();
        let base = r.i()?;
        let last = EventKey {
            time: base,
            partition: r.i()? as i32,
            offset: r.i()?,
        };
        let present = r.u()?;
        let snapshot = if present & 1 != 0 {
            Some(EventKey {
                time: base.wrapping_add(r.i()?),
                partition: r.i()? as i32,
                offset: r.i()?,
            })
        } else {
            None
        };
        let mut times = [None; 9];
        for (k, t) in times.iter_mut().enumerate() {
            if present & (1 << (k + 1)) != 0 {
                *t = Some(base.wrapping_add(r.i()?));
            }
        }
        let status = r.i()? as i8;
        let snapshot_status = r.i()? as i8;
        let (source_system, agency, procedure, procedure_name) =
            (sym(r.u()?), sym(r.u()?), sym(r.u()?), sym(r.u()?));
        let (field, field_name) = (sym(r.u()?), sym(r.u()?));
        let (channel, flags, peak_stage) = (r.byte()?, r.byte()?, r.byte()?);
        let ns = r.u()? as usize;
        let mut supplements = Vec::with_capacity(ns.min(64));
        for _ in 0..ns {
            let requested_at = base.wrapping_add(r.i()?);
            let bits = r.u()?;
            let completed_at = if bits & 1 != 0 {
                Some(base.wrapping_add(r.i()?))
            } else {
                None
            };
            let due_after = if bits & 2 != 0 {
                Some(base.wrapping_add(r.i()?))
            } else {
                None
            };
            let due_before = if bits & 4 != 0 {
                Some(base.wrapping_add(r.i()?))
            } else {
                None
            };
            supplements.push(Supplement {
                requested_at,
                completed_at,
                due_before,
                due_after,
            });
        }
        let (first_due, first_due_time) = if r.u()? == 1 {
            let d = base.wrapping_add(r.i()?);
            (Some(d), base.wrapping_add(r.i()?))
        } else {
            (None, 0)
        };
        let n_dues = r.u()? as usize;
        let mut dues = Vec::with_capacity(n_dues.min(64));
        for _ in 0..n_dues {
            dues.push(base.wrapping_add(r.i()?));
        }
        let events = r.u()? as u32;
        let peak_at = base.wrapping_add(r.i()?);
        let receiving = sym(r.u()?);
        let (named_first, named_last) = if receiving != NO_SYM {
            (r.key(base)?, r.key(base)?)
        } else {
            Default::default()
        };
        let n_held = r.u()? as usize;
        let mut holders = Vec::with_capacity(n_held.min(64));
        for _ in 0..n_held {
            holders.push(Held {
                agency: sym(r.u()?),
                first: r.key(base)?,
                last: r.key(base)?,
            });
        }
        let fact = Fact {
            snapshot,
            last,
            status,
            source_system,
            agency,
            receiving,
            named_first,
            named_last,
            holders: holders.into_boxed_slice(),
            procedure,
            procedure_name,
            field,
            field_name,
            channel,
            flags,
            received_at: times[0],
            due_at: times[1],
            first_due,
            first_due_time,
            dues: dues.into_boxed_slice(),
            finished_at: times[2],
            returned_at: times[3],
            refused_at: times[4],
            supplements: supplements.into_boxed_slice(),
            first_seen: [times[5], times[6], times[7], times[8]],
            events,
            peak_stage,
            peak_at,
            snapshot_status,
        };
        folder.facts.insert(code, fact);
    }
    if r.p != data.len() {
        return Err("trailing bytes".into());
    }
    Ok(folder)
}

pub(super) fn encode_sets(sets: &SourceSets) -> Vec<u8> {
    let mut w = W(FPS_MAGIC.to_vec());
    w.u(sets.len() as u64);
    for (name, s) in sets {
        w.s(name);
        w.u(s.events);
        w.u(s.fingerprints.len() as u64);
        // Sorted: the differences are about 2^56 / n, a few bytes each.
        let mut prev = 0;
        for &fp in &s.fingerprints {
            w.u(fp - prev);
            prev = fp;
        }
    }
    w.0
}

pub(super) fn decode_sets(data: &[u8]) -> Result<SourceSets, String> {
    let mut r = R { d: data, p: 0 };
    r.magic(FPS_MAGIC)?;
    let mut out = SourceSets::new();
    for _ in 0..r.u()? {
        let name = r.s()?.to_owned();
        let events = r.u()?;
        let n = r.u()? as usize;
        let mut fingerprints = Vec::with_capacity(n.min(1 << 28));
        let mut prev = 0u64;
        for _ in 0..n {
            prev = prev.wrapping_add(r.u()?);
            fingerprints.push(prev);
        }
        out.insert(
            name,
            SourceSet {
                events,
                fingerprints,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::Shard;

    #[test]
    fn facts_and_fingerprints_read_back_unchanged() {
        let part = Part::whole(Shard::ALL);
        let mut f = Folder::new(part);
        let a = f.syms.intern(Some("000.00.12.H55"));
        let p = f.syms.intern(Some("1.001193"));
        f.facts.insert(
            "H55-1".into(),
            Fact {
                snapshot: Some(EventKey {
                    time: 1_700_000_000_000_000,
                    partition: 3,
                    offset: 17,
                }),
                last: EventKey {
                    time: 1_700_000_100_000_000,
                    partition: 3,
                    offset: 18,
                },
                status: 9,
                agency: a,
                procedure: p,
                field: f.syms.intern(Some("HTTP")),
                received_at: Some(1_699_000_000_000_000),
                first_seen: [None, None, Some(1_700_000_100_000_000), None],
                supplements: vec![Supplement {
                    requested_at: 1_699_100_000_000_000,
                    completed_at: None,
                    due_before: Some(1_699_000_000_000_007),
                    due_after: Some(-5),
                }]
                .into_boxed_slice(),
                first_due: Some(1_699_500_000_000_000),
                first_due_time: 1_699_000_000_000_000,
                dues: vec![1_699_500_000_000_000, 1_699_600_000_000_000].into_boxed_slice(),
                events: 4,
                peak_stage: 4,
                peak_at: 1_700_000_100_000_000,
                receiving: p,
                named_first: EventKey {
                    time: 1_699_000_000_000_000,
                    partition: 3,
                    offset: 2,
                },
                named_last: EventKey {
                    time: 1_700_000_000_000_000,
                    partition: 3,
                    offset: 17,
                },
                holders: vec![
                    Held {
                        agency: p,
                        first: EventKey {
                            time: 1_699_000_000_000_000,
                            partition: 3,
                            offset: 2,
                        },
                        last: EventKey::default(),
                    },
                    Held {
                        agency: a,
                        first: EventKey::default(),
                        last: EventKey {
                            time: 1_700_000_000_000_000,
                            partition: 3,
                            offset: 17,
                        },
                    },
                ]
                .into_boxed_slice(),
                snapshot_status: 4,
                channel: 2,
                flags: 0x81,
                ..Fact::default()
            },
        );
        f.facts.insert("H55-2".into(), Fact::default());
        let back = decode_facts(&encode_facts(&f), part).unwrap();
        assert_eq!(back.syms.names(), f.syms.names());
        assert_eq!(format!("{:?}", sorted(&back)), format!("{:?}", sorted(&f)));

        let mut sets = SourceSets::new();
        sets.insert(
            "dvcqg".into(),
            SourceSet {
                events: 5,
                fingerprints: vec![1, 7, 1 << 55],
            },
        );
        assert_eq!(decode_sets(&encode_sets(&sets)).unwrap(), sets);
    }

    fn sorted(f: &Folder) -> Vec<(&str, &Fact)> {
        let mut v: Vec<_> = f.facts.iter().map(|(k, v)| (&**k, v)).collect();
        v.sort_by_key(|x| x.0);
        v
    }
}
