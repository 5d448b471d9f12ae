//! The due date a dossier is judged by: the first one the feed gave it, moved only by the
//! pauses for supplements.
//!
//! A later snapshot may move `NgayHenTra` for two reasons. A pause for a supplement moves
//! it by the pause's office time, which the source records as `NgayHenTraTruoc` →
//! `NgayHenTraMoi`, or not at all. Any other move is an apology and a new appointment
//! ("hẹn lại", Decree 61/2018/NĐ-CP as amended, now Decree 118/2025/NĐ-CP): the dossier
//! missed the date it was given, and the new one does not make it on time.

use crate::calendar::{Calendar, CalendarError};
use crate::catalog::Procedure;
use crate::fold::{Fact, Supplement};

use super::DueSource;

/// The completed pauses of a dossier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pauses {
    /// Calendar seconds from each request to its answer, summed.
    pub seconds: i64,
    /// Office seconds of the same spans: what the clock leaves out.
    pub working_seconds: i64,
}

/// A completed pause: requested, then answered after it.
fn completed(s: &Supplement) -> Option<i64> {
    s.completed_at.filter(|&d| d > s.requested_at)
}

/// The completed pauses of `f`, in calendar and in office time.
pub fn pauses(f: &Fact, cal: &Calendar) -> Result<Pauses, CalendarError> {
    let mut p = Pauses::default();
    for s in f.supplements.iter() {
        if let Some(done) = completed(s) {
            p.seconds += (done - s.requested_at) / 1_000_000;
            p.working_seconds += cal.working_seconds(s.requested_at, done)?;
        }
    }
    Ok(p)
}

/// The due dates of a dossier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The first due date: the earliest snapshot's `NgayHenTra`; without one, the first
    /// supplement's `NgayHenTraTruoc`, the catalogue's statutory date, or the first
    /// `NgayHenTraMoi`, in that order.
    pub first: i64,
    pub source: DueSource,
    /// `first`, moved by each completed pause it does not already include: what the
    /// dossier is judged by.
    pub judged: i64,
    /// Office seconds the pauses added to `first`.
    pub extension: i64,
    /// Due dates the feed showed later than `judged` that no supplement's
    /// `NgayHenTraMoi` explains: the dossier's new appointments ("hẹn lại").
    pub resets: u32,
}

/// The due dates of `f`, received at `received`; `None` when neither the feed nor the
/// catalogue gives one.
pub fn due(
    f: &Fact,
    procedure: Option<&Procedure>,
    received: Option<i64>,
    cal: &Calendar,
) -> Result<Option<Due>, CalendarError> {
    let mut sups: Vec<&Supplement> = f.supplements.iter().collect();
    sups.sort_by_key(|s| s.requested_at);
    // Computed as the holiday table stood when the dossier was received: an appointment
    // given then is not moved by a swap decided later.
    let catalogue = || match (procedure, received) {
        (Some(p), Some(r)) => p.due_from(r, cal.known_on(super::local_date(r))).map(Some),
        _ => Ok(None),
    };
    let (first, source) = if let Some(d) = f.first_due {
        (d, DueSource::Source)
    } else if let Some(d) = sups.iter().find_map(|s| s.due_before) {
        (d, DueSource::Source)
    } else if let Some(d) = catalogue()? {
        (d, DueSource::Catalogue)
    } else if let Some(d) = sups.iter().find_map(|s| s.due_after) {
        (d, DueSource::Source)
    } else {
        return Ok(None);
    };

    let mut judged = first;
    let mut extension = 0;
    for s in &sups {
        let Some(done) = completed(s) else { continue };
        let added = match (s.due_before, s.due_after) {
            // The first due date the feed showed already includes this move: the earliest
            // snapshot was taken after the pause.
            (_, Some(new)) if new <= first => 0,
            // The source's own move, in office time, carried onto the first due date (so a
            // re-appointment before the pause does not come along with it).
            (Some(old), Some(new)) if old < new => cal.working_seconds(old, new)?,
            (_, Some(new)) => cal.working_seconds(judged, new)?,
            // The source did not move it: the pause's own office time.
            (_, None) => cal.working_seconds(s.requested_at, done)?,
        };
        if added > 0 {
            judged = cal.add_working_seconds(judged, added)?;
            extension += added;
        }
    }
    let explained = |v: i64| sups.iter().any(|s| s.due_after == Some(v));
    let resets = f
        .due_values()
        .iter()
        .filter(|&&v| v > judged && !explained(v))
        .count() as u32;
    Ok(Some(Due {
        first,
        source,
        judged,
        extension,
        resets,
    }))
}
