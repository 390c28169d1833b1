//! The one error type of the HTTP API and its single mapping to RFC 9457 problem+json.
//! 5xx details are logged, never sent to clients.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dermagate_raft::{MembershipError, WriteError};
use dermagate_storage::StoreError;
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";
const TYPE_BASE: &str = "https://dermagate.dev/problems/";

/// RFC 9457 problem details, plus the offending field and rule for validation errors.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// Attached to error responses so the metrics layer counts rejections by their real reason.
#[derive(Debug, Clone, Copy)]
pub struct Rejection(pub &'static str);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Validation { field: String, rule: String, detail: String },
    #[error("{0}")]
    BadRequest(String),
    /// Missing or invalid credentials; `error` is the RFC 6750 code for WWW-Authenticate.
    #[error("{detail}")]
    Unauthorized { error: &'static str, detail: String },
    #[error("{0}")]
    Forbidden(String),
    /// Also used for resources of another organisation, so ids are not confirmed.
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A request with the same `Idempotency-Key` is still running: retry shortly.
    #[error("{0}")]
    InFlight(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("too many requests; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64, policy: String, name: &'static str },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The node cannot serve right now (no leader, stale, deadline passed); retry elsewhere or later.
    #[error("{detail}")]
    Unavailable { detail: String, retry_after_secs: u64 },
    /// This node's disk is (almost) full: it takes no new data until space is freed.
    #[error("{0}")]
    InsufficientStorage(String),
    /// Load shedding: the inference queue is full, so the request is refused at once.
    #[error("{detail}")]
    Overloaded { detail: String, retry_after_secs: u64 },
    /// A write whose outcome is unknown: it may or may not have been applied.
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, rule: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::Validation { field: field.into(), rule: rule.into(), detail: detail.into() }
    }

    pub fn invalid_token(detail: impl Into<String>) -> ApiError {
        ApiError::Unauthorized { error: "invalid_token", detail: detail.into() }
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }

    /// The error-code table: HTTP status, problem type slug and title of each error.
    fn code(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Validation { .. } => (StatusCode::BAD_REQUEST, "validation", "Invalid request"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::InFlight(_) => (StatusCode::CONFLICT, "in-flight", "Request in flight"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", "Unprocessable request"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            ApiError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Service overloaded"),
            ApiError::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient-storage", "Insufficient storage")
            }
            ApiError::OutcomeUnknown(_) => (StatusCode::GATEWAY_TIMEOUT, "outcome-unknown", "Outcome unknown"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal server error"),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code().0
    }

    /// Why the request was rejected, for `dermagate_http_rejected_total{reason}`.
    fn rejection(&self) -> Option<&'static str> {
        match self {
            ApiError::Unauthorized { .. } => Some("auth"),
            ApiError::TooManyRequests { .. } => Some("rate_limit"),
            ApiError::Overloaded { .. } => Some("shed"),
            ApiError::Unavailable { .. } | ApiError::InsufficientStorage(_) => Some("unavailable"),
            ApiError::Validation { .. }
            | ApiError::BadRequest(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::Unprocessable(_) => Some("validation"),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.code();
        let detail = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                "the server could not complete the request; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        let (field, rule) = match &self {
            ApiError::Validation { field, rule, .. } => (Some(field.clone()), Some(rule.clone())),
            _ => (None, None),
        };
        let problem =
            Problem { type_uri: format!("{TYPE_BASE}{slug}"), title, status: status.as_u16(), detail, field, rule };
        let mut resp = (status, axum::Json(problem)).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            ApiError::Unauthorized { error, detail } => {
                let value = format!(
                    "Bearer realm=\"dermagate\", error=\"{error}\", error_description=\"{}\"",
                    detail.replace('"', "'")
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::TooManyRequests { retry_after_secs, policy, name } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                if let Ok(v) = HeaderValue::from_str(policy) {
                    headers.insert("ratelimit-policy", v);
                }
                if let Ok(v) = HeaderValue::from_str(&format!("\"{name}\";r=0;t={retry_after_secs}")) {
                    headers.insert("ratelimit", v);
                }
            }
            ApiError::Unavailable { retry_after_secs, .. } | ApiError::Overloaded { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::InFlight(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            ApiError::InsufficientStorage(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(5u64));
            }
            _ => {}
        }
        if let Some(reason) = self.rejection() {
            resp.extensions_mut().insert(Rejection(reason));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<dermagate_raft::NotReady> for ApiError {
    fn from(not_ready: dermagate_raft::NotReady) -> Self {
        match not_ready.kind {
            dermagate_raft::NotReadyKind::DiskFull => {
                ApiError::InsufficientStorage(format!("this node takes no new data: {}", not_ready.reason))
            }
            _ => ApiError::Unavailable {
                detail: format!("this node cannot authenticate right now: {}", not_ready.reason),
                retry_after_secs: 1,
            },
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NoLeader => {
                ApiError::Unavailable { detail: "no cluster leader is available".into(), retry_after_secs: 1 }
            }
            WriteError::ShuttingDown => {
                ApiError::Unavailable { detail: "this node is shutting down".into(), retry_after_secs: 1 }
            }
            WriteError::OutcomeUnknown(m) => {
                tracing::warn!(error = %m, "write outcome unknown");
                ApiError::OutcomeUnknown("the write may or may not have been applied; check before retrying".into())
            }
            WriteError::TooLarge { bytes, limit } => ApiError::PayloadTooLarge(format!(
                "the record to replicate is {bytes} bytes; one replicated record may hold at most {limit} bytes"
            )),
            WriteError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::Invalid(m) => ApiError::Unprocessable(m),
            MembershipError::UnknownNode(id) => ApiError::NotFound(format!("node {id}")),
            MembershipError::InProgress => ApiError::Conflict("another membership change is in progress".into()),
            MembershipError::Write(w) => w.into(),
        }
    }
}

/// Rejections of axum's own extractors (bad JSON, wrong content type, body too large) as problems.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection::*;
        match r {
            MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
            }
            JsonSyntaxError(e) => ApiError::BadRequest(format!("malformed JSON: {}", e.body_text())),
            JsonDataError(e) => ApiError::validation("body", "schema", e.body_text()),
            BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("request body exceeds the size limit".into())
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

/// Turns every error answer that is not already JSON (axum's own rejections of a malformed path
/// or query, 405 Method Not Allowed, a timeout) into problem+json, so clients meet one error format.
pub async fn problems_everywhere(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/") && t.contains("json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_string());
    let detail = match text {
        Ok(t) if !t.is_empty() => t,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let slug = match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        _ if status.is_server_error() => "internal",
        _ => "error",
    };
    let problem = Problem {
        type_uri: format!("{TYPE_BASE}{slug}"),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        field: None,
        rule: None,
    };
    let mut out = (status, axum::Json(problem)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    *out.extensions_mut() = parts.extensions;
    let malformed = matches!(status.as_u16(), 400 | 413 | 415 | 422);
    if malformed && out.extensions().get::<Rejection>().is_none() {
        out.extensions_mut().insert(Rejection("validation"));
    }
    out
}
