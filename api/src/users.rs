//! Users of an organisation. Registration is done by that organisation's `org_admin` or by a
//! `platform_admin`; a caller can grant only roles it may grant, and never a status or another
//! organisation (the request body has no such fields, and unknown fields are refused).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use dermagate_storage::model::{Command, Role, User, UserStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::rbac::{may_grant, Permission};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::Json;
use crate::organizations::rfc3339;
use crate::state::{now_ms, AppState};
use crate::validate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub roles: Vec<Role>,
}

/// A user as the API shows it: never the password hash.
#[derive(Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub username: String,
    pub roles: Vec<Role>,
    pub status: UserStatus,
    pub created_at: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            organization_id: u.org_id,
            username: u.username,
            roles: u.roles,
            status: u.status,
            created_at: rfc3339(u.created_at),
        }
    }
}

pub fn check_grantable(principal: &Principal, roles: &[Role]) -> Result<(), ApiError> {
    if roles.is_empty() {
        return Err(ApiError::validation("roles", "required", "at least one role is required"));
    }
    if let Some(role) = roles.iter().find(|r| !may_grant(&principal.roles, **r)) {
        return Err(ApiError::Forbidden(format!("you may not grant the role {role:?}")));
    }
    Ok(())
}

/// The organisation must exist, be visible to the caller, and be active.
async fn check_org(state: &AppState, principal: &Principal, org_id: &Uuid) -> Result<(), ApiError> {
    principal.require_org(org_id, "organization")?;
    state
        .read_fresh(|| Ok(state.store.organization(org_id)?))
        .await?
        .ok_or_else(|| ApiError::NotFound("organization".into()))?;
    Ok(())
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(org_id): Path<Uuid>,
    Json(body): Json<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::UsersManage)?;
    check_org(&state, &principal, &org_id).await?;
    let username = validate::username(&body.username)?;
    state.passwords.check_policy(&body.password)?;
    check_grantable(&principal, &body.roles)?;
    let now = now_ms();
    let user = User {
        id: Uuid::new_v4(),
        org_id,
        username,
        roles: dedup(body.roles),
        password_hash: state.passwords.hash(body.password).await?,
        status: UserStatus::Active,
        tokens_valid_after_ms: 0,
        created_at: now,
    };
    state.commit(Command::CreateUser(user.clone())).await?;
    tracing::info!(user_id = %user.id, org_id = %org_id, by = %principal.id, "user created");
    let location = format!("/v1/organizations/{org_id}/users/{}", user.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(UserView::from(user))))
}

fn dedup(mut roles: Vec<Role>) -> Vec<Role> {
    roles.sort();
    roles.dedup();
    roles
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(org_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::UsersRead)?;
    check_org(&state, &principal, &org_id).await?;
    state.catch_up_for_listing().await;
    let users: Vec<UserView> =
        state.scan(|s| s.users()).await?.into_iter().filter(|u| u.org_id == org_id).map(UserView::from).collect();
    Ok(axum::Json(serde_json::json!({ "items": users })))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path((org_id, id)): Path<(Uuid, Uuid)>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::UsersRead)?;
    check_org(&state, &principal, &org_id).await?;
    let user = user_of(&state, &org_id, &id).await?;
    Ok(axum::Json(UserView::from(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub roles: Option<Vec<Role>>,
    pub status: Option<UserStatus>,
    pub password: Option<String>,
}

async fn user_of(state: &AppState, org_id: &Uuid, id: &Uuid) -> Result<User, ApiError> {
    state
        .read_fresh(|| Ok(state.store.user(id)?.filter(|u| &u.org_id == org_id)))
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))
}

/// Changes roles, status (disable, or unlock by setting `active`) or password. A user may
/// change only their own password; nobody changes their own roles or status, and only a
/// platform administrator touches a platform administrator.
pub async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    Path((org_id, id)): Path<(Uuid, Uuid)>,
    Json(body): Json<UserPatch>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require_org(&org_id, "user")?;
    let mut user = user_of(&state, &org_id, &id).await?;
    let is_self = principal.id == id.to_string();
    let admin_change = body.roles.is_some() || body.status.is_some() || !is_self;
    if admin_change {
        principal.require(Permission::UsersManage)?;
        if is_self {
            return Err(ApiError::Forbidden("you cannot change your own roles or status".into()));
        }
        if user.roles.contains(&Role::PlatformAdmin) && !principal.is_platform_admin() {
            return Err(ApiError::Forbidden(
                "only a platform administrator may change a platform administrator".into(),
            ));
        }
    }
    if let Some(roles) = body.roles {
        check_grantable(&principal, &roles)?;
        user.roles = dedup(roles);
    }
    // Setting `active` also clears a temporary sign-in lock, which does not change the status.
    let unlocking = body.status == Some(UserStatus::Active);
    if let Some(status) = body.status {
        user.status = status;
    }
    if let Some(password) = body.password {
        state.passwords.check_policy(&password)?;
        user.password_hash = state.passwords.hash(password).await?;
        // A new password signs the user out everywhere.
        user.tokens_valid_after_ms = now_ms();
    }
    state.commit(Command::UpdateUser(user.clone())).await?;
    if unlocking {
        state.commit(Command::ResetSignInFailures { username: user.username.clone() }).await?;
    }
    tracing::info!(user_id = %id, by = %principal.id, "user updated");
    Ok(axum::Json(UserView::from(user)))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path((org_id, id)): Path<(Uuid, Uuid)>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::UsersManage)?;
    principal.require_org(&org_id, "user")?;
    let user = user_of(&state, &org_id, &id).await?;
    if principal.id == id.to_string() {
        return Err(ApiError::Forbidden("you cannot delete yourself".into()));
    }
    if user.roles.contains(&Role::PlatformAdmin) && !principal.is_platform_admin() {
        return Err(ApiError::Forbidden("only a platform administrator may delete a platform administrator".into()));
    }
    state.commit(Command::DeleteUser { org_id, id }).await?;
    tracing::info!(user_id = %id, by = %principal.id, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes every token and refresh token of a user, on every node.
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let user =
        state.read_fresh(|| Ok(state.store.user(&id)?)).await?.ok_or_else(|| ApiError::NotFound("user".into()))?;
    if principal.id != id.to_string() {
        principal.require(Permission::UsersManage)?;
        principal.require_org(&user.org_id, "user")?;
    }
    state.commit(Command::SignOutEverywhere { user_id: id }).await?;
    metrics::counter!("dermagate_revocations_total", "kind" => "sign_out").increment(1);
    tracing::info!(user_id = %id, by = %principal.id, "signed out everywhere");
    Ok(StatusCode::NO_CONTENT)
}
