//! Discovery documents: the public signing keys (RFC 7517) and the authorisation server
//! metadata (RFC 8414), so integrators configure themselves from the product.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

pub async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], axum::Json(state.tokens.jwks()?)))
}

pub async fn oauth_metadata(State(state): State<AppState>) -> impl IntoResponse {
    let iss = &state.tokens.settings().issuer;
    let base = &state.public_url;
    axum::Json(json!({
        "issuer": iss,
        "token_endpoint": format!("{base}/oauth/token"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
        "response_types_supported": ["token"],
        "scopes_supported": crate::clients::KNOWN_SCOPES,
    }))
}
