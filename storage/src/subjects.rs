//! Applying the commands of the device's output: reports in per-subject time series, idempotency
//! keys, and erasure. **A report is written with its index entry, its images and its idempotency
//! completion in one apply, and erased the same way: there is never a half-written subject.**

use uuid::Uuid;

use crate::apply::Overlay;
use crate::error::StoreError;
use crate::model::{
    keys, AuditEntry, Collection, IdempotencyRecord, IdempotencyState, Organization, Response, StoredImage,
    StoredReport,
};

pub(crate) fn claim_idempotency_key(
    state: &mut Overlay<'_>,
    scoped_key: &str,
    record: &IdempotencyRecord,
    now_ms: i64,
) -> Result<Response, StoreError> {
    let key = keys::record(Collection::Idempotency, scoped_key);
    if let Some(existing) = state.get::<IdempotencyRecord>(&key)? {
        if existing.is_live(now_ms) {
            let held = match existing.state {
                IdempotencyState::InFlight { .. } => "in_flight",
                IdempotencyState::Done { .. } => "done",
            };
            return Ok(Response::Conflict { reason: format!("idempotency key {held}") });
        }
    }
    state.put(key, record)?;
    Ok(Response::Ok)
}

pub(crate) fn release_idempotency_key(
    state: &mut Overlay<'_>,
    scoped_key: &str,
    fingerprint: &str,
) -> Result<Response, StoreError> {
    let key = keys::record(Collection::Idempotency, scoped_key);
    if let Some(existing) = state.get::<IdempotencyRecord>(&key)? {
        // Only the holder's own in-flight claim is released; a completed key stays bound.
        if existing.fingerprint == fingerprint && matches!(existing.state, IdempotencyState::InFlight { .. }) {
            state.delete(key);
        }
    }
    Ok(Response::Ok)
}

pub(crate) fn store_report(
    state: &mut Overlay<'_>,
    report: &StoredReport,
    images: &[StoredImage],
    now_ms: i64,
) -> Result<Response, StoreError> {
    let report_key = keys::record(Collection::Report, &report.id.to_string());
    if state.exists(&report_key)? {
        return Ok(Response::Conflict { reason: format!("report {} already exists", report.id) });
    }
    let erased_at = state.get::<i64>(&keys::subject_erased(&report.org_id, &report.subject))?;
    if erased_at.is_some_and(|at| report.requested_ms.min(report.issued_ms) <= at) {
        return Ok(Response::Conflict {
            reason: "the subject was erased while this analysis ran; send it again to start a new series".into(),
        });
    }
    if let Some(previous) = &report.previous_report_id {
        let same_series = state
            .get::<StoredReport>(&keys::record(Collection::Report, &previous.to_string()))?
            .is_some_and(|p| p.org_id == report.org_id && p.subject == report.subject);
        if !same_series {
            return Ok(Response::Rejected { reason: "previousReportId is not a report of the same subject".into() });
        }
    }
    if let Some(scoped) = &report.idempotency_key {
        let key = keys::record(Collection::Idempotency, scoped);
        match state.get::<IdempotencyRecord>(&key)? {
            Some(IdempotencyRecord { state: IdempotencyState::Done { report_id }, expires_at_ms, .. })
                if now_ms < expires_at_ms =>
            {
                // A retry whose claim lapsed raced the original: the original wins, no second point.
                return Ok(Response::Conflict { reason: format!("idempotency key done {report_id}") });
            }
            Some(mut record) if report.idempotency_fingerprint.as_ref().is_none_or(|fp| *fp == record.fingerprint) => {
                record.state = IdempotencyState::Done { report_id: report.id };
                state.put(key, &record)?;
            }
            // Claimed since by a different request: that request owns the key now.
            Some(_) | None => {}
        }
    }
    state.put(report_key, report)?;
    state.put(keys::subject_entry(&report.org_id, &report.subject, report.issued_ms, &report.id), &report.id)?;
    for image in images {
        if !crate::blobs::is_digest(&image.digest) || image.report_id != report.id {
            return Ok(Response::Rejected { reason: "a stored image must name a blob of this report".into() });
        }
    }
    for image in images {
        state.put(keys::image(&image.report_id, image.index), image)?;
        state.put(keys::blob_ref(&image.digest, &report.id), &image.index)?;
        state.delete(keys::blob_gone(&image.digest));
        state.referenced_blob(&image.digest);
    }
    Ok(Response::Ok)
}

pub(crate) fn erase_subject(
    state: &mut Overlay<'_>,
    org_id: &Uuid,
    subject: &str,
    audit: &AuditEntry,
) -> Result<Response, StoreError> {
    let mut erased = 0u64;
    for entry in state.keys_with_prefix(&keys::subject_prefix(org_id, subject))? {
        if let Some(report_id) = state.get::<Uuid>(&entry)? {
            let report_key = keys::record(Collection::Report, &report_id.to_string());
            if let Some(report) = state.get::<StoredReport>(&report_key)? {
                if let Some(scoped) = &report.idempotency_key {
                    state.delete(keys::record(Collection::Idempotency, scoped));
                }
            }
            state.delete(report_key);
            for key in state.keys_with_prefix(&keys::image_prefix(&report_id))? {
                if let Some(image) = state.get::<StoredImage>(&key)? {
                    release_blob(state, &image.digest, &report_id, audit.at_ms)?;
                }
                state.delete(key);
            }
            erased += 1;
        }
        state.delete(entry);
    }
    state.put(keys::subject_erased(org_id, subject), &audit.at_ms)?;
    let mut audit = audit.clone();
    audit.reports = erased;
    state.put(keys::record(Collection::Audit, &audit.id.to_string()), &audit)?;
    Ok(Response::Ok)
}

pub(crate) fn set_organization_settings(
    state: &mut Overlay<'_>,
    id: &Uuid,
    store_images: bool,
) -> Result<Response, StoreError> {
    let key = keys::org(id);
    let Some(mut org) = state.get::<Organization>(&key)? else {
        return Ok(Response::NotFound { what: "organization".into() });
    };
    org.store_images = store_images;
    state.put(key, &org)?;
    Ok(Response::Ok)
}

/// Drops a report's reference to a blob; the last reference gone, every node deletes the blob.
fn release_blob(state: &mut Overlay<'_>, digest: &str, report: &Uuid, at_ms: i64) -> Result<(), StoreError> {
    state.delete(keys::blob_ref(digest, report));
    if state.keys_with_prefix(&keys::blob_ref_prefix(digest))?.is_empty() {
        state.put(keys::blob_gone(digest), &at_ms)?;
        state.freed_blob(digest);
    }
    Ok(())
}

pub(crate) fn purge_idempotency_keys(state: &mut Overlay<'_>, now_ms: i64) -> Result<Response, StoreError> {
    for key in state.keys_with_prefix(Collection::Idempotency.prefix())? {
        if state.get::<IdempotencyRecord>(&key)?.is_some_and(|r| r.expires_at_ms <= now_ms) {
            state.delete(key);
        }
    }
    Ok(Response::Ok)
}
