//! `dermagate bench auth`: what authentication costs. In-process, the microseconds of a token
//! verification (cold signature check and cached) and of the revocation check against the
//! replicated state; over HTTPS keep-alive at 64 connections (with `wrk`), the throughput of the
//! authenticated `GET /v1/me` against the unauthenticated `GET /livez`. Prints figures only.

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
    println!("\nHTTPS keep-alive, 64 connections, {seconds} s each, one node (wrk -t2 -c64)");
    println!("  GET /livez (no authentication):  {unauth:>10.0} req/s");
    println!("  GET /v1/me (Bearer token):       {auth:>10.0} req/s");
    println!("  authenticated / unauthenticated: {:>10.2}", auth / unauth);
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
