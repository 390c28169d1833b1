//! The whole API in one process, for router tests (`tower::ServiceExt::oneshot`): a real
//! single-node Raft over a real RocksDB store in a temporary directory, the real domain services
//! and the demonstration model, bootstrapped with a platform administrator. No socket, no TLS:
//! what is tested is the HTTP surface (validation, error mapping, headers, authorisation).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use axum::body::Body;
use axum::http::{Request, Response};
use dermagate_api::rate_limit::RateLimits;
use dermagate_api::routes::analyses::slots::AnalysisSlots;
use dermagate_api::{ApiSettings, AppState, Inner};
use dermagate_domain::services::analyses::{Analyses, AnalysisSettings};
use dermagate_domain::services::audit::Audit;
use dermagate_domain::services::identity::{Identity, IdentitySettings};
use dermagate_domain::services::passwords::{PasswordSettings, Passwords};
use dermagate_domain::services::tokens::{TokenService, TokenSettings};
use dermagate_domain::services::Context as Services;
use dermagate_raft::network::Network;
use dermagate_raft::{NodeInfo, RaftNode, RaftSettings};
use tower::ServiceExt;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "in-process-admin-password-7";
pub const PUBLIC_URL: &str = "https://dermagate.test";

pub struct TestApp {
    pub state: AppState,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts a one-node cluster and the API over it, with `settings` for the HTTP surface.
    pub async fn start(settings: ApiSettings) -> anyhow::Result<TestApp> {
        let dir = tempfile::tempdir()?;
        let kek = dermagate_storage::Kek::from_hex(&dermagate_storage::Kek::generate_hex())?;
        let data = dir.path().join("data");
        let (store, log, sm) = dermagate_storage::open(&data, &kek)?;
        let backend = Arc::new(dermagate_storage::FileBlobs::new(&data)?);
        let blobs = Arc::new(dermagate_storage::BlobStore::new(store.clone(), backend));
        let (work, work_rx) = tokio::sync::mpsc::unbounded_channel();
        let sm = sm.with_blobs(blobs.clone(), work);
        let raft_settings = RaftSettings::default();
        let network = Network::new(None, &raft_settings, None);
        let node = RaftNode::start(1, log, sm, blobs, network, raft_settings).await.map_err(|e| anyhow!(e))?;
        tokio::spawn(dermagate_raft::blobs::keep(node.clone(), work_rx));
        let me = NodeInfo { raft_addr: "127.0.0.1:9".into(), api_url: PUBLIC_URL.into() };
        node.initialize(BTreeMap::from([(1, me)])).await.map_err(|e| anyhow!(e))?;
        tokio::spawn(dermagate_raft::election::drive(node.clone()));
        tokio::spawn(dermagate_raft::freshness::keep_fresh(node.clone()));
        node.wait_for_leader(Duration::from_secs(10)).await.context("no leader")?;
        // Serving starts once the node proves itself current (as `/readyz` would say).
        let ready_by = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Err(e) = node.readiness() {
            anyhow::ensure!(tokio::time::Instant::now() < ready_by, "not ready: {}", e.reason);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let ctx = Services { state: store.clone(), replicator: node.clone(), blobs: node.clone() };
        let token_settings = TokenSettings { issuer: PUBLIC_URL.into(), ..TokenSettings::default() };
        let tokens = Arc::new(TokenService::new(store.clone(), token_settings));
        // Cheap hashing: the cost parameters are tested elsewhere.
        let password_settings = PasswordSettings { memory_kib: 1024, iterations: 1, ..PasswordSettings::default() };
        let passwords = Passwords::new(&password_settings).map_err(|e| anyhow!(e))?;
        let identity = Arc::new(Identity {
            ctx: ctx.clone(),
            tokens,
            passwords,
            settings: IdentitySettings { throttle: Default::default() },
        });
        let analyses = Analyses {
            ctx: ctx.clone(),
            settings: AnalysisSettings { idempotency_ttl_ms: 86_400_000, idempotency_lease_ms: 20_000 },
        };
        let admin = Some((ADMIN.to_string(), ADMIN_PASSWORD.to_string()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Err(e) = dermagate_domain::services::bootstrap::ensure(&identity, admin.clone()).await {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "bootstrap: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let engine = dermagate_inference::Engine::new(
            dermagate_inference::Model::embedded_demo()?,
            dermagate_inference::EngineSettings::default(),
        );
        let slots = AnalysisSlots::new(8, 0);
        let state = AppState(Arc::new(Inner {
            node,
            identity,
            analyses,
            audit: Audit { ctx },
            rate_limits: RateLimits::new(&settings.rate_limits),
            settings,
            peer_http: None,
            public_url: PUBLIC_URL.into(),
            engine: Arc::new(engine),
            slots,
        }));
        let router = dermagate_api::router(state.clone());
        Ok(TestApp { state, router, _dir: dir })
    }

    /// Sends one request through the whole router.
    pub async fn call(&self, req: Request<Body>) -> Response<Body> {
        self.router.clone().oneshot(req).await.expect("the router is infallible")
    }

    /// Sends a request and reads its JSON answer (`Null` for an empty or non-JSON body).
    pub async fn json(&self, req: Request<Body>) -> (u16, axum::http::HeaderMap, serde_json::Value) {
        let resp = self.call(req).await;
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
        (parts.status.as_u16(), parts.headers, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// Signs in and returns the access token.
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({ "username": username, "password": password });
        let (status, _, v) = self.json(post_json("/v1/auth/login", None, &body)).await;
        anyhow::ensure!(status == 200, "sign-in of {username}: {status} {v}");
        v["access_token"].as_str().map(String::from).context("access_token")
    }
}

/// A JSON request with an optional bearer token.
pub fn post_json(path: &str, token: Option<&str>, body: &serde_json::Value) -> Request<Body> {
    with_json("POST", path, token, body)
}

pub fn with_json(method: &str, path: &str, token: Option<&str>, body: &serde_json::Value) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).expect("request")
}

pub fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::empty()).expect("request")
}
