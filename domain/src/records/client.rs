//! Client keys: machines of an organisation (a PACS, an EHR integration). A client holds scopes,
//! not roles; its secret is shown once and kept only as a hash.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub org_id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub secrets: Vec<ClientSecret>,
    pub revoked: bool,
    pub created_at_ms: i64,
    /// Who created it (a user id); a client minted by the platform inside an organisation is
    /// recorded as break-glass in that organisation's audit trail.
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecret {
    /// SHA-256 of a 256-bit random secret, hex; the secret itself is shown once.
    pub hash: String,
    /// After a rotation the old secret keeps working until this instant (unix seconds).
    pub valid_until: Option<i64>,
}

impl Client {
    /// Whether `secret_hash` is one of the client's secrets, valid at `now_secs`.
    pub fn accepts(&self, secret_hash: &str, now_secs: i64) -> bool {
        self.secrets.iter().any(|s| s.hash == secret_hash && s.valid_until.is_none_or(|t| now_secs < t))
    }
}
