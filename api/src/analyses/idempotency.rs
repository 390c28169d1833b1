//! `Idempotency-Key` on `POST /v1/analyses` (draft-ietf-httpapi-idempotency-key-header): a retry
//! with the same key and the same request, on any node, gets the original report back and adds no
//! second analysis or time-series point. The key is bound through Raft, so every node agrees.

use axum::http::HeaderMap;
use dermagate_storage::model::{Collection, Command, IdempotencyRecord, IdempotencyState, StoredReport};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::{now_ms, AppState};

pub const HEADER: &str = "idempotency-key";

/// A key as the client sent it, scoped to its organisation and principal, and the fingerprint
/// of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub scoped: String,
    pub fingerprint: String,
}

/// The key of the request, if it has one; quotes of the structured-field form are accepted.
pub fn from_headers(headers: &HeaderMap, principal: &Principal) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    let bad = || {
        ApiError::validation("Idempotency-Key", "pattern", "Idempotency-Key must be 1-255 printable ASCII characters")
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    if text.is_empty() || text.len() > 255 || !text.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(bad());
    }
    Ok(Some(format!("{}/{}/{}", principal.org_id, principal.id, text)))
}

/// What to do with a request that carries a key.
pub enum Claim {
    /// The key is ours now: run the analysis.
    Proceed,
    /// The same request completed before: answer with its report.
    Replay(Box<StoredReport>),
}

/// Binds the key to this request, or explains why it cannot be.
pub async fn claim(state: &AppState, key: &IdempotencyKey, ttl_ms: i64, lease_ms: i64) -> Result<Claim, ApiError> {
    // Local state may lag the leader: a completed request found here is final, but "in flight"
    // may be stale (completed meanwhile on another node), so only the claim through Raft, applied
    // here before it answers, can say that.
    match decide(state, key)? {
        Some(Err(ApiError::InFlight(_))) | None => {}
        Some(decided) => return decided,
    }
    let now = now_ms();
    let record = IdempotencyRecord {
        fingerprint: key.fingerprint.clone(),
        state: IdempotencyState::InFlight { lease_until_ms: now + lease_ms },
        expires_at_ms: now + ttl_ms,
    };
    match state.commit(Command::ClaimIdempotencyKey { scoped_key: key.scoped.clone(), record }).await {
        Ok(()) => Ok(Claim::Proceed),
        // Held or completed elsewhere: the claim was applied here, so local state now knows why.
        Err(ApiError::Conflict(_)) => decide(state, key)?.unwrap_or(Err(in_flight())),
        Err(other) => Err(other),
    }
}

fn in_flight() -> ApiError {
    ApiError::InFlight("a request with this Idempotency-Key is still in flight; retry after the indicated delay".into())
}

/// The answer local state gives for the key, if it gives one.
fn decide(state: &AppState, key: &IdempotencyKey) -> Result<Option<Result<Claim, ApiError>>, ApiError> {
    let Some(record) = state.store.record::<IdempotencyRecord>(Collection::Idempotency, &key.scoped)? else {
        return Ok(None);
    };
    if !record.is_live(now_ms()) {
        return Ok(None);
    }
    if record.fingerprint != key.fingerprint {
        return Ok(Some(Err(ApiError::Unprocessable(
            "this Idempotency-Key was already used with a different request".into(),
        ))));
    }
    match record.state {
        IdempotencyState::InFlight { .. } => Ok(Some(Err(in_flight()))),
        IdempotencyState::Done { report_id } => match state.store.report(&report_id)? {
            Some(report) => Ok(Some(Ok(Claim::Replay(Box::new(report))))),
            None => Ok(None),
        },
    }
}

/// Frees the key after a failure that produced no report, before the failure is answered, so an
/// immediate retry (corrected or not) finds the key free.
pub async fn release(state: &AppState, key: IdempotencyKey) {
    let cmd = Command::ReleaseIdempotencyKey { scoped_key: key.scoped, fingerprint: key.fingerprint };
    if let Err(e) = state.commit(cmd).await {
        tracing::debug!(error = %e, "idempotency key not released; its lease will expire");
    }
}
