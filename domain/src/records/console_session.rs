//! A signed-in browser of the administration console. The session id (256 random bits) lives
//! only in the browser's cookie; the replicated record is keyed by its SHA-256, so neither a
//! copy of the state nor a backup yields a usable session. **What the session may do is decided
//! from the user's record on every request**, exactly like an access token: ending the session,
//! disabling the user or signing them out everywhere ends it on every node.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSession {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub created_at_ms: i64,
    /// The session ends at this instant (unix ms) whatever happens.
    pub expires_at_ms: i64,
    /// Secret from which the session's CSRF token is derived (32 random bytes).
    pub csrf_secret: Vec<u8>,
    /// The user signed in with a second factor.
    pub mfa: bool,
}
