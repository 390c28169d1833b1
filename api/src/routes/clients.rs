//! `/v1/organizations/{org}/clients`: client keys of machines (a PACS, an EHR integration). The
//! secret is shown once, in the answer that created or rotated it.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use dermagate_domain::records::Client;
use dermagate_domain::services::credentials::NewClient;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Caller, Json};
use crate::state::{rfc3339, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(get, revoke)).routes(routes!(rotate_secret))
}

/// A scope a client key may hold; each grants one permission.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
pub enum Scope {
    #[serde(rename = "analyses:write")]
    AnalysesWrite,
    #[serde(rename = "reports:read")]
    ReportsRead,
    #[serde(rename = "subjects:erase")]
    SubjectsErase,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::AnalysesWrite => "analyses:write",
            Scope::ReportsRead => "reports:read",
            Scope::SubjectsErase => "subjects:erase",
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientRequest {
    #[schema(min_length = 1, max_length = 200, example = "PACS gateway")]
    pub name: String,
    /// Defaults to `analyses:write reports:read`; erasure must be asked for explicitly.
    pub scopes: Option<Vec<Scope>>,
    /// A platform administrator minting a key inside another organisation must say so; that
    /// organisation's audit trail records it.
    #[serde(default)]
    pub break_glass: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientView {
    #[schema(example = "dgc_4f2a9c1e0b7d3a5c8e6f")]
    pub client_id: String,
    pub organization_id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub revoked: bool,
    pub created_at: String,
    /// Only in the answer that created or rotated it; never stored, never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl ClientView {
    fn new(c: Client, secret: Option<String>) -> ClientView {
        ClientView {
            client_id: c.client_id,
            organization_id: c.org_id,
            name: c.name,
            scopes: c.scopes,
            revoked: c.revoked,
            created_at: rfc3339(c.created_at_ms),
            client_secret: secret,
        }
    }
}

impl From<NewClient> for ClientView {
    fn from(n: NewClient) -> Self {
        ClientView::new(n.client, Some(n.secret))
    }
}

#[derive(Serialize, ToSchema)]
pub struct ClientList {
    pub items: Vec<ClientView>,
}

/// Create a client key; the answer holds its secret, once.
#[utoipa::path(post, path = "/v1/organizations/{org}/clients", operation_id = "createClient", tag = "clients",
    params(("org" = Uuid, Path, description = "Organisation id")),
    request_body = ClientRequest,
    responses((status = 201, description = "Created (the only answer that shows the secret)", body = ClientView,
        headers(("Location" = String, description = "URL of the new client")))),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<Uuid>,
    Json(body): Json<ClientRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let scopes = body.scopes.map(|s| s.into_iter().map(|s| s.name().to_string()).collect());
    let created = state.identity.create_client(&caller, org, &body.name, scopes, body.break_glass).await?;
    let location = state.url(&format!("/v1/organizations/{org}/clients/{}", created.client.client_id));
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location), (header::CACHE_CONTROL, "no-store".to_string())],
        axum::Json(ClientView::from(created)),
    ))
}

#[utoipa::path(get, path = "/v1/organizations/{org}/clients", operation_id = "listClients", tag = "clients",
    params(("org" = Uuid, Path, description = "Organisation id")),
    responses((status = 200, description = "The organisation's client keys (never their secrets)", body = ClientList)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<Uuid>,
) -> Result<axum::Json<ClientList>, ApiError> {
    let clients = state.identity.list_clients(&caller, org).await?;
    Ok(axum::Json(ClientList { items: clients.into_iter().map(|c| ClientView::new(c, None)).collect() }))
}

#[utoipa::path(get, path = "/v1/organizations/{org}/clients/{id}", operation_id = "getClient", tag = "clients",
    params(("org" = Uuid, Path, description = "Organisation id"), ("id" = String, Path, description = "Client id")),
    responses((status = 200, description = "The client key", body = ClientView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, id)): Path<(Uuid, String)>,
) -> Result<axum::Json<ClientView>, ApiError> {
    Ok(axum::Json(ClientView::new(state.identity.get_client(&caller, org, &id).await?, None)))
}

/// Revoke a client key: its secrets and every token issued to it stop working on every node.
#[utoipa::path(delete, path = "/v1/organizations/{org}/clients/{id}", operation_id = "revokeClient", tag = "clients",
    params(("org" = Uuid, Path, description = "Organisation id"), ("id" = String, Path, description = "Client id")),
    responses((status = 204, description = "Revoked on every node")),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, id)): Path<(Uuid, String)>,
) -> Result<StatusCode, ApiError> {
    state.identity.revoke_client(&caller, org, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a new secret; the previous one keeps working for the configured overlap.
#[utoipa::path(post, path = "/v1/organizations/{org}/clients/{id}/rotate-secret", operation_id = "rotateClientSecret",
    tag = "clients",
    params(("org" = Uuid, Path, description = "Organisation id"), ("id" = String, Path, description = "Client id")),
    responses((status = 200, description = "The new secret (shown once)", body = ClientView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, id)): Path<(Uuid, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let overlap = state.settings.client_secret_overlap;
    let rotated = state.identity.rotate_client_secret(&caller, org, &id, overlap).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(ClientView::from(rotated))))
}
