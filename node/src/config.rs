//! The node's configuration: one versioned TOML file, unknown keys refused, every key
//! overridable by a `DERMAGATE_*` environment variable (`DERMAGATE_API__LISTEN` for `api.listen`,
//! `__` separating sections). Secrets are given as files (`*_file`). Everything is validated
//! before any port is bound; a bad configuration exits with code 64 naming the bad key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The only configuration format version this binary reads.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub version: u32,
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub api: ApiConfig,
    pub raft: RaftConfig,
    pub tls: TlsConfig,
    pub storage: StorageConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub inference: InferenceConfig,
    #[serde(default)]
    pub backup: BackupConfig,
}

/// The model, its worker pool and the device's input limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// A directory with `model.onnx` and `manifest.json`; unset runs the built-in demonstration
    /// model (not for clinical use).
    pub model_dir: Option<PathBuf>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Analyses that may wait for a worker; beyond this the node answers 503 at once.
    pub queue_capacity: usize,
    /// Deadline of one analysis, queueing included.
    pub deadline_ms: u64,
    pub max_images: usize,
    pub max_image_bytes: usize,
    pub max_image_pixels: u64,
    /// Largest body of `POST /v1/analyses` (base64 images included).
    pub max_body_bytes: usize,
    pub idempotency_ttl_secs: u64,
    /// Longest side of the stored copy of an image (organisations that opted in).
    pub stored_image_max_side: u32,
    /// Longest the body of an analysis may take to arrive (a slow upload frees its slot).
    pub body_deadline_ms: u64,
    /// Analysis slots one organisation may hold at once; 0: half of the node's.
    pub per_tenant_slots: usize,
    pub quality: QualityConfig,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            model_dir: None,
            workers: 0,
            queue_capacity: 0,
            deadline_ms: 10_000,
            max_images: 3,
            max_image_bytes: 8 << 20,
            max_image_pixels: 40_000_000,
            max_body_bytes: 36 << 20,
            idempotency_ttl_secs: 24 * 3600,
            stored_image_max_side: 1024,
            body_deadline_ms: 20_000,
            per_tenant_slots: 0,
            quality: QualityConfig::default(),
        }
    }
}

/// Thresholds of the image-quality gate; `version` is stamped into every verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    pub version: String,
    pub min_sharpness: f64,
    pub max_dark_fraction: f64,
    pub max_bright_fraction: f64,
    pub min_contrast: f64,
    /// Longest side of the working image the measures are taken on.
    pub working_side: u32,
    /// Dermatological-domain check: minimum share of skin-coloured pixels.
    pub min_skin_fraction: f64,
    /// Dermatological-domain check: minimum lag-1 autocorrelation of luminance.
    pub min_texture_correlation: f64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        let t = dermagate_inference::quality::QualityThresholds::default();
        QualityConfig {
            version: t.version,
            min_sharpness: t.min_sharpness,
            max_dark_fraction: t.max_dark_fraction,
            max_bright_fraction: t.max_bright_fraction,
            min_contrast: t.min_contrast,
            working_side: t.working_side,
            min_skin_fraction: t.domain.min_skin_fraction,
            min_texture_correlation: t.domain.min_texture_correlation,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// The cluster's public base URL (the load balancer's, or the one node clients use): the
    /// token issuer and the base of every advertised endpoint and `Location`. The same on
    /// every node.
    pub public_url: String,
    /// This node's own URL, for peers and operators (`cluster.initial_members[].api_url`);
    /// defaults to `public_url`.
    #[serde(default)]
    pub advertise_url: Option<String>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// How long in-flight requests may finish after SIGTERM.
    #[serde(default = "default_grace")]
    pub shutdown_grace_ms: u64,
    /// Load balancers whose `X-Forwarded-For` header names the real client (per-IP limits).
    #[serde(default = "default_trusted_proxies")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Strict-Transport-Security max-age in seconds (0 sends none).
    #[serde(default = "default_hsts")]
    pub hsts_max_age_secs: u64,
}

fn default_hsts() -> u64 {
    31_536_000
}

/// Backups leave the cluster only encrypted to these age recipients (X25519, `age1...`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftConfig {
    pub listen: SocketAddr,
    /// host:port peers use to reach this node's Raft endpoint.
    pub advertise: String,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_election_min")]
    pub election_timeout_min_ms: u64,
    #[serde(default = "default_election_max")]
    pub election_timeout_max_ms: u64,
    #[serde(default = "default_staleness")]
    pub staleness_bound_ms: u64,
    #[serde(default = "default_write_timeout")]
    pub write_timeout_ms: u64,
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    #[serde(default = "default_keep_behind")]
    pub keep_behind_snapshot: u64,
    /// Plaintext gRPC between nodes. Only for local experiments; logged as a loud warning.
    #[serde(default)]
    pub insecure_plaintext: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The key-encryption key (64 hex characters) that wraps the node's data keys.
    pub kek_file: PathBuf,
    /// Space (MiB) that must stay free on the data directory's filesystem: below it the node
    /// refuses writes (507) and declines replicated entries until space is freed. 0 disables.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
    /// Where image blobs (stored copies of analysed images) are kept.
    #[serde(default)]
    pub blobs: BlobsConfig,
}

/// The blob backend: `files` (each node's data directory, replicated by the nodes themselves;
/// the default) or `s3` (one S3-compatible bucket shared by every node).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobsConfig {
    #[serde(default)]
    pub backend: BlobBackendKind,
    pub s3: Option<S3Config>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobBackendKind {
    #[default]
    Files,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// An S3-compatible endpoint (`https://minio.internal:9000`); unset means AWS.
    pub endpoint: Option<String>,
    /// Key prefix of the blobs in the bucket.
    #[serde(default = "default_s3_prefix")]
    pub prefix: String,
    pub access_key_id_file: PathBuf,
    pub secret_access_key_file: PathBuf,
    /// Plain HTTP to the endpoint (only for a store on the same host or a test).
    #[serde(default)]
    pub allow_http: bool,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}
fn default_s3_prefix() -> String {
    "dermagate/blobs".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Plain-HTTP Prometheus endpoint; loopback by default so it is not exposed with the API.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: Some(SocketAddr::from(([127, 0, 0, 1], 9100))) }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node creates the cluster on first start (exactly one node should have it).
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default)]
    pub initial_members: Vec<MemberConfig>,
    pub bootstrap_admin: Option<BootstrapAdmin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u64,
    pub raft_addr: String,
    pub api_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAdmin {
    pub username: String,
    pub password_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub issuer: Option<String>,
    #[serde(default = "default_audience")]
    pub audience: String,
    #[serde(default = "default_access_ttl")]
    pub access_token_ttl_secs: u64,
    #[serde(default = "default_leeway")]
    pub clock_leeway_secs: u64,
    #[serde(default = "default_argon_memory")]
    pub argon2_memory_kib: u32,
    #[serde(default = "default_argon_iterations")]
    pub argon2_iterations: u32,
    #[serde(default = "default_password_min")]
    pub password_min_length: usize,
    /// Rotate the token-signing key when the active one is older than this.
    #[serde(default = "default_key_rotation_days")]
    pub signing_key_rotation_days: u64,
    /// How long a rotated client secret keeps working.
    #[serde(default = "default_secret_overlap")]
    pub client_secret_overlap_secs: u64,
    #[serde(default)]
    pub throttle: ThrottleConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// Sign-in throttling (decided in the replicated state machine): failures per (username, source
/// address) make that source wait, growing waits that expire by themselves; a much higher
/// per-username threshold caps distributed guessing with a short wait. Nothing is permanent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    pub per_source_failures: u32,
    pub per_user_failures: u32,
    pub base_wait_secs: u64,
    pub max_wait_secs: u64,
    pub per_user_max_wait_secs: u64,
    pub forget_after_secs: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        let d = dermagate_domain::records::ThrottlePolicy::default();
        ThrottleConfig {
            per_source_failures: d.per_source_failures,
            per_user_failures: d.per_user_failures,
            base_wait_secs: (d.base_wait_ms / 1000) as u64,
            max_wait_secs: (d.max_wait_ms / 1000) as u64,
            per_user_max_wait_secs: (d.per_user_max_wait_ms / 1000) as u64,
            forget_after_secs: (d.forget_after_ms / 1000) as u64,
        }
    }
}

impl ThrottleConfig {
    pub fn policy(&self) -> dermagate_domain::records::ThrottlePolicy {
        dermagate_domain::records::ThrottlePolicy {
            per_source_failures: self.per_source_failures,
            per_user_failures: self.per_user_failures,
            base_wait_ms: (self.base_wait_secs * 1000) as i64,
            max_wait_ms: (self.max_wait_secs * 1000) as i64,
            per_user_max_wait_ms: (self.per_user_max_wait_secs * 1000) as i64,
            forget_after_ms: (self.forget_after_secs * 1000) as i64,
        }
    }
}

/// Requests per second and burst; a rate of 0 disables the limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub sign_in_per_ip_per_second: u32,
    pub sign_in_per_ip_burst: u32,
    pub per_principal_per_second: u32,
    pub per_principal_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            sign_in_per_ip_per_second: 10,
            sign_in_per_ip_burst: 30,
            per_principal_per_second: 200,
            per_principal_burst: 400,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: None,
            audience: default_audience(),
            access_token_ttl_secs: default_access_ttl(),
            clock_leeway_secs: default_leeway(),
            argon2_memory_kib: default_argon_memory(),
            argon2_iterations: default_argon_iterations(),
            password_min_length: default_password_min(),
            signing_key_rotation_days: default_key_rotation_days(),
            client_secret_overlap_secs: default_secret_overlap(),
            throttle: ThrottleConfig::default(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: default_log_level(), json: false }
    }
}

fn default_max_body() -> usize {
    20 << 20
}
fn default_request_timeout() -> u64 {
    30_000
}
fn default_grace() -> u64 {
    10_000
}
fn default_trusted_proxies() -> Vec<std::net::IpAddr> {
    vec![std::net::IpAddr::from([127, 0, 0, 1]), std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)]
}
fn default_heartbeat() -> u64 {
    40
}
fn default_election_min() -> u64 {
    120
}
fn default_election_max() -> u64 {
    240
}
fn default_staleness() -> u64 {
    1_000
}
fn default_min_free_mb() -> u64 {
    256
}
fn default_write_timeout() -> u64 {
    5_000
}
fn default_snapshot_every() -> u64 {
    5_000
}
fn default_keep_behind() -> u64 {
    1_000
}
fn default_audience() -> String {
    "dermagate-api".into()
}
fn default_access_ttl() -> u64 {
    900
}
fn default_leeway() -> u64 {
    30
}
fn default_argon_memory() -> u32 {
    19_456
}
fn default_argon_iterations() -> u32 {
    2
}
fn default_password_min() -> usize {
    12
}
fn default_key_rotation_days() -> u64 {
    30
}
fn default_secret_overlap() -> u64 {
    24 * 3600
}
fn default_log_level() -> String {
    "info".into()
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

/// Only variables that name a configuration key are overrides; other `DERMAGATE_*` variables
/// (a test harness's, say) are not configuration and are left alone.
fn is_config_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    const TOP: [&str; 3] = ["version", "node_id", "data_dir"];
    const SECTIONS: [&str; 10] =
        ["api", "raft", "tls", "storage", "metrics", "cluster", "auth", "log", "inference", "backup"];
    TOP.contains(&key.as_str()) || SECTIONS.iter().any(|s| key.starts_with(&format!("{s}__")))
}

impl NodeConfig {
    /// Reads `path`, applies `DERMAGATE_*` overrides and validates the result.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        if !path.is_file() {
            return Err(bad("--config", format!("{} is not a readable file", path.display())));
        }
        let config: NodeConfig = Figment::new()
            .merge(Toml::file(path))
            .merge(Env::prefixed("DERMAGATE_").filter(|k| is_config_key(k.as_str())).split("__"))
            .extract()
            .map_err(|e| {
                let key = e.path.join(".");
                let key = if key.is_empty() { "(file)".to_string() } else { key };
                bad(&key, e.kind.to_string())
            })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version != CONFIG_VERSION {
            return Err(bad(
                "version",
                format!("unsupported version {} (this binary reads {CONFIG_VERSION})", self.version),
            ));
        }
        if self.node_id == 0 {
            return Err(bad("node_id", "must be a positive integer"));
        }
        if !self.api.public_url.starts_with("https://") {
            return Err(bad("api.public_url", "must be an https:// URL"));
        }
        if !self.raft.advertise.contains(':') {
            return Err(bad("raft.advertise", "must be host:port"));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.heartbeat_ms * 3 > r.election_timeout_min_ms {
            return Err(bad(
                "raft.heartbeat_ms",
                "must be positive and at most a third of raft.election_timeout_min_ms",
            ));
        }
        if r.election_timeout_min_ms >= r.election_timeout_max_ms {
            return Err(bad("raft.election_timeout_max_ms", "must be greater than raft.election_timeout_min_ms"));
        }
        if r.staleness_bound_ms < r.election_timeout_max_ms {
            return Err(bad("raft.staleness_bound_ms", "must be at least raft.election_timeout_max_ms"));
        }
        if r.snapshot_every == 0 {
            return Err(bad("raft.snapshot_every", "must be positive"));
        }
        for (key, file) in [
            ("tls.ca_file", &self.tls.ca_file),
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
            ("storage.kek_file", &self.storage.kek_file),
        ] {
            if !file.is_file() {
                return Err(bad(key, format!("{} is not a readable file", file.display())));
            }
        }
        if self.cluster.bootstrap {
            if !self.cluster.initial_members.iter().any(|m| m.id == self.node_id) {
                return Err(bad("cluster.initial_members", "a bootstrap node must list itself"));
            }
            if let Some(admin) = &self.cluster.bootstrap_admin {
                if !admin.password_file.is_file() {
                    return Err(bad("cluster.bootstrap_admin.password_file", "is not a readable file"));
                }
            }
        }
        if self.storage.blobs.backend == BlobBackendKind::S3 {
            let Some(s3) = &self.storage.blobs.s3 else {
                return Err(bad("storage.blobs.s3", "the s3 backend needs a [storage.blobs.s3] section"));
            };
            if s3.bucket.trim().is_empty() {
                return Err(bad("storage.blobs.s3.bucket", "must name a bucket"));
            }
            for (key, file) in [
                ("storage.blobs.s3.access_key_id_file", &s3.access_key_id_file),
                ("storage.blobs.s3.secret_access_key_file", &s3.secret_access_key_file),
            ] {
                if !file.is_file() {
                    return Err(bad(key, format!("{} is not a readable file", file.display())));
                }
            }
            if let Some(e) = &s3.endpoint {
                if !(e.starts_with("https://") || (s3.allow_http && e.starts_with("http://"))) {
                    return Err(bad(
                        "storage.blobs.s3.endpoint",
                        "must be an https:// URL (or http:// with allow_http)",
                    ));
                }
            }
        }
        if self.auth.access_token_ttl_secs == 0 || self.auth.access_token_ttl_secs > 24 * 3600 {
            return Err(bad("auth.access_token_ttl_secs", "must be between 1 and 86400"));
        }
        if self.auth.throttle.per_source_failures == 0 || self.auth.throttle.per_user_failures == 0 {
            return Err(bad("auth.throttle", "failure thresholds must be positive"));
        }
        if self.auth.signing_key_rotation_days == 0 {
            return Err(bad("auth.signing_key_rotation_days", "must be positive"));
        }
        let i = &self.inference;
        if let Some(dir) = &i.model_dir {
            if !dir.join("model.onnx").is_file() || !dir.join("manifest.json").is_file() {
                return Err(bad(
                    "inference.model_dir",
                    format!("{} must hold model.onnx and manifest.json", dir.display()),
                ));
            }
        }
        if i.max_images == 0 || i.max_images > 16 {
            return Err(bad("inference.max_images", "must be between 1 and 16"));
        }
        if i.deadline_ms == 0 || i.deadline_ms >= self.api.request_timeout_ms {
            return Err(bad("inference.deadline_ms", "must be positive and below api.request_timeout_ms"));
        }
        if i.max_image_bytes == 0 || i.max_body_bytes < i.max_image_bytes {
            return Err(bad("inference.max_body_bytes", "must be at least inference.max_image_bytes"));
        }
        let q = &i.quality;
        if q.version.trim().is_empty() {
            return Err(bad("inference.quality.version", "must name the thresholds' version"));
        }
        if q.min_sharpness <= 0.0 || q.min_contrast <= 0.0 {
            return Err(bad("inference.quality.min_sharpness", "thresholds must be positive"));
        }
        if !(0.0..=1.0).contains(&q.max_dark_fraction) || !(0.0..=1.0).contains(&q.max_bright_fraction) {
            return Err(bad("inference.quality.max_dark_fraction", "fractions must be between 0 and 1"));
        }
        if self.auth.argon2_memory_kib < 8 * 1024 || self.auth.argon2_iterations == 0 {
            return Err(bad("auth.argon2_memory_kib", "argon2id needs at least 8192 KiB and one iteration"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in `docs/configuration.md` is what operators copy: every key in it must be
    /// one this binary reads (unknown keys are refused at start-up), with a value of the right
    /// type, and its values must be the defaults it claims to show.
    #[test]
    fn the_documented_configuration_is_read_by_this_binary() {
        let doc = include_str!("../../docs/configuration.md");
        let block = doc.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a toml block");
        let config: NodeConfig =
            Figment::new().merge(Toml::string(block)).extract().expect("the documented block parses");
        assert_eq!(config.inference.quality.min_sharpness, QualityConfig::default().min_sharpness);
        assert_eq!(config.inference.quality.version, QualityConfig::default().version);
        assert_eq!(config.inference.quality.min_skin_fraction, QualityConfig::default().min_skin_fraction);
        assert_eq!(config.auth.throttle.per_source_failures, ThrottleConfig::default().per_source_failures);
        assert_eq!(config.auth.throttle.base_wait_secs, ThrottleConfig::default().base_wait_secs);
        assert_eq!(config.inference.body_deadline_ms, InferenceConfig::default().body_deadline_ms);
        assert_eq!(config.api.hsts_max_age_secs, default_hsts());
        assert_eq!(config.raft.snapshot_every, default_snapshot_every());
    }
}
