//! The HTTPS REST API of dermagate. **Only this crate knows HTTP and JSON.** Handlers are thin:
//! an extractor authenticates (`extract::Caller`), the body is parsed into a named schema, a
//! domain service decides, and the answer is rendered; every error becomes one problem+json
//! through `error::ApiError`. The route list and the OpenAPI document are one (`routes::api`);
//! the administration console (`console`, HTML) is merged beside it.

pub mod console;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod state;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower::ServiceBuilder;

pub use error::ApiError;
pub use state::{AnalysisLimits, ApiSettings, AppState, Inner};

/// The whole API as a router, so tests can drive it without a socket.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    let timeout = state.settings.request_timeout;
    let (routes, _) = routes::api().split_for_parts();
    // The console is served by the same router (so by every node) but is no part of the API's
    // documented contract: it is merged beside `routes::api()`, never into it.
    routes
        .merge(console::router(&state))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(middleware::body::read_small_bodies))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::Unavailable { detail: "the request deadline was exceeded".into(), retry_after_secs: 1 }
                }))
                .timeout(timeout),
        )
        .layer(axum::middleware::from_fn(error::problems_everywhere))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::headers::security_headers))
        .layer(axum::middleware::from_fn(middleware::metrics::track))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}
