//! Invitations: single-use, expiring, issued by an administrator of the organisation; the
//! invitation fixes the organisation and roles, the person registering chooses a username and a
//! password only.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::user::Role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub org_id: Uuid,
    pub roles: Vec<Role>,
    pub expires_at_ms: i64,
    pub used: bool,
    /// The user id of the administrator who issued it; deleting or demoting that administrator
    /// voids its invitations.
    pub created_by: Uuid,
}
