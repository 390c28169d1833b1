//! Client keys: machine integrations of an organisation. The secret is shown exactly once, at
//! creation or rotation; only its hash is stored. Rotation keeps the old secret valid for a
//! configurable overlap so integrations can switch without downtime.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use dermagate_storage::model::{Client, ClientSecret, Command};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::rbac::Permission;
use crate::auth::secrets;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::Json;
use crate::organizations::rfc3339;
use crate::state::{now_ms, now_secs, AppState};
use crate::validate;

/// Scopes a client may hold; they map to permissions (see `auth::rbac`).
pub const KNOWN_SCOPES: &[&str] = &["analyses:write", "reports:read", "subjects:erase"];
/// What a client gets when it asks for no scopes: erasure must be asked for explicitly.
const DEFAULT_SCOPES: &[&str] = &["analyses:write", "reports:read"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    pub name: String,
    pub scopes: Option<Vec<String>>,
}

#[derive(Serialize)]
pub struct ClientView {
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
            created_at: rfc3339(c.created_at),
            client_secret: secret,
        }
    }
}

fn check_scopes(scopes: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let scopes = scopes.unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
    if let Some(bad) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
        return Err(ApiError::validation("scopes", "known_scope", format!("unknown scope {bad:?}")));
    }
    Ok(scopes)
}

/// An organisation must exist, be visible to the caller, and be active to get clients.
async fn check_org(state: &AppState, principal: &Principal, org_id: &Uuid) -> Result<(), ApiError> {
    principal.require_org(org_id, "organization")?;
    let org = state
        .read_fresh(|| Ok(state.store.organization(org_id)?))
        .await?
        .ok_or_else(|| ApiError::NotFound("organization".into()))?;
    if org.status != dermagate_storage::model::OrgStatus::Active {
        return Err(ApiError::Unprocessable("the organization is suspended".into()));
    }
    Ok(())
}

async fn client_of(state: &AppState, org_id: &Uuid, client_id: &str) -> Result<Client, ApiError> {
    state
        .read_fresh(|| Ok(state.store.client(client_id)?.filter(|c| &c.org_id == org_id)))
        .await?
        .ok_or_else(|| ApiError::NotFound("client".into()))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(org_id): Path<Uuid>,
    Json(body): Json<NewClient>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ClientsManage)?;
    check_org(&state, &principal, &org_id).await?;
    let secret = secrets::new_secret();
    let client = Client {
        client_id: secrets::new_client_id(),
        org_id,
        name: validate::text("name", &body.name, 200)?,
        scopes: check_scopes(body.scopes)?,
        secrets: vec![ClientSecret { hash: secrets::hash(&secret), valid_until: None }],
        revoked: false,
        created_at: now_ms(),
    };
    state.commit(Command::CreateClient(client.clone())).await?;
    tracing::info!(client_id = %client.client_id, org_id = %org_id, by = %principal.id, "client created");
    let location = format!("/v1/organizations/{org_id}/clients/{}", client.client_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location), (header::CACHE_CONTROL, "no-store".to_string())],
        axum::Json(ClientView::new(client, Some(secret))),
    ))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(org_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ClientsManage)?;
    principal.require_org(&org_id, "organization")?;
    state.catch_up_for_listing().await;
    let items: Vec<ClientView> = state
        .scan(|s| s.clients())
        .await?
        .into_iter()
        .filter(|c| c.org_id == org_id)
        .map(|c| ClientView::new(c, None))
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": items })))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path((org_id, client_id)): Path<(Uuid, String)>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ClientsManage)?;
    principal.require_org(&org_id, "client")?;
    Ok(axum::Json(ClientView::new(client_of(&state, &org_id, &client_id).await?, None)))
}

/// Revokes a client: its secrets and every token issued to it stop working on every node.
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path((org_id, client_id)): Path<(Uuid, String)>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ClientsManage)?;
    principal.require_org(&org_id, "client")?;
    let mut client = client_of(&state, &org_id, &client_id).await?;
    client.revoked = true;
    state.commit(Command::UpdateClient(client)).await?;
    metrics::counter!("dermagate_revocations_total", "kind" => "client").increment(1);
    tracing::info!(client_id = %client_id, by = %principal.id, "client revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a new secret; the previous one keeps working for the configured overlap.
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path((org_id, client_id)): Path<(Uuid, String)>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::ClientsManage)?;
    check_org(&state, &principal, &org_id).await?;
    let mut client = client_of(&state, &org_id, &client_id).await?;
    if client.revoked {
        return Err(ApiError::Unprocessable("the client is revoked".into()));
    }
    let now = now_secs();
    let overlap_end = now + state.settings.client_secret_overlap.as_secs() as i64;
    // Keep only secrets still valid; the current one gets the overlap deadline.
    client.secrets.retain(|s| s.valid_until.is_none_or(|t| t > now));
    for s in &mut client.secrets {
        s.valid_until = Some(s.valid_until.map_or(overlap_end, |t| t.min(overlap_end)));
    }
    let secret = secrets::new_secret();
    client.secrets.push(ClientSecret { hash: secrets::hash(&secret), valid_until: None });
    state.commit(Command::UpdateClient(client.clone())).await?;
    tracing::info!(client_id = %client_id, by = %principal.id, "client secret rotated");
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(ClientView::new(client, Some(secret)))))
}

/// Checks a presented secret against a client's valid secrets.
pub fn secret_matches(client: &Client, secret: &str, now_secs: i64) -> bool {
    let presented = secrets::hash(secret);
    client
        .secrets
        .iter()
        .any(|s| s.valid_until.is_none_or(|t| t > now_secs) && secrets::hashes_equal(&s.hash, &presented))
}
