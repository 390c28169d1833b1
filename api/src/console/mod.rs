//! The administration console under `/console/`: server-rendered HTML pages (maud, checked at
//! compile time) over **the same domain services as the REST API**, so it holds no rule of its
//! own: sign-in is `Identity`'s (throttling, second factor), every request is authorised from
//! the replicated records like an access token (`session.rs`), RBAC, tenant isolation and audit
//! are the services'. What is the console's own is the browser's security model: a replicated
//! session behind an `HttpOnly; Secure; SameSite=Strict` cookie, a CSRF token on every form,
//! cross-site `Origin`/`Sec-Fetch-Site` refused, a strict CSP with no script and no inline style,
//! and `no-store` on every page. Console routes stay out of the OpenAPI document.

mod admin;
mod auth;
mod chart;
mod error;
mod platform;
mod session;
mod subjects;
mod views;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::Router;

pub use error::PageError;
pub use session::{Console, SESSION_COOKIE};

use crate::state::AppState;

/// Every console page: only this node's stylesheet, no script at all, forms post only here,
/// never framed.
pub const CONSOLE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("../../assets/console/console.css");

/// The console's routes (merged into the router beside, not inside, the documented API).
pub fn router(state: &AppState) -> Router<AppState> {
    // An analysis submitted from the browser reads (and limits) its own body, like the API's.
    let upload =
        Router::new().route("/console/analyses", post(subjects::submit_analysis)).layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(auth::home))
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/login", get(auth::login_form).post(auth::login))
        .route("/console/logout", post(auth::logout))
        .route("/console/users", get(admin::users).post(admin::create_user))
        .route("/console/users/{id}/{action}", post(admin::user_action))
        .route("/console/clients", get(admin::clients).post(admin::create_client))
        .route("/console/clients/{id}/{action}", post(admin::client_action))
        .route("/console/organization", get(admin::organization).post(admin::organization_settings))
        .route("/console/audit", get(admin::audit_trail))
        .route("/console/subjects", get(subjects::find))
        .route("/console/subjects/{subject}", get(subjects::subject))
        .route("/console/subjects/{subject}/export.json", get(subjects::export_json))
        .route("/console/subjects/{subject}/export.fhir.json", get(subjects::export_fhir))
        .route("/console/subjects/{subject}/erase", post(subjects::erase))
        .route("/console/reports/{id}", get(subjects::report))
        .route("/console/analyses/new", get(subjects::analysis_form))
        .route("/console/organizations", get(platform::organizations).post(platform::create_organization))
        .route("/console/organizations/{id}/{action}", post(platform::organization_action))
        .route("/console/cluster", get(platform::cluster))
        .route("/console/signing-keys/rotate", post(platform::rotate_signing_key))
        .merge(upload)
        // Unknown console paths are pages too (the API's fallback would answer problem+json).
        .route("/console/{*rest}", any(|| async { PageError::from(crate::ApiError::not_found("page")) }))
        .layer(axum::middleware::from_fn_with_state(state.clone(), same_origin_posts))
        .layer(axum::middleware::from_fn(console_headers))
}

async fn stylesheet() -> Response {
    let mut resp = CSS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    resp
}

/// The console's headers on every answer, errors included: the CSP, no framing, and
/// `no-store` on everything but the stylesheet.
async fn console_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONSOLE_CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: browsers then send `Origin: null` on form posts, which
    // `same_origin_posts` cannot tell from a cross-site sandboxed frame.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    let is_css = h.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/css"));
    if !is_css {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    resp
}

/// A state-changing request from another site is refused before any handler runs, whenever
/// the browser says where it came from (`Sec-Fetch-Site`, `Origin`); the CSRF token is checked
/// by each form's handler as well, so a browser that sends neither is still covered.
async fn same_origin_posts(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    if let Some(site) = req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return PageError::Csrf("the form was sent from another site").into_response();
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let origin_host = origin.strip_prefix("https://").or(origin.strip_prefix("http://"));
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
        let authority = req.uri().authority().map(|a| a.as_str());
        // Behind the load balancer the browser's origin is the public URL.
        let same = origin == state.public_url.trim_end_matches('/')
            || origin_host.is_some_and(|o| Some(o) == host || Some(o) == authority);
        if !same {
            tracing::debug!(origin, host, authority, "console form from another origin");
            return PageError::Csrf("the form was sent from another origin").into_response();
        }
    }
    next.run(req).await
}
