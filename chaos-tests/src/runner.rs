//! One chaos run from start to verdict: a 3-node cluster behind HAProxy with one loopback address
//! per node (one node on a small disk), the tenant, the workload and the monitor, the profile's
//! fault schedule, then the checkers over the whole history and the report.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::api::Targets;
use crate::checker::{self, availability, Safety};
use crate::cluster::{ClusterOptions, TestCluster};
use crate::disk::SmallDisk;
use crate::history::History;
use crate::monitor;
use crate::nemesis::{FaultKind, FaultRecord, Nemesis, Timing, DISK_RESERVE_MIB, SMALL_DISK_MIB};
use crate::network::Firewall;
use crate::report::Report;
use crate::tenant::Tenant;
use crate::workload::Workload;

/// Which schedule to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// One fault of each class in a seeded order (about 5 minutes); part of `make test`.
    Ci,
    /// A leader kill every 15 s, with a random other fault between kills, for `duration`.
    Soak,
    /// A leader kill every 15 s and nothing else: the failover figures.
    Kills,
}

impl Profile {
    pub fn parse(s: &str) -> anyhow::Result<Profile> {
        match s {
            "ci" => Ok(Profile::Ci),
            "soak" => Ok(Profile::Soak),
            "kills" => Ok(Profile::Kills),
            other => bail!("unknown profile {other:?} (ci, soak, kills)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Ci => "ci",
            Profile::Soak => "soak",
            Profile::Kills => "kills",
        }
    }

    pub fn default_duration(self) -> Duration {
        match self {
            Profile::Ci => Duration::from_secs(600),
            Profile::Soak => Duration::from_secs(1800),
            Profile::Kills => Duration::from_secs(300),
        }
    }
}

pub struct RunOptions {
    pub profile: Profile,
    pub seed: u64,
    /// Upper bound of the fault schedule (the run ends by itself).
    pub duration: Duration,
    pub out: PathBuf,
}

/// The address of node 1; nodes 2 and 3 follow.
const ADDR_BASE: [u8; 4] = [127, 0, 0, 11];
/// The node whose data directory sits on the small disk.
const SMALL_DISK_NODE: u64 = 3;
const STALENESS_BOUND: Duration = Duration::from_millis(1000);

pub async fn run(opts: RunOptions) -> anyhow::Result<Report> {
    eprintln!("chaos seed: {} (profile {}; replay with --seed {})", opts.seed, opts.profile.name(), opts.seed);
    let started_utc = chrono::Utc::now();
    let run_id = format!("{:x}", opts.seed & 0xffff_ffff);
    Firewall::remove_stale();
    let env = vec![
        ("DERMAGATE_STORAGE__MIN_FREE_MB".to_string(), DISK_RESERVE_MIB.to_string()),
        ("DERMAGATE_RAFT__STALENESS_BOUND_MS".to_string(), STALENESS_BOUND.as_millis().to_string()),
        // The checkers read thousands of records at the end; rate limits are tested elsewhere.
        ("DERMAGATE_AUTH__RATE_LIMIT__PER_PRINCIPAL_PER_SECOND".to_string(), "0".to_string()),
    ];
    let mut cluster = TestCluster::start_opts(ClusterOptions {
        nodes: 3,
        env,
        lb: true,
        addr_base: Some(std::net::Ipv4Addr::from(ADDR_BASE)),
    })
    .await
    .context("starting the cluster")?;
    // The small disk must outlive the nodes (they write to it), so it is dropped after them.
    let disk = move_to_small_disk(&mut cluster, SMALL_DISK_NODE).await?;
    let result = run_on(&mut cluster, disk, &opts, &run_id, started_utc).await;
    let logs_dir = opts.out.join(started_utc.format("%Y%m%dT%H%M%SZ").to_string()).join("logs");
    copy_logs(&cluster, &logs_dir);
    drop(cluster);
    result
}

async fn move_to_small_disk(cluster: &mut TestCluster, node: u64) -> anyhow::Result<(u64, SmallDisk)> {
    let data = cluster.node(node).data_dir.clone();
    cluster.stop(node);
    let disk = SmallDisk::mount_over(&data, SMALL_DISK_MIB)?;
    cluster.restart(node)?;
    cluster.wait_ready(node, Duration::from_secs(30)).await?;
    Ok((node, disk))
}

fn copy_logs(cluster: &TestCluster, to: &std::path::Path) {
    let _ = std::fs::create_dir_all(to);
    for id in cluster.ids() {
        let _ = std::fs::copy(cluster.log(id), to.join(format!("node{id}.log")));
    }
    let _ = std::fs::copy(cluster.dir.path().join("logs/haproxy.log"), to.join("haproxy.log"));
}

fn targets(cluster: &TestCluster) -> Targets {
    Targets {
        lb: cluster.file.lb_url.clone(),
        nodes: cluster.file.nodes.iter().map(|n| (n.id, n.api_url.clone())).collect(),
        client: cluster.client.clone(),
    }
}

/// Three 3000x2000 JPEGs of a skin-like texture with fine detail (several MB each), base64.
fn large_images() -> Vec<String> {
    (0..3u32)
        .map(|i| {
            let base = dermagate_inference::synthetic::skin_like(3000, 2000);
            let img = image::RgbImage::from_fn(3000, 2000, |x, y| {
                let p = base.get_pixel(x, y);
                let n = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729) ^ i) % 17) as u8;
                image::Rgb([p[0].saturating_add(n), p[1].saturating_add(n / 2), p[2]])
            });
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Jpeg).expect("encoding a JPEG in memory");
            base64::engine::general_purpose::STANDARD.encode(out.into_inner())
        })
        .collect()
}

fn schedule(profile: Profile, rng: &mut StdRng) -> Vec<FaultKind> {
    match profile {
        Profile::Ci => {
            let mut all = FaultKind::ALL.to_vec();
            all.shuffle(rng);
            all
        }
        Profile::Soak | Profile::Kills => Vec::new(),
    }
}

async fn run_on(
    cluster: &mut TestCluster,
    disk: (u64, SmallDisk),
    opts: &RunOptions,
    run_id: &str,
    started_utc: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Report> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let targets = targets(cluster);
    let history = Arc::new(History::new());
    let faults_planned = match opts.profile {
        Profile::Ci => FaultKind::ALL.len(),
        _ => (opts.duration.as_secs() / 15 * 2 + 2) as usize,
    };
    let admin_password = cluster.admin_password();
    let tenant = Arc::new(
        Tenant::create(&targets, &cluster.file.admin.username, &admin_password, run_id, faults_planned + 2)
            .await
            .context("creating the tenant")?,
    );
    let workload = Arc::new(Workload::new(targets.clone(), tenant.clone(), history.clone(), opts.seed));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let monitor_task =
        tokio::spawn(monitor::run(targets.clone(), history.clone(), workload.stop.clone(), samples.clone()));
    let workers = workload.spawn();
    let images = Arc::new(if opts.profile == Profile::Kills { Vec::new() } else { large_images() });
    let mut nemesis = Nemesis {
        cluster,
        firewall: Firewall::new()?,
        disk: Some(disk),
        workload: workload.clone(),
        history: history.clone(),
        targets: targets.clone(),
        rng: StdRng::seed_from_u64(rng.random()),
        staleness_bound: STALENESS_BOUND,
        large_images: images,
        crashes: Vec::new(),
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let deadline = Instant::now() + opts.duration;
    let mut records: Vec<FaultRecord> = Vec::new();
    match opts.profile {
        Profile::Ci => {
            let timing =
                Timing { hold: Duration::from_secs(6), down: Duration::from_secs(3), probe: Duration::from_secs(4) };
            for kind in schedule(opts.profile, &mut rng) {
                if Instant::now() > deadline {
                    break;
                }
                records.push(nemesis.run(kind, timing).await?);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Profile::Soak | Profile::Kills => {
            let kill =
                Timing { hold: Duration::from_secs(3), down: Duration::from_secs(2), probe: Duration::from_secs(2) };
            let others: Vec<FaultKind> = FaultKind::ALL
                .into_iter()
                .filter(|k| !matches!(k, FaultKind::KillLeader | FaultKind::RollingRestart))
                .collect();
            while Instant::now() + Duration::from_secs(15) <= deadline {
                let slot_end = Instant::now() + Duration::from_secs(15);
                records.push(nemesis.run(FaultKind::KillLeader, kill).await?);
                if opts.profile == Profile::Soak
                    && rng.random_bool(0.5)
                    && Instant::now() + Duration::from_secs(9) < slot_end
                {
                    let kind = others[rng.random_range(0..others.len())];
                    let hold = Duration::from_millis(rng.random_range(2_000..=4_000));
                    let timing = Timing { hold, down: Duration::from_secs(2), probe: Duration::from_secs(2) };
                    records.push(nemesis.run(kind, timing).await?);
                }
                tokio::time::sleep(slot_end.saturating_duration_since(Instant::now())).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    workload.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let _ = monitor_task.await;
    let duration_s = history.now_ms() as f64 / 1000.0;
    let final_heal = nemesis.wait_healed(Duration::from_secs(30)).await;
    drop(nemesis.firewall);
    eprintln!("workload stopped after {duration_s:.0} s; checking the history");

    let ops = history.ops();
    let samples = samples.lock().clone();
    let mut safety = Safety::default();
    let oa = tenant.org_admin.token(&targets).await;
    let users = workload.users.lock().clone();
    let analyses = workload.analyses.lock().clone();
    let revocations = workload.revocations.lock().clone();
    checker::check_writes(&mut safety, &targets, &oa, &ops, &users, &tenant.org_id).await;
    checker::check_reports(&mut safety, &targets, &tenant.client_secret, &analyses).await;
    checker::check_revocations(&mut safety, &targets, &revocations).await;
    let register_operations = checker::check_registers(&mut safety, &ops, &tenant.registers);
    for line in workload.unreadable_images.lock().clone() {
        safety.unreadable_images += 1;
        safety.find(format!("stored image not served: {line}"));
    }
    checker::check_leaders(&mut safety, &samples);
    let logs: Vec<(u64, PathBuf)> =
        nemesis.cluster.ids().into_iter().map(|id| (id, nemesis.cluster.log(id).to_path_buf())).collect();
    checker::check_logs(&mut safety, &logs);
    for f in &records {
        if let Some(served) = f.served_after_cut_ms {
            // The watcher asks every 100 ms: one interval of slack on top of the bound.
            if served > STALENESS_BOUND.as_millis() as u64 + 100 {
                safety.fail_open += 1;
                safety.findings.push(format!(
                    "{} on {}: served authenticated requests {served} ms after the cut",
                    f.kind.name(),
                    f.target
                ));
            }
        }
    }
    let faults = availability::per_fault(&ops, &samples, &records);
    let unhealed_faults = records.iter().filter(|f| f.healed_ms.is_none()).count() + usize::from(final_heal.is_none());
    let unexpected_elections: u64 = faults.iter().map(|f| f.unexpected_elections).sum();
    let mut reasons = Vec::new();
    if !safety.holds() {
        reasons.push("a safety property was violated".to_string());
    }
    if unhealed_faults > 0 {
        reasons.push(format!("{unhealed_faults} fault(s) not healed within 10 s"));
    }
    let crashes = nemesis.crashes.clone();
    if !crashes.is_empty() {
        reasons.push(format!("{} node exit(s) nobody asked for: {}", crashes.len(), crashes.join("; ")));
    }
    if unexpected_elections > 0 {
        reasons.push(format!("{unexpected_elections} election(s) during faults that spared the leader"));
    }
    let overall = {
        let all = availability::per_class(&ops);
        let (ok, total) = all.values().fold((0, 0), |(o, t), r| (o + r.ok, t + r.total));
        availability::Ratio { ok, total, ratio: if total == 0 { 0.0 } else { ok as f64 / total as f64 } }
    };
    let report = Report {
        seed: opts.seed,
        profile: opts.profile.name().into(),
        duration_s,
        started_utc: started_utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        staleness_bound_ms: STALENESS_BOUND.as_millis() as u64,
        revocation_bound_ms: 0,
        by_kind: availability::per_kind(&faults),
        faults,
        availability: availability::per_class(&ops),
        analyses_with_retries: availability::analyses_with_retries(&analyses),
        overall,
        safety,
        register_operations,
        operations: ops.len(),
        unhealed_faults,
        unexpected_elections,
        timeline: availability::timeline(&ops, duration_s as u64),
        verdict: if reasons.is_empty() { "pass".into() } else { "fail".into() },
        reasons,
    };
    let dir = opts.out.join(started_utc.format("%Y%m%dT%H%M%SZ").to_string());
    report.write(&dir)?;
    write_history(&dir, &ops, &history.faults())?;
    eprintln!("report: {}", dir.display());
    Ok(report)
}

/// Every operation and fault window of the run, one JSON object per line (`history.jsonl`), so a
/// failed verdict can be investigated after the cluster is gone.
fn write_history(
    dir: &std::path::Path,
    ops: &[crate::history::Op],
    faults: &[crate::history::FaultWindow],
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    for fault in faults {
        writeln!(out, "{}", serde_json::json!({ "fault": fault }))?;
    }
    for op in ops {
        writeln!(out, "{}", serde_json::to_string(op)?)?;
    }
    out.flush()?;
    Ok(())
}
