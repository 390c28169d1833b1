//! The authenticated caller. Credentials: `Authorization: Bearer <access token>` (EdDSA JWT), or
//! a client key used as a static API key (`Authorization: Bearer dgk_...` or `X-API-Key`).
//! **Sending both is refused**: one request carries one credential, so a valid key can never
//! paper over an invalid token.

use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use dermagate_domain::services::credentials::SECRET_PREFIX;
use dermagate_domain::services::identity::{Credential, Principal};

use crate::error::ApiError;
use crate::state::AppState;

/// The principal of a request, decided from the replicated state (see `Identity::authenticate`).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Deref for Caller {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

fn missing() -> ApiError {
    ApiError::Unauthorized {
        error: "invalid_request",
        detail: "missing credentials: send Authorization: Bearer <token> or X-API-Key".into(),
    }
}

/// The one credential of a request.
pub fn credential(parts: &Parts) -> Result<Credential<'_>, ApiError> {
    let api_key = parts.headers.get("x-api-key");
    let authorization = parts.headers.get(AUTHORIZATION);
    if api_key.is_some() && authorization.is_some() {
        return Err(ApiError::Unauthorized {
            error: "invalid_request",
            detail: "send one credential: Authorization or X-API-Key, not both".into(),
        });
    }
    if let Some(key) = api_key {
        let key = key.to_str().map_err(|_| ApiError::invalid_token("malformed X-API-Key header"))?.trim();
        return Ok(Credential::ApiKey(key));
    }
    let value = authorization.ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| ApiError::invalid_token("malformed Authorization header"))?;
    let (scheme, token) =
        value.split_once(' ').ok_or_else(|| ApiError::invalid_token("malformed Authorization header"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::invalid_token("expected a Bearer token"));
    }
    Ok(if token.starts_with(SECRET_PREFIX) { Credential::ApiKey(token) } else { Credential::AccessToken(token) })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credential = credential(parts)?;
        // Fail closed: a node out of contact with its leader cannot know of recent revocations.
        state.identity.ctx.replicator.readiness()?;
        let principal = state.identity.authenticate(credential).await?;
        state.rate_limits.by_principal.check(&principal.id)?;
        Ok(Caller(principal))
    }
}
