//! `GET /v1/me`: the simplest protected resource, for integrators to test their credentials.

use axum::response::IntoResponse;
use serde_json::json;

use crate::auth::Principal;
use crate::organizations::rfc3339;

pub async fn me(principal: Principal) -> impl IntoResponse {
    axum::Json(json!({
        "kind": principal.kind,
        "id": principal.id,
        "organization_id": principal.org_id,
        "organization": principal.org_id,
        "roles": principal.roles,
        "scopes": principal.scopes,
        "client_id": principal.client_id,
        "token_expires_at": principal.token_expires_at.map(|t| rfc3339(t * 1000)),
        "credential": if principal.jti.is_some() { "access_token" } else { "api_key" },
    }))
}
