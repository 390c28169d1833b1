//! The routes, one module per resource. Each handler carries its `#[utoipa::path]`, and
//! [`api`] is the one list from which both the router and the OpenAPI document are built.

pub mod analyses;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod clients;
pub mod cluster;
pub mod compat_legit;
pub mod discovery;
pub mod docs;
pub mod health;
pub mod invitations;
pub mod oauth;
pub mod organizations;
pub mod signing_keys;
pub mod users;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every route of the API with its documentation.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .merge(health::routes())
        .merge(discovery::routes())
        .merge(oauth::routes())
        .merge(auth::routes())
        .merge(invitations::routes())
        .merge(organizations::routes())
        .merge(users::routes())
        .merge(clients::routes())
        .merge(signing_keys::routes())
        .merge(cluster::routes())
        .merge(audit::routes())
        .merge(analyses::routes())
        .merge(catalog::routes())
        .merge(compat_legit::routes())
        .merge(docs::routes())
}
