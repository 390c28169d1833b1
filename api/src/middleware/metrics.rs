//! RED metrics of every request by route template, method and status class, plus in-flight and
//! refusals by reason.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    // Methods are client input: only the standard ones become label values (bounded series).
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let in_flight = metrics::gauge!("dermagate_http_requests_in_flight");
    in_flight.increment(1.0);
    let resp = next.run(req).await;
    in_flight.decrement(1.0);
    let status = resp.status();
    let class = format!("{}xx", status.as_u16() / 100);
    metrics::counter!("dermagate_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status_class" => class)
        .increment(1);
    metrics::histogram!("dermagate_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    // Only refusals of requests count (a probe answering "not ready" is not a rejected request).
    if let Some(crate::error::Refusal(reason)) = resp.extensions().get::<crate::error::Refusal>().copied() {
        metrics::counter!("dermagate_http_rejected_total", "reason" => reason).increment(1);
    }
    resp
}
