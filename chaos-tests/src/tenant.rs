//! The data a chaos run works on, created before any fault: an organisation that keeps images,
//! its administrator and a clinician, a client key for analyses, and a set of organisations whose
//! names serve as single registers for the linearizability checker (one per fault, so that each
//! register's history stays short).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::api::{Answer, Targets};

pub const PASSWORD: &str = "chaos-correct-horse-battery";

/// A user's access token, signed in again before it expires (runs outlast the 15-minute TTL).
pub struct Session {
    username: String,
    token: Mutex<(String, Instant)>,
}

impl Session {
    const REFRESH_AFTER: Duration = Duration::from_secs(600);

    pub async fn sign_in(targets: &Targets, username: &str, password: &str) -> anyhow::Result<Session> {
        let token = login(targets, username, password).await?;
        Ok(Session { username: username.to_string(), token: Mutex::new((token, Instant::now())) })
    }

    /// The current token, signing in again (best effort) when it is old.
    pub async fn token(&self, targets: &Targets) -> String {
        let (token, at) = self.token.lock().clone();
        if at.elapsed() < Self::REFRESH_AFTER {
            return token;
        }
        match login(targets, &self.username, PASSWORD).await {
            Ok(fresh) => {
                *self.token.lock() = (fresh.clone(), Instant::now());
                fresh
            }
            Err(_) => token,
        }
    }
}

/// Signs in through any target that answers (setup runs before faults, but a node may still be
/// settling).
pub async fn login(targets: &Targets, username: &str, password: &str) -> anyhow::Result<String> {
    let body = json!({ "username": username, "password": password });
    let a = retry(targets, |t| targets.post(t, "/v1/auth/login").json(&body)).await?;
    a.str("access_token").context("no access_token in the sign-in answer")
}

/// Sends until a 2xx (any target, up to 30 s): set-up must not fail on a passing election.
pub async fn retry(targets: &Targets, make: impl Fn(&str) -> reqwest::RequestBuilder) -> anyhow::Result<Answer> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let names = targets.node_names();
    let mut i = 0;
    loop {
        let target = &names[i % names.len()];
        let a = targets.send(make(target), Duration::from_secs(10)).await;
        if a.ok() {
            return Ok(a);
        }
        if a.status.is_some_and(|s| (400..500).contains(&s) && s != 409 && s != 429) {
            bail!("set-up request refused: {:?} {}", a.status, a.body);
        }
        if Instant::now() > deadline {
            bail!("set-up request kept failing: {:?} {}", a.status, a.body);
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Everything the workload needs to act in the tenant.
pub struct Tenant {
    pub org_id: String,
    pub org_admin: Session,
    pub clinician_username: String,
    /// A client key with `analyses:write reports:read`, used as a static API key.
    pub client_id: String,
    pub client_secret: String,
    /// Organisations whose names are registers; index = register epoch.
    pub registers: Vec<Register>,
    pub platform_admin: Session,
}

/// An organisation whose name is a register (written and read by the platform administrator).
#[derive(Debug, Clone)]
pub struct Register {
    pub org_id: String,
    pub initial: String,
}

async fn create_org(targets: &Targets, admin: &str, name: &str, store_images: bool) -> anyhow::Result<String> {
    let body = json!({
        "name": name,
        "attestation": { "contractReference": format!("chaos-{name}"), "attestedBy": "chaos suite" },
        "storeImages": store_images,
    });
    let a = retry(targets, |t| targets.post(t, "/v1/organizations").bearer_auth(admin).json(&body)).await?;
    a.str("id").context("organisation id")
}

async fn create_user(targets: &Targets, token: &str, org: &str, username: &str, role: &str) -> anyhow::Result<()> {
    let body = json!({ "username": username, "password": PASSWORD, "roles": [role] });
    retry(targets, |t| targets.post(t, &format!("/v1/organizations/{org}/users")).bearer_auth(token).json(&body))
        .await?;
    Ok(())
}

impl Tenant {
    /// Creates the tenant through the nodes directly; `registers` organisations for the checker.
    pub async fn create(
        targets: &Targets,
        admin_user: &str,
        admin_password: &str,
        run: &str,
        registers: usize,
    ) -> anyhow::Result<Tenant> {
        let platform_admin = Session::sign_in(targets, admin_user, admin_password).await?;
        let admin = platform_admin.token(targets).await;
        let org_id = create_org(targets, &admin, &format!("chaos-clinic-{run}"), true).await?;
        let oa = format!("chaos-oa-{run}");
        create_user(targets, &admin, &org_id, &oa, "org_admin").await?;
        let clinician_username = format!("chaos-clin-{run}");
        create_user(targets, &admin, &org_id, &clinician_username, "clinician").await?;
        let org_admin = Session::sign_in(targets, &oa, PASSWORD).await?;
        let oa_token = org_admin.token(targets).await;
        let body: Value = json!({ "name": "chaos analyses", "scopes": ["analyses:write", "reports:read"] });
        let client = retry(targets, |t| {
            targets.post(t, &format!("/v1/organizations/{org_id}/clients")).bearer_auth(&oa_token).json(&body)
        })
        .await?;
        let client_id = client.str("clientId").context("client_id")?;
        let client_secret = client.str("clientSecret").context("client_secret")?;
        let mut regs = Vec::with_capacity(registers);
        for i in 0..registers {
            let initial = format!("register-{run}-{i}-initial");
            let id = create_org(targets, &admin, &initial, false).await?;
            regs.push(Register { org_id: id, initial });
        }
        Ok(Tenant { org_id, org_admin, clinician_username, client_id, client_secret, registers: regs, platform_admin })
    }
}
