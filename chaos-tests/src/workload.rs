//! The clients of a chaos run, each a task that loops until told to stop: analyses with an
//! `Idempotency-Key` (retried with the same key, as the IFU tells integrators), replicated
//! writes, token issuance, revocations followed by use of the revoked credential on every node,
//! register reads and writes for the linearizability checker, and reads. Every request goes into
//! the [`History`]; requests go through the load balancer and straight to nodes.
//!
//! Pacing is fixed (each worker waits between its requests), so the load is bounded whatever the
//! faults do, and every random choice comes from the run's seed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::api::{Answer, Credential, Targets};
use crate::history::{History, OpClass, Outcome};
use crate::tenant::{Tenant, PASSWORD};

/// How long a request may take before the client gives up on it (outcome unknown).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);
/// How long a client keeps retrying one analysis with the same key.
const ANALYSIS_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// One analysis as the integrator sees it: all attempts under one `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct LogicalAnalysis {
    pub key: String,
    /// A subject used for this analysis only, so its series shows every report the key made.
    pub subject: String,
    pub via_lb: bool,
    pub attempts: u32,
    /// The report id of the first 201 (or replay) the client received.
    pub report_id: Option<String>,
    pub outcome: Outcome,
    pub invoke_us: u64,
    pub complete_us: u64,
}

/// A revocation and what every node answered afterwards to the revoked credential.
#[derive(Debug, Clone)]
pub struct RevocationRecord {
    pub kind: &'static str,
    /// The credential (for the final check once the cluster is healed).
    pub credential: CredentialRecord,
    /// When the client received the acknowledgement (µs on the run clock).
    pub acked_us: u64,
    /// (node, invoke µs, status) of each use of the revoked credential after the acknowledgement.
    pub probes: Vec<(u64, u64, Option<u16>)>,
}

#[derive(Debug, Clone)]
pub enum CredentialRecord {
    ApiKey(String),
    Bearer(String),
}

impl CredentialRecord {
    pub fn credential(&self) -> Credential {
        match self {
            CredentialRecord::ApiKey(k) => Credential::ApiKey(k.clone()),
            CredentialRecord::Bearer(t) => Credential::Bearer(t.clone()),
        }
    }
}

/// A user creation and what the client was told, for "acknowledged present, refused absent".
#[derive(Debug, Clone)]
pub struct UserWrite {
    pub username: String,
    pub outcome: Outcome,
    pub id: Option<String>,
}

/// What all workers share.
pub struct Workload {
    pub targets: Targets,
    pub tenant: Arc<Tenant>,
    pub history: Arc<History>,
    pub stop: Arc<AtomicBool>,
    /// Index of the register (organisation name) the register workers use now.
    pub epoch: Arc<AtomicUsize>,
    pub analyses: Arc<Mutex<Vec<LogicalAnalysis>>>,
    pub revocations: Arc<Mutex<Vec<RevocationRecord>>>,
    pub users: Arc<Mutex<Vec<UserWrite>>>,
    /// Report ids the cluster acknowledged, for the readers.
    pub reports: Arc<Mutex<Vec<String>>>,
    /// Images of acknowledged reports some node could not serve (must stay empty).
    pub unreadable_images: Arc<Mutex<Vec<String>>>,
    /// Paused while a burst of large uploads runs, so the burst is the only large load.
    pub analyses_paused: Arc<AtomicBool>,
    pub seed: u64,
    /// A small analysable JPEG, base64.
    image_b64: Arc<String>,
}

impl Workload {
    pub fn new(targets: Targets, tenant: Arc<Tenant>, history: Arc<History>, seed: u64) -> Workload {
        let img = dermagate_inference::synthetic::skin_like(320, 320);
        let mut jpeg = std::io::Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).expect("encoding a JPEG in memory");
        Workload {
            targets,
            tenant,
            history,
            stop: Arc::default(),
            epoch: Arc::default(),
            analyses: Arc::default(),
            revocations: Arc::default(),
            users: Arc::default(),
            reports: Arc::default(),
            unreadable_images: Arc::default(),
            analyses_paused: Arc::default(),
            seed,
            image_b64: Arc::new(base64::engine::general_purpose::STANDARD.encode(jpeg.into_inner())),
        }
    }

    fn rng(&self, worker: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ worker)
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// A target: the load balancer with probability `lb`, else a random node.
    fn pick(&self, rng: &mut StdRng, lb: f64) -> String {
        if self.targets.lb.is_some() && rng.random_bool(lb) {
            return "lb".into();
        }
        let names = self.targets.node_names();
        names[rng.random_range(0..names.len())].clone()
    }

    /// Starts every worker; they run until `stop` is set.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for i in 0..3 {
            let w = self.clone();
            tasks.push(tokio::spawn(async move { w.analyses_loop(i, i < 2).await }));
        }
        // Four writers (three through the balancer, one straight at nodes), so that a request
        // stuck on a frozen or cut-off node does not stop every write of the run.
        for i in 0..4 {
            let w = self.clone();
            tasks.push(tokio::spawn(async move { w.writer_loop(10 + i, if i < 3 { 0.9 } else { 0.0 }).await }));
        }
        let w = self.clone();
        tasks.push(tokio::spawn(async move { w.token_loop(20).await }));
        let w = self.clone();
        tasks.push(tokio::spawn(async move { w.revocation_loop(30).await }));
        for i in 0..3 {
            let w = self.clone();
            tasks.push(tokio::spawn(async move { w.register_loop(40 + i).await }));
        }
        let w = self.clone();
        tasks.push(tokio::spawn(async move { w.reader_loop(50).await }));
        tasks
    }

    async fn pause(&self, rng: &mut StdRng, min_ms: u64, max_ms: u64) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(min_ms..=max_ms))).await;
    }

    // ---- analyses ----

    async fn analyses_loop(&self, worker: u64, via_lb: bool) {
        let mut rng = self.rng(worker);
        let process = format!("analyses-{worker}");
        let mut n = 0u64;
        while self.running() {
            if self.analyses_paused.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            n += 1;
            let key = format!("chaos-{}-{worker}-{n}-{}", self.seed, rng.random::<u32>());
            let subject = format!("subj-{key}");
            let logical = self.one_analysis(&mut rng, &process, &key, &subject, via_lb).await;
            if let Some(id) = &logical.report_id {
                self.reports.lock().push(id.clone());
            }
            self.analyses.lock().push(logical);
            self.pause(&mut rng, 150, 350).await;
        }
    }

    /// One analysis: attempts with the same key until a 201, a definite refusal, or the budget.
    async fn one_analysis(
        &self,
        rng: &mut StdRng,
        process: &str,
        key: &str,
        subject: &str,
        via_lb: bool,
    ) -> LogicalAnalysis {
        let body = json!({
            "images": [{ "data": self.image_b64.as_str(), "contentType": "image/jpeg" }],
            "subject": subject,
            "bodySite": "ARM_LEFT",
        });
        let started_us = self.history.now_us();
        let deadline = tokio::time::Instant::now() + ANALYSIS_RETRY_BUDGET;
        let mut attempts = 0;
        let mut any_unknown = false;
        let mut report_id = None;
        loop {
            attempts += 1;
            let target = if via_lb { "lb".to_string() } else { self.pick(rng, 0.0) };
            let inv = self.history.invoke(process, OpClass::Analysis, "analysis", &target);
            let req = self
                .targets
                .post(&target, "/v1/analyses")
                .header("x-api-key", &self.tenant.client_secret)
                .header("idempotency-key", key)
                .json(&body);
            let a = self.targets.send(req, REQUEST_TIMEOUT).await;
            let id = a.str("id");
            match inv.done(a.status, id.clone()) {
                Outcome::Ok => {
                    report_id = id;
                    break;
                }
                // A request still running under this key (409), a node that cannot serve now
                // (503, 507) or a rate limit: the same key, a little later, as the IFU says.
                Outcome::Fail if !matches!(a.status, Some(409 | 503 | 507 | 429)) => break,
                Outcome::Unknown => any_unknown = true,
                Outcome::Fail => {}
            }
            if tokio::time::Instant::now() + Duration::from_millis(200) > deadline || !self.running() {
                break;
            }
            let wait = a.retry_after.unwrap_or(Duration::from_millis(200)).min(Duration::from_secs(2));
            tokio::time::sleep(wait).await;
        }
        let outcome = match (&report_id, any_unknown) {
            (Some(_), _) => Outcome::Ok,
            (None, true) => Outcome::Unknown,
            (None, false) => Outcome::Fail,
        };
        LogicalAnalysis {
            key: key.to_string(),
            subject: subject.to_string(),
            via_lb,
            attempts,
            report_id,
            outcome,
            invoke_us: started_us,
            complete_us: self.history.now_us(),
        }
    }

    // ---- replicated writes ----

    async fn writer_loop(&self, worker: u64, lb: f64) {
        let mut rng = self.rng(worker);
        let process = format!("writer-{worker}");
        let org = self.tenant.org_id.clone();
        let mut n = 0u64;
        while self.running() {
            n += 1;
            let target = self.pick(&mut rng, lb);
            let token = self.tenant.org_admin.token(&self.targets).await;
            if rng.random_bool(0.5) {
                let username = format!("chaos-w{worker}-{n}-{}", rng.random::<u32>());
                let body = json!({ "username": username, "password": PASSWORD, "roles": ["clinician"] });
                let inv = self.history.invoke(&process, OpClass::Write, "create_user", &target);
                let req = self.targets.post(&target, &format!("/v1/organizations/{org}/users")).bearer_auth(&token);
                let a = self.targets.send(req.json(&body), REQUEST_TIMEOUT).await;
                let id = a.str("id");
                let path = id.as_ref().map(|id| format!("/v1/organizations/{org}/users/{id}"));
                let outcome = inv.done(a.status, path);
                self.users.lock().push(UserWrite { username, outcome, id });
            } else {
                let body = json!({ "name": format!("chaos client {n}"), "scopes": ["reports:read"] });
                let inv = self.history.invoke(&process, OpClass::Write, "create_client", &target);
                let req = self.targets.post(&target, &format!("/v1/organizations/{org}/clients")).bearer_auth(&token);
                let a = self.targets.send(req.json(&body), REQUEST_TIMEOUT).await;
                let path = a.str("clientId").map(|id| format!("/v1/organizations/{org}/clients/{id}"));
                inv.done(a.status, path);
            }
            self.pause(&mut rng, 120, 280).await;
        }
    }

    // ---- tokens ----

    async fn token_loop(&self, worker: u64) {
        let mut rng = self.rng(worker);
        let mut n = 0u64;
        while self.running() {
            n += 1;
            let target = self.pick(&mut rng, 0.6);
            if n.is_multiple_of(20) {
                // A password sign-in now and then (argon2 is deliberately expensive).
                let body = json!({ "username": self.tenant.clinician_username, "password": PASSWORD });
                let inv = self.history.invoke("tokens", OpClass::Token, "sign_in", &target);
                let a =
                    self.targets.send(self.targets.post(&target, "/v1/auth/login").json(&body), REQUEST_TIMEOUT).await;
                inv.done(a.status, None);
            } else {
                let inv = self.history.invoke("tokens", OpClass::Token, "client_credentials", &target);
                let req = self
                    .targets
                    .post(&target, "/oauth/token")
                    .basic_auth(&self.tenant.client_id, Some(&self.tenant.client_secret))
                    .form(&[("grant_type", "client_credentials")]);
                let a = self.targets.send(req, REQUEST_TIMEOUT).await;
                inv.done(a.status, None);
            }
            self.pause(&mut rng, 80, 160).await;
        }
    }

    // ---- revocations ----

    /// Creates a credential, revokes it, then uses it on every node for a while.
    async fn revocation_loop(&self, worker: u64) {
        let mut rng = self.rng(worker);
        let mut n = 0u64;
        while self.running() {
            n += 1;
            let kinds = ["client_deleted", "token_revoked", "user_disabled", "signed_out_everywhere"];
            let kind = kinds[rng.random_range(0..kinds.len())];
            if let Some((credential, revoke)) = self.make_credential(&mut rng, kind, n).await {
                let target = self.pick(&mut rng, 0.5);
                let inv = self.history.invoke("revoker", OpClass::Revocation, kind, &target);
                let a = self.targets.send(revoke(&self.targets, &target), REQUEST_TIMEOUT).await;
                if inv.done(a.status, None) == Outcome::Ok {
                    let acked_us = self.history.now_us();
                    let probes = self.probe_everywhere(&credential.credential(), Duration::from_millis(1500)).await;
                    self.revocations.lock().push(RevocationRecord { kind, credential, acked_us, probes });
                }
            }
            self.pause(&mut rng, 300, 700).await;
        }
    }

    /// A fresh credential of the given kind and the request that revokes it.
    #[allow(clippy::type_complexity)]
    async fn make_credential(
        &self,
        rng: &mut StdRng,
        kind: &'static str,
        n: u64,
    ) -> Option<(CredentialRecord, Box<dyn Fn(&Targets, &str) -> reqwest::RequestBuilder + Send + Sync>)> {
        let org = self.tenant.org_id.clone();
        let admin = self.tenant.org_admin.token(&self.targets).await;
        let target = self.pick(rng, 0.5);
        match kind {
            "client_deleted" | "token_revoked" => {
                let body = json!({ "name": format!("revocable {n}"), "scopes": ["reports:read"] });
                let inv = self.history.invoke("revoker", OpClass::Write, "create_client", &target);
                let req = self.targets.post(&target, &format!("/v1/organizations/{org}/clients")).bearer_auth(&admin);
                let a = self.targets.send(req.json(&body), REQUEST_TIMEOUT).await;
                let id = a.str("clientId");
                inv.done(a.status, id.as_ref().map(|id| format!("/v1/organizations/{org}/clients/{id}")));
                let (id, secret) = (id?, a.str("clientSecret")?);
                if kind == "client_deleted" {
                    let path = format!("/v1/organizations/{org}/clients/{id}");
                    let revoke = move |t: &Targets, target: &str| t.delete(target, &path).bearer_auth(&admin);
                    return Some((CredentialRecord::ApiKey(secret), Box::new(revoke)));
                }
                let token = self.issue_client_token(rng, &id, &secret).await?;
                let revoked = token.clone();
                let revoke = move |t: &Targets, target: &str| {
                    t.post(target, "/oauth/revoke").basic_auth(&id, Some(&secret)).form(&[("token", revoked.as_str())])
                };
                Some((CredentialRecord::Bearer(token), Box::new(revoke)))
            }
            _ => {
                let username = format!("chaos-rv-{}-{n}-{}", self.seed, rng.random::<u32>());
                let body = json!({ "username": username, "password": PASSWORD, "roles": ["clinician"] });
                let inv = self.history.invoke("revoker", OpClass::Write, "create_user", &target);
                let req = self.targets.post(&target, &format!("/v1/organizations/{org}/users")).bearer_auth(&admin);
                let a = self.targets.send(req.json(&body), REQUEST_TIMEOUT).await;
                let id = a.str("id");
                let path = id.as_ref().map(|id| format!("/v1/organizations/{org}/users/{id}"));
                let outcome = inv.done(a.status, path);
                self.users.lock().push(UserWrite { username: username.clone(), outcome, id: id.clone() });
                let id = id?;
                let target = self.pick(rng, 0.5);
                let inv = self.history.invoke("revoker", OpClass::Token, "sign_in", &target);
                let login = json!({ "username": username, "password": PASSWORD });
                let a =
                    self.targets.send(self.targets.post(&target, "/v1/auth/login").json(&login), REQUEST_TIMEOUT).await;
                inv.done(a.status, None);
                let token = a.str("access_token")?;
                if kind == "user_disabled" {
                    let path = format!("/v1/organizations/{org}/users/{id}");
                    let revoke = move |t: &Targets, target: &str| {
                        t.patch(target, &path).bearer_auth(&admin).json(&json!({ "status": "disabled" }))
                    };
                    return Some((CredentialRecord::Bearer(token), Box::new(revoke)));
                }
                let path = format!("/v1/users/{id}/sign-out-everywhere");
                let revoke =
                    move |t: &Targets, target: &str| t.post(target, &path).bearer_auth(&admin).json(&json!({}));
                Some((CredentialRecord::Bearer(token), Box::new(revoke)))
            }
        }
    }

    async fn issue_client_token(&self, rng: &mut StdRng, id: &str, secret: &str) -> Option<String> {
        let target = self.pick(rng, 0.5);
        let inv = self.history.invoke("revoker", OpClass::Token, "client_credentials", &target);
        let req = self
            .targets
            .post(&target, "/oauth/token")
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")]);
        let a = self.targets.send(req, REQUEST_TIMEOUT).await;
        inv.done(a.status, None);
        a.str("access_token")
    }

    /// Uses `credential` on every node every 50 ms for `window`; returns what each answered.
    pub async fn probe_everywhere(&self, credential: &Credential, window: Duration) -> Vec<(u64, u64, Option<u16>)> {
        let end = tokio::time::Instant::now() + window;
        let mut probes = Vec::new();
        while tokio::time::Instant::now() < end {
            let asks = self.targets.nodes.iter().map(|(id, _)| {
                let req = credential.apply(self.targets.get(&format!("node{id}"), "/v1/me"));
                let invoke_us = self.history.now_us();
                async move { (*id, invoke_us, self.targets.send(req, Duration::from_secs(2)).await.status) }
            });
            probes.extend(futures::future::join_all(asks).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        probes
    }

    // ---- registers ----

    async fn register_loop(&self, worker: u64) {
        let mut rng = self.rng(worker);
        let process = format!("register-{worker}");
        let mut n = 0u64;
        while self.running() {
            n += 1;
            let epoch = self.epoch.load(Ordering::Relaxed).min(self.tenant.registers.len() - 1);
            let reg = &self.tenant.registers[epoch];
            let target = self.pick(&mut rng, 0.2);
            let token = self.tenant.platform_admin.token(&self.targets).await;
            let path = format!("/v1/organizations/{}", reg.org_id);
            let action = format!("register:{epoch}");
            if rng.random_bool(0.4) {
                let value = format!("r{epoch}-w{worker}-{n}");
                let inv = self.history.invoke(&process, OpClass::Write, &format!("{action}:write"), &target);
                let req = self.targets.patch(&target, &path).bearer_auth(&token).json(&json!({ "name": value }));
                let a = self.targets.send(req, REQUEST_TIMEOUT).await;
                inv.done(a.status, Some(value));
            } else {
                let inv = self.history.invoke(&process, OpClass::Read, &format!("{action}:read"), &target);
                let a = self.targets.send(self.targets.get(&target, &path).bearer_auth(&token), REQUEST_TIMEOUT).await;
                let name = a.str("name");
                inv.done(a.status, name);
            }
            self.pause(&mut rng, 40, 90).await;
        }
    }

    // ---- reads ----

    async fn reader_loop(&self, worker: u64) {
        let mut rng = self.rng(worker);
        let key = Credential::ApiKey(self.tenant.client_secret.clone());
        while self.running() {
            let target = self.pick(&mut rng, 0.5);
            let report = {
                let reports = self.reports.lock();
                (!reports.is_empty()).then(|| reports[rng.random_range(0..reports.len())].clone())
            };
            let (action, path) = match report {
                Some(id) if rng.random_bool(0.7) => ("read_report", format!("/v1/analyses/{id}")),
                _ => ("read_me", "/v1/me".to_string()),
            };
            let inv = self.history.invoke("reader", OpClass::Read, action, &target);
            let a: Answer = self.targets.send(key.apply(self.targets.get(&target, &path)), REQUEST_TIMEOUT).await;
            inv.done(a.status, None);
            self.pause(&mut rng, 40, 100).await;
        }
    }
}

/// The JSON of one analysis request with `images` (base64 JPEGs) for `subject`.
pub fn analysis_body(images: &[String], subject: &str) -> Value {
    let images: Vec<Value> = images.iter().map(|b| json!({ "data": b, "contentType": "image/jpeg" })).collect();
    json!({ "images": images, "subject": subject, "bodySite": "ARM_LEFT" })
}
