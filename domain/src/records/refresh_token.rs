//! Refresh tokens: single use, rotated on every use; presenting an already-rotated token is
//! reuse and revokes the whole family (RFC 9700), including the access tokens issued from it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub family: Uuid,
    pub user_id: Uuid,
    pub issued_at_ms: i64,
    pub expires_at_secs: i64,
    pub rotated: bool,
    /// The session was opened with a second factor (its refreshed tokens keep `amr: otp`).
    pub mfa: bool,
}
