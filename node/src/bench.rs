//! `dermagate bench writes`: replicated-write throughput and latency against a running local
//! cluster at several client counts, and the write-unavailability window after a leader is
//! SIGKILLed. It prints figures; it asserts nothing (the machine is shared and noisy).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use std::sync::Mutex;

use crate::cluster_file::ClusterFile;
use crate::{local, process};

struct Target {
    client: reqwest::Client,
    token: String,
    urls: Vec<String>,
}

pub(crate) async fn login(client: &reqwest::Client, file: &ClusterFile) -> anyhow::Result<String> {
    let body = serde_json::json!({ "username": file.admin.username, "password": file.admin_password()? });
    let resp = client.post(format!("{}/v1/auth/login", file.nodes[0].api_url)).json(&body).send().await?;
    if !resp.status().is_success() {
        bail!("admin sign-in failed: {}", resp.status());
    }
    let v: serde_json::Value = resp.json().await?;
    v["access_token"].as_str().map(String::from).ok_or_else(|| anyhow!("no access_token in the login response"))
}

pub(crate) fn bench_client(file: &ClusterFile) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&file.ca_cert)?)?;
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .http1_only()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// One small replicated write: creating an organisation.
async fn write_once(t: &Target, url: &str, n: u64) -> bool {
    let body = serde_json::json!({
        "name": format!("bench-org-{n}"),
        "attestation": { "contractReference": format!("bench-{n}"), "attestedBy": "bench" },
    });
    t.client
        .post(format!("{url}/v1/organizations"))
        .bearer_auth(&t.token)
        .json(&body)
        .send()
        .await
        .is_ok_and(|r| r.status() == reqwest::StatusCode::CREATED)
}

async fn run_load(t: Arc<Target>, clients: usize, duration: Duration) -> (u64, u64, Histogram<u64>) {
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")));
    let errors = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (t, hist, errors, counter) = (t.clone(), hist.clone(), errors.clone(), counter.clone());
            tokio::spawn(async move {
                let url = t.urls[i % t.urls.len()].clone();
                while Instant::now() < end {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    if write_once(&t, &url, n).await {
                        let us = started.elapsed().as_micros() as u64;
                        hist.lock().expect("histogram lock").saturating_record(us.max(1));
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let h = hist.lock().expect("histogram lock").clone();
    (h.len(), errors.load(Ordering::Relaxed), h)
}

pub async fn writes(
    dir: &Path,
    clients: &[usize],
    seconds: u64,
    failover_trials: usize,
    only_node: Option<u64>,
) -> anyhow::Result<()> {
    let file = ClusterFile::read(dir)?;
    let client = bench_client(&file)?;
    let token = login(&client, &file).await?;
    let urls: Vec<String> =
        file.nodes.iter().filter(|n| only_node.is_none_or(|id| id == n.id)).map(|n| n.api_url.clone()).collect();
    anyhow::ensure!(!urls.is_empty(), "no such node in the cluster");
    let spread = match only_node {
        Some(id) => format!("all sent to node {id}"),
        None => format!("spread over {} nodes", urls.len()),
    };
    let target = Arc::new(Target { client, token, urls });
    println!("replicated writes (POST /v1/organizations, {spread}, {seconds} s each)");
    println!("{:>8} {:>12} {:>10} {:>10} {:>8}", "clients", "writes/s", "p50 ms", "p99 ms", "errors");
    // A short warm-up so connection set-up is not measured.
    run_load(target.clone(), clients.iter().copied().max().unwrap_or(1), Duration::from_secs(1)).await;
    let term_before = term_of(&file, &target.client).await;
    for &c in clients {
        let (ok, errors, h) = run_load(target.clone(), c, Duration::from_secs(seconds)).await;
        println!(
            "{:>8} {:>12.0} {:>10.2} {:>10.2} {:>8}",
            c,
            ok as f64 / seconds as f64,
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            errors
        );
    }
    let term_after = term_of(&file, &target.client).await;
    // A term change under load is an election nobody asked for (the leader was never killed).
    println!("raft term before/after the load: {term_before:?}/{term_after:?} (equal: no spurious election)");
    if failover_trials > 0 {
        failover(dir, &target, failover_trials).await?;
    }
    Ok(())
}

async fn term_of(file: &ClusterFile, client: &reqwest::Client) -> Option<u64> {
    let r = client.get(format!("{}/livez", file.nodes[0].api_url)).send().await.ok()?;
    r.json::<serde_json::Value>().await.ok()?["term"].as_u64()
}

async fn leader_of(file: &ClusterFile, client: &reqwest::Client) -> Option<u64> {
    for n in &file.nodes {
        if let Ok(r) = client.get(format!("{}/livez", n.api_url)).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if let Some(l) = v["leader_id"].as_u64() {
                    return Some(l);
                }
            }
        }
    }
    None
}

/// Kills the leader while one client keeps writing through a survivor; the window is the time
/// from the kill to the first successful write after it.
async fn failover(dir: &Path, t: &Arc<Target>, trials: usize) -> anyhow::Result<()> {
    println!("\nwrite unavailability after SIGKILL of the leader ({trials} trials)");
    let mut windows = Vec::new();
    for trial in 1..=trials {
        let mut file = ClusterFile::read(dir)?;
        let leader = leader_of(&file, &t.client).await.context("no leader")?;
        let leader_idx = file.nodes.iter().position(|n| n.id == leader).context("leader not in cluster.json")?;
        let survivor = file.nodes.iter().find(|n| n.id != leader).context("no survivor")?.api_url.clone();
        for n in 0..20 {
            write_once(t, &survivor, 1_000_000 + n).await;
        }
        let killed_at = Instant::now();
        process::kill(file.nodes[leader_idx].pid);
        let mut n = 2_000_000u64 * trial as u64;
        let window = loop {
            n += 1;
            if write_once(t, &survivor, n).await {
                break killed_at.elapsed();
            }
            if killed_at.elapsed() > Duration::from_secs(30) {
                bail!("no successful write within 30 s of killing the leader");
            }
        };
        println!(
            "  trial {trial}: leader {leader} killed, writes resumed after {:.0} ms",
            window.as_secs_f64() * 1000.0
        );
        windows.push(window);
        file.nodes[leader_idx].pid = local::spawn_node(dir, leader)?;
        file.write(dir)?;
        local::wait_until_serving(&file, Duration::from_secs(60)).await?;
        // Let the restarted node catch up before the next trial.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    windows.sort();
    println!("  median window: {:.0} ms", windows[windows.len() / 2].as_secs_f64() * 1000.0);
    Ok(())
}
