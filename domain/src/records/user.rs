//! People: users of an organisation with roles. The password is kept only as an argon2id PHC
//! string; a second factor (TOTP, RFC 6238) and one-time recovery codes are kept as secrets
//! sealed at rest like every record. **What a user may do is read from this record on every
//! request**, never from the token alone, so a role change or a disabled account takes effect at
//! once everywhere.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub org_id: Uuid,
    pub username: String,
    pub roles: Vec<Role>,
    /// argon2id PHC string; the plaintext password is never stored.
    pub password_hash: String,
    pub status: UserStatus,
    /// Tokens issued before this instant (unix milliseconds) are refused.
    pub tokens_valid_after_ms: i64,
    pub created_at_ms: i64,
    /// The second factor, once enrolled (and confirmed with a first code).
    pub totp: Option<Totp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totp {
    /// The shared secret (20 random bytes), never shown again after enrolment.
    pub secret: Vec<u8>,
    /// False until the user proved possession with a first code.
    pub confirmed: bool,
    /// SHA-256 of each unused recovery code (hex); a code is removed when used.
    pub recovery_code_hashes: Vec<String>,
    /// The last time step accepted, so a code is never accepted twice.
    pub last_step: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    PlatformAdmin,
    OrgAdmin,
    Clinician,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::PlatformAdmin, Role::OrgAdmin, Role::Clinician, Role::Auditor];

    pub fn name(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::OrgAdmin => "org_admin",
            Role::Clinician => "clinician",
            Role::Auditor => "auditor",
        }
    }

    /// Administrators (platform and organisation) must use a second factor when the platform
    /// requires it.
    pub fn is_admin(self) -> bool {
        matches!(self, Role::PlatformAdmin | Role::OrgAdmin)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r.is_admin())
    }

    pub fn has_confirmed_totp(&self) -> bool {
        self.totp.as_ref().is_some_and(|t| t.confirmed)
    }
}
