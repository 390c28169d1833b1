//! Housekeeping the leader does on a timer: drop revoked token ids whose tokens have expired,
//! drop retired signing keys, rotate the signing key when it is older than the schedule, forget
//! the outcomes of requests applied long ago, and (hourly) drop expired idempotency keys and
//! console sessions.
//! Only the leader proposes, so the cluster does each job once.

use std::time::{Duration, Instant};

use super::identity::Identity;
use super::tokens::generate_signing_key;
use super::{now_ms, now_secs, ServiceError};
use crate::command::Command;
use crate::reads;
use crate::records::KeyStatus;

const ACTOR: &str = "system:maintenance";
/// How long the outcome of an applied request is kept for retries of the same request (a retry
/// comes within the write timeout, seconds; this leaves a wide margin).
const APPLIED_REQUEST_RETENTION: Duration = Duration::from_secs(600);
/// Expired idempotency keys are already ignored when read; purging them only reclaims space, and
/// it scans every key, so it runs rarely.
const IDEMPOTENCY_PURGE_EVERY: Duration = Duration::from_secs(3600);

pub struct Maintenance {
    pub rotate_after: Duration,
    last_idempotency_purge: Instant,
}

impl Maintenance {
    pub fn new(rotate_after: Duration) -> Maintenance {
        Maintenance { rotate_after, last_idempotency_purge: Instant::now() }
    }

    /// One round of housekeeping (the caller runs it on the leader only).
    pub async fn tick(&mut self, identity: &Identity) -> Result<(), ServiceError> {
        let ctx = &identity.ctx;
        let now = now_secs();
        ctx.commit(ACTOR, Command::PurgeRevocations { before_secs: now }).await?;
        let before_ms = now_ms() - APPLIED_REQUEST_RETENTION.as_millis() as i64;
        ctx.commit(ACTOR, Command::PurgeAppliedRequests { before_ms }).await?;
        let keys = reads::signing_keys(ctx.state.as_ref())?;
        if keys.iter().any(|k| k.status == KeyStatus::Retiring && k.retire_after_secs.is_some_and(|t| t < now)) {
            ctx.commit(ACTOR, Command::PurgeSigningKeys { now_secs: now }).await?;
        }
        let newest_active = keys.iter().filter(|k| k.status == KeyStatus::Active).map(|k| k.created_at_secs).max();
        if newest_active.is_some_and(|created| now - created > self.rotate_after.as_secs() as i64) {
            rotate_signing_key(identity, ACTOR).await?;
        }
        if self.last_idempotency_purge.elapsed() >= IDEMPOTENCY_PURGE_EVERY {
            self.last_idempotency_purge = Instant::now();
            ctx.commit(ACTOR, Command::PurgeIdempotencyKeys { now_ms: now_ms() }).await?;
            ctx.commit(ACTOR, Command::PurgeConsoleSessions { now_ms: now_ms() }).await?;
        }
        Ok(())
    }
}

/// Rotates: a new active key; the old one retires once its last token has expired.
pub async fn rotate_signing_key(identity: &Identity, actor: &str) -> Result<String, ServiceError> {
    let now = now_secs();
    let key = generate_signing_key(now)?;
    let kid = key.kid.clone();
    let s = identity.tokens.settings();
    let retire_after_secs = now + s.access_ttl.as_secs() as i64 + s.leeway.as_secs() as i64;
    identity.ctx.commit(actor, Command::RotateSigningKey { key, retire_after_secs }).await?;
    tracing::info!(kid = %kid, "signing key rotated");
    Ok(kid)
}
