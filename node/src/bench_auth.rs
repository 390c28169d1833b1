//! `dermagate bench auth`: what authentication costs. In-process, the microseconds of a token
//! verification (cold signature check and cached) and of the revocation check against the
//! replicated state; over HTTPS keep-alive at 64 connections (with `wrk`), the throughput of the
//! authenticated `GET /v1/me` against the unauthenticated `GET /livez`, and both against nginx
//! (Debian `nginx-light`) serving a tiny JSON body over the same TLS, in the same run: the
//! HTTPS path of a well-tuned web server is the floor to compare with. Prints figures only.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dermagate_domain::command::Command as Cmd;
use dermagate_domain::local::LocalCluster;
use dermagate_domain::records::{Attestation, OrgStatus, Organization, Role, User, UserStatus};
use dermagate_domain::services::identity::{Credential, Identity, IdentitySettings};
use dermagate_domain::services::passwords::{PasswordSettings, Passwords};
use dermagate_domain::services::tokens::{
    claims_for, generate_signing_key, PrincipalKind, TokenService, TokenSettings,
};
use dermagate_domain::services::Context as ServiceContext;
use dermagate_domain::Request;
use openraft::storage::RaftStateMachine;
use uuid::Uuid;

use crate::cluster_file::ClusterFile;

const ROUNDS: u32 = 20_000;

fn per_op(started: Instant, n: u32) -> f64 {
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// A throw-away RocksDB store holding the cluster secret, a signing key, an organisation and a
/// user, applied as Raft would.
async fn fixture() -> anyhow::Result<(tempfile::TempDir, std::sync::Arc<dermagate_storage::Store>, User)> {
    let dir = tempfile::tempdir()?;
    let kek = dermagate_storage::Kek::from_hex(&dermagate_storage::Kek::generate_hex())?;
    let (store, _, mut sm) = dermagate_storage::open(dir.path(), &kek)?;
    let org = Organization {
        id: Uuid::new_v4(),
        name: "bench".into(),
        status: OrgStatus::Active,
        attestation: Attestation { contract_reference: "b".into(), attested_by: "b".into(), attested_at_ms: 0 },
        created_at_ms: 0,
        store_images: false,
    };
    let user = User {
        id: Uuid::new_v4(),
        org_id: org.id,
        username: "bench-user".into(),
        roles: vec![Role::Clinician],
        password_hash: String::new(),
        status: UserStatus::Active,
        tokens_valid_after_ms: 0,
        created_at_ms: 0,
        totp: None,
    };
    let commands = [
        Cmd::EnsureClusterSecret { secret: vec![7; 32] },
        Cmd::PutSigningKey(generate_signing_key(chrono::Utc::now().timestamp()).map_err(|e| anyhow::anyhow!("{e}"))?),
        Cmd::CreateOrganization(org),
        Cmd::CreateUser(user.clone()),
    ];
    let entries: Vec<_> = commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i as u64 + 1),
            payload: openraft::EntryPayload::Normal(Request::new(0, "bench", c)),
        })
        .collect();
    sm.apply(entries).await?;
    Ok((dir, store, user))
}

async fn in_process() -> anyhow::Result<()> {
    let (_dir, store, user) = fixture().await?;
    // The decisions read the RocksDB store; nothing is committed on the measured path.
    let local = LocalCluster::new();
    let ctx = ServiceContext { state: store.clone(), replicator: local.clone(), blobs: local };
    let tokens = std::sync::Arc::new(TokenService::new(store.clone(), TokenSettings::default()));
    let passwords = Passwords::new(&PasswordSettings::default()).map_err(|e| anyhow::anyhow!(e))?;
    let identity = Identity {
        ctx,
        tokens: tokens.clone(),
        passwords,
        settings: IdentitySettings { throttle: Default::default() },
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let issue = || {
        let claims = claims_for(PrincipalKind::User, user.id.to_string(), "c".into(), user.org_id, String::new());
        tokens.issue(claims, now_ms).map(|(t, _)| t).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let now = now_ms / 1000;
    // Distinct tokens, so every verification below is a cold signature check.
    let fresh: Vec<String> = (0..2_000).map(|_| issue()).collect::<Result<_, _>>()?;
    let started = Instant::now();
    for t in &fresh {
        tokens.verify(t, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let cold = per_op(started, fresh.len() as u32);
    let hot_token = &fresh[0];
    let started = Instant::now();
    for _ in 0..ROUNDS {
        tokens.verify(hot_token, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let cached = per_op(started, ROUNDS);
    let first_use: Vec<String> = (0..2_000).map(|_| issue()).collect::<Result<_, _>>()?;
    let started = Instant::now();
    for t in &first_use {
        identity.authenticate(Credential::AccessToken(t)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let decided = per_op(started, first_use.len() as u32);
    let started = Instant::now();
    for _ in 0..ROUNDS {
        identity.authenticate(Credential::AccessToken(hot_token)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let steady = per_op(started, ROUNDS);
    println!("authentication cost per request (in process, one core)");
    println!("  EdDSA verification, cold:                       {cold:>8.1} µs");
    println!("  verification, cached token:                     {cached:>8.1} µs");
    println!("  first use of a token (verify + decide from RocksDB: user, roles, org, revocations): {decided:>6.1} µs");
    println!("  steady state (no credential changed since the last decision): {steady:>8.1} µs");
    Ok(())
}

fn wrk(url: &str, header: Option<&str>, seconds: u64) -> anyhow::Result<f64> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c64", &format!("-d{seconds}s"), "--latency"]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk output: {text}"))?;
    let non2xx = text.lines().find(|l| l.contains("Non-2xx")).unwrap_or("").trim().to_string();
    if !non2xx.is_empty() {
        bail!("wrk saw errors against {url}: {non2xx}");
    }
    Ok(rps)
}

async fn over_https(dir: &Path, seconds: u64) -> anyhow::Result<()> {
    let file = ClusterFile::read(dir)?;
    let client = file.http_client()?;
    let body = serde_json::json!({ "username": file.admin.username, "password": file.admin_password()? });
    let login: serde_json::Value =
        client.post(format!("{}/v1/auth/login", file.nodes[0].api_url)).json(&body).send().await?.json().await?;
    let token = login["access_token"].as_str().context("no access token")?;
    let api = &file.nodes[0].api_url;
    let unauth = wrk(&format!("{api}/livez"), None, seconds)?;
    let auth = wrk(&format!("{api}/v1/me"), Some(&format!("Authorization: Bearer {token}")), seconds)?;
    let ca_dir = file.ca_cert.parent().context("the CA certificate has no directory")?;
    let nginx = match Nginx::start(ca_dir) {
        Ok(n) => Some(wrk(&n.url, None, seconds)?),
        Err(e) => {
            println!("\nnginx not measured: {e:#}");
            None
        }
    };
    println!("\nHTTPS keep-alive, 64 connections, {seconds} s each, one node (wrk -t2 -c64)");
    println!("  build profile of this binary: {}", if cfg!(debug_assertions) { "debug (dev)" } else { "release" });
    println!("  GET /livez (no authentication):  {unauth:>10.0} req/s");
    println!("  GET /v1/me (Bearer token):       {auth:>10.0} req/s");
    if let Some(n) = nginx {
        println!("  nginx, tiny JSON over TLS:       {n:>10.0} req/s");
    }
    println!("  /v1/me / /livez:                 {:>10.2}  (target >= 0.90)", auth / unauth);
    if let Some(n) = nginx {
        println!("  /v1/me / nginx:                  {:>10.2}  (target >= 0.50)", auth / n);
        println!("  /livez / nginx:                  {:>10.2}", unauth / n);
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

pub async fn auth(dir: &Path, seconds: u64) -> anyhow::Result<()> {
    in_process().await?;
    if which_wrk() {
        over_https(dir, seconds).await
    } else {
        println!("\nwrk is not installed (apt-get install wrk): skipping the HTTPS throughput figures");
        Ok(())
    }
}

fn which_wrk() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

/// nginx serving `{"status":"ok"}` over TLS 1.2/1.3 with a certificate from the cluster's CA, two
/// workers (one per core, as `worker_processes auto` gives here), access log off, as a tuned
/// deployment would run it. Stopped and removed when dropped.
struct Nginx {
    dir: tempfile::TempDir,
    child: std::process::Child,
    url: String,
}

impl Nginx {
    fn start(ca_dir: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("dermagate-bench-nginx.").tempdir()?;
        let (cert, key) = crate::certs::issue_pem(ca_dir, "localhost", 2)?;
        std::fs::write(dir.path().join("cert.pem"), cert)?;
        crate::certs::write_private(&dir.path().join("key.pem"), key.as_bytes())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = format!(
            "worker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log error;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n keepalive_requests 1000000;\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
             uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{\n  listen 127.0.0.1:{port} ssl;\n  ssl_certificate {d}/cert.pem;\n\
             ssl_certificate_key {d}/key.pem;\n  ssl_protocols TLSv1.2 TLSv1.3;\n\
             location / {{ default_type application/json; return 200 '{{\"status\":\"ok\"}}'; }}\n }}\n}}\n",
            d = dir.path().display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .args(["-p", &dir.path().to_string_lossy(), "-g", "daemon off;"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting nginx (apt-get install nginx-light)")?;
        let mut nginx = Nginx { dir, child, url: format!("https://127.0.0.1:{port}/") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                let log = std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default();
                bail!("nginx exited at start-up ({status}): {log}");
            }
            anyhow::ensure!(Instant::now() < deadline, "nginx did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT is nginx's graceful stop; the workers go with the master.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let _ = self.child.wait();
    }
}
