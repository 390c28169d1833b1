//! Errors of console pages: an HTML page with the status the API would answer (the one
//! `ApiError` table), never a panic and never problem+json; an ended session goes back to the
//! sign-in page.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use dermagate_domain::services::ServiceError;
use maud::html;

use super::views;
use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No session, or one that ended or expired: sign in again.
    #[error("sign in")]
    SignIn,
    /// A state-changing request without this session's CSRF token, or from another site.
    #[error("{0}")]
    Csrf(&'static str),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<ServiceError> for PageError {
    fn from(e: ServiceError) -> Self {
        PageError::Api(e.into())
    }
}

/// Clears the session cookie (the session itself is ended by the server, or already gone).
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("dermagate_session=; HttpOnly; Secure; SameSite=Strict; Path=/console; Max-Age=0")
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            PageError::SignIn => {
                let mut resp = Redirect::to("/console/login").into_response();
                resp.headers_mut().insert(header::SET_COOKIE, clear_cookie());
                return resp;
            }
            PageError::Csrf(why) => {
                tracing::warn!(reason = why, "console form refused (CSRF)");
                (StatusCode::FORBIDDEN, "Forbidden", format!("{why}; reload the page and try again"))
            }
            PageError::Api(e) => {
                let status = e.status();
                if status.is_server_error() {
                    tracing::error!(error = %e, status = status.as_u16(), "console page failed");
                }
                let title = status.canonical_reason().unwrap_or("Error");
                let detail = match (status, &e) {
                    (StatusCode::FORBIDDEN, _) => format!("{e}. Your roles do not allow this page."),
                    (_, ApiError::Internal(_)) => {
                        "the server could not complete the request; it has been logged".into()
                    }
                    _ => e.to_string(),
                };
                (status, title, detail)
            }
        };
        let body = views::bare(
            title,
            html! {
                h1 { (status.as_u16()) " " (title) }
                p.error role="alert" { (detail) }
                p { a href="/console/" { "Back to the console" } }
            },
        );
        (status, body).into_response()
    }
}
