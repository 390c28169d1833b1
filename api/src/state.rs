//! The shared state of the API handlers, and the wall clock the API stamps into commands.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use dermagate_raft::RaftNode;
use dermagate_storage::model::{Command, Request, Response};
use dermagate_storage::Store;

use crate::auth::password::Passwords;
use crate::auth::tokens::TokenService;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Server-side deadline of a request.
    pub request_timeout: Duration,
    /// How long a rotated client secret keeps working.
    pub client_secret_overlap: Duration,
    pub lockout: dermagate_storage::model::LockoutPolicy,
    pub rate_limits: crate::rate_limit::RateLimitSettings,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_body_bytes: 20 << 20,
            request_timeout: Duration::from_secs(30),
            client_secret_overlap: Duration::from_secs(24 * 3600),
            lockout: Default::default(),
            rate_limits: Default::default(),
        }
    }
}

pub struct Inner {
    pub node: Arc<RaftNode>,
    pub store: Arc<Store>,
    pub tokens: TokenService,
    pub passwords: Passwords,
    pub settings: ApiSettings,
    /// HTTPS client trusting the cluster CA, for asking peers about themselves.
    pub peer_http: Option<reqwest::Client>,
    /// This node's own base URL, for links in discovery documents.
    pub public_url: String,
    pub rate_limits: std::sync::Arc<crate::rate_limit::RateLimits>,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Replicates a command and turns its business outcome into an API result.
    pub async fn commit(&self, command: Command) -> Result<(), ApiError> {
        match self.node.write(Request::new(now_ms(), command)).await? {
            Response::Ok => Ok(()),
            Response::Conflict { reason } => Err(ApiError::Conflict(reason)),
            Response::NotFound { what } => Err(ApiError::NotFound(what)),
            Response::Rejected { reason } => Err(ApiError::Unprocessable(reason)),
        }
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn now_secs() -> i64 {
    now_ms() / 1000
}
