//! What an `Idempotency-Key` is bound to: one request (its fingerprint), first in flight under a
//! lease, then done with the report it produced, until the key expires.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 of the canonical request: the same key with another body is refused.
    pub fingerprint: String,
    pub state: IdempotencyState,
    /// After this instant (unix ms) the key is forgotten.
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdempotencyState {
    /// A request holds the key until `lease_until_ms` (after which a crashed holder is presumed).
    InFlight {
        lease_until_ms: i64,
    },
    Done {
        report_id: Uuid,
    },
}

impl IdempotencyRecord {
    pub fn is_live(&self, now_ms: i64) -> bool {
        match self.state {
            IdempotencyState::InFlight { lease_until_ms } => now_ms < lease_until_ms && now_ms < self.expires_at_ms,
            IdempotencyState::Done { .. } => now_ms < self.expires_at_ms,
        }
    }
}
