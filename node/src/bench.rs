//! `dermagate bench writes`: replicated-write throughput and latency against a running local
//! cluster at several client counts, the same load against a 3-member etcd cluster in the same run
//! (the peer to beat; `bench_etcd`), and the write-unavailability window after a leader is
//! SIGKILLed. It prints figures and the CPU each side used; it asserts nothing (the machine is
//! shared and noisy).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use std::sync::Mutex;

use crate::cluster_file::ClusterFile;
use crate::{local, process};

/// Who receives the writes: dermagate (an organisation created with a bearer token) or etcd (a
/// put through its JSON gateway).
enum Sink {
    Dermagate { token: String },
    Etcd,
}

struct Target {
    client: reqwest::Client,
    sink: Sink,
    urls: Vec<String>,
}

/// One measured round at one client count, with the CPU seconds the servers and the load
/// generator used during it (a disturbed run shows as CPU the two do not account for).
struct Round {
    clients: usize,
    ok: u64,
    errors: u64,
    error_kinds: String,
    hist: Histogram<u64>,
    server_cpu_s: f64,
    machine_cpu_s: f64,
    loadgen_cpu_s: f64,
}

impl Round {
    fn rate(&self, seconds: u64) -> f64 {
        self.ok as f64 / seconds as f64
    }
    fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// CPU seconds (user + system, all threads) a process has used so far, from `/proc`.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    ticks_to_seconds(ticks(11) + ticks(12))
}

/// Kernel clock ticks (`/proc` accounting) as seconds.
fn ticks_to_seconds(ticks: u64) -> f64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    ticks as f64 / hz
}

fn total_cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(&p.to_string())).sum()
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

/// One small replicated write: creating an organisation (dermagate) or a put (etcd); a failure
/// is named by its status code or transport error, so the summary says what went wrong.
async fn write_once(t: &Target, url: &str, n: u64) -> Result<(), String> {
    let token = match &t.sink {
        Sink::Dermagate { token } => token,
        Sink::Etcd => return crate::bench_etcd::put_once(&t.client, url, n).await,
    };
    let body = serde_json::json!({
        "name": format!("bench-org-{n}"),
        "attestation": { "contractReference": format!("bench-{n}"), "attestedBy": "bench" },
    });
    let resp = t
        .client
        .post(format!("{url}/v1/organizations"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| failure_kind(&e))?;
    if resp.status() == reqwest::StatusCode::CREATED {
        return Ok(());
    }
    // The problem's detail says which refusal it was (e.g. a 503 from a node not proven current).
    let status = resp.status().as_u16();
    let detail = resp.json::<serde_json::Value>().await.ok().and_then(|v| v["detail"].as_str().map(str::to_string));
    Err(match detail {
        Some(d) => format!("{status} ({d})"),
        None => status.to_string(),
    })
}

pub(crate) fn failure_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

struct Load {
    ok: u64,
    errors: u64,
    error_kinds: String,
    hist: Histogram<u64>,
}

async fn run_load(t: Arc<Target>, clients: usize, duration: Duration) -> Load {
    let kinds = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")));
    let errors = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (t, hist, errors, counter, kinds) =
                (t.clone(), hist.clone(), errors.clone(), counter.clone(), kinds.clone());
            tokio::spawn(async move {
                let url = t.urls[i % t.urls.len()].clone();
                while Instant::now() < end {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    match write_once(&t, &url, n).await {
                        Ok(()) => {
                            let us = started.elapsed().as_micros() as u64;
                            hist.lock().expect("histogram lock").saturating_record(us.max(1));
                        }
                        Err(kind) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            *kinds.lock().expect("error kinds lock").entry(kind).or_default() += 1;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let hist = hist.lock().expect("histogram lock").clone();
    let error_kinds =
        kinds.lock().expect("error kinds lock").iter().map(|(k, n)| format!("{k}x{n}")).collect::<Vec<_>>().join(" ");
    Load { ok: hist.len(), errors: errors.load(Ordering::Relaxed), error_kinds, hist }
}

/// CPU seconds the whole machine has spent busy (every process, every core), from `/proc/stat`.
fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let busy = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let ticks = busy(0) + busy(1) + busy(2) + busy(5) + busy(6) + busy(7);
    ticks_to_seconds(ticks)
}

async fn measure(t: &Arc<Target>, clients: usize, seconds: u64, server_pids: &[u32]) -> Round {
    let (server_before, self_before, machine_before) =
        (total_cpu(server_pids), cpu_seconds("self"), machine_cpu_seconds());
    let load = run_load(t.clone(), clients, Duration::from_secs(seconds)).await;
    Round {
        clients,
        ok: load.ok,
        errors: load.errors,
        error_kinds: load.error_kinds,
        hist: load.hist,
        server_cpu_s: total_cpu(server_pids) - server_before,
        loadgen_cpu_s: cpu_seconds("self") - self_before,
        machine_cpu_s: machine_cpu_seconds() - machine_before,
    }
}

fn print_round(r: &Round, seconds: u64) {
    println!(
        "{:>8} {:>12.0} {:>10.2} {:>10.2} {:>8} {:>12.1} {:>12.1} {:>12.1}  {}",
        r.clients,
        r.rate(seconds),
        r.p(0.5),
        r.p(0.99),
        r.errors,
        r.server_cpu_s,
        r.loadgen_cpu_s,
        // Busy CPU neither the servers nor the load generator used: another process disturbed
        // the run if this is more than a few tenths of a second.
        (r.machine_cpu_s - r.server_cpu_s - r.loadgen_cpu_s).max(0.0),
        r.error_kinds
    );
}

fn print_header() {
    println!(
        "{:>8} {:>12} {:>10} {:>10} {:>8} {:>12} {:>12} {:>12}  error kinds",
        "clients", "writes/s", "p50 ms", "p99 ms", "errors", "server cpu s", "loadgen cpu s", "other cpu s"
    );
}

/// Every client count in turn, after a short warm-up so connection set-up is not measured.
async fn rounds(t: &Arc<Target>, clients: &[usize], seconds: u64, server_pids: &[u32]) -> Vec<Round> {
    print_header();
    run_load(t.clone(), clients.iter().copied().max().unwrap_or(1), Duration::from_secs(1)).await;
    let mut out = Vec::new();
    for &c in clients {
        let r = measure(t, c, seconds, server_pids).await;
        print_round(&r, seconds);
        out.push(r);
    }
    out
}

pub async fn writes(
    dir: &Path,
    clients: &[usize],
    seconds: u64,
    failover_trials: usize,
    only_node: Option<u64>,
    vs_etcd: bool,
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
    println!("build profile of this binary: {}", if cfg!(debug_assertions) { "debug (dev)" } else { "release" });
    let target = Arc::new(Target { client, sink: Sink::Dermagate { token }, urls });
    let node_pids: Vec<u32> = file.nodes.iter().map(|n| n.pid).collect();
    println!("dermagate: replicated writes (POST /v1/organizations, {spread}, {seconds} s each)");
    let term_before = term_of(&file, &target.client).await;
    let ours = rounds(&target, clients, seconds, &node_pids).await;
    let term_after = term_of(&file, &target.client).await;
    // A term change under load is an election nobody asked for (the leader was never killed).
    println!("raft term before/after the load: {term_before:?}/{term_after:?} (equal: no spurious election)");
    if vs_etcd {
        compare_with_etcd(&file, &ours, clients, seconds, only_node.is_some()).await?;
    }
    if failover_trials > 0 {
        failover(dir, &target, failover_trials).await?;
    }
    Ok(())
}

/// The same load against etcd 3.4, then both side by side with the ratio per client count.
async fn compare_with_etcd(
    file: &ClusterFile,
    ours: &[Round],
    clients: &[usize],
    seconds: u64,
    one_member: bool,
) -> anyhow::Result<()> {
    if !crate::bench_etcd::available() {
        println!("\netcd is not installed (scripts/install-deps.sh installs etcd-server): no comparison");
        return Ok(());
    }
    let ca_dir = file.ca_cert.parent().context("the CA certificate has no directory")?;
    let etcd = crate::bench_etcd::EtcdCluster::start(ca_dir, 3).await?;
    let urls = if one_member { etcd.client_urls[..1].to_vec() } else { etcd.client_urls.clone() };
    let spread =
        if one_member { "all sent to member 1".to_string() } else { format!("spread over {} members", urls.len()) };
    let target = Arc::new(Target { client: etcd.client.clone(), sink: Sink::Etcd, urls });
    let version = std::process::Command::new("etcd").arg("--version").output().ok();
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string());
    println!(
        "\netcd ({}): 3 members, TLS with client certificates on client and peer URLs, \
         PUT /v3/kv/put via the JSON gateway (32-byte keys, 256-byte values), {spread}, {seconds} s each",
        version.unwrap_or_default()
    );
    let theirs = rounds(&target, clients, seconds, &etcd.pids()).await;
    drop(etcd);
    println!("\nside by side (same load generator, same machine, one after the other)");
    println!(
        "{:>8} {:>14} {:>14} {:>8} {:>16} {:>16} {:>14}",
        "clients", "dermagate w/s", "etcd w/s", "ratio", "p50 ms (d/e)", "p99 ms (d/e)", "cpu s (d/e)"
    );
    for (d, e) in ours.iter().zip(&theirs) {
        println!(
            "{:>8} {:>14.0} {:>14.0} {:>7.2}x {:>16} {:>16} {:>14}",
            d.clients,
            d.rate(seconds),
            e.rate(seconds),
            d.rate(seconds) / e.rate(seconds).max(1e-9),
            format!("{:.2}/{:.2}", d.p(0.5), e.p(0.5)),
            format!("{:.2}/{:.2}", d.p(0.99), e.p(0.99)),
            format!("{:.1}/{:.1}", d.server_cpu_s, e.server_cpu_s),
        );
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
                if let Some(l) = v["leaderId"].as_u64() {
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
            let _ = write_once(t, &survivor, 1_000_000 + n).await;
        }
        let killed_at = Instant::now();
        process::kill(file.nodes[leader_idx].pid);
        let mut n = 2_000_000u64 * trial as u64;
        let window = loop {
            n += 1;
            if write_once(t, &survivor, n).await.is_ok() {
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
