//! OAuth 2.0 endpoints: `POST /oauth/token` (client credentials and refresh-token grants),
//! `POST /oauth/revoke` (RFC 7009) and `POST /oauth/introspect` (RFC 7662). Errors here follow
//! RFC 6749 section 5.2 (`{"error": ..., "error_description": ...}`), not problem+json, because
//! OAuth client libraries expect that shape.

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dermagate_storage::model::{Client, Collection, Command, OrgStatus, UserStatus};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::auth::principal::{check_not_revoked, client_usable};
use crate::auth::tokens::PrincipalKind;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::login::{new_user_tokens, token_response, RefreshRecord, TokenResponse, REFRESH_PREFIX};
use crate::rate_limit::ClientIp;
use crate::state::{now_ms, now_secs, AppState};

/// An RFC 6749 error response.
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError { status, error, description: description.into() }
    }
    fn invalid_request(d: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    fn invalid_client() -> OAuthError {
        OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed")
    }
    fn invalid_grant(d: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(json!({ "error": self.error, "error_description": self.description })))
            .into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"dermagate\""));
        }
        resp
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::TooManyRequests { .. } | ApiError::Unavailable { .. } | ApiError::OutcomeUnknown(_) => {
                OAuthError::new(e.status(), "temporarily_unavailable", e.to_string())
            }
            ApiError::Unauthorized { detail, .. } => OAuthError::invalid_grant(detail),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error at the token endpoint");
                OAuthError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
            }
            other => OAuthError::invalid_request(other.to_string()),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// Reads an `application/x-www-form-urlencoded` body, refusing other media types.
async fn form(req: Request, state: &AppState) -> Result<(HeaderMap, TokenForm), OAuthError> {
    let headers = req.headers().clone();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(OAuthError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "expected Content-Type: application/x-www-form-urlencoded",
        ));
    }
    let axum::Form(f) = axum::Form::<TokenForm>::from_request(req, state)
        .await
        .map_err(|e| OAuthError::invalid_request(format!("malformed form body: {}", e.body_text())))?;
    Ok((headers, f))
}

/// Client authentication by HTTP Basic (preferred) or by form fields.
fn client_credentials(headers: &HeaderMap, f: &TokenForm) -> Option<(String, String)> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, b64) = v.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (id, secret) = text.split_once(':')?;
            return Some((id.to_string(), secret.to_string()));
        }
    }
    Some((f.client_id.clone()?, f.client_secret.clone()?))
}

async fn authenticate_client(state: &AppState, headers: &HeaderMap, f: &TokenForm) -> Result<Client, OAuthError> {
    let (id, secret) = client_credentials(headers, f).ok_or_else(OAuthError::invalid_client)?;
    let client = state.read_fresh(|| Ok(state.store.client(&id)?)).await?.ok_or_else(OAuthError::invalid_client)?;
    if !crate::clients::secret_matches(&client, &secret, now_secs()) || !client_usable(state, &client)? {
        metrics::counter!("dermagate_auth_failures_total", "reason" => "bad_client").increment(1);
        return Err(OAuthError::invalid_client());
    }
    Ok(client)
}

pub async fn token(State(state): State<AppState>, ip: ClientIp, req: Request) -> Result<Response, OAuthError> {
    state.rate_limits.check_sign_in(&ip)?;
    let (headers, f) = form(req, &state).await?;
    match f.grant_type.as_deref() {
        Some("client_credentials") => client_credentials_grant(&state, &headers, &f).await,
        Some("refresh_token") => refresh_grant(&state, &f).await,
        Some("password") => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "people sign in with POST /v1/auth/login (first-party only); machines use client_credentials",
        )),
        Some(other) => Err(OAuthError::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", format!("{other:?}"))),
        None => Err(OAuthError::invalid_request("grant_type is required")),
    }
}

async fn client_credentials_grant(
    state: &AppState,
    headers: &HeaderMap,
    f: &TokenForm,
) -> Result<Response, OAuthError> {
    let client = authenticate_client(state, headers, f).await?;
    let scope = match &f.scope {
        Some(requested) => {
            let wanted: Vec<&str> = requested.split_whitespace().collect();
            if let Some(bad) = wanted.iter().find(|s| !client.scopes.iter().any(|c| c == *s)) {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    format!("scope {bad:?} not granted"),
                ));
            }
            wanted.join(" ")
        }
        None => client.scopes.join(" "),
    };
    let (access, claims) = state.tokens.issue(
        PrincipalKind::Client,
        client.client_id.clone(),
        client.client_id.clone(),
        client.org_id,
        Vec::new(),
        scope.clone(),
        now_ms(),
    )?;
    Ok(token_response(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: (claims.exp - claims.iat) as u64,
        refresh_token: None,
        scope,
    }))
}

/// Rotation on every use; a reused (already rotated) refresh token revokes its whole family.
async fn refresh_grant(state: &AppState, f: &TokenForm) -> Result<Response, OAuthError> {
    let presented =
        f.refresh_token.as_deref().ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
    let record: RefreshRecord =
        state.read_fresh(|| Ok(state.store.record(Collection::RefreshToken, presented)?)).await?.ok_or_else(invalid)?;
    if state.store.is_refresh_family_revoked(&record.family).map_err(ApiError::from)? || record.expires_at < now_secs()
    {
        return Err(invalid());
    }
    let user = state.store.user(&record.user_id).map_err(ApiError::from)?.ok_or_else(invalid)?;
    let org_ok =
        state.store.organization(&user.org_id).map_err(ApiError::from)?.is_some_and(|o| o.status == OrgStatus::Active);
    if user.status != UserStatus::Active || !org_ok || record.issued_at_ms < user.tokens_valid_after_ms {
        return Err(invalid());
    }
    let (access, expires_in, refresh, new_record) = new_user_tokens(state, &user, record.family)?;
    let command = Command::RotateRefreshToken {
        old: presented.to_string(),
        new: refresh.clone(),
        record: serde_json::to_value(&new_record).map_err(ApiError::internal)?,
    };
    match state.commit(command).await {
        Ok(()) => Ok(token_response(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in,
            refresh_token: Some(refresh),
            scope: String::new(),
        })),
        Err(ApiError::Conflict(_)) => {
            metrics::counter!("dermagate_revocations_total", "kind" => "refresh_family").increment(1);
            tracing::warn!(family = %record.family, "refresh token reuse: family revoked");
            Err(invalid())
        }
        Err(e) => Err(e.into()),
    }
}

/// RFC 7009: the caller (a client by Basic auth, or any bearer of a valid token) may revoke
/// tokens it owns; administrators may revoke tokens of their organisation. The answer is 200
/// whether or not the token was valid, so it reveals nothing.
pub async fn revoke(State(state): State<AppState>, req: Request) -> Result<Response, OAuthError> {
    let (parts, body) = req.into_parts();
    let caller = caller(&state, &parts).await?;
    let (_, f) = form(Request::from_parts(parts, body), &state).await?;
    let token = f.token.as_deref().ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    if token.starts_with(REFRESH_PREFIX) {
        revoke_refresh(&state, &caller, token).await?;
    } else if let Ok(claims) = state.tokens.verify(token, now_secs()) {
        if owns_or_administers(&caller, &claims.sub, &claims.org_id) {
            state.commit(Command::RevokeToken { jti: claims.jti, exp: claims.exp }).await?;
            metrics::counter!("dermagate_revocations_total", "kind" => "token").increment(1);
        }
    }
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response())
}

async fn revoke_refresh(state: &AppState, caller: &Principal, token: &str) -> Result<(), OAuthError> {
    let record: Option<RefreshRecord> = state.store.record(Collection::RefreshToken, token).map_err(ApiError::from)?;
    if let Some(r) = record {
        let org = state.store.user(&r.user_id).map_err(ApiError::from)?.map(|u| u.org_id).unwrap_or_default();
        if owns_or_administers(caller, &r.user_id.to_string(), &org) {
            state.commit(Command::RevokeRefreshFamily { family: r.family }).await?;
            metrics::counter!("dermagate_revocations_total", "kind" => "refresh_family").increment(1);
        }
    }
    Ok(())
}

fn owns_or_administers(caller: &Principal, sub: &str, org: &Uuid) -> bool {
    use crate::auth::rbac::Permission;
    caller.id == sub
        || caller.is_platform_admin()
        || (caller.org_id == *org && caller.require(Permission::UsersManage).is_ok())
}

/// Who is calling revoke/introspect: a client by Basic auth, or a bearer token.
async fn caller(state: &AppState, parts: &axum::http::request::Parts) -> Result<Principal, OAuthError> {
    let basic = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "));
    if basic {
        let client = authenticate_client(state, &parts.headers, &TokenForm::default()).await?;
        return Ok(Principal {
            kind: PrincipalKind::Client,
            id: client.client_id.clone(),
            org_id: client.org_id,
            roles: Vec::new(),
            scopes: client.scopes.clone(),
            client_id: client.client_id,
            token_expires_at: None,
            jti: None,
        });
    }
    let mut parts = parts.clone();
    <Principal as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, state)
        .await
        .map_err(|_| OAuthError::invalid_client())
}

/// RFC 7662: whether a token is active right now on this cluster, and its claims if it is.
/// Callers outside the token's organisation (other than platform admins) learn only `active: false`.
pub async fn introspect(State(state): State<AppState>, req: Request) -> Result<Response, OAuthError> {
    let (parts, body) = req.into_parts();
    let caller = caller(&state, &parts).await?;
    let (_, f) = form(Request::from_parts(parts, body), &state).await?;
    let token = f.token.as_deref().ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let inactive = || axum::Json(json!({ "active": false })).into_response();
    let Ok(claims) = state.tokens.verify(token, now_secs()) else { return Ok(inactive()) };
    if check_not_revoked(&state.store, &claims).is_err()
        || !(caller.is_platform_admin() || caller.org_id == claims.org_id)
    {
        return Ok(inactive());
    }
    Ok(axum::Json(json!({
        "active": true,
        "token_type": "Bearer",
        "sub": claims.sub,
        "client_id": claims.client_id,
        "scope": claims.scope,
        "exp": claims.exp,
        "iat": claims.iat,
        "nbf": claims.nbf,
        "iss": claims.iss,
        "aud": claims.aud,
        "jti": claims.jti,
        "organization_id": claims.org_id,
        "roles": claims.roles,
    }))
    .into_response())
}
