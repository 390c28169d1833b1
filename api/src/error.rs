//! The one error type of the HTTP API and its single mapping to RFC 9457 problem+json: each
//! domain [`ErrorCode`] becomes one variant here, and each variant one status and problem type
//! ([`ApiError::code`]). 5xx details are logged, never sent to clients.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dermagate_domain::services::ServiceError;
use dermagate_domain::ErrorCode;
use dermagate_raft::MembershipError;
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
pub struct Refusal(pub &'static str);

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
    #[error("{0}")]
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
    /// The request body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
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

    /// `what` does not exist (or belongs to another organisation).
    pub fn not_found(what: &str) -> ApiError {
        ApiError::NotFound(format!("{what} not found"))
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
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request timeout"),
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
            | ApiError::RequestTimeout(_)
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
            // The rest of the body is not waited for: the connection ends with this answer.
            ApiError::RequestTimeout(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        if let Some(reason) = self.rejection() {
            resp.extensions_mut().insert(Refusal(reason));
        }
        resp
    }
}

/// The domain's error codes, mapped once.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let e = e.into_detail();
        let retry = e.retry_after_secs.unwrap_or(1);
        match e.code {
            ErrorCode::Validation => ApiError::Validation {
                field: e.field.unwrap_or_else(|| "body".into()),
                rule: e.rule.unwrap_or_else(|| "invalid".into()),
                detail: e.detail,
            },
            ErrorCode::Unauthorized => {
                ApiError::Unauthorized { error: e.auth_error.unwrap_or("invalid_token"), detail: e.detail }
            }
            ErrorCode::Forbidden => ApiError::Forbidden(e.detail),
            ErrorCode::NotFound => ApiError::NotFound(e.detail),
            ErrorCode::Conflict => ApiError::Conflict(e.detail),
            ErrorCode::InFlight => ApiError::InFlight(e.detail),
            ErrorCode::Unprocessable => ApiError::Unprocessable(e.detail),
            ErrorCode::TooManyRequests => ApiError::TooManyRequests {
                retry_after_secs: retry,
                policy: "\"sign-in\";q=5;w=60".into(),
                name: "sign-in",
            },
            ErrorCode::PayloadTooLarge => ApiError::PayloadTooLarge(e.detail),
            ErrorCode::Unavailable => ApiError::Unavailable { detail: e.detail, retry_after_secs: retry },
            ErrorCode::InsufficientStorage => ApiError::InsufficientStorage(e.detail),
            ErrorCode::OutcomeUnknown => ApiError::OutcomeUnknown(e.detail),
            ErrorCode::Internal => ApiError::Internal(e.detail),
        }
    }
}

impl From<dermagate_domain::Rejection> for ApiError {
    fn from(r: dermagate_domain::Rejection) -> Self {
        ServiceError::from(r).into()
    }
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::Invalid(m) => ApiError::Unprocessable(m),
            MembershipError::UnknownNode(id) => ApiError::NotFound(format!("node {id} not found")),
            MembershipError::InProgress => ApiError::Conflict("another membership change is in progress".into()),
            MembershipError::Write(w) => ServiceError::from(w).into(),
        }
    }
}

/// Rejections of axum's own extractors (bad JSON, wrong content type, body too large) as problems
/// that name the field and rule in the API's terms, never a Rust type.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection::*;
        match r {
            MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
            }
            JsonSyntaxError(e) => ApiError::BadRequest(format!("malformed JSON: {}", e.body_text())),
            JsonDataError(e) => schema_error(&e.body_text()),
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
    // The console's error pages are HTML by design (a browser reads them).
    let is_page = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if is_json || is_page {
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
    if malformed && out.extensions().get::<Refusal>().is_none() {
        out.extensions_mut().insert(Refusal("validation"));
    }
    out
}

/// A body that does not fit the schema, explained with the JSON path serde reports, with Rust's
/// type names (`struct NewUser`) taken out.
pub fn schema_error(text: &str) -> ApiError {
    let text = text.trim_start_matches("Failed to deserialize the JSON body into the target type: ");
    let (field, rest) = match text.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_string(), rest.to_string()),
        _ => ("body".to_string(), text.to_string()),
    };
    let field = if field == "." { "body".to_string() } else { field };
    let mut detail = rest;
    for (rust, plain) in
        [("expected struct ", "expected an object "), ("expected enum ", "expected one of the values of ")]
    {
        if let Some(pos) = detail.find(rust) {
            let end = detail[pos + rust.len()..].find([' ', ',']).map_or(detail.len(), |i| pos + rust.len() + i);
            detail.replace_range(pos..end, plain.trim_end());
        }
    }
    let rule = if detail.starts_with("missing field") {
        "required"
    } else if detail.starts_with("unknown field") {
        "unknown_field"
    } else if detail.starts_with("unknown variant") {
        "enum"
    } else {
        "type"
    };
    // A missing or unknown member is named in full: `attestation.attestedBy`, not `attestation`.
    let field = match (rule, detail.split('`').nth(1)) {
        ("required" | "unknown_field", Some(name)) if field == "body" => name.to_string(),
        ("required" | "unknown_field", Some(name)) => format!("{field}.{name}"),
        _ => field,
    };
    ApiError::Validation { field, rule: rule.into(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    // traces
    #[test]
    fn schema_errors_name_the_field_never_a_rust_type() {
        let e = schema_error(
            "Failed to deserialize the JSON body into the target type: missing field `attestation` at line 1 column 20",
        );
        match e {
            ApiError::Validation { field, rule, detail } => {
                assert_eq!((field.as_str(), rule.as_str()), ("attestation", "required"));
                assert!(!detail.contains("struct"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        match schema_error("roles[0]: unknown variant `root`, expected one of `platform_admin`, `org_admin`") {
            ApiError::Validation { field, rule, .. } => {
                assert_eq!((field.as_str(), rule.as_str()), ("roles[0]", "enum"))
            }
            other => panic!("{other:?}"),
        }
        match schema_error("attestation: invalid type: string \"x\", expected struct NewAttestation at line 1 column 9")
        {
            ApiError::Validation { detail, .. } => assert!(!detail.contains("NewAttestation"), "{detail}"),
            other => panic!("{other:?}"),
        }
    }

    // traces: FM-03, R-16, REQ-5.3
    #[test]
    fn every_error_code_maps_to_a_distinct_meaning() {
        use dermagate_domain::ErrorCode::*;
        let statuses: Vec<u16> = [
            Validation,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            InFlight,
            Unprocessable,
            TooManyRequests,
            PayloadTooLarge,
            Unavailable,
            InsufficientStorage,
            OutcomeUnknown,
            Internal,
        ]
        .into_iter()
        .map(|c| ApiError::from(ServiceError::new(c, "x")).status().as_u16())
        .collect();
        assert_eq!(statuses, [400, 401, 403, 404, 409, 409, 422, 429, 413, 503, 507, 504, 500]);
    }
}
