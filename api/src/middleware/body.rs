//! Small request bodies are read before any handler runs, so an answer decided before the body
//! is looked at (401, 403, 415) never leaves unread bytes behind, which would make the server
//! close the connection and the client see a reset instead of the answer. Large uploads
//! (analyses, restores) drain their own bodies when they refuse early.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Bodies up to this size (every management request) are read up front.
const READ_UP_FRONT: usize = 1 << 20;

pub async fn read_small_bodies(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let streams_itself =
        path == "/v1/analyses" || path == "/v1/cluster/restore" || path == "/compat/legit/diagnosis-support";
    let length = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if streams_itself || !length.is_some_and(|n| n > 0 && n <= READ_UP_FRONT) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, READ_UP_FRONT).await {
        Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Err(e) => ApiError::BadRequest(format!("could not read the request body: {e}")).into_response(),
    }
}
