//! `dermagate serve`: start-up and orderly shutdown of one node.
//!
//! Start-up opens the encrypted store, starts Raft and its mTLS gRPC endpoint, bootstraps the
//! cluster if this is the bootstrap node, then serves the HTTPS API and `/metrics`.
//! Shutdown (SIGTERM/SIGINT) stops accepting connections, lets in-flight requests finish under a
//! grace timeout (Raft keeps running for them), stops Raft (a leader's followers elect a new
//! leader within the election timeout), then flushes storage and exits 0.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use axum_server::tls_rustls::RustlsConfig;
use dermagate_api::rate_limit::{Limit, RateLimitSettings, RateLimits};
use dermagate_api::routes::analyses::input::InputLimits;
use dermagate_api::routes::analyses::slots::AnalysisSlots;
use dermagate_api::{AnalysisLimits, ApiSettings, AppState, Inner};
use dermagate_domain::services::analyses::{Analyses, AnalysisSettings};
use dermagate_domain::services::audit::Audit;
use dermagate_domain::services::identity::{Identity, IdentitySettings};
use dermagate_domain::services::passwords::{PasswordSettings, Passwords};
use dermagate_domain::services::tokens::{TokenService, TokenSettings};
use dermagate_domain::services::Context as ServiceContext;
use dermagate_inference::decode::DecodeLimits;
use dermagate_inference::quality::QualityThresholds;
use dermagate_inference::{Engine, EngineSettings, Model};
use dermagate_raft::network::Network;
use dermagate_raft::{NodeInfo, PeerTls, RaftNode, RaftSettings};
use dermagate_storage::{Kek, Store};

use crate::config::NodeConfig;
use crate::{telemetry, tls};

/// Where image blobs are kept: files in the data directory unless configured otherwise.
fn blob_backend(config: &NodeConfig) -> anyhow::Result<Arc<dyn dermagate_storage::BlobBackend>> {
    let blobs = &config.storage.blobs;
    Ok(match (blobs.backend, &blobs.s3) {
        (crate::config::BlobBackendKind::S3, Some(s3)) => Arc::new(crate::blob_s3::S3Blobs::new(s3)?),
        _ => Arc::new(dermagate_storage::FileBlobs::new(&config.data_dir).context("opening the blob directory")?),
    })
}

/// Outgoing Raft connections leave from the address Raft listens on, when it is a specific one.
fn outgoing_ip(listen: SocketAddr) -> Option<std::net::IpAddr> {
    Some(listen.ip()).filter(|ip| !ip.is_unspecified())
}

pub fn raft_settings(config: &NodeConfig) -> RaftSettings {
    let r = &config.raft;
    RaftSettings {
        heartbeat_interval: Duration::from_millis(r.heartbeat_ms),
        election_timeout_min: Duration::from_millis(r.election_timeout_min_ms),
        election_timeout_max: Duration::from_millis(r.election_timeout_max_ms),
        write_timeout: Duration::from_millis(r.write_timeout_ms),
        snapshot_every: r.snapshot_every,
        keep_behind_snapshot: r.keep_behind_snapshot,
        staleness_bound: Duration::from_millis(r.staleness_bound_ms),
        ..RaftSettings::default()
    }
}

fn peer_tls(config: &NodeConfig) -> anyhow::Result<Option<PeerTls>> {
    if config.raft.insecure_plaintext {
        tracing::warn!(
            "!!! raft.insecure_plaintext is set: node-to-node traffic is NOT encrypted or authenticated. \
             Use this only for local experiments, never with real data. !!!"
        );
        return Ok(None);
    }
    let t = &config.tls;
    Ok(Some(PeerTls::from_files(&t.ca_file, &t.cert_file, &t.key_file).context("reading TLS files")?))
}

fn initial_members(config: &NodeConfig) -> BTreeMap<u64, NodeInfo> {
    config
        .cluster
        .initial_members
        .iter()
        .map(|m| (m.id, NodeInfo { raft_addr: m.raft_addr.clone(), api_url: m.api_url.clone() }))
        .collect()
}

/// Loads the model (the operator's, or the built-in demonstration model) and starts its pool.
/// A model whose manifest and graph disagree stops the node here, before it serves anything.
pub fn engine(config: &NodeConfig) -> anyhow::Result<Engine> {
    let i = &config.inference;
    let model = match &i.model_dir {
        Some(dir) => Model::load(dir).with_context(|| format!("loading the model in {}", dir.display()))?,
        None => Model::embedded_demo().context("loading the built-in demonstration model")?,
    };
    if model.manifest.demonstration {
        tracing::warn!(model = %model.manifest.name, "running a DEMONSTRATION model: not for clinical use");
    }
    let defaults = EngineSettings::default();
    let workers = if i.workers == 0 { defaults.workers } else { i.workers };
    let min = model.manifest.min_resolution;
    let q = &i.quality;
    let settings = EngineSettings {
        decode: DecodeLimits {
            max_bytes: i.max_image_bytes,
            max_pixels: i.max_image_pixels,
            min_width: min.width,
            min_height: min.height,
        },
        quality: QualityThresholds {
            version: q.version.clone(),
            min_sharpness: q.min_sharpness,
            max_dark_fraction: q.max_dark_fraction,
            max_bright_fraction: q.max_bright_fraction,
            min_contrast: q.min_contrast,
            min_width: min.width,
            min_height: min.height,
            working_side: q.working_side,
            domain: dermagate_inference::domain::DomainThresholds {
                min_skin_fraction: q.min_skin_fraction,
                min_texture_correlation: q.min_texture_correlation,
            },
        },
        workers,
        queue: if i.queue_capacity == 0 { workers * 8 } else { i.queue_capacity },
        stored_max_side: i.stored_image_max_side,
    };
    tracing::info!(model = %model.manifest.name, version = %model.manifest.version, workers, queue = settings.queue, "model loaded");
    Ok(Engine::new(model, settings))
}

/// The domain services of this node, over its store (state), its Raft node (replicator and
/// blob store) and the identity settings of the configuration.
pub fn services(
    config: &NodeConfig,
    node: Arc<RaftNode>,
    store: Arc<Store>,
) -> anyhow::Result<(Arc<Identity>, Analyses, Audit)> {
    let a = &config.auth;
    let ctx = ServiceContext { state: store, replicator: node.clone(), blobs: node };
    let tokens = TokenService::new(
        ctx.state.clone(),
        TokenSettings {
            // The issuer is cluster-wide: every node issues and accepts the same value, the
            // public URL the discovery document is served from (RFC 8414 §3.3).
            issuer: a.issuer.clone().unwrap_or_else(|| config.api.public_url.trim_end_matches('/').to_string()),
            audience: a.audience.clone(),
            access_ttl: Duration::from_secs(a.access_token_ttl_secs),
            leeway: Duration::from_secs(a.clock_leeway_secs),
        },
    );
    let passwords = Passwords::new(&PasswordSettings {
        memory_kib: a.argon2_memory_kib,
        iterations: a.argon2_iterations,
        parallelism: 1,
        min_length: a.password_min_length,
    })
    .map_err(|e| anyhow!(e))?;
    let identity = Arc::new(Identity {
        ctx: ctx.clone(),
        tokens: Arc::new(tokens),
        passwords,
        settings: IdentitySettings { throttle: a.throttle.policy() },
    });
    let i = &config.inference;
    // The holder of a key has finished or failed by then: the analysis deadline, then one
    // replicated write (its own timeout), with a second of margin.
    let lease = Duration::from_millis(i.deadline_ms + config.raft.write_timeout_ms + 1000);
    let analyses = Analyses {
        ctx: ctx.clone(),
        settings: AnalysisSettings {
            idempotency_ttl_ms: (i.idempotency_ttl_secs * 1000) as i64,
            idempotency_lease_ms: lease.as_millis() as i64,
        },
    };
    Ok((identity, analyses, Audit { ctx }))
}

fn app_state(config: &NodeConfig, node: Arc<RaftNode>, store: Arc<Store>, engine: Engine) -> anyhow::Result<AppState> {
    let (identity, analyses, audit) = services(config, node.clone(), store)?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&config.tls.ca_file)?).context("CA certificate")?;
    let peer_http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .local_address(outgoing_ip(config.api.listen))
        .timeout(Duration::from_secs(2))
        .build()
        .context("peer HTTP client")?;
    let r = &config.auth.rate_limit;
    let rate_limits = RateLimitSettings {
        per_ip_sign_in: Limit { per_second: r.sign_in_per_ip_per_second, burst: r.sign_in_per_ip_burst },
        per_principal: Limit { per_second: r.per_principal_per_second, burst: r.per_principal_burst },
    };
    let i = &config.inference;
    // What the pool holds (running + queued), plus one body being read per worker.
    let capacity = 2 * engine.settings().workers + engine.settings().queue;
    Ok(AppState(Arc::new(Inner {
        node,
        identity,
        analyses,
        audit,
        settings: ApiSettings {
            max_body_bytes: config.api.max_body_bytes,
            request_timeout: Duration::from_millis(config.api.request_timeout_ms),
            rate_limits,
            trusted_proxies: config.api.trusted_proxies.clone(),
            analyses: AnalysisLimits {
                input: InputLimits {
                    max_images: i.max_images,
                    max_image_bytes: i.max_image_bytes,
                    max_body_bytes: i.max_body_bytes,
                },
                deadline: Duration::from_millis(i.deadline_ms),
                body_deadline: Duration::from_millis(i.body_deadline_ms),
            },
            client_secret_overlap: Duration::from_secs(config.auth.client_secret_overlap_secs),
            backup_recipients: config.backup.recipients.clone(),
            hsts_max_age_secs: config.api.hsts_max_age_secs,
        },
        peer_http: Some(peer_http),
        public_url: config.api.public_url.trim_end_matches('/').to_string(),
        rate_limits: RateLimits::new(&rate_limits),
        slots: AnalysisSlots::new(capacity, i.per_tenant_slots),
        engine: Arc::new(engine),
    })))
}

/// On the bootstrap node: once a leader exists, record the cluster secret and create the
/// operator organisation, the initial administrator and the first signing key (idempotent;
/// retried until it succeeds).
fn spawn_bootstrap(config: &NodeConfig, state: AppState) -> anyhow::Result<()> {
    if !config.cluster.bootstrap {
        return Ok(());
    }
    let admin = match &config.cluster.bootstrap_admin {
        Some(a) => {
            let password = std::fs::read_to_string(&a.password_file).context("reading the bootstrap admin password")?;
            Some((a.username.clone(), password.trim().to_string()))
        }
        None => None,
    };
    tokio::spawn(async move {
        loop {
            if state.node.wait_for_leader(Duration::from_secs(5)).await.is_some() {
                match dermagate_domain::services::bootstrap::ensure(&state.identity, admin.clone()).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "bootstrap not complete yet; retrying"),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok(())
}

/// Housekeeping on the leader: signing-key rotation and purges of expired records.
fn spawn_maintenance(state: AppState, rotate_after: Duration) {
    tokio::spawn(async move {
        let mut maintenance = dermagate_domain::services::maintenance::Maintenance::new(rotate_after);
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            if state.node.status().role != "leader" {
                continue;
            }
            if let Err(e) = maintenance.tick(&state.identity).await {
                tracing::warn!(error = %e, "maintenance round failed; retrying later");
            }
        }
    });
}

/// Reads the free disk space often enough that a filling disk is noticed before it is full.
fn spawn_disk_watch(store: Arc<Store>) {
    tokio::spawn(async move {
        loop {
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.refresh_disk()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// Resolves if the Raft core stops without being asked to (a fatal storage error).
async fn raft_stopped(node: Arc<RaftNode>) {
    let mut rx = node.raft().metrics();
    let _ = rx.wait_for(|m| m.state == openraft::ServerState::Shutdown).await;
}

fn spawn_storage_metrics(store: Arc<Store>, cert: std::path::PathBuf) {
    if let Ok(not_after) = tls::not_after(&cert) {
        metrics::gauge!("dermagate_tls_cert_not_after_seconds", "cert" => "node").set(not_after as f64);
    }
    tokio::spawn(async move {
        loop {
            let s = store.clone();
            if let Ok((size, stalled)) =
                tokio::task::spawn_blocking(move || (s.size_on_disk(), s.write_stalled())).await
            {
                metrics::gauge!("dermagate_storage_size_bytes").set(size as f64);
                metrics::gauge!("dermagate_storage_write_stall").set(if stalled { 1.0 } else { 0.0 });
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
}

pub async fn run(config: NodeConfig, engine: Engine, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    telemetry::describe_build();
    tracing::info!(node_id = config.node_id, version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), "starting");
    let api_tls = tls::api_server_config(&config.tls.cert_file, &config.tls.key_file)?;
    let kek = Kek::from_file(&config.storage.kek_file)?;
    let data_dir = config.data_dir.clone();
    let (store, log, sm) = tokio::task::spawn_blocking(move || dermagate_storage::open(&data_dir, &kek)).await??;
    store.disk().set_reserve(config.storage.min_free_mb << 20);
    spawn_disk_watch(store.clone());

    let settings = raft_settings(&config);
    let peer_tls = peer_tls(&config)?;
    let network = Network::new(peer_tls.clone(), &settings, outgoing_ip(config.raft.listen));
    let blobs = Arc::new(dermagate_storage::BlobStore::new(store.clone(), blob_backend(&config)?));
    tracing::info!(backend = %blobs.backend().describe(), "image blob store");
    let (blob_work, blob_work_rx) = tokio::sync::mpsc::unbounded_channel();
    let sm = sm.with_blobs(blobs.clone(), blob_work);
    let node = RaftNode::start(config.node_id, log, sm, blobs, network, settings).await.map_err(|e| anyhow!(e))?;
    tokio::spawn(dermagate_raft::blobs::keep(node.clone(), blob_work_rx));
    let (raft_stop, raft_stop_rx) = tokio::sync::oneshot::channel();
    let stop = async move {
        let _ = raft_stop_rx.await;
    };
    let raft_task = dermagate_raft::service::spawn_endpoint(config.raft.listen, node.clone(), peer_tls.as_ref(), stop)
        .map_err(|e| anyhow!(e))?;
    telemetry::log_bound("raft", config.raft.listen);
    if config.cluster.bootstrap && node.initialize(initial_members(&config)).await.map_err(|e| anyhow!(e))? {
        tracing::info!(members = config.cluster.initial_members.len(), "cluster initialised");
    }
    tokio::spawn(dermagate_raft::observe::publish_metrics(node.clone()));
    tokio::spawn(dermagate_raft::election::drive(node.clone()));
    tokio::spawn(dermagate_raft::freshness::keep_fresh(node.clone()));
    spawn_storage_metrics(store.clone(), config.tls.cert_file.clone());

    let state = app_state(&config, node.clone(), store.clone(), engine)?;
    spawn_bootstrap(&config, state.clone())?;
    spawn_maintenance(state.clone(), Duration::from_secs(config.auth.signing_key_rotation_days * 86_400));
    let app = dermagate_api::router(state);
    let handle = axum_server::Handle::<SocketAddr>::new();
    let api = axum_server::bind_rustls(config.api.listen, RustlsConfig::from_config(api_tls))
        .handle(handle.clone())
        .serve(app.into_make_service_with_connect_info::<SocketAddr>());
    let api_task = tokio::spawn(api);
    match handle.listening().await {
        Some(addr) => telemetry::log_bound("api", addr),
        None => return Err(anyhow!("cannot bind api.listen {}", config.api.listen)),
    }
    tracing::info!(node_id = config.node_id, "node started");

    tokio::select! {
        () = shutdown => {}
        () = raft_stopped(node.clone()) => {
            // A storage failure stops the Raft core for good; serving on without it would only
            // fail closed forever. Exit non-zero so the supervisor (systemd, Kubernetes, the
            // chaos harness) restarts the node on its data, which then catches up.
            handle.shutdown();
            let _ = tokio::task::spawn_blocking(move || store.flush()).await;
            return Err(anyhow!("the Raft core stopped on its own (see the error logged before); exiting"));
        }
    }
    tracing::info!(grace_ms = config.api.shutdown_grace_ms, "shutdown requested: draining requests");
    // A leader stops heartbeating, so the others elect a successor while requests drain here.
    node.step_aside();
    handle.graceful_shutdown(Some(Duration::from_millis(config.api.shutdown_grace_ms)));
    match api_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "api server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "api server task failed"),
        Ok(Ok(())) => {}
    }
    tracing::info!(was_leader = node.status().role == "leader", "stopping raft");
    node.shutdown().await;
    let _ = raft_stop.send(());
    let _ = raft_task.await;
    tokio::task::spawn_blocking(move || store.flush()).await??;
    tracing::info!("stopped cleanly");
    Ok(())
}
