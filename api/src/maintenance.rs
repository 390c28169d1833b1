//! Housekeeping the leader does on a timer: drop revoked token ids whose tokens have expired,
//! drop retired signing keys, rotate the signing key when it is older than the schedule, and
//! (hourly) drop expired idempotency keys, and forget the ids of requests applied long ago.
//! Only the leader proposes, so the cluster does each job once.

use std::time::Duration;

use dermagate_storage::model::{Command, KeyStatus};

use crate::state::{now_secs, AppState};

/// Expired idempotency keys are already ignored when read; purging them only reclaims space, and
/// it scans every key, so it runs rarely.
const IDEMPOTENCY_PURGE_EVERY: Duration = Duration::from_secs(3600);

pub async fn run(state: AppState, every: Duration, rotate_after: Duration) {
    let mut last_idempotency_purge = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        if state.node.status().role != "leader" {
            continue;
        }
        if let Err(e) = tick(&state, rotate_after).await {
            tracing::warn!(error = %e, "maintenance tick failed");
        }
        if last_idempotency_purge.elapsed() >= IDEMPOTENCY_PURGE_EVERY {
            last_idempotency_purge = tokio::time::Instant::now();
            let purge = Command::PurgeIdempotencyKeys { now_ms: crate::state::now_ms() };
            if let Err(e) = state.commit(purge).await {
                tracing::warn!(error = %e, "purging expired idempotency keys failed");
            }
        }
    }
}

/// How long the outcome of an applied request is kept for retries of the same request (a retry
/// comes within the write timeout, seconds; this leaves a wide margin).
const APPLIED_REQUEST_RETENTION: Duration = Duration::from_secs(600);

async fn tick(state: &AppState, rotate_after: Duration) -> Result<(), crate::ApiError> {
    let now = now_secs();
    state.commit(Command::PurgeRevocations { before: now }).await?;
    let before_ms = crate::state::now_ms() - APPLIED_REQUEST_RETENTION.as_millis() as i64;
    state.commit(Command::PurgeAppliedRequests { before_ms }).await?;
    let keys = state.store.signing_keys()?;
    if keys.iter().any(|k| k.status == KeyStatus::Retiring && k.retire_after.is_some_and(|t| t < now)) {
        state.commit(Command::PurgeSigningKeys { now_secs: now }).await?;
    }
    let newest_active = keys.iter().filter(|k| k.status == KeyStatus::Active).map(|k| k.created_at).max();
    if newest_active.is_some_and(|created| now - created > rotate_after.as_secs() as i64) {
        crate::signing_keys::rotate_now(state).await?;
    }
    Ok(())
}
