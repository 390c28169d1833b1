//! What must hold whatever the faults, checked over the whole history of a run. Safety first:
//! nothing acknowledged lost, no second report for one `Idempotency-Key`, no revoked credential
//! accepted after its revocation was acknowledged, linearizable registers, at most one leader per
//! term, nodes cut off fail closed. Then liveness and availability: the cluster heals after every
//! fault, and how long each fault kept writes and analyses from succeeding.

pub mod availability;
pub mod linearizable;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::api::{Answer, Credential, Targets};
use crate::cluster::TestCluster;
use crate::history::{History, Op, OpClass, Outcome};
use crate::monitor::Sample;
use crate::tenant::Register;
use crate::workload::{LogicalAnalysis, RevocationRecord, UserWrite};

/// Fails unless every acknowledged write of `history` is found on every node of `cluster`
/// (used by the integration tests with the bootstrap administrator's token).
pub async fn no_acknowledged_write_lost(cluster: &TestCluster, history: &History, token: &str) -> anyhow::Result<()> {
    let acked = history.acknowledged_paths();
    for id in cluster.ids() {
        for path in &acked {
            cluster
                .wait_found(id, path, token, Duration::from_secs(15))
                .await
                .with_context(|| format!("acknowledged write {path} missing on node {id}"))?;
        }
    }
    eprintln!("checker: {} acknowledged writes present on all {} nodes", acked.len(), cluster.ids().len());
    Ok(())
}

/// The safety figures of a run; every count must be 0.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Safety {
    pub lost_acknowledged_writes: usize,
    /// Writes the cluster definitely refused that exist all the same.
    pub refused_writes_present: usize,
    pub duplicate_reports: usize,
    /// Acknowledged analyses whose report is missing on some node.
    pub lost_reports: usize,
    /// Stored images of acknowledged reports that some node could not serve.
    pub unreadable_images: usize,
    pub late_revocations: usize,
    /// Longest time after an acknowledgement at which a node still accepted the revoked
    /// credential (0 when none did).
    pub max_revocation_delay_ms: u64,
    /// Revoked credentials some node still accepts once the cluster has healed.
    pub revocations_not_in_force: usize,
    pub linearizability_violations: usize,
    pub multiple_leaders_in_a_term: usize,
    /// Faults during which a cut-off node kept authenticating past the staleness bound.
    pub fail_open: usize,
    pub panics: usize,
    /// Findings, one line each.
    pub findings: Vec<String>,
}

impl Safety {
    pub fn holds(&self) -> bool {
        self.lost_acknowledged_writes == 0
            && self.refused_writes_present == 0
            && self.duplicate_reports == 0
            && self.lost_reports == 0
            && self.unreadable_images == 0
            && self.late_revocations == 0
            && self.revocations_not_in_force == 0
            && self.linearizability_violations == 0
            && self.multiple_leaders_in_a_term == 0
            && self.fail_open == 0
            && self.panics == 0
    }

    /// Records a finding (the first 200 are kept and the first 20 printed).
    pub fn find(&mut self, line: String) {
        if self.findings.len() < 20 {
            eprintln!("checker: {line}");
        }
        if self.findings.len() < 200 {
            self.findings.push(line);
        }
    }
}

/// Runs `checks` concurrently, eight at a time.
/// Asks until the answer is neither 503 nor 429 (a node may still be catching up after the last
/// fault, or shedding the checker's own burst), a few times, honouring `Retry-After`: a check
/// should conclude, not record "unavailable".
async fn send_settled(targets: &Targets, make: impl Fn() -> reqwest::RequestBuilder) -> Answer {
    let mut answer = targets.send(make(), Duration::from_secs(10)).await;
    for _ in 0..5 {
        if !matches!(answer.status, Some(503 | 429)) {
            break;
        }
        let wait = answer.retry_after.unwrap_or(Duration::from_millis(500)).min(Duration::from_secs(2));
        tokio::time::sleep(wait).await;
        answer = targets.send(make(), Duration::from_secs(10)).await;
    }
    answer
}

async fn bounded<T, F: std::future::Future<Output = T>>(checks: Vec<F>) -> Vec<T> {
    use futures::StreamExt;
    futures::stream::iter(checks).buffer_unordered(8).collect().await
}

/// Every acknowledged creation readable on every node, and every definitely refused user absent.
pub async fn check_writes(
    safety: &mut Safety,
    targets: &Targets,
    token: &str,
    ops: &[Op],
    users: &[UserWrite],
    org: &str,
) {
    let acked: BTreeSet<String> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && o.class == OpClass::Write)
        .filter_map(|o| o.value.clone().filter(|v| v.starts_with('/')))
        .collect();
    let mut checks = Vec::new();
    for (node, _) in &targets.nodes {
        for path in &acked {
            let req = targets.get(&format!("node{node}"), path).bearer_auth(token);
            checks.push(async move { (*node, path.clone(), targets.send(req, Duration::from_secs(10)).await.status) });
        }
    }
    for (node, path, status) in bounded(checks).await {
        if status != Some(200) {
            safety.lost_acknowledged_writes += 1;
            safety.find(format!("acknowledged write {path} answers {status:?} on node{node}"));
        }
    }
    // Users: acknowledged ones listed, definitely refused ones not.
    for (node, _) in &targets.nodes {
        let req = targets
            .get(&format!("node{node}"), &format!("/v1/organizations/{org}/users?limit=10000"))
            .bearer_auth(token);
        let a = targets.send(req, Duration::from_secs(20)).await;
        let Some(items) = a.body["items"].as_array() else {
            safety.find(format!("user listing on node{node} failed: {:?}", a.status));
            continue;
        };
        let names: BTreeSet<&str> = items.iter().filter_map(|u| u["username"].as_str()).collect();
        for u in users {
            let present = names.contains(u.username.as_str());
            if u.outcome == Outcome::Ok && !present {
                safety.lost_acknowledged_writes += 1;
                safety.find(format!("acknowledged user {} not listed on node{node}", u.username));
            }
            if u.outcome == Outcome::Fail && present {
                safety.refused_writes_present += 1;
                safety.find(format!("user {} was refused but exists on node{node}", u.username));
            }
        }
    }
}

/// At most one report per `Idempotency-Key` (each key has a subject of its own), on every node;
/// exactly the acknowledged one where one was acknowledged.
pub async fn check_reports(safety: &mut Safety, targets: &Targets, api_key: &str, analyses: &[LogicalAnalysis]) {
    let key = Credential::ApiKey(api_key.to_string());
    let mut checks = Vec::new();
    for a in analyses {
        for (node, _) in &targets.nodes {
            let path = format!("/v1/subjects/{}/analyses", a.subject);
            let key = &key;
            let make = move || key.apply(targets.get(&format!("node{node}"), &path));
            checks.push(async move { (a, *node, send_settled(targets, make).await) });
        }
    }
    for (a, node, answer) in bounded(checks).await {
        let total = answer.body["total"].as_u64();
        let ids: Vec<&str> = answer.body["items"]
            .as_array()
            .map(|v| v.iter().filter_map(|r| r["id"].as_str()).collect())
            .unwrap_or_default();
        match (total, &a.report_id) {
            (None, _) => safety.find(format!(
                "series of {} on node{node}: {:?} {}",
                a.subject,
                answer.status,
                answer.body["detail"].as_str().unwrap_or("")
            )),
            (Some(n), _) if n > 1 => {
                safety.duplicate_reports += 1;
                safety.find(format!("key {} made {n} reports (node{node})", a.key));
            }
            (Some(_), Some(id)) if !ids.contains(&id.as_str()) => {
                safety.lost_reports += 1;
                safety.find(format!("acknowledged report {id} of key {} missing on node{node}", a.key));
            }
            (Some(1), None) if a.outcome == Outcome::Fail => {
                safety.refused_writes_present += 1;
                safety.find(format!("key {} was refused but has a report on node{node}", a.key));
            }
            _ => {}
        }
    }
}

/// No node accepted a revoked credential in a request sent after the acknowledgement, and once
/// healed every node refuses every revoked credential.
pub async fn check_revocations(safety: &mut Safety, targets: &Targets, revocations: &[RevocationRecord]) {
    for r in revocations {
        for (node, invoke_us, status) in &r.probes {
            if *status == Some(200) && *invoke_us >= r.acked_us {
                let delay = (*invoke_us - r.acked_us) / 1000;
                safety.late_revocations += 1;
                safety.max_revocation_delay_ms = safety.max_revocation_delay_ms.max(delay);
                safety.find(format!("node{node} accepted a credential revoked ({}) {delay} ms earlier", r.kind));
            }
        }
    }
    let mut checks = Vec::new();
    for r in revocations {
        for (node, _) in &targets.nodes {
            let req = r.credential.credential().apply(targets.get(&format!("node{node}"), "/v1/me"));
            checks.push(async move { (r.kind, *node, targets.send(req, Duration::from_secs(10)).await.status) });
        }
    }
    for (kind, node, status) in bounded(checks).await {
        if status != Some(401) {
            safety.revocations_not_in_force += 1;
            safety.find(format!("after healing, node{node} answers {status:?} to a credential revoked ({kind})"));
        }
    }
}

/// Each register epoch's history must be linearizable.
pub fn check_registers(safety: &mut Safety, ops: &[Op], registers: &[Register]) -> usize {
    let mut by_epoch: BTreeMap<usize, Vec<linearizable::RegisterOp>> = BTreeMap::new();
    for o in ops {
        let Some(rest) = o.action.strip_prefix("register:") else { continue };
        let Some((epoch, what)) = rest.split_once(':') else { continue };
        let Ok(epoch) = epoch.parse::<usize>() else { continue };
        let Some(value) = o.value.clone() else { continue };
        let kind = match (what, o.outcome) {
            ("write", Outcome::Fail) | ("read", Outcome::Fail | Outcome::Unknown) => continue,
            ("write", _) => linearizable::RegisterKind::Write(value),
            _ => linearizable::RegisterKind::Read(value),
        };
        let complete_us = (o.outcome == Outcome::Ok).then_some(o.complete_us);
        by_epoch.entry(epoch).or_default().push(linearizable::RegisterOp { kind, invoke_us: o.invoke_us, complete_us });
    }
    let mut checked = 0;
    for (epoch, history) in by_epoch {
        let Some(reg) = registers.get(epoch) else { continue };
        checked += history.len();
        if let Err(v) = linearizable::check_register(&reg.initial, &history) {
            safety.linearizability_violations += 1;
            safety.find(format!("register {epoch} ({} operations) is not linearizable: {}", history.len(), v.detail));
        }
    }
    checked
}

/// At most one node claimed leadership in any term.
pub fn check_leaders(safety: &mut Safety, samples: &[Sample]) {
    let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.answered && s.role == "leader") {
        leaders.entry(s.term).or_default().insert(s.node);
    }
    for (term, nodes) in leaders {
        if nodes.len() > 1 {
            safety.multiple_leaders_in_a_term += 1;
            safety.find(format!("term {term} had leaders {nodes:?}"));
        }
    }
}

/// Counts panics in the nodes' logs.
pub fn check_logs(safety: &mut Safety, logs: &[(u64, std::path::PathBuf)]) {
    for (node, path) in logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let panics = text.lines().filter(|l| l.contains("panicked at")).count();
        if panics > 0 {
            safety.panics += panics;
            safety.find(format!("node{node} log holds {panics} panic(s): {}", path.display()));
        }
    }
}
