//! A dossier's messages: the snapshot after each status change, as the software of the
//! agency holding it syncs it, plus the dirt; and, when the agency holding it ends, the
//! successor's software re-syncing it under its own code.

use sohoa_aggregator::calendar::Calendar;

use super::life::Dossier;
use super::plan::Agency;
use super::snapshot::snapshot;
use super::truth::{self, Synced};
use super::{GroundTruth, Message, Rng, DAY};

/// One sync of a dossier: at `at` in its life, showing `status`, by `agency`.
struct Sync {
    at: i64,
    status: u8,
    agency: usize,
}

/// The syncs of a dossier in the order they happen: every step, and a handover sync at
/// each moment an agency holding it ends (showing the status it had then).
fn syncs(d: &Dossier) -> Vec<Sync> {
    let mut out: Vec<Sync> = Vec::with_capacity(d.steps.len() + d.handovers.len());
    let mut handovers = d.handovers.iter().peekable();
    for &(at, status) in &d.steps {
        while let Some(&&(h, to)) = handovers.peek().filter(|h| h.0 <= at) {
            let before = out.last().map_or(2, |s| s.status);
            out.push(Sync {
                at: h,
                status: before,
                agency: to,
            });
            handovers.next();
        }
        out.push(Sync {
            at,
            status,
            agency: d.holder_at(at),
        });
    }
    for &(h, to) in handovers {
        let before = out.last().map_or(2, |s| s.status);
        out.push(Sync {
            at: h,
            status: before,
            agency: to,
        });
    }
    out
}

/// The dossier's messages into `out`, and its ground truth from the syncs that made it
/// into the feed.
pub(super) fn emit(
    d: &Dossier,
    agencies: &[Agency],
    rng: &mut Rng,
    (cal, as_of): (&Calendar, i64),
    out: &mut Vec<Message>,
    truth: &mut GroundTruth,
) {
    // The dossier's habits are those of the agency that received it; its code on each
    // message is the holder's.
    let a = &agencies[d.agency];
    let mut synced: Vec<Synced> = Vec::new();
    // A successor's software syncs a dossier it took over only after the ended agency's
    // last sync went out: snapshots with nothing new share the time of the one before, and
    // then only their arrival orders them.
    let (mut last_sent, mut floor) = (i64::MIN, i64::MIN);
    let mut holder = d.agency;
    for (i, s) in syncs(d).iter().enumerate() {
        let delay = (a.sync_delay_days * rng.f() * 2.0 * DAY as f64) as i64
            + rng.below(600) as i64 * 1_000_000;
        if s.agency != holder {
            floor = last_sent.saturating_add(10_000_000);
            holder = s.agency;
        }
        let sent_at = (s.at + delay).max(floor);
        if sent_at > as_of {
            continue;
        }
        let code = &agencies[s.agency].code;
        let payload = snapshot(d, a, code, s.at, s.status, i > 0);
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
        last_sent = last_sent.max(sent_at + 5_000_000);
        synced.push(Synced {
            at: s.at,
            status: s.status,
            agency: s.agency,
        });
    }
    if !synced.is_empty() {
        truth::record(d, agencies, &synced, cal, as_of, truth);
    }
}
