//! People signing in: `POST /v1/auth/login` (username, password and, when enrolled, a TOTP code;
//! answered with the RFC 6749 token response, whose field names that RFC fixes), `GET /v1/me`,
//! second-factor enrolment, and the platform's second-factor policy.
//!
//! Guessing is slowed, never turned into a lockout a stranger could impose: every attempt is
//! decided in the replicated state machine (so concurrent attempts on different nodes are judged
//! in one order), throttled per source and per username with a growing wait (see
//! `domain::records::sign_in`).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dermagate_domain::records::Role;
use dermagate_domain::services::identity::{SignIn, Tokens};
use dermagate_domain::services::tokens::PrincipalKind;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Caller, ClientIp, Json};
use crate::state::{rfc3339, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(me))
        .routes(routes!(enroll_second_factor))
        .routes(routes!(confirm_second_factor))
        .routes(routes!(get_platform_settings, set_platform_settings))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(min_length = 1, max_length = 256)]
    pub username: String,
    #[schema(min_length = 1, max_length = 1024, format = Password)]
    pub password: String,
    /// A current TOTP code, or a recovery code, when the user has a second factor.
    #[schema(max_length = 64)]
    pub otp: Option<String>,
}

/// The RFC 6749 §5.1 token response (its field names are fixed by the RFC).
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

impl From<Tokens> for TokenResponse {
    fn from(t: Tokens) -> Self {
        TokenResponse {
            access_token: t.access_token,
            token_type: "Bearer".into(),
            expires_in: t.expires_in,
            refresh_token: t.refresh_token,
            scope: t.scope,
        }
    }
}

/// Token responses must never be cached (RFC 6749 §5.1).
pub fn token_response(body: TokenResponse) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// Sign in with username, password and (when enrolled) a second factor.
#[utoipa::path(post, path = "/v1/auth/login", operation_id = "login", tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, description = "Signed in", body = TokenResponse)))]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    state.rate_limits.check_sign_in(&ip)?;
    let source = ip.source();
    let attempt =
        SignIn { username: &body.username, password: body.password, otp: body.otp.as_deref(), source: &source };
    let tokens = state.identity.sign_in(attempt).await?;
    Ok(token_response(tokens.into()))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeView {
    pub kind: PrincipalKind,
    /// The user id, or the client id.
    pub id: String,
    pub organization_id: Uuid,
    /// The roles the caller acts with now (from the replicated state, not the token).
    pub roles: Vec<Role>,
    pub scopes: Vec<String>,
    pub client_id: String,
    /// RFC 3339; absent for a client key used directly.
    pub token_expires_at: Option<String>,
    /// `access_token` or `api_key`.
    pub credential: String,
    /// Whether a second factor was used to sign in.
    pub second_factor_used: bool,
}

/// Who the caller is: the simplest protected resource, to test credentials with.
#[utoipa::path(get, path = "/v1/me", operation_id = "me", tag = "auth",
    responses((status = 200, description = "The caller", body = MeView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn me(caller: Caller) -> axum::Json<MeView> {
    let p = caller.0;
    axum::Json(MeView {
        kind: p.kind,
        credential: if p.jti.is_some() { "access_token" } else { "api_key" }.into(),
        token_expires_at: p.token_expires_at.map(|t| rfc3339(t * 1000)),
        id: p.id,
        organization_id: p.org_id,
        roles: p.roles,
        scopes: p.scopes,
        client_id: p.client_id,
        second_factor_used: p.mfa,
    })
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Enrolment {
    /// The TOTP secret, base32 (RFC 6238: SHA-1, 6 digits, 30 s).
    pub secret: String,
    /// An `otpauth://` URI for authenticator apps.
    pub otpauth_uri: String,
    /// Single-use codes for when the device is lost (shown once).
    pub recovery_codes: Vec<String>,
}

/// Start enrolling a TOTP second factor (it counts from the first confirmed code).
#[utoipa::path(post, path = "/v1/me/totp", operation_id = "enrollSecondFactor", tag = "auth",
    responses((status = 201, description = "The secret and recovery codes (shown once)", body = Enrolment)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn enroll_second_factor(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let (secret, otpauth_uri, recovery_codes) = state.identity.enroll_totp(&caller).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(Enrolment { secret, otpauth_uri, recovery_codes }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    #[schema(min_length = 6, max_length = 6, pattern = "^[0-9]{6}$", example = "123456")]
    pub code: String,
}

/// Confirm the second factor with a current code.
#[utoipa::path(post, path = "/v1/me/totp/confirm", operation_id = "confirmSecondFactor", tag = "auth",
    request_body = Confirmation,
    responses((status = 204, description = "Confirmed: sign-in now asks for a code")),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn confirm_second_factor(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Confirmation>,
) -> Result<StatusCode, ApiError> {
    state.identity.confirm_totp(&caller, &body.code).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlatformSettingsView {
    /// Administrators (platform and organisation) act as administrators only after signing in
    /// with a second factor.
    pub require_admin_mfa: bool,
}

#[utoipa::path(get, path = "/v1/platform/settings", operation_id = "getPlatformSettings", tag = "platform",
    responses((status = 200, description = "The platform settings", body = PlatformSettingsView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn get_platform_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<PlatformSettingsView>, ApiError> {
    let settings = state.identity.platform_settings(&caller)?;
    Ok(axum::Json(PlatformSettingsView { require_admin_mfa: settings.require_admin_mfa }))
}

/// Require a second factor of administrators (you must have used one yourself).
#[utoipa::path(put, path = "/v1/platform/settings", operation_id = "setPlatformSettings", tag = "platform",
    request_body = PlatformSettingsView,
    responses((status = 200, description = "The platform settings as set", body = PlatformSettingsView)),
    security(("bearerAuth" = []), ("apiKey" = [])))]
pub async fn set_platform_settings(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PlatformSettingsView>,
) -> Result<axum::Json<PlatformSettingsView>, ApiError> {
    state.identity.set_require_admin_mfa(&caller, body.require_admin_mfa).await?;
    Ok(axum::Json(body))
}
