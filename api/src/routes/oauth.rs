//! OAuth 2.0 endpoints: `POST /oauth/token` (client credentials and refresh-token grants),
//! `POST /oauth/revoke` (RFC 7009) and `POST /oauth/introspect` (RFC 7662). Errors here follow
//! RFC 6749 §5.2 (`{"error": ..., "error_description": ...}`), not problem+json, because OAuth
//! client libraries expect that shape; their field names are the RFCs', not camelCase.

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dermagate_domain::records::Client;
use dermagate_domain::services::identity::Principal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{token_response, TokenResponse};
use crate::error::ApiError;
use crate::extract::{Caller, ClientIp};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(token)).routes(routes!(revoke)).routes(routes!(introspect))
}

/// An RFC 6749 §5.2 error response.
#[derive(Serialize, ToSchema)]
pub struct OAuthErrorBody {
    #[schema(example = "invalid_grant")]
    pub error: String,
    pub error_description: String,
}

pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError { status, error, description: description.into(), retry_after: None }
    }
    fn invalid_request(d: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    fn invalid_client() -> OAuthError {
        OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody { error: self.error.into(), error_description: self.description };
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"dermagate\""));
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        match e {
            ApiError::TooManyRequests { retry_after_secs, .. } | ApiError::Unavailable { retry_after_secs, .. } => {
                OAuthError {
                    retry_after: Some(retry_after_secs),
                    ..OAuthError::new(status, "temporarily_unavailable", e.to_string())
                }
            }
            ApiError::OutcomeUnknown(_) | ApiError::InsufficientStorage(_) => {
                OAuthError::new(status, "temporarily_unavailable", e.to_string())
            }
            ApiError::Unauthorized { error: "invalid_client", detail } => {
                OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", detail)
            }
            ApiError::Unauthorized { detail, .. } => OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", detail),
            ApiError::Validation { detail, .. } if detail.starts_with("scope ") => {
                OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", detail)
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error at an OAuth endpoint");
                OAuthError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
            }
            other => OAuthError::invalid_request(other.to_string()),
        }
    }
}

impl From<dermagate_domain::services::ServiceError> for OAuthError {
    fn from(e: dermagate_domain::services::ServiceError) -> Self {
        ApiError::from(e).into()
    }
}

/// The form of `POST /oauth/token` (RFC 6749 §4.4 and §6).
#[derive(Deserialize, Default, ToSchema)]
pub struct TokenForm {
    /// Parsed leniently, so an unknown grant gets RFC 6749's `unsupported_grant_type`.
    #[schema(value_type = GrantType, required = true)]
    pub grant_type: Option<String>,
    /// With `client_secret_post` (HTTP Basic is preferred).
    pub client_id: Option<String>,
    #[schema(format = Password)]
    pub client_secret: Option<String>,
    /// For the `refresh_token` grant.
    pub refresh_token: Option<String>,
    /// Space-separated subset of the client's scopes.
    pub scope: Option<String>,
}

/// The grants offered (documentation of the accepted values).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum GrantType {
    ClientCredentials,
    RefreshToken,
}

/// The form of `POST /oauth/revoke` and `POST /oauth/introspect` (RFC 7009, RFC 7662).
#[derive(Deserialize, Default, ToSchema)]
pub struct TokenReference {
    #[schema(value_type = String, required = true)]
    pub token: Option<String>,
    /// Accepted and ignored: the token's own shape says what it is.
    #[schema(example = "access_token")]
    pub token_type_hint: Option<String>,
}

/// Reads an `application/x-www-form-urlencoded` body, refusing other media types.
async fn form<T: serde::de::DeserializeOwned>(req: Request, state: &AppState) -> Result<(HeaderMap, T), OAuthError> {
    let headers = req.headers().clone();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(OAuthError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "expected Content-Type: application/x-www-form-urlencoded",
        ));
    }
    let axum::Form(f) = axum::Form::<T>::from_request(req, state)
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
    Ok(state.identity.authenticate_client(&id, &secret).await?)
}

/// Get an access token (client credentials or refresh token grant).
#[utoipa::path(post, path = "/oauth/token", operation_id = "token", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "A token (RFC 6749 §5.1)", body = TokenResponse)),
    security((), ("clientBasic" = [])))]
pub async fn token(State(state): State<AppState>, ip: ClientIp, req: Request) -> Result<Response, OAuthError> {
    state.rate_limits.check_sign_in(&ip)?;
    let (headers, f): (HeaderMap, TokenForm) = form(req, &state).await?;
    match f.grant_type.as_deref() {
        Some("client_credentials") => {
            let client = authenticate_client(&state, &headers, &f).await?;
            let (access, claims) = state.identity.client_token(&client, f.scope.as_deref())?;
            Ok(token_response(TokenResponse {
                access_token: access,
                token_type: "Bearer".into(),
                expires_in: (claims.exp - claims.iat) as u64,
                refresh_token: None,
                scope: claims.scope,
            }))
        }
        Some("refresh_token") => {
            let presented =
                f.refresh_token.as_deref().ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
            Ok(token_response(state.identity.refresh(presented).await?.into()))
        }
        Some("password") => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "people sign in with POST /v1/auth/login (first-party only); machines use client_credentials",
        )),
        Some(other) => Err(OAuthError::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", format!("{other:?}"))),
        None => Err(OAuthError::invalid_request("grant_type is required")),
    }
}

/// Revoke a token (RFC 7009). The answer is 200 whether or not the token was valid or the
/// caller's to revoke, so it reveals nothing.
#[utoipa::path(post, path = "/oauth/revoke", operation_id = "revokeToken", tag = "oauth",
    request_body(content = TokenReference, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Revoked on every node, or not the caller's to revoke")),
    security(("clientBasic" = []), ("bearerAuth" = [])))]
pub async fn revoke(State(state): State<AppState>, req: Request) -> Result<Response, OAuthError> {
    let (parts, body) = req.into_parts();
    let caller = caller(&state, &parts).await?;
    let (_, f): (HeaderMap, TokenReference) = form(Request::from_parts(parts, body), &state).await?;
    let token = f.token.as_deref().ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    state.identity.revoke_token(&caller, token).await?;
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response())
}

/// Who is calling revoke/introspect: a client by Basic auth, or a bearer credential.
async fn caller(state: &AppState, parts: &axum::http::request::Parts) -> Result<Principal, OAuthError> {
    let basic = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "));
    if basic {
        let client = authenticate_client(state, &parts.headers, &TokenForm::default()).await?;
        return Ok(Principal::of_client(client));
    }
    let mut parts = parts.clone();
    match <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await {
        Ok(caller) => Ok(caller.0),
        Err(
            e @ (ApiError::Unavailable { .. } | ApiError::TooManyRequests { .. } | ApiError::InsufficientStorage(_)),
        ) => Err(e.into()),
        Err(_) => Err(OAuthError::invalid_client()),
    }
}

/// RFC 7662 introspection response.
#[derive(Serialize, ToSchema, Default)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// dermagate's organisation of the token (an RFC 7662 extension member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<Uuid>,
    /// The roles the holder acts with now (users).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<dermagate_domain::records::Role>>,
}

/// Whether a token is active right now on this cluster (RFC 7662). Only the token's holder and
/// administrators of its organisation learn more than `active: false`.
#[utoipa::path(post, path = "/oauth/introspect", operation_id = "introspectToken", tag = "oauth",
    request_body(content = TokenReference, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Whether the token is active, and its claims", body = Introspection)),
    security(("clientBasic" = []), ("bearerAuth" = [])))]
pub async fn introspect(State(state): State<AppState>, req: Request) -> Result<Response, OAuthError> {
    let (parts, body) = req.into_parts();
    let caller = caller(&state, &parts).await?;
    let (_, f): (HeaderMap, TokenReference) = form(Request::from_parts(parts, body), &state).await?;
    let token = f.token.as_deref().ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let answer = match state.identity.introspect(&caller, token)? {
        None => Introspection::default(),
        Some((claims, holder)) => Introspection {
            active: true,
            token_type: Some("Bearer".into()),
            sub: Some(claims.sub),
            client_id: Some(claims.client_id),
            scope: Some(claims.scope),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            nbf: Some(claims.nbf),
            iss: Some(claims.iss),
            aud: Some(claims.aud),
            jti: Some(claims.jti),
            organization_id: Some(claims.org_id),
            roles: Some(holder.roles),
        },
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(answer)).into_response())
}
