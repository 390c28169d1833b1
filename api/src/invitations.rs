//! Self-service registration, only through a single-use, expiring invitation issued by an
//! administrator of the organisation. The invitation fixes the organisation and roles, so the
//! person registering chooses only a username and a password.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use dermagate_storage::model::{Collection, Command, Invitation, Role, User, UserStatus};
use rand::RngCore;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::rbac::Permission;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::Json;
use crate::organizations::rfc3339;
use crate::rate_limit::ClientIp;
use crate::state::{now_ms, AppState};
use crate::users::{check_grantable, UserView};
use crate::validate;

const INVITATION_PREFIX: &str = "dgi_";
const MAX_VALIDITY_SECS: u64 = 14 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    pub roles: Vec<Role>,
    pub expires_in_secs: Option<u64>,
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(org_id): Path<Uuid>,
    Json(body): Json<NewInvitation>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::UsersManage)?;
    principal.require_org(&org_id, "organization")?;
    state
        .read_fresh(|| Ok(state.store.organization(&org_id)?))
        .await?
        .ok_or_else(|| ApiError::NotFound("organization".into()))?;
    check_grantable(&principal, &body.roles)?;
    let validity = body.expires_in_secs.unwrap_or(72 * 3600);
    if validity == 0 || validity > MAX_VALIDITY_SECS {
        return Err(ApiError::validation("expires_in_secs", "range", "must be between 1 and 1209600 seconds"));
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{INVITATION_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let expires_at_ms = now_ms() + validity as i64 * 1000;
    let mut roles = body.roles;
    roles.sort();
    roles.dedup();
    let inv = Invitation { org_id, roles: roles.clone(), expires_at_ms, used: false, created_by: principal.id.clone() };
    state
        .commit(Command::PutRecord {
            collection: Collection::Invitation,
            id: token.clone(),
            value: serde_json::to_value(&inv).map_err(ApiError::internal)?,
            unique: true,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({
            "invitation": token, "organization_id": org_id, "roles": roles, "expires_at": rfc3339(expires_at_ms),
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub invitation: String,
    pub username: String,
    pub password: String,
}

pub async fn register(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<Registration>,
) -> Result<impl IntoResponse, ApiError> {
    state.rate_limits.check_sign_in(&ip)?;
    let invalid =
        || ApiError::validation("invitation", "valid_invitation", "the invitation is invalid, used or expired");
    let inv: Invitation = state
        .read_fresh(|| Ok(state.store.record(Collection::Invitation, &body.invitation)?))
        .await?
        .ok_or_else(invalid)?;
    if inv.used || inv.expires_at_ms < now_ms() {
        return Err(invalid());
    }
    let username = validate::username(&body.username)?;
    state.passwords.check_policy(&body.password)?;
    let user = User {
        id: Uuid::new_v4(),
        org_id: inv.org_id,
        username,
        roles: inv.roles,
        password_hash: state.passwords.hash(body.password).await?,
        status: UserStatus::Active,
        tokens_valid_after_ms: 0,
        created_at: now_ms(),
    };
    match state.commit(Command::RedeemInvitation { invitation: body.invitation, user: user.clone() }).await {
        Ok(()) => {}
        Err(ApiError::Unprocessable(_)) | Err(ApiError::NotFound(_)) => return Err(invalid()),
        Err(e) => return Err(e),
    }
    tracing::info!(user_id = %user.id, org_id = %user.org_id, "user registered through an invitation");
    Ok((StatusCode::CREATED, axum::Json(UserView::from(user))))
}
