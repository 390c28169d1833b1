//! The authenticated caller, as an axum extractor: a handler that takes a [`Principal`] cannot
//! run for an unauthenticated, revoked, suspended, rate-limited or stale request.
//!
//! Credentials: `Authorization: Bearer <access token>` (EdDSA JWT), or a client key used as a
//! static API key (`Authorization: Bearer dgk_...` or `X-API-Key: dgk_...`).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use dermagate_storage::model::{Client, OrgStatus, Role, UserStatus};
use dermagate_storage::Store;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::rbac::{roles_have, scopes_have, Permission};
use crate::auth::secrets::{self, SECRET_PREFIX};
use crate::auth::tokens::{AccessClaims, PrincipalKind};
use crate::error::ApiError;
use crate::state::{now_secs, AppState};

#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub id: String,
    pub org_id: Uuid,
    pub roles: Vec<Role>,
    pub scopes: Vec<String>,
    pub client_id: String,
    /// Expiry of the access token (unix seconds); `None` for a static API key.
    pub token_expires_at: Option<i64>,
    #[serde(skip)]
    pub jti: Option<String>,
}

impl Principal {
    /// Users are authorised by their roles, clients by their scopes.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        let allowed = match self.kind {
            PrincipalKind::User => roles_have(&self.roles, permission),
            PrincipalKind::Client => scopes_have(&self.scopes, permission),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden("your roles or scopes do not allow this operation".into()))
        }
    }

    pub fn is_platform_admin(&self) -> bool {
        self.kind == PrincipalKind::User && self.roles.contains(&Role::PlatformAdmin)
    }

    /// Tenant isolation: a caller sees only its own organisation unless it is a platform admin.
    /// Another organisation's resources are reported as not found, so their ids are not confirmed.
    pub fn require_org(&self, org_id: &Uuid, what: &str) -> Result<(), ApiError> {
        if self.is_platform_admin() || &self.org_id == org_id {
            Ok(())
        } else {
            Err(ApiError::NotFound(what.into()))
        }
    }
}

enum Credential<'a> {
    AccessToken(&'a str),
    ApiKey(&'a str),
}

fn credential(parts: &Parts) -> Result<Credential<'_>, ApiError> {
    if let Some(key) = parts.headers.get("x-api-key") {
        let key = key.to_str().map_err(|_| ApiError::invalid_token("malformed X-API-Key header"))?.trim();
        return Ok(Credential::ApiKey(key));
    }
    let value = parts.headers.get(AUTHORIZATION).ok_or_else(|| ApiError::Unauthorized {
        error: "invalid_request",
        detail: "missing credentials: send Authorization: Bearer <token> or X-API-Key".into(),
    })?;
    let value = value.to_str().map_err(|_| ApiError::invalid_token("malformed Authorization header"))?;
    let (scheme, token) =
        value.split_once(' ').ok_or_else(|| ApiError::invalid_token("malformed Authorization header"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::invalid_token("expected a Bearer token"));
    }
    if token.starts_with(SECRET_PREFIX) {
        Ok(Credential::ApiKey(token))
    } else {
        Ok(Credential::AccessToken(token))
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Fail closed: a node out of contact with its leader cannot know of recent revocations.
        state.node.readiness()?;
        let principal = match credential(parts)? {
            Credential::AccessToken(token) => {
                let claims = state.tokens.authenticate(token, now_secs(), &state.store, check_not_revoked)?;
                from_claims(claims)
            }
            Credential::ApiKey(key) => from_api_key(state, key).await?,
        };
        state.rate_limits.by_principal.check(&principal.id)?;
        Ok(principal)
    }
}

fn from_claims(claims: AccessClaims) -> Principal {
    Principal {
        kind: claims.kind,
        id: claims.sub,
        org_id: claims.org_id,
        roles: claims.roles,
        scopes: claims.scope.split_whitespace().map(String::from).collect(),
        client_id: claims.client_id,
        token_expires_at: Some(claims.exp),
        jti: Some(claims.jti),
    }
}

/// A client key used directly: the same registered client, the same checks as its tokens.
async fn from_api_key(state: &AppState, key: &str) -> Result<Principal, ApiError> {
    let invalid = || {
        metrics::counter!("dermagate_auth_failures_total", "reason" => "bad_api_key").increment(1);
        ApiError::invalid_token("invalid or revoked client key")
    };
    let hash = secrets::hash(key);
    let client = state.read_fresh(|| Ok(state.store.client_by_secret_hash(&hash)?)).await?.ok_or_else(invalid)?;
    if !crate::clients::secret_matches(&client, key, now_secs()) || !client_usable(state, &client)? {
        return Err(invalid());
    }
    Ok(Principal {
        kind: PrincipalKind::Client,
        id: client.client_id.clone(),
        org_id: client.org_id,
        roles: Vec::new(),
        scopes: client.scopes.clone(),
        client_id: client.client_id,
        token_expires_at: None,
        jti: None,
    })
}

/// A client can act only if it is not revoked and its organisation is active.
pub fn client_usable(state: &AppState, client: &Client) -> Result<bool, ApiError> {
    Ok(!client.revoked && state.store.organization(&client.org_id)?.is_some_and(|o| o.status == OrgStatus::Active))
}

/// Checks the replicated revocation state: token id, organisation, user or client.
pub fn check_not_revoked(store: &Store, claims: &AccessClaims) -> Result<(), ApiError> {
    let revoked = |what: &str| {
        metrics::counter!("dermagate_token_verifications_total", "outcome" => "revoked").increment(1);
        Err(ApiError::invalid_token(format!("token revoked: {what}")))
    };
    if store.is_jti_revoked(&claims.jti)? {
        return revoked("token");
    }
    match store.organization(&claims.org_id)? {
        Some(org) if org.status == OrgStatus::Active => {}
        _ => return revoked("organization suspended or removed"),
    }
    match claims.kind {
        PrincipalKind::User => {
            let id: Uuid = claims.sub.parse().map_err(|_| ApiError::invalid_token("invalid subject"))?;
            match store.user(&id)? {
                Some(u) if u.status == UserStatus::Active && u.org_id == claims.org_id => {
                    if claims.iat_ms < u.tokens_valid_after_ms {
                        return revoked("signed out");
                    }
                }
                _ => return revoked("user disabled or removed"),
            }
        }
        PrincipalKind::Client => match store.client(&claims.client_id)? {
            Some(c) if !c.revoked && c.org_id == claims.org_id => {}
            _ => return revoked("client revoked"),
        },
    }
    Ok(())
}
