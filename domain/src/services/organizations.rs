//! Organisations: the licensed care providers. **An organisation exists only with the contract
//! attestation that it is a licensed healthcare provider**; suspending one cuts off every
//! credential of it on every node at once.

use uuid::Uuid;

use super::identity::{Identity, Principal};
use super::{now_ms, validate, ServiceError};
use crate::command::Command;
use crate::error::{Entity, Rejection};
use crate::rbac::Permission;
use crate::reads;
use crate::records::{Attestation, OrgStatus, Organization};

/// What creating an organisation takes.
pub struct NewOrganization {
    pub name: String,
    /// `(contract reference, attested by)`; required.
    pub attestation: Option<(String, String)>,
    pub store_images: bool,
}

/// A change of an organisation; absent fields stay as they are.
#[derive(Default)]
pub struct OrganizationChange {
    pub name: Option<String>,
    pub status: Option<OrgStatus>,
    pub store_images: Option<bool>,
}

impl Identity {
    pub async fn create_organization(
        &self,
        principal: &Principal,
        new: NewOrganization,
    ) -> Result<Organization, ServiceError> {
        principal.require(Permission::OrganizationsManage)?;
        let name = validate::text("name", &new.name, 200)?;
        let (reference, by) = new.attestation.ok_or_else(|| {
            ServiceError::validation(
                "attestation",
                "required",
                "an organization must carry the contract attestation that it is a licensed healthcare provider",
            )
        })?;
        let now = now_ms();
        let org = Organization {
            id: Uuid::new_v4(),
            name,
            status: OrgStatus::Active,
            attestation: Attestation {
                contract_reference: validate::text("attestation.contractReference", &reference, 200)?,
                attested_by: validate::text("attestation.attestedBy", &by, 200)?,
                attested_at_ms: now,
            },
            created_at_ms: now,
            store_images: new.store_images,
        };
        self.ctx.commit(&principal.actor(), Command::CreateOrganization(org.clone())).await?;
        tracing::info!(org_id = %org.id, by = %principal.id, "organization created");
        Ok(org)
    }

    /// The organisations the caller may see (all for a platform administrator), including
    /// those created through another node a moment ago.
    pub async fn list_organizations(&self, principal: &Principal) -> Result<Vec<Organization>, ServiceError> {
        principal.require(Permission::OrganizationRead)?;
        if let Err(e) = self.ctx.replicator.linearize().await {
            tracing::debug!(error = %e, "listing organizations from local state");
        }
        let state = self.ctx.state.clone();
        let all = tokio::task::spawn_blocking(move || reads::organizations(state.as_ref()))
            .await
            .map_err(ServiceError::internal)??;
        Ok(all.into_iter().filter(|o| principal.is_platform_admin() || o.id == principal.org_id).collect())
    }

    /// One organisation, linearizable: a change acknowledged anywhere before is seen.
    pub async fn organization(&self, principal: &Principal, id: Uuid) -> Result<Organization, ServiceError> {
        principal.require(Permission::OrganizationRead)?;
        principal.require_org(&id, Entity::Organization)?;
        self.ctx.replicator.linearize().await?;
        reads::organization(self.ctx.state.as_ref(), &id)?.ok_or_else(|| ServiceError::not_found(Entity::Organization))
    }

    /// Renames or changes the data-handling settings (its own administrators too), or suspends
    /// and reactivates it (platform administrators only).
    pub async fn change_organization(
        &self,
        principal: &Principal,
        id: Uuid,
        change: OrganizationChange,
    ) -> Result<Organization, ServiceError> {
        if change.name.is_none() && change.status.is_none() && change.store_images.is_none() {
            return Err(ServiceError::validation("body", "required", "send name, status and/or storeImages"));
        }
        if change.name.is_some() || change.store_images.is_some() {
            principal.require(Permission::OrganizationSettings)?;
            principal.require_org(&id, Entity::Organization)?;
            let name = change.name.as_deref().map(|n| validate::text("name", n, 200)).transpose()?;
            let command = Command::UpdateOrganization { id, name, store_images: change.store_images };
            self.ctx.commit(&principal.actor(), command).await?;
            tracing::info!(org_id = %id, store_images = ?change.store_images, by = %principal.id, "organization updated");
        }
        if let Some(status) = change.status {
            principal.require(Permission::OrganizationsManage)?;
            if id == crate::records::PLATFORM_ORG_ID && status == OrgStatus::Suspended {
                // Suspending it would revoke every platform administrator, with no way back.
                return Err(Rejection::PlatformOrganizationProtected.into());
            }
            self.ctx.commit(&principal.actor(), Command::SetOrganizationStatus { id, status }).await?;
            tracing::info!(org_id = %id, ?status, by = %principal.id, "organization status changed");
        }
        reads::organization(self.ctx.state.as_ref(), &id)?.ok_or_else(|| ServiceError::not_found(Entity::Organization))
    }
}
