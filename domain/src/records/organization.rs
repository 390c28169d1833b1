//! An organisation: a licensed care provider, the tenant every user, client key, subject and
//! report belongs to. **An organisation exists only with the contract attestation that it is a
//! licensed healthcare provider.**

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub status: OrgStatus,
    pub attestation: Attestation,
    pub created_at_ms: i64,
    /// Opt-in: keep the analysed images (re-encoded, metadata stripped) with the reports.
    pub store_images: bool,
}

/// The contract clause in which the customer declares it is a licensed healthcare provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub contract_reference: String,
    pub attested_by: String,
    pub attested_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrgStatus {
    Active,
    Suspended,
}

impl Organization {
    pub fn is_active(&self) -> bool {
        self.status == OrgStatus::Active
    }
}

/// Fixed id of the platform operator's own organisation (created by the bootstrap).
pub const PLATFORM_ORG_ID: Uuid = Uuid::from_u128(0x6465_726d_6167_6174_6500_0000_0000_0001);
