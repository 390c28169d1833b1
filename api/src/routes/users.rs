//! `/v1/organizations/{org}/users`: people of an organisation. A caller grants only roles it may
//! grant, never a status or another organisation (the body has no such fields, and unknown
//! fields are refused); a password changes only with the current one.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use dermagate_domain::records::{Role, User, UserStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Caller, Json};
use crate::state::{rfc3339, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, change, delete))
        .routes(routes!(remove_second_factor))
        .routes(routes!(sign_out_everywhere))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserRequest {
    #[schema(min_length = 3, max_length = 64, pattern = r"^[A-Za-z0-9._@-]{3,64}$", example = "dr.example")]
    pub username: String,
    /// At least the configured minimum length (default 12), not a common or trivial password,
    /// not containing the username.
    #[schema(min_length = 1, max_length = 1024, format = Password)]
    pub password: String,
    /// Roles you may grant (an organisation administrator: `org_admin`, `clinician`, `auditor`).
    #[schema(min_items = 1)]
    pub roles: Vec<Role>,
}

/// A user as the API shows it: never the password hash or the second-factor secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub username: String,
    pub roles: Vec<Role>,
    pub status: UserStatus,
    pub created_at: String,
    /// Whether a confirmed second factor (TOTP) protects the account.
    pub second_factor: bool,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            second_factor: u.has_confirmed_totp(),
            id: u.id,
            organization_id: u.org_id,
            username: u.username,
            roles: u.roles,
            status: u.status,
            created_at: rfc3339(u.created_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<UserView>,
}

/// Create a user (organisation or platform administrators).
#[utoipa::path(post, path = "/v1/organizations/{org}/users", operation_id = "createUser", tag = "users",
    params(("org" = Uuid, Path, description = "Organisation id")),
    request_body = UserRequest,
    responses((status = 201, description = "Created", body = UserView,
        headers(("Location" = String, description = "URL of the new user")))),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<Uuid>,
    Json(body): Json<UserRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let user = state.identity.create_user(&caller, org, body.username, body.password, &body.roles).await?;
    let location = state.url(&format!("/v1/organizations/{org}/users/{}", user.id));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(UserView::from(user))))
}

#[utoipa::path(get, path = "/v1/organizations/{org}/users", operation_id = "listUsers", tag = "users",
    params(("org" = Uuid, Path, description = "Organisation id")),
    responses((status = 200, description = "The organisation's users", body = UserList)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<Uuid>,
) -> Result<axum::Json<UserList>, ApiError> {
    let users = state.identity.list_users(&caller, org).await?;
    Ok(axum::Json(UserList { items: users.into_iter().map(UserView::from).collect() }))
}

#[utoipa::path(get, path = "/v1/organizations/{org}/users/{id}", operation_id = "getUser", tag = "users",
    params(("org" = Uuid, Path, description = "Organisation id"), ("id" = Uuid, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<UserView>, ApiError> {
    Ok(axum::Json(state.identity.get_user(&caller, org, id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserPatch {
    /// Administrators: the user's new roles (takes effect on the next request of every token).
    #[schema(min_items = 1)]
    pub roles: Option<Vec<Role>>,
    /// Administrators: `disabled` cuts the user off everywhere; `active` re-enables and lifts
    /// the sign-in throttle.
    pub status: Option<UserStatus>,
    /// The user themself: a new password (every other session ends).
    #[schema(min_length = 1, max_length = 1024, format = Password)]
    pub password: Option<String>,
    /// Required with `password`: the current password.
    #[schema(max_length = 1024, format = Password)]
    pub current_password: Option<String>,
}

/// Change roles or status (administrators), or one's own password (with the current one).
#[utoipa::path(patch, path = "/v1/organizations/{org}/users/{id}", operation_id = "updateUser", tag = "users",
    params(("org" = Uuid, Path, description = "Organisation id"), ("id" = Uuid, Path, description = "User id")),
    request_body = UserPatch,
    responses((status = 200, description = "The user as changed", body = UserView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, id)): Path<(Uuid, Uuid)>,
    Json(body): Json<UserPatch>,
) -> Result<axum::Json<UserView>, ApiError> {
    if body.roles.is_none() && body.status.is_none() && body.password.is_none() {
        return Err(ApiError::validation("body", "required", "send roles, status and/or password"));
    }
    let mut changed = None;
    if let Some(password) = body.password {
        let current = body.current_password.ok_or_else(|| {
            ApiError::validation("currentPassword", "required", "a password changes only with the current password")
        })?;
        changed = Some(state.identity.change_own_password(&caller, org, id, current, password).await?);
    }
    if body.roles.is_some() || body.status.is_some() {
        changed = Some(state.identity.change_user(&caller, org, id, body.roles.as_deref(), body.status).await?);
    }
    let user = changed.ok_or_else(|| ApiError::internal("no change was made"))?;
    Ok(axum::Json(user.into()))
}

#[utoipa::path(delete, path = "/v1/organizations/{org}/users/{id}", operation_id = "deleteUser", tag = "users",
    params(("org" = Uuid, Path, description = "Organisation id"), ("id" = Uuid, Path, description = "User id")),
    responses((status = 204, description = "Deleted: every token of the user stops working on every node")),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    state.identity.delete_user(&caller, org, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a user's second factor (the user, or an administrator when the device is lost).
#[utoipa::path(delete, path = "/v1/organizations/{org}/users/{id}/totp", operation_id = "removeSecondFactor", tag = "users",
    params(("org" = Uuid, Path, description = "Organisation id"), ("id" = Uuid, Path, description = "User id")),
    responses((status = 204, description = "Removed")),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn remove_second_factor(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    caller.require_org(&org, dermagate_domain::Entity::User)?;
    state.identity.disable_totp(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke every token and refresh token of a user, on every node.
#[utoipa::path(post, path = "/v1/users/{id}/sign-out-everywhere", operation_id = "signOutEverywhere", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 204, description = "Signed out on every node")),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.identity.sign_out_everywhere(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
