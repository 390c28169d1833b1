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
    /// Proxies whose `X-Forwarded-For` is believed (for per-IP limits).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub analyses: crate::analyses::AnalysisSettings,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_body_bytes: 20 << 20,
            request_timeout: Duration::from_secs(30),
            client_secret_overlap: Duration::from_secs(24 * 3600),
            lockout: Default::default(),
            rate_limits: Default::default(),
            trusted_proxies: Vec::new(),
            analyses: Default::default(),
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
    /// The model runtime and its bounded worker pool.
    pub engine: Arc<dermagate_inference::Engine>,
    /// Analysis requests allowed to hold their bodies in memory at once (beyond: 503 at once).
    pub analysis_slots: Arc<tokio::sync::Semaphore>,
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
        if let Some(problem) = self.node.disk_problem() {
            return Err(ApiError::InsufficientStorage(format!("this node takes no new data: {problem}")));
        }
        let revocation = command.is_revocation();
        let (response, index) = self.node.write_indexed(Request::new(now_ms(), command)).await?;
        if revocation {
            // Waiting the staleness bound for every member makes the bound hold with no delay:
            // a member that has not confirmed by then has stopped authenticating.
            self.node.propagate(index, self.node.settings().staleness_bound).await;
        }
        match response {
            Response::Ok => Ok(()),
            Response::Conflict { reason } => Err(ApiError::Conflict(reason)),
            Response::NotFound { what } => Err(ApiError::NotFound(what)),
            Response::Rejected { reason } => Err(ApiError::Unprocessable(reason)),
        }
    }
}

impl AppState {
    /// Reads local state; on a miss, catches up with the leader and reads again, so a record
    /// written through another node a moment ago is found here too (a miss is authoritative).
    pub async fn read_fresh<T>(&self, read: impl Fn() -> Result<Option<T>, ApiError>) -> Result<Option<T>, ApiError> {
        if let Some(found) = read()? {
            return Ok(Some(found));
        }
        if let Err(e) = self.node.catch_up(Duration::from_secs(1)).await {
            tracing::debug!(error = %e, "could not catch up with the leader; answering from local state");
        }
        read()
    }

    /// Runs a scan of the replicated state on the blocking pool (point reads stay inline: they
    /// take microseconds; scans grow with the data).
    pub async fn scan<T: Send + 'static>(
        &self,
        scan: impl FnOnce(&Store) -> Result<T, dermagate_storage::StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || scan(&store)).await.map_err(ApiError::internal)??)
    }

    /// Makes the next local read linearizable: this node applies everything the leader had
    /// committed when the call began, so the read sees every write acknowledged before it
    /// started, on whichever node. Refused (503) when the leader cannot be reached.
    pub async fn linearizable(&self) -> Result<(), ApiError> {
        self.node.catch_up(Duration::from_secs(1)).await.map_err(|e| ApiError::Unavailable {
            detail: format!("cannot confirm the latest state with the leader: {e}"),
            retry_after_secs: 1,
        })
    }

    /// Catches up with the leader before a listing, so it includes writes made elsewhere.
    pub async fn catch_up_for_listing(&self) {
        if let Err(e) = self.node.catch_up(Duration::from_secs(1)).await {
            tracing::debug!(error = %e, "listing from local state without catching up");
        }
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn now_secs() -> i64 {
    now_ms() / 1000
}
