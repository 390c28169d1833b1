//! Security headers on every answer: `Strict-Transport-Security` (the API is HTTPS only),
//! `X-Content-Type-Options: nosniff`, and `Referrer-Policy: no-referrer`. Answers that carry
//! personal data set `Cache-Control: no-store` themselves; everything else without a cache
//! policy gets `no-store` too unless it is public documentation.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if state.settings.hsts_max_age_secs > 0 {
        if let Ok(v) =
            HeaderValue::from_str(&format!("max-age={}; includeSubDomains", state.settings.hsts_max_age_secs))
        {
            h.insert(header::STRICT_TRANSPORT_SECURITY, v);
        }
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The console sets `same-origin` itself: with `no-referrer` browsers send `Origin: null` on
    // its form posts, and the console refuses forms whose origin it cannot check.
    if !h.contains_key(header::REFERRER_POLICY) {
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
