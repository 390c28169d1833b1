//! The console's caller: the session cookie, resolved from the replicated state on every
//! request and authorised exactly like `extract::Caller` (readiness first — a node out of contact
//! with its leader cannot know of recent sign-outs — then the user, organisation and roles as
//! they are now, then the per-principal rate limit).

use axum::extract::FromRequestParts;
use axum::http::header::COOKIE;
use axum::http::request::Parts;
use dermagate_domain::services::console::ConsoleAccess;
use dermagate_domain::ErrorCode;

use super::error::PageError;
use crate::error::ApiError;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "dermagate_session";

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct Console(pub ConsoleAccess);

impl std::ops::Deref for Console {
    type Target = ConsoleAccess;
    fn deref(&self) -> &ConsoleAccess {
        &self.0
    }
}

impl Console {
    /// Refuses a form that does not carry this session's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), PageError> {
        if self.csrf_matches(presented) {
            Ok(())
        } else {
            Err(PageError::Csrf("the form's CSRF token is missing or wrong"))
        }
    }
}

/// The session id from the request's cookies.
pub fn session_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

impl FromRequestParts<AppState> for Console {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let id = session_cookie(parts).ok_or(PageError::SignIn)?;
        state.identity.ctx.replicator.readiness().map_err(ApiError::from)?;
        let access = state.identity.console_access(id).await.map_err(|e| match e.code {
            ErrorCode::Unauthorized => PageError::SignIn,
            _ => PageError::from(e),
        })?;
        state.rate_limits.by_principal.check(&access.principal.id)?;
        Ok(Console(access))
    }
}
