//! Logs and metrics of the node: `tracing` with structured fields (text or JSON), and the
//! Prometheus recorder whose `/metrics` endpoint listens apart from the API.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Latency buckets (seconds) shared by every `_seconds` histogram.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub fn init_tracing(level: &str, json: bool) {
    let filter = EnvFilter::try_from_env("DERMAGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},openraft=warn,h2=warn,hyper=warn,tower=warn,rustls=warn")));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true).with_ansi(ansi);
    // try_init: a second initialisation (tests, subcommands) is harmless.
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let upkeep = handle.clone();
    // Process metrics (CPU seconds, RSS, open and max fds, threads) under the standard
    // `process_` names, refreshed with the histogram upkeep.
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
            process.collect();
        }
    });
    Ok(handle)
}

/// Serves `GET /metrics` in the Prometheus text format on `listener`.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let h = handle.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()) }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("metrics server")
}

/// Series of events that may not have happened yet, registered at zero so that dashboards and
/// alerts see "none" rather than "no data" (a missing series cannot be told from a broken one).
pub fn register_event_series() {
    const LABELLED: &[(&str, &str, &[&str])] = &[
        ("dermagate_http_rejected_total", "reason", &["auth", "rate_limit", "shed", "unavailable", "validation"]),
        ("dermagate_token_verifications_total", "outcome", &["ok", "revoked", "expired", "invalid"]),
        ("dermagate_revocations_total", "kind", &["token", "refresh_family", "sign_out", "client"]),
        ("dermagate_auth_failures_total", "reason", &["bad_credentials", "locked", "bad_api_key", "bad_client"]),
        ("dermagate_tokens_issued_total", "grant", &["password", "client_credentials"]),
        (
            "dermagate_inference_quality_rejections_total",
            "check",
            &["sharpness", "underexposure", "overexposure", "contrast", "resolution"],
        ),
        ("dermagate_analyses_total", "outcome", &["diagnosis", "no_valid_image", "replayed", "shed", "deadline"]),
    ];
    for (name, label, values) in LABELLED {
        for value in *values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
    for name in [
        "dermagate_lockouts_total",
        "dermagate_raft_snapshot_builds_total",
        "dermagate_raft_snapshot_installs_total",
        "dermagate_raft_leader_changes_total",
        "dermagate_inference_shed_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!("dermagate_inference_queue_depth").set(0.0);
}

pub fn describe_build() {
    let sha = env!("DERMAGATE_GIT_SHA");
    metrics::gauge!("dermagate_build_info", "version" => env!("CARGO_PKG_VERSION"), "git_sha" => sha).set(1.0);
}

pub fn log_bound(what: &str, addr: SocketAddr) {
    tracing::info!(listener = what, %addr, "listening");
}
