//! `/v1/organizations`: the licensed care providers (see `domain::services::organizations`).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use dermagate_domain::records::{OrgStatus, Organization};
use dermagate_domain::services::organizations::{NewOrganization, OrganizationChange};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Caller, Json};
use crate::state::{rfc3339, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(get, change))
}

/// The contract clause in which the customer declares it is a licensed healthcare provider.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewAttestation {
    #[schema(min_length = 1, max_length = 200, example = "MSA-2026-0042 §3.1")]
    pub contract_reference: String,
    /// Who signed the attestation for the customer.
    #[schema(min_length = 1, max_length = 200, example = "Dr. A. Example, medical director")]
    pub attested_by: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OrganizationRequest {
    #[schema(min_length = 1, max_length = 200, example = "Clinica Example")]
    pub name: String,
    /// Required: an organisation exists only with this attestation.
    pub attestation: NewAttestation,
    /// Opt-in: keep analysed images (re-encoded, metadata stripped) with the reports.
    #[serde(default)]
    pub store_images: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationView {
    pub id: Uuid,
    pub name: String,
    pub status: OrgStatus,
    pub attestation: AttestationView,
    /// RFC 3339.
    pub created_at: String,
    pub store_images: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttestationView {
    pub contract_reference: String,
    pub attested_by: String,
    pub attested_at: String,
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
                attested_at: rfc3339(o.attestation.attested_at_ms),
            },
            created_at: rfc3339(o.created_at_ms),
            store_images: o.store_images,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OrganizationList {
    pub items: Vec<OrganizationView>,
}

/// Create an organisation (platform administrators).
#[utoipa::path(post, path = "/v1/organizations", operation_id = "createOrganization", tag = "organizations",
    request_body = OrganizationRequest,
    responses((status = 201, description = "Created", body = OrganizationView,
        headers(("Location" = String, description = "URL of the new organisation")))),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<OrganizationRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewOrganization {
        name: body.name,
        attestation: Some((body.attestation.contract_reference, body.attestation.attested_by)),
        store_images: body.store_images,
    };
    let org = state.identity.create_organization(&caller, new).await?;
    let location = state.url(&format!("/v1/organizations/{}", org.id));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(OrganizationView::from(org))))
}

/// The organisations the caller may see (all of them for a platform administrator).
#[utoipa::path(get, path = "/v1/organizations", operation_id = "listOrganizations", tag = "organizations",
    responses((status = 200, description = "The organisations", body = OrganizationList)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<OrganizationList>, ApiError> {
    let orgs = state.identity.list_organizations(&caller).await?;
    Ok(axum::Json(OrganizationList { items: orgs.into_iter().map(OrganizationView::from).collect() }))
}

/// One organisation (linearizable: a change acknowledged anywhere before is seen).
#[utoipa::path(get, path = "/v1/organizations/{org}", operation_id = "getOrganization", tag = "organizations",
    params(("org" = Uuid, Path, description = "Organisation id")),
    responses((status = 200, description = "The organisation", body = OrganizationView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<Uuid>,
) -> Result<axum::Json<OrganizationView>, ApiError> {
    Ok(axum::Json(state.identity.organization(&caller, org).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OrganizationPatch {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// Suspending cuts off every credential of the organisation on every node (platform
    /// administrators only).
    pub status: Option<OrgStatus>,
    pub store_images: Option<bool>,
}

/// Rename, change data-handling settings, suspend or reactivate an organisation.
#[utoipa::path(patch, path = "/v1/organizations/{org}", operation_id = "updateOrganization", tag = "organizations",
    params(("org" = Uuid, Path, description = "Organisation id")),
    request_body = OrganizationPatch,
    responses((status = 200, description = "The organisation as changed", body = OrganizationView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<Uuid>,
    Json(body): Json<OrganizationPatch>,
) -> Result<axum::Json<OrganizationView>, ApiError> {
    let change = OrganizationChange { name: body.name, status: body.status, store_images: body.store_images };
    Ok(axum::Json(state.identity.change_organization(&caller, org, change).await?.into()))
}
