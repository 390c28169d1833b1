//! Discovery documents: the public signing keys (RFC 7517) and the authorisation server metadata
//! (RFC 8414). **Every node serves the same document**: the issuer and every endpoint are under
//! the cluster's public URL (the load balancer's), so clients that follow discovery stay behind
//! it, and `issuer` is the URL the metadata is served from (RFC 8414 §3.3).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(jwks)).routes(routes!(oauth_metadata))
}

/// A JSON Web Key of an Ed25519 signing key (RFC 8037).
#[derive(Serialize, ToSchema)]
pub struct Jwk {
    #[schema(example = "OKP")]
    pub kty: String,
    #[schema(example = "Ed25519")]
    pub crv: String,
    #[schema(example = "EdDSA")]
    pub alg: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: String,
    pub kid: String,
    /// The public key, base64url.
    pub x: String,
}

#[derive(Serialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// The public keys that verify access tokens (current and recently retired).
#[utoipa::path(get, path = "/.well-known/jwks.json", operation_id = "jwks", tag = "discovery",
    responses((status = 200, description = "The key set (RFC 7517)", body = JwkSet)))]
pub async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let set = state.identity.tokens.jwks()?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], axum::Json(set)))
}

/// RFC 8414 authorisation server metadata.
#[derive(Serialize, ToSchema)]
pub struct ServerMetadata {
    pub issuer: String,
    pub token_endpoint: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    pub jwks_uri: String,
    pub grant_types_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub scopes_supported: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", operation_id = "oauthMetadata", tag = "discovery",
    responses((status = 200, description = "The metadata (RFC 8414)", body = ServerMetadata)))]
pub async fn oauth_metadata(State(state): State<AppState>) -> axum::Json<ServerMetadata> {
    let auth_methods = strings(&["client_secret_basic", "client_secret_post"]);
    axum::Json(ServerMetadata {
        issuer: state.identity.tokens.settings().issuer.clone(),
        token_endpoint: state.url("/oauth/token"),
        revocation_endpoint: state.url("/oauth/revoke"),
        introspection_endpoint: state.url("/oauth/introspect"),
        jwks_uri: state.url("/.well-known/jwks.json"),
        grant_types_supported: strings(&["client_credentials", "refresh_token"]),
        revocation_endpoint_auth_methods_supported: auth_methods.clone(),
        introspection_endpoint_auth_methods_supported: auth_methods.clone(),
        token_endpoint_auth_methods_supported: auth_methods,
        response_types_supported: strings(&["token"]),
        scopes_supported: strings(dermagate_domain::services::credentials::KNOWN_SCOPES),
    })
}
