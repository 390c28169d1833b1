//! Reading and verifying the audit trail. Auditors read their organisation's trail; platform
//! administrators read the platform's own (platform events), not other organisations'.

use uuid::Uuid;

use super::identity::Principal;
use super::{Context, ServiceError};
use crate::error::Entity;
use crate::rbac::Permission;
use crate::reads;
use crate::records::audit::verify_chain;
use crate::records::AuditRecord;

pub struct Audit {
    pub ctx: Context,
}

/// The verification of one organisation's chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChainCheck {
    pub org_id: Uuid,
    pub records: u64,
    /// `None` when the chain is intact; otherwise where it breaks and why.
    pub broken_at: Option<u64>,
    pub problem: Option<String>,
}

impl Audit {
    /// A page of the trail of `org_id` from sequence number `after` (exclusive).
    pub async fn trail(
        &self,
        principal: &Principal,
        org_id: Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        principal.require(Permission::AuditRead)?;
        if principal.org_id != org_id {
            return Err(ServiceError::not_found(Entity::Organization));
        }
        self.ctx.replicator.linearize().await?;
        Ok(reads::audit_trail(self.ctx.state.as_ref(), &org_id)?
            .into_iter()
            .filter(|r| r.seq > after)
            .take(limit)
            .collect())
    }

    /// Verifies every organisation's chain in the local replicated state.
    pub fn verify_all(state: &dyn super::StateView) -> Result<Vec<ChainCheck>, ServiceError> {
        let mut out = Vec::new();
        for org_id in reads::audited_organizations(state)? {
            let trail = reads::audit_trail(state, &org_id)?;
            let check = match verify_chain(&trail) {
                Ok(n) => ChainCheck { org_id, records: n, broken_at: None, problem: None },
                Err((seq, why)) => {
                    ChainCheck { org_id, records: trail.len() as u64, broken_at: Some(seq), problem: Some(why) }
                }
            };
            out.push(check);
        }
        Ok(out)
    }
}
