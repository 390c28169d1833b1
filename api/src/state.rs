//! What every handler shares: the domain services, the Raft node (for cluster operations and
//! probes), the model engine, the limits, and the settings of the HTTP surface.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use dermagate_domain::services::analyses::Analyses;
use dermagate_domain::services::audit::Audit;
use dermagate_domain::services::identity::Identity;
use dermagate_raft::RaftNode;

use crate::rate_limit::RateLimits;
use crate::routes::analyses::input::InputLimits;
use crate::routes::analyses::slots::AnalysisSlots;

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest accepted request body (analyses and restores have their own).
    pub max_body_bytes: usize,
    /// Server-side deadline of a request.
    pub request_timeout: Duration,
    pub rate_limits: crate::rate_limit::RateLimitSettings,
    /// Proxies whose `X-Forwarded-For` is believed (for per-IP limits).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub analyses: AnalysisLimits,
    /// How long a rotated client secret keeps working.
    pub client_secret_overlap: Duration,
    /// age recipients (X25519 `age1...`) a backup is encrypted to; without one, no backup leaves.
    pub backup_recipients: Vec<String>,
    /// Strict-Transport-Security max-age; 0 sends none.
    pub hsts_max_age_secs: u64,
}

/// Limits of the analysis endpoint, from the configuration.
#[derive(Debug, Clone)]
pub struct AnalysisLimits {
    pub input: InputLimits,
    /// Longest an analysis may wait for and use a worker.
    pub deadline: Duration,
    /// Longest the body of an analysis may take to arrive: a slow upload cannot hold a slot.
    pub body_deadline: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_body_bytes: 20 << 20,
            request_timeout: Duration::from_secs(30),
            rate_limits: Default::default(),
            trusted_proxies: Vec::new(),
            analyses: AnalysisLimits {
                input: InputLimits { max_images: 3, max_image_bytes: 8 << 20, max_body_bytes: 36 << 20 },
                deadline: Duration::from_secs(10),
                body_deadline: Duration::from_secs(20),
            },
            client_secret_overlap: Duration::from_secs(24 * 3600),
            backup_recipients: Vec::new(),
            hsts_max_age_secs: 31_536_000,
        }
    }
}

pub struct Inner {
    pub node: Arc<RaftNode>,
    pub identity: Arc<Identity>,
    pub analyses: Analyses,
    pub audit: Audit,
    pub settings: ApiSettings,
    /// HTTPS client trusting the cluster CA, for asking peers about themselves.
    pub peer_http: Option<reqwest::Client>,
    /// The cluster's public base URL (the load balancer's): the issuer, and the base of every
    /// advertised endpoint and `Location`, whichever node answers.
    pub public_url: String,
    pub rate_limits: Arc<RateLimits>,
    /// The model runtime and its bounded worker pool.
    pub engine: Arc<dermagate_inference::Engine>,
    /// Analysis requests allowed to hold their bodies in memory at once, shared fairly.
    pub slots: Arc<AnalysisSlots>,
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
    /// An absolute URL of `path` under the public URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }
}

/// RFC 3339 (UTC, milliseconds) of a unix time in milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
