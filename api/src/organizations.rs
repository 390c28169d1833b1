//! Organisations: the licensed care providers. **An organisation exists only with the contract
//! attestation that it is a licensed healthcare provider**; suspending one cuts off every
//! credential of it on every node at once.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use dermagate_storage::model::{Attestation, Command, OrgStatus, Organization};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::rbac::Permission;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::Json;
use crate::state::{now_ms, AppState};
use crate::validate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAttestation {
    pub contract_reference: String,
    pub attested_by: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrganization {
    pub name: String,
    pub attestation: Option<NewAttestation>,
    /// Opt-in: keep analysed images (re-encoded, metadata stripped) with the reports.
    #[serde(default, alias = "storeImages")]
    pub store_images: bool,
}

#[derive(Serialize)]
pub struct OrganizationView {
    pub id: Uuid,
    pub name: String,
    pub status: OrgStatus,
    pub attestation: AttestationView,
    pub created_at: String,
    pub store_images: bool,
}

#[derive(Serialize)]
pub struct AttestationView {
    pub contract_reference: String,
    pub attested_by: String,
    pub attested_at: String,
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl From<Organization> for OrganizationView {
    fn from(o: Organization) -> Self {
        OrganizationView {
            id: o.id,
            name: o.name,
            status: o.status,
            attestation: AttestationView {
                contract_reference: o.attestation.contract_reference,
                attested_by: o.attestation.attested_by,
                attested_at: rfc3339(o.attestation.attested_at),
            },
            created_at: rfc3339(o.created_at),
            store_images: o.store_images,
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<NewOrganization>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::OrganizationsManage)?;
    let name = validate::text("name", &body.name, 200)?;
    let attestation = body.attestation.ok_or_else(|| {
        ApiError::validation(
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
            contract_reference: validate::text("attestation.contract_reference", &attestation.contract_reference, 200)?,
            attested_by: validate::text("attestation.attested_by", &attestation.attested_by, 200)?,
            attested_at: now,
        },
        created_at: now,
        store_images: body.store_images,
    };
    state.commit(Command::CreateOrganization(org.clone())).await?;
    tracing::info!(org_id = %org.id, by = %principal.id, "organization created");
    let location = format!("/v1/organizations/{}", org.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(OrganizationView::from(org))))
}

pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::OrganizationRead)?;
    state.catch_up_for_listing().await;
    let orgs: Vec<OrganizationView> = state
        .scan(|s| s.organizations())
        .await?
        .into_iter()
        .filter(|o| principal.is_platform_admin() || o.id == principal.org_id)
        .map(OrganizationView::from)
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": orgs })))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::OrganizationRead)?;
    principal.require_org(&id, "organization")?;
    state.linearizable().await?;
    let org = state.store.organization(&id)?.ok_or_else(|| ApiError::NotFound("organization".into()))?;
    Ok(axum::Json(OrganizationView::from(org)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationPatch {
    pub name: Option<String>,
    pub status: Option<OrgStatus>,
    #[serde(default, alias = "storeImages")]
    pub store_images: Option<bool>,
}

/// Suspends or reactivates an organisation (platform administrators only), or changes its
/// data-handling settings (its own administrators too).
pub async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<OrganizationPatch>,
) -> Result<impl IntoResponse, ApiError> {
    if body.status.is_none() && body.store_images.is_none() && body.name.is_none() {
        return Err(ApiError::validation("body", "required", "send name, status and/or store_images"));
    }
    if let Some(name) = &body.name {
        principal.require(Permission::OrganizationSettings)?;
        principal.require_org(&id, "organization")?;
        let name = validate::text("name", name, 200)?;
        state.commit(Command::RenameOrganization { id, name }).await?;
        tracing::info!(org_id = %id, by = %principal.id, "organization renamed");
    }
    if let Some(store_images) = body.store_images {
        principal.require(Permission::OrganizationSettings)?;
        principal.require_org(&id, "organization")?;
        state.commit(Command::SetOrganizationSettings { id, store_images }).await?;
        tracing::info!(org_id = %id, store_images, by = %principal.id, "organization settings changed");
    }
    if let Some(status) = body.status {
        principal.require(Permission::OrganizationsManage)?;
        if id == crate::bootstrap::PLATFORM_ORG_ID && status == OrgStatus::Suspended {
            // Suspending it would revoke every platform administrator, with no way back.
            return Err(ApiError::Unprocessable("the platform operator organization cannot be suspended".into()));
        }
        state.commit(Command::SetOrganizationStatus { id, status }).await?;
        tracing::info!(org_id = %id, ?status, by = %principal.id, "organization status changed");
    }
    let org = state.store.organization(&id)?.ok_or_else(|| ApiError::NotFound("organization".into()))?;
    Ok(axum::Json(OrganizationView::from(org)))
}
