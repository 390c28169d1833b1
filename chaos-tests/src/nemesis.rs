//! The nemesis: a seeded schedule of faults and the code that injects and removes each one.
//! Every fault has a start (injected), an end (removed) and a heal time (every node ready and
//! caught up again) in the history, and leaves measurements of its own for the report.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use crate::api::{Credential, Targets};
use crate::cluster::TestCluster;
use crate::disk::SmallDisk;
use crate::history::{FaultWindow, History, OpClass};
use crate::monitor::{self, leader_in};
use crate::network::Firewall;
use crate::workload::{CredentialRecord, LogicalAnalysis, RevocationRecord, Workload};

/// Every fault class the suite knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    KillLeader,
    KillFollower,
    FreezeLeader,
    FreezeFollower,
    /// A follower cut off from both others (symmetric).
    PartitionFollower,
    /// The leader alone in the minority; a revocation is acknowledged by the new leader meanwhile.
    IsolateLeader,
    /// The leader can send but not receive.
    LeaderSendOnly,
    /// The leader can receive but not send.
    LeaderReceiveOnly,
    /// The leader and one follower cannot reach each other; the third node sees both.
    Bridge,
    /// Random loss on every link between nodes.
    PacketLoss,
    /// The data directory of one node fills up, then is freed.
    DiskFull,
    /// SIGTERM and restart of every node, one at a time.
    RollingRestart,
    /// Ten concurrent analyses of three 3000x2000 JPEGs each, images stored.
    LargeUploadBurst,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::FreezeLeader,
        FaultKind::FreezeFollower,
        FaultKind::PartitionFollower,
        FaultKind::IsolateLeader,
        FaultKind::LeaderSendOnly,
        FaultKind::LeaderReceiveOnly,
        FaultKind::Bridge,
        FaultKind::PacketLoss,
        FaultKind::DiskFull,
        FaultKind::RollingRestart,
        FaultKind::LargeUploadBurst,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::FreezeLeader => "freeze-leader",
            FaultKind::FreezeFollower => "freeze-follower",
            FaultKind::PartitionFollower => "partition-follower",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::LeaderSendOnly => "leader-send-only",
            FaultKind::LeaderReceiveOnly => "leader-receive-only",
            FaultKind::Bridge => "bridge",
            FaultKind::PacketLoss => "packet-loss",
            FaultKind::DiskFull => "disk-full",
            FaultKind::RollingRestart => "rolling-restart",
            FaultKind::LargeUploadBurst => "large-upload-burst",
        }
    }

    /// Faults that leave the leader and its quorum unharmed: an election during one of them is
    /// a fault of the product (a node that lost contact must not depose a healthy leader, and
    /// load alone must not cause a leader change).
    pub fn spares_the_leader(self) -> bool {
        matches!(
            self,
            FaultKind::KillFollower
                | FaultKind::FreezeFollower
                | FaultKind::PartitionFollower
                | FaultKind::Bridge
                | FaultKind::LargeUploadBurst
        )
    }
}

/// A fault as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub target: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub healed_ms: Option<u64>,
    /// How long the node cut off kept answering authenticated requests with 200 after the cut
    /// (fail-closed check), for partition faults.
    pub served_after_cut_ms: Option<u64>,
    pub detail: String,
}

/// How long each fault holds, chosen by the profile.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub hold: Duration,
    pub down: Duration,
    /// How long a node returning from a kill or a freeze is asked with a key revoked meanwhile.
    pub probe: Duration,
}

/// What the nemesis works with.
pub struct Nemesis<'a> {
    pub cluster: &'a mut TestCluster,
    pub firewall: Firewall,
    pub disk: Option<(u64, SmallDisk)>,
    pub workload: Arc<Workload>,
    pub history: Arc<History>,
    pub targets: Targets,
    pub rng: StdRng,
    /// A node may not serve authenticated requests longer than this after it is cut off.
    pub staleness_bound: Duration,
    /// Large JPEGs for the burst (base64), made once.
    pub large_images: Arc<Vec<String>>,
    /// Nodes that exited without being told to (each restarted as a supervisor would).
    pub crashes: Vec<String>,
}

impl Nemesis<'_> {
    fn ip(&self, id: u64) -> IpAddr {
        self.cluster.ip(id)
    }

    fn others(&self, id: u64) -> Vec<u64> {
        self.cluster.ids().into_iter().filter(|n| *n != id).collect()
    }

    /// The current leader (asking every node), waiting up to 15 s for one.
    pub async fn leader(&self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let round = monitor::poll(&self.targets, &self.history).await;
            if let Some(l) = leader_in(&round) {
                if round.iter().any(|s| s.node == l && s.ready) {
                    return Ok(l);
                }
            }
            if Instant::now() > deadline {
                bail!("no ready leader within 15 s: {round:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn follower(&mut self) -> anyhow::Result<u64> {
        let leader = self.leader().await?;
        let mut others = self.others(leader);
        others.shuffle(&mut self.rng);
        Ok(others[0])
    }

    /// Injects `kind`, holds it, removes it and waits for the cluster to heal.
    pub async fn run(&mut self, kind: FaultKind, timing: Timing) -> anyhow::Result<FaultRecord> {
        self.workload.epoch.fetch_add(1, Ordering::Relaxed);
        let start_ms = self.history.now_ms();
        eprintln!("[{:>7.1}s] fault {} ...", start_ms as f64 / 1000.0, kind.name());
        let (target, served_after_cut_ms, detail) = self.inject(kind, timing).await?;
        let end_ms = self.history.now_ms();
        let mut healed_ms = self.wait_healed(Duration::from_secs(10)).await;
        let crashed = self.restart_crashed();
        if !crashed.is_empty() {
            for c in &crashed {
                eprintln!("{c}");
            }
            self.crashes.extend(crashed);
            healed_ms = None;
            self.wait_healed(Duration::from_secs(30)).await;
        }
        eprintln!(
            "[{:>7.1}s] fault {} on {target} removed; healed: {}",
            end_ms as f64 / 1000.0,
            kind.name(),
            healed_ms.map_or("NO".to_string(), |h| format!("after {} ms", h - end_ms))
        );
        self.history.push_fault(FaultWindow {
            kind: kind.name().into(),
            target: target.clone(),
            start_ms,
            end_ms,
            healed_ms,
        });
        Ok(FaultRecord { kind, target, start_ms, end_ms, healed_ms, served_after_cut_ms, detail })
    }

    async fn inject(&mut self, kind: FaultKind, t: Timing) -> anyhow::Result<(String, Option<u64>, String)> {
        match kind {
            FaultKind::KillLeader | FaultKind::KillFollower => {
                let victim = if kind == FaultKind::KillLeader { self.leader().await? } else { self.follower().await? };
                let key = self.revocable_key().await?;
                let away = Instant::now();
                self.cluster.kill(victim);
                let revoked = self.revoke(&key, &self.others(victim), t.down).await;
                tokio::time::sleep(t.down.saturating_sub(away.elapsed())).await;
                self.cluster.restart(victim)?;
                let seen = self.returning_node_refuses(victim, &key, revoked, t.probe).await;
                Ok((
                    format!("node{victim}"),
                    None,
                    format!("SIGKILL, restarted after {} ms; {seen}", t.down.as_millis()),
                ))
            }
            FaultKind::FreezeLeader | FaultKind::FreezeFollower => {
                let victim =
                    if kind == FaultKind::FreezeLeader { self.leader().await? } else { self.follower().await? };
                let hold = self.freeze_time(t);
                let key = self.revocable_key().await?;
                let away = Instant::now();
                self.cluster.pause(victim);
                let revoked = self.revoke(&key, &self.others(victim), hold).await;
                tokio::time::sleep(hold.saturating_sub(away.elapsed())).await;
                self.cluster.resume(victim);
                let seen = self.returning_node_refuses(victim, &key, revoked, t.probe).await;
                Ok((
                    format!("node{victim}"),
                    None,
                    format!("SIGSTOP for {} ms, then SIGCONT; {seen}", hold.as_millis()),
                ))
            }
            FaultKind::PartitionFollower => {
                let victim = self.follower().await?;
                let rest: Vec<IpAddr> = self.others(victim).into_iter().map(|n| self.ip(n)).collect();
                self.firewall.partition(&[self.ip(victim)], &rest)?;
                let served = self.watch_fail_closed(victim, t.hold).await;
                self.firewall.heal()?;
                Ok((format!("node{victim}"), Some(served), "symmetric partition of one follower".into()))
            }
            FaultKind::IsolateLeader => self.isolate_leader(t).await,
            FaultKind::LeaderSendOnly | FaultKind::LeaderReceiveOnly => {
                let leader = self.leader().await?;
                for other in self.others(leader) {
                    let (from, to) = if kind == FaultKind::LeaderSendOnly { (other, leader) } else { (leader, other) };
                    self.firewall.drop_direction(self.ip(from), self.ip(to))?;
                }
                let served = self.watch_fail_closed(leader, t.hold).await;
                self.firewall.heal()?;
                let what = if kind == FaultKind::LeaderSendOnly {
                    "sends but receives nothing"
                } else {
                    "receives but cannot send"
                };
                Ok((format!("node{leader}"), Some(served), format!("one-way: the leader {what}")))
            }
            FaultKind::Bridge => {
                let leader = self.leader().await?;
                let mut others = self.others(leader);
                others.shuffle(&mut self.rng);
                let (bridge, cut) = (others[0], others[1]);
                self.firewall.cut(self.ip(leader), self.ip(cut))?;
                let served = self.watch_fail_closed(cut, t.hold).await;
                self.firewall.heal()?;
                Ok((
                    format!("node{bridge}"),
                    Some(served),
                    format!("node{leader} and node{cut} cut apart; node{bridge} sees both"),
                ))
            }
            FaultKind::PacketLoss => {
                let percent = self.rng.random_range(10..=30);
                let ids = self.cluster.ids();
                for a in &ids {
                    for b in &ids {
                        if a != b {
                            self.firewall.lose(self.ip(*a), self.ip(*b), percent)?;
                        }
                    }
                }
                tokio::time::sleep(t.hold).await;
                self.firewall.heal()?;
                Ok(("all links".into(), None, format!("{percent}% random packet loss on every link between nodes")))
            }
            FaultKind::DiskFull => self.disk_full(t).await,
            FaultKind::RollingRestart => {
                for id in self.cluster.ids() {
                    let status = self.cluster.stop(id);
                    if status.is_some_and(|s| !s.success()) {
                        bail!("node{id} exited with {status:?} on SIGTERM");
                    }
                    self.cluster.restart(id)?;
                    self.cluster.wait_ready(id, Duration::from_secs(30)).await?;
                }
                Ok(("every node".into(), None, "SIGTERM, restart, wait ready; one node at a time".into()))
            }
            FaultKind::LargeUploadBurst => self.large_upload_burst().await,
        }
    }

    /// A client key made (and known to every node) before a fault, to be revoked during it.
    async fn revocable_key(&self) -> anyhow::Result<RevocableKey> {
        let org = self.workload.tenant.org_id.clone();
        let admin = self.workload.tenant.org_admin.token(&self.targets).await;
        let body = serde_json::json!({ "name": "revoked during a fault", "scopes": ["reports:read"] });
        let created = crate::tenant::retry(&self.targets, |n| {
            self.targets.post(n, &format!("/v1/organizations/{org}/clients")).bearer_auth(&admin).json(&body)
        })
        .await?;
        let key = RevocableKey {
            path: format!("/v1/organizations/{org}/clients/{}", created.str("clientId").context("client_id")?),
            secret: created.str("clientSecret").context("client_secret")?,
        };
        // Every node must know the key before the fault, or "refused" would prove nothing.
        let credential = Credential::ApiKey(key.secret.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        for (id, _) in &self.targets.nodes {
            while self
                .targets
                .send(credential.apply(self.targets.get(&format!("node{id}"), "/v1/me")), Duration::from_secs(2))
                .await
                .status
                != Some(200)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(key)
    }

    /// Deletes the key through one of `through` (retrying until acknowledged or `within`);
    /// returns when the acknowledgement arrived (µs on the run clock).
    async fn revoke(&self, key: &RevocableKey, through: &[u64], within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        let admin = self.workload.tenant.org_admin.token(&self.targets).await;
        let mut i = 0;
        while Instant::now() < deadline {
            let target = format!("node{}", through[i % through.len()]);
            i += 1;
            let inv = self.history.invoke("nemesis", OpClass::Revocation, "client_deleted_node_away", &target);
            let a = self
                .targets
                .send(self.targets.delete(&target, &key.path).bearer_auth(&admin), Duration::from_secs(3))
                .await;
            if inv.done(a.status, None) == crate::history::Outcome::Ok {
                return Some(self.history.now_us());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Asks the node that was away with the revoked key from the moment it returns, every 20 ms
    /// for `window`; records what it answered so the checker can hold it to the bound.
    async fn returning_node_refuses(
        &self,
        node: u64,
        key: &RevocableKey,
        acked_us: Option<u64>,
        window: Duration,
    ) -> String {
        let Some(acked_us) = acked_us else {
            return "no revocation was acknowledged while it was away".into();
        };
        let credential = Credential::ApiKey(key.secret.clone());
        let end = Instant::now() + window;
        let mut probes = Vec::new();
        while Instant::now() < end {
            let invoke_us = self.history.now_us();
            let req = credential.apply(self.targets.get(&format!("node{node}"), "/v1/me"));
            probes.push((node, invoke_us, self.targets.send(req, Duration::from_secs(1)).await.status));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let answers: Vec<Option<u16>> = probes.iter().map(|p| p.2).collect();
        let seen = format!("a key revoked while it was away, used on it as it returned: {}", summarize(&answers));
        self.workload.revocations.lock().push(RevocationRecord {
            kind: "client_deleted_while_node_away",
            credential: CredentialRecord::ApiKey(key.secret.clone()),
            acked_us,
            probes,
        });
        seen
    }

    fn freeze_time(&mut self, t: Timing) -> Duration {
        let ms = t.hold.as_millis() as u64;
        Duration::from_millis(self.rng.random_range(2_000.min(ms)..=ms.clamp(2_000, 10_000)))
    }

    /// Uses the workload's API key on `node` every 100 ms for `hold`; returns how long after the
    /// start it last answered 200 (an authenticated request it should have refused once the
    /// staleness bound passed is a fail-open).
    async fn watch_fail_closed(&self, node: u64, hold: Duration) -> u64 {
        let start = Instant::now();
        let key = Credential::ApiKey(self.workload.tenant.client_secret.clone());
        let mut last_ok = 0;
        while start.elapsed() < hold {
            let sent = start.elapsed().as_millis() as u64;
            let req = key.apply(self.targets.get(&format!("node{node}"), "/v1/me"));
            if self.targets.send(req, Duration::from_secs(1)).await.status == Some(200) {
                last_ok = sent;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last_ok
    }

    /// The leader alone in the minority. Once the majority elected a new leader, a credential is
    /// revoked there, and the old leader is asked with it: it must not accept it.
    async fn isolate_leader(&mut self, t: Timing) -> anyhow::Result<(String, Option<u64>, String)> {
        let old = self.leader().await?;
        let majority = self.others(old);
        // A credential made before the cut, so the old leader knows it too.
        let org = self.workload.tenant.org_id.clone();
        let admin = self.workload.tenant.org_admin.token(&self.targets).await;
        let body = serde_json::json!({ "name": "revoked while the leader is cut off", "scopes": ["reports:read"] });
        let created = crate::tenant::retry(&self.targets, |n| {
            self.targets.post(n, &format!("/v1/organizations/{org}/clients")).bearer_auth(&admin).json(&body)
        })
        .await?;
        let (client_id, secret) =
            (created.str("clientId").context("client_id")?, created.str("clientSecret").context("client_secret")?);
        let rest: Vec<IpAddr> = majority.iter().map(|n| self.ip(*n)).collect();
        self.firewall.partition(&[self.ip(old)], &rest)?;
        let cut_at = Instant::now();
        let watcher = {
            let (targets, key) = (self.targets.clone(), Credential::ApiKey(self.workload.tenant.client_secret.clone()));
            let hold = t.hold;
            tokio::spawn(async move {
                let mut last_ok = 0;
                while cut_at.elapsed() < hold {
                    let sent = cut_at.elapsed().as_millis() as u64;
                    let req = key.apply(targets.get(&format!("node{old}"), "/v1/me"));
                    if targets.send(req, Duration::from_secs(1)).await.status == Some(200) {
                        last_ok = sent;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                last_ok
            })
        };
        let mut detail = String::from("leader partitioned from both followers");
        // Revoke through the majority once it has a leader of its own.
        let deadline = Instant::now() + t.hold;
        let mut revoked = false;
        while Instant::now() < deadline && !revoked {
            let target = format!("node{}", majority[self.rng.random_range(0..majority.len())]);
            let inv = self.history.invoke("nemesis", OpClass::Revocation, "client_deleted_leader_isolated", &target);
            let req = self
                .targets
                .delete(&target, &format!("/v1/organizations/{org}/clients/{client_id}"))
                .bearer_auth(&admin);
            let a = self.targets.send(req, Duration::from_secs(5)).await;
            if inv.done(a.status, None) == crate::history::Outcome::Ok {
                let acked_us = self.history.now_us();
                let credential = CredentialRecord::ApiKey(secret.clone());
                let acked_after = cut_at.elapsed().as_millis();
                let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(500));
                let probes = self.workload.probe_everywhere(&credential.credential(), remaining).await;
                let old_answers: Vec<Option<u16>> = probes.iter().filter(|p| p.0 == old).map(|p| p.2).collect();
                detail = format!(
                    "{detail}; a client key revoked through the new leader was acknowledged {acked_after} ms after the cut; asked with it afterwards, the old leader answered {}",
                    summarize(&old_answers)
                );
                self.workload.revocations.lock().push(RevocationRecord {
                    kind: "client_deleted_leader_isolated",
                    credential,
                    acked_us,
                    probes,
                });
                revoked = true;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
        let served = watcher.await.unwrap_or(u64::MAX);
        self.firewall.heal()?;
        if !revoked {
            detail.push_str("; the majority acknowledged no revocation during the cut");
        }
        Ok((format!("node{old}"), Some(served), detail))
    }

    async fn disk_full(&mut self, t: Timing) -> anyhow::Result<(String, Option<u64>, String)> {
        let Some((node, disk)) = &self.disk else {
            bail!("disk-full needs a node on a small disk (prepared by the runner)");
        };
        let node = *node;
        let free_before = disk.free_bytes()?;
        // The disk is shrunk around what the node holds, then filled to half the reserve.
        disk.shrink_leaving(DISK_RESERVE_MIB << 21)?;
        let left = disk.fill_leaving(DISK_RESERVE_MIB << 20 >> 1)?;
        // A write straight to the node must be refused with a clear answer while it is full.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let admin = self.workload.tenant.org_admin.token(&self.targets).await;
        let org = self.workload.tenant.org_id.clone();
        let body = serde_json::json!({ "name": "written to a full disk", "scopes": ["reports:read"] });
        let inv = self.history.invoke("nemesis", OpClass::Write, "create_client_full_disk", &format!("node{node}"));
        let req =
            self.targets.post(&format!("node{node}"), &format!("/v1/organizations/{org}/clients")).bearer_auth(&admin);
        let a = self.targets.send(req.json(&body), Duration::from_secs(5)).await;
        let path = a.str("clientId").map(|id| format!("/v1/organizations/{org}/clients/{id}"));
        inv.done(a.status, path);
        tokio::time::sleep(t.hold).await;
        disk.free()?;
        disk.resize(SMALL_DISK_MIB << 20)?;
        let free_after = disk.free_bytes()?;
        let (status, title) = (a.status, a.body["title"].as_str().unwrap_or("").to_string());
        Ok((
            format!("node{node}"),
            None,
            format!(
                "data dir on a tmpfs: {} MiB free, filled to {} MiB free, a write at the node answered {status:?} {title:?}; freed to {} MiB",
                free_before >> 20,
                left >> 20,
                free_after >> 20
            ),
        ))
    }

    /// Sum and count of the `store_report` entry sizes proposed by every node so far.
    async fn store_report_entry_bytes(&self) -> (f64, f64) {
        let (mut sum, mut count) = (0.0, 0.0);
        for id in self.cluster.ids() {
            sum += self
                .cluster
                .metric(id, "dermagate_raft_entry_bytes_sum{command=\"store_report\"}")
                .await
                .unwrap_or(0.0);
            count += self
                .cluster
                .metric(id, "dermagate_raft_entry_bytes_count{command=\"store_report\"}")
                .await
                .unwrap_or(0.0);
        }
        (sum, count)
    }

    async fn large_upload_burst(&mut self) -> anyhow::Result<(String, Option<u64>, String)> {
        let (sum_before, count_before) = self.store_report_entry_bytes().await;
        self.workload.analyses_paused.store(true, Ordering::Relaxed);
        let tenant = self.workload.tenant.clone();
        let started = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let (targets, history, images) =
                    (self.targets.clone(), self.history.clone(), self.large_images.clone());
                let secret = tenant.client_secret.clone();
                let seed = self.workload.seed;
                tokio::spawn(async move { burst_one(&targets, &history, &images, &secret, seed, i).await })
            })
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            if let Ok(logical) = t.await {
                done.push(logical);
            }
        }
        self.workload.analyses_paused.store(false, Ordering::Relaxed);
        let ok = done.iter().filter(|l| l.report_id.is_some()).count();
        for l in &done {
            if let Some(id) = &l.report_id {
                self.workload.reports.lock().push(id.clone());
            }
        }
        let attempts: u32 = done.iter().map(|l| l.attempts).sum();
        let elapsed = started.elapsed().as_millis();
        let (sum_after, count_after) = self.store_report_entry_bytes().await;
        let per_report_kb = if count_after > count_before {
            (sum_after - sum_before) / (count_after - count_before) / 1024.0
        } else {
            0.0
        };
        // Every accepted upload's images must be readable from every node.
        let key = Credential::ApiKey(tenant.client_secret.clone());
        let mut readable = 0;
        let mut unreadable = Vec::new();
        for id in done.iter().filter_map(|l| l.report_id.clone()) {
            for node in self.cluster.ids() {
                for index in 0..3 {
                    let req = key
                        .apply(self.targets.get(&format!("node{node}"), &format!("/v1/analyses/{id}/images/{index}")));
                    let answer = self.targets.client.execute(req.timeout(Duration::from_secs(20)).build()?).await;
                    let status = answer.as_ref().map(|r| r.status().as_u16()).ok();
                    let size = match answer {
                        Ok(r) => r.bytes().await.map(|b| b.len()).unwrap_or(0),
                        Err(_) => 0,
                    };
                    if status == Some(200) && size > 1000 {
                        readable += 1;
                    } else {
                        unreadable.push(format!("report {id} image {index} on node{node}: {status:?}, {size} bytes"));
                    }
                }
            }
        }
        self.workload.unreadable_images.lock().extend(unreadable.iter().cloned());
        self.workload.analyses.lock().extend(done);
        Ok((
            "lb".into(),
            None,
            format!(
                "10 clients x 3 JPEGs of 3000x2000 with image storage: {ok}/10 stored in {elapsed} ms ({attempts} attempts); \
                 {readable} image reads answered by every node, {} failed; Raft entry per report {per_report_kb:.1} KiB",
                unreadable.len()
            ),
        ))
    }

    /// Restarts, as a supervisor would, any node whose process ended without the nemesis
    /// stopping it, and reports each such exit (a node must not crash under any fault).
    pub fn restart_crashed(&mut self) -> Vec<String> {
        let mut crashed = Vec::new();
        for id in self.cluster.ids() {
            if !crate::cluster::alive(self.cluster.pid(id)) {
                crashed.push(format!("node{id} exited on its own (see its log); restarted"));
                if let Err(e) = self.cluster.restart(id) {
                    crashed.push(format!("node{id} could not be restarted: {e}"));
                }
            }
        }
        crashed
    }

    /// Waits until every node is ready, they agree on the leader and each has applied what the
    /// most advanced one had applied when the wait began; returns when (ms), or `None`.
    pub async fn wait_healed(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let mut target = None;
        loop {
            let round = monitor::poll(&self.targets, &self.history).await;
            let all_ready = round.iter().all(|s| s.ready);
            let max_applied = round.iter().map(|s| s.applied).max().unwrap_or(0);
            if all_ready {
                let goal = *target.get_or_insert(max_applied);
                let leaders: Vec<Option<u64>> = round.iter().map(|s| s.leader).collect();
                let agreed = leaders.windows(2).all(|w| w[0] == w[1]) && leaders[0].is_some();
                if agreed && round.iter().all(|s| s.applied >= goal) {
                    return Some(self.history.now_ms());
                }
            }
            if Instant::now() > deadline {
                eprintln!("cluster not healed within {timeout:?}: {round:?}");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A client key to revoke during a fault: its path and its secret (used as a static API key).
struct RevocableKey {
    path: String,
    secret: String,
}

/// The reserve (MiB) every node keeps free in a chaos run; the disk-full fault leaves half of it.
pub const DISK_RESERVE_MIB: u64 = 64;
/// The size of the tmpfs the disk-full node runs on (shrunk around its data for the fault).
pub const SMALL_DISK_MIB: u64 = 4096;

fn summarize(statuses: &[Option<u16>]) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for s in statuses {
        *counts.entry(s.map_or("none".into(), |s| s.to_string())).or_default() += 1;
    }
    counts.iter().map(|(k, v)| format!("{k} x{v}")).collect::<Vec<_>>().join(", ")
}

/// One analysis of the burst: three large JPEGs, retried with the same key like any client.
async fn burst_one(
    targets: &Targets,
    history: &History,
    images: &[String],
    secret: &str,
    seed: u64,
    i: usize,
) -> LogicalAnalysis {
    let key = format!("burst-{seed}-{i}-{}", history.now_us());
    let subject = format!("subj-{key}");
    let body = crate::workload::analysis_body(images, &subject);
    let invoke_us = history.now_us();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut attempts, mut report_id, mut any_unknown) = (0, None, false);
    while Instant::now() < deadline {
        attempts += 1;
        let inv = history.invoke(&format!("burst-{i}"), OpClass::Analysis, "large_analysis", "lb");
        let req =
            targets.post("lb", "/v1/analyses").header("x-api-key", secret).header("idempotency-key", &key).json(&body);
        let a = targets.send(req, Duration::from_secs(40)).await;
        let id = a.str("id");
        match inv.done(a.status, id.clone()) {
            crate::history::Outcome::Ok => {
                report_id = id;
                break;
            }
            crate::history::Outcome::Unknown => any_unknown = true,
            crate::history::Outcome::Fail if !matches!(a.status, Some(409 | 503 | 507 | 429)) => break,
            crate::history::Outcome::Fail => {}
        }
        tokio::time::sleep(a.retry_after.unwrap_or(Duration::from_millis(500)).min(Duration::from_secs(2))).await;
    }
    let outcome = match (&report_id, any_unknown) {
        (Some(_), _) => crate::history::Outcome::Ok,
        (None, true) => crate::history::Outcome::Unknown,
        (None, false) => crate::history::Outcome::Fail,
    };
    LogicalAnalysis {
        key,
        subject,
        via_lb: true,
        attempts,
        report_id,
        outcome,
        invoke_us,
        complete_us: history.now_us(),
    }
}
