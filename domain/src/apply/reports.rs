//! Applying the commands of the device's output: reports in per-subject time series, idempotency
//! keys, and erasure. **A report is written with its index entry, its images, the link from its
//! predecessor and its idempotency completion in one apply, and erased the same way: there is
//! never a half-written subject or series.**

use uuid::Uuid;

use super::{audit, keyer, rejected};
use crate::command::Outcome;
use crate::error::{Entity, Rejection};
use crate::keys::{self, Keyer};
use crate::records::{AuditEvent, IdempotencyRecord, IdempotencyState, StoredImage, StoredReport};
use crate::state::{self, StateError, StateWrite};

macro_rules! try_reject {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(r) => return rejected(r),
        }
    };
}

pub fn claim_idempotency_key(
    state: &mut impl StateWrite,
    scoped_key: &str,
    record: &IdempotencyRecord,
    now_ms: i64,
) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let key = keyer.idempotency(scoped_key);
    if let Some(existing) = state::get::<IdempotencyRecord>(state, &key)? {
        if existing.is_live(now_ms) {
            return rejected(if existing.fingerprint != record.fingerprint {
                Rejection::IdempotencyMismatch
            } else {
                match existing.state {
                    IdempotencyState::InFlight { .. } => Rejection::IdempotencyInFlight,
                    IdempotencyState::Done { report_id } => Rejection::IdempotencyDone { report_id },
                }
            });
        }
    }
    state::put(state, key, record)?;
    Ok(Outcome::Done)
}

pub fn release_idempotency_key(
    state: &mut impl StateWrite,
    scoped_key: &str,
    fingerprint: &str,
) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let key = keyer.idempotency(scoped_key);
    if let Some(existing) = state::get::<IdempotencyRecord>(state, &key)? {
        // Only the holder's own in-flight claim is released; a completed key stays bound.
        if existing.fingerprint == fingerprint && matches!(existing.state, IdempotencyState::InFlight { .. }) {
            state.delete(key);
        }
    }
    Ok(Outcome::Done)
}

pub fn purge_idempotency_keys(state: &mut impl StateWrite, now_ms: i64) -> Result<Outcome, StateError> {
    for (key, value) in state.scan_raw(keys::IDEMPOTENCY.as_bytes())? {
        if serde_json::from_slice::<IdempotencyRecord>(&value).is_ok_and(|r| r.expires_at_ms <= now_ms) {
            state.delete(key);
        }
    }
    Ok(Outcome::Done)
}

/// Completes the report's idempotency key, unless the key already produced another report (a
/// retry whose claim lapsed raced the original: the original wins, no second point).
fn complete_idempotency(
    state: &mut impl StateWrite,
    keyer: &Keyer,
    report: &StoredReport,
    now_ms: i64,
) -> Result<Result<(), Rejection>, StateError> {
    let Some(binding) = &report.idempotency else { return Ok(Ok(())) };
    let key = keyer.idempotency(&binding.scoped_key);
    match state::get::<IdempotencyRecord>(state, &key)? {
        Some(IdempotencyRecord { state: IdempotencyState::Done { report_id }, expires_at_ms, .. })
            if now_ms < expires_at_ms =>
        {
            Ok(Err(Rejection::IdempotencyDone { report_id }))
        }
        Some(mut record) if record.fingerprint == binding.fingerprint => {
            record.state = IdempotencyState::Done { report_id: report.id() };
            state::put(state, key, &record)?;
            Ok(Ok(()))
        }
        // Claimed since by a different request: that request owns the key now.
        Some(_) | None => Ok(Ok(())),
    }
}

pub fn store_report(
    state: &mut impl StateWrite,
    stored: &StoredReport,
    images: &[StoredImage],
    now_ms: i64,
) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let id = stored.id();
    if state::exists(state, &keys::report(&id))? {
        return rejected(Rejection::AlreadyExists(Entity::Report));
    }
    let erased_at = state::get::<i64>(state, &keyer.subject_erased(&stored.org_id, &stored.subject))?;
    if erased_at.is_some_and(|at| stored.requested_ms.min(stored.issued_ms) <= at) {
        return rejected(Rejection::SubjectErased);
    }
    for image in images {
        if !crate::is_digest(&image.digest) || image.report_id != id {
            return rejected(Rejection::InvalidCommand("a stored image must name a blob of this report".into()));
        }
    }
    // The previous report gains this one as its successor; a report has at most one.
    let mut previous = None;
    if let Some(prev_id) = stored.previous() {
        let Some(mut prev) = state::get::<StoredReport>(state, &keys::report(&prev_id))?
            .filter(|p| p.org_id == stored.org_id && p.subject == stored.subject)
        else {
            return rejected(Rejection::PreviousNotInSeries);
        };
        if let Some(next) = prev.report.next_report_id {
            return rejected(Rejection::PreviousHasSuccessor { previous: prev_id, next });
        }
        prev.report.next_report_id = Some(id);
        previous = Some(prev);
    }
    try_reject!(complete_idempotency(state, &keyer, stored, now_ms));
    if let Some(prev) = previous {
        state::put(state, keys::report(&prev.id()), &prev)?;
    }
    state::put(state, keys::report(&id), stored)?;
    state::put(state, keyer.subject_entry(&stored.org_id, &stored.subject, stored.issued_ms, &id), &id)?;
    for image in images {
        state::put(state, keys::image(&id, image.index), image)?;
        state::put(state, keys::blob_ref(&image.digest, &id), &image.index)?;
        state.delete(keys::blob_gone(&image.digest));
        state.blob_referenced(&image.digest);
    }
    Ok(Outcome::Done)
}

/// Erases every report, stored image and idempotency record of a subject, and marks the subject
/// erased at the request time (an analysis requested before it is not stored afterwards).
pub fn erase_subject(
    state: &mut impl StateWrite,
    org_id: &Uuid,
    subject: &str,
    at_ms: i64,
    actor: &str,
) -> Result<Outcome, StateError> {
    let keyer = try_reject!(keyer(state));
    let mut erased = 0u64;
    for (entry, value) in state.scan_raw(keyer.subject_prefix(org_id, subject).as_bytes())? {
        if let Ok(report_id) = serde_json::from_slice::<Uuid>(&value) {
            if let Some(report) = state::get::<StoredReport>(state, &keys::report(&report_id))? {
                if let Some(binding) = &report.idempotency {
                    state.delete(keyer.idempotency(&binding.scoped_key));
                }
            }
            state.delete(keys::report(&report_id));
            for (key, value) in state.scan_raw(keys::image_prefix(&report_id).as_bytes())? {
                if let Ok(image) = serde_json::from_slice::<StoredImage>(&value) {
                    release_blob(state, &image.digest, &report_id)?;
                }
                state.delete(key);
            }
            erased += 1;
        }
        state.delete(entry);
    }
    state::put(state, keyer.subject_erased(org_id, subject), &at_ms)?;
    let event = AuditEvent {
        action: "subject_erased".into(),
        actor: actor.to_string(),
        org_id: *org_id,
        target: keyer.subject(org_id, subject),
        outcome: "done".into(),
        detail: format!("reports={erased}"),
    };
    audit::append(state, &event, at_ms)?;
    Ok(Outcome::Done)
}

/// Drops a report's reference to a blob; the last reference gone, every node deletes the blob.
fn release_blob(state: &mut impl StateWrite, digest: &str, report: &Uuid) -> Result<(), StateError> {
    state.delete(keys::blob_ref(digest, report));
    if state.keys(keys::blob_ref_prefix(digest).as_bytes())?.is_empty() {
        state::put(state, keys::blob_gone(digest), &true)?;
        state.blob_freed(digest);
    }
    Ok(())
}
