//! The token-signing keys: Ed25519, replicated so every node signs and verifies. The private
//! key is a secret of the cluster: sealed at rest, never exported in clear (backups are
//! encrypted to the operator's recipient key).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// Ed25519 private key, PKCS#8 DER.
    pub private_pkcs8: Vec<u8>,
    /// Ed25519 public key (32 bytes; the JWK `x` once base64url-encoded).
    pub public: Vec<u8>,
    pub status: KeyStatus,
    pub created_at_secs: i64,
    /// When a retiring key stops verifying (unix seconds).
    pub retire_after_secs: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    Active,
    /// Still verifies tokens it signed, signs nothing new.
    Retiring,
}
