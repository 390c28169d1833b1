//! Invitations: an administrator invites a person into its organisation with fixed roles; the
//! person registers once with the single-use, expiring token (`POST /v1/auth/register`), choosing
//! only a username and a password.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use dermagate_domain::records::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::users::UserView;
use crate::error::ApiError;
use crate::extract::{Caller, ClientIp, Json};
use crate::state::{rfc3339, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(register))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InvitationRequest {
    #[schema(min_items = 1)]
    pub roles: Vec<Role>,
    /// Validity in seconds (default 72 h, at most 14 days).
    #[schema(minimum = 1, maximum = 1_209_600)]
    pub expires_in_secs: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationView {
    /// The single-use token to hand to the person (shown once).
    #[schema(example = "dgi_Zm9vYmFy")]
    pub invitation: String,
    pub organization_id: Uuid,
    pub roles: Vec<Role>,
    pub expires_at: String,
}

/// Invite a person into the organisation with fixed roles.
#[utoipa::path(post, path = "/v1/organizations/{org}/invitations", operation_id = "createInvitation", tag = "users",
    params(("org" = Uuid, Path, description = "Organisation id")),
    request_body = InvitationRequest,
    responses((status = 201, description = "The invitation token (shown once)", body = InvitationView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<Uuid>,
    Json(body): Json<InvitationRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (token, inv) = state.identity.invite(&caller, org, &body.roles, body.expires_in_secs).await?;
    let view = InvitationView {
        invitation: token,
        organization_id: org,
        roles: inv.roles,
        expires_at: rfc3339(inv.expires_at_ms),
    };
    Ok((StatusCode::CREATED, [(header::CACHE_CONTROL, "no-store")], axum::Json(view)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Registration {
    #[schema(min_length = 1, max_length = 200)]
    pub invitation: String,
    #[schema(min_length = 3, max_length = 64, pattern = r"^[A-Za-z0-9._@-]{3,64}$")]
    pub username: String,
    #[schema(min_length = 1, max_length = 1024, format = Password)]
    pub password: String,
}

/// Register with an invitation.
#[utoipa::path(post, path = "/v1/auth/register", operation_id = "register", tag = "auth",
    request_body = Registration,
    responses((status = 201, description = "The new user", body = UserView)))]
pub async fn register(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<Registration>,
) -> Result<impl IntoResponse, ApiError> {
    state.rate_limits.check_sign_in(&ip)?;
    let user = state.identity.register(&body.invitation, body.username, body.password).await?;
    tracing::info!(user_id = %user.id, org_id = %user.org_id, "user registered through an invitation");
    Ok((StatusCode::CREATED, axum::Json(UserView::from(user))))
}
