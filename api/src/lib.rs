//! The HTTPS REST API of dermagate. **Only this crate knows HTTP and JSON.** Handlers are thin:
//! they authenticate (the `Principal` extractor), validate, and either read the local replicated
//! state or commit a command through Raft.

pub mod analyses;
pub mod auth;
pub mod body;
pub mod bootstrap;
pub mod clients;
pub mod cluster;
pub mod docs;
pub mod error;
pub mod health;
pub mod http_metrics;
pub mod invitations;
pub mod json;
pub mod login;
pub mod maintenance;
pub mod me;
pub mod oauth;
pub mod openapi;
pub mod organizations;
pub mod rate_limit;
pub mod signing_keys;
pub mod state;
pub mod users;
pub mod validate;
pub mod well_known;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use tower::ServiceBuilder;

pub use error::ApiError;
pub use state::{ApiSettings, AppState, Inner};

/// The whole API as a router, so tests can drive it without a socket.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    let timeout = state.settings.request_timeout;
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/.well-known/jwks.json", get(well_known::jwks))
        .route("/.well-known/oauth-authorization-server", get(well_known::oauth_metadata))
        .route("/v1/auth/login", post(login::login))
        .route("/v1/me", get(me::me))
        .route("/v1/cluster", get(cluster::get_cluster))
        .route("/v1/cluster/nodes", post(cluster::add_node))
        .route("/v1/cluster/backup", get(cluster::backup))
        .route("/v1/cluster/restore", post(cluster::restore))
        .route("/v1/cluster/nodes/{id}", delete(cluster::remove_node))
        .route("/v1/organizations", post(organizations::create).get(organizations::list))
        .route("/v1/organizations/{org}", get(organizations::get).patch(organizations::patch))
        .route("/v1/organizations/{org}/users", post(users::create).get(users::list))
        .route("/v1/organizations/{org}/users/{id}", get(users::get).patch(users::patch).delete(users::delete))
        .route("/v1/organizations/{org}/clients", post(clients::create).get(clients::list))
        .route("/v1/organizations/{org}/clients/{id}", get(clients::get).delete(clients::revoke))
        .route("/v1/organizations/{org}/clients/{id}/rotate-secret", post(clients::rotate_secret))
        .route("/v1/organizations/{org}/invitations", post(invitations::create))
        .route("/v1/auth/register", post(invitations::register))
        .route("/v1/users/{id}/sign-out-everywhere", post(users::sign_out_everywhere))
        .route("/v1/signing-keys/rotate", post(signing_keys::rotate))
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/oauth/introspect", post(oauth::introspect))
        .route(
            "/v1/analyses",
            post(analyses::create).layer(DefaultBodyLimit::max(state.settings.analyses.limits.max_body_bytes)),
        )
        .route("/v1/analyses/{id}", get(analyses::get))
        .route("/v1/analyses/{id}/images/{index}", get(analyses::get_image))
        .route("/v1/subjects/{subject}", delete(analyses::subjects::erase))
        .route("/v1/subjects/{subject}/analyses", get(analyses::subjects::list))
        .route("/v1/subjects/{subject}/export", get(analyses::subjects::export))
        .route("/v1/models", get(analyses::catalog::models))
        .route("/v1/body-sites", get(analyses::catalog::body_sites))
        .route("/v2/health/live", get(analyses::catalog::oip_live))
        .route("/v2/health/ready", get(analyses::catalog::oip_ready))
        .route("/v2/models/{name}", get(analyses::catalog::oip_model))
        .route("/v2/models/{name}/ready", get(analyses::catalog::oip_model_ready))
        .route("/openapi.json", get(openapi::serve))
        .route("/docs", get(docs::index))
        .route("/docs/", get(docs::index))
        .route("/docs/{file}", get(docs::file))
        .route("/ifu", get(docs::ifu))
        .route("/ifu.md", get(docs::ifu_markdown))
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .layer(axum::middleware::from_fn(body::read_small_bodies))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::Unavailable { detail: "the request deadline was exceeded".into(), retry_after_secs: 1 }
                }))
                .timeout(timeout),
        )
        .layer(axum::middleware::from_fn(error::problems_everywhere))
        .layer(axum::middleware::from_fn(http_metrics::track))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}
