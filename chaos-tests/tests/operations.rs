//! Operations with the real tools: HAProxy in front of the cluster keeps authenticated traffic
//! flowing while a node dies and comes back.

#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dermagate_chaos_tests::cluster::{phase, serial, TestCluster};

/// Sends `GET /v1/me` through the balancer from 4 clients until `stop` (at most 30 s);
/// returns (succeeded, total).
async fn steady_stream(client: reqwest::Client, lb: String, token: String, stop: Arc<AtomicBool>) -> (u64, u64) {
    let (ok, total) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs(30);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (client, lb, token) = (client.clone(), lb.clone(), token.clone());
            let (ok, total, stop) = (ok.clone(), total.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let r = client.get(format!("{lb}/v1/me")).bearer_auth(&token).send().await;
                    total.fetch_add(1, Ordering::Relaxed);
                    if r.is_ok_and(|r| r.status().is_success()) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    (ok.load(Ordering::Relaxed), total.load(Ordering::Relaxed))
}

/// SIGKILLs `victim` while traffic flows, restarts it, waits until it is ready again.
async fn kill_and_restart_under_traffic(c: &mut TestCluster, token: &str, victim: u64) -> anyhow::Result<(u64, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let lb = c.file.lb_url.clone().expect("local up --lb records lb_url");
    let traffic = tokio::spawn(steady_stream(c.client.clone(), lb, token.to_string(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.kill(victim);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.restart(victim)?;
    c.wait_ready(victim, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    Ok(traffic.await?)
}

// traces: FM-05, R-02, R-05, R-06, R-14, REQ-5.2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_haproxy_keeps_traffic_flowing_while_a_node_dies_and_returns() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut c = TestCluster::start_with_lb(3, &[("DERMAGATE_AUTH__RATE_LIMIT__PER_PRINCIPAL_PER_SECOND", "0")]).await?;
    let lb = c.file.lb_url.clone().expect("lb_url in cluster.json");
    let r = c.client.get(format!("{lb}/readyz")).send().await?;
    assert!(r.status().is_success(), "the balancer serves /readyz");
    let leader = c.leader().await?;
    let token = c.admin_token(leader).await?;

    phase("a follower is SIGKILLed and restarted: every request succeeds");
    let follower = c.ids().into_iter().find(|id| *id != leader).expect("follower");
    let (ok, total) = kill_and_restart_under_traffic(&mut c, &token, follower).await?;
    eprintln!("follower {follower}: {ok}/{total} requests succeeded");
    assert!(total > 100, "too little traffic to judge: {total}");
    assert_eq!(ok, total, "requests failed while a follower was down");

    phase("the leader is SIGKILLed and restarted: at least 99% succeed");
    let leader = c.leader().await?;
    let (ok, total) = kill_and_restart_under_traffic(&mut c, &token, leader).await?;
    eprintln!("leader {leader}: {ok}/{total} requests succeeded");
    assert!(total > 100, "too little traffic to judge: {total}");
    assert!(ok as f64 >= 0.99 * total as f64, "only {ok}/{total} succeeded across a leader failover");
    Ok(())
}

// traces: FM-01, FM-08, FM-12, R-04, R-13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_backup_wipe_restore_brings_everything_back() -> anyhow::Result<()> {
    use dermagate_chaos_tests::cluster::{binary, unique};
    use serde_json::json;
    let _serial = serial().await;
    let keys = tempfile::tempdir()?;
    let identity = keys.path().join("operator-identity.txt");
    let backup = keys.path().join("cluster.backup");
    let password = "restored-password-123";
    let marker = unique("ZZMARKER-Backup-Clinic");
    let (org_id, username, client_id, secret, report, image);
    {
        let c = TestCluster::start(3, &[]).await?;
        let admin = c.admin_token(1).await?;
        phase("an organisation, a user and a client key");
        let (s, org) = c
            .post(
                1,
                "/v1/organizations",
                &admin,
                &json!({"name": marker, "attestation": {"contractReference": "c-1", "attestedBy": "qa"}, "storeImages": true}),
            )
            .await?;
        assert_eq!(s, 201);
        org_id = org["id"].as_str().expect("id").to_string();
        username = unique("kept");
        let (s, _) = c
            .post(
                2,
                &format!("/v1/organizations/{org_id}/users"),
                &admin,
                &json!({"username": username, "password": password, "roles": ["org_admin"]}),
            )
            .await?;
        assert_eq!(s, 201);
        let (s, client) = c
            .post(
                3,
                &format!("/v1/organizations/{org_id}/clients"),
                &admin,
                &json!({"name": "pacs", "breakGlass": true}),
            )
            .await?;
        assert_eq!(s, 201);
        client_id = client["clientId"].as_str().expect("client_id").to_string();
        secret = client["clientSecret"].as_str().expect("secret").to_string();

        phase("a report in a subject's time series");
        let user_token = c.login(1, &username, password).await?;
        let img = image::RgbImage::from_fn(640, 480, |x, y| {
            let v = if (x / 3 + y / 3) % 2 == 0 { 170 } else { 70 };
            image::Rgb([v, (v as f32 * 0.8) as u8, (v as f32 * 0.7) as u8])
        });
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png)?;
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(png.into_inner());
        let body = json!({"images": [{"data": data, "contentType": "image/png"}], "subject": "subj-kept", "bodySite": "BACK_UPPER"});
        let (s, r) = c.post(2, "/v1/analyses", &user_token, &body).await?;
        assert_eq!(s, 201, "{r}");
        let id = r["id"].as_str().expect("id").to_string();
        let got =
            c.client.get(c.url(3, &format!("/v1/analyses/{id}/images/0"))).bearer_auth(&user_token).send().await?;
        assert_eq!(got.status(), 200, "the analysed image is kept");
        image = got.bytes().await?.to_vec();
        report = r;

        phase("backup: it leaves the node encrypted to the operator's age recipient");
        std::fs::copy(c.dir.path().join("backup-identity.txt"), &identity)?;
        let out = std::process::Command::new(binary())
            .args(["backup", "--dir"])
            .arg(c.dir.path())
            .arg("--out")
            .arg(&backup)
            .output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let bytes = std::fs::read(&backup)?;
        assert!(bytes.starts_with(b"age-encryption.org/v1"), "an age file");
        assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "the backup file is not sealed");
        phase("what the API answers is ciphertext too: no plaintext leaves over HTTP");
        let r = c.client.get(c.url(2, "/v1/cluster/backup")).bearer_auth(&admin).send().await?;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/vnd.age");
        let body = r.bytes().await?;
        assert!(!body.windows(marker.len()).any(|w| w == marker.as_bytes()));
        assert!(!body.windows(7).any(|w| w == b"$argon2"), "no password hash in clear");
        phase("wipe the cluster");
    }

    phase("restore into a new cluster");
    let dir = tempfile::Builder::new().prefix("dermagate-restore-").tempdir()?;
    let out = std::process::Command::new(binary())
        .args(["restore", "--backup"])
        .arg(&backup)
        .arg("--identity")
        .arg(&identity)
        .arg("--dir")
        .arg(dir.path())
        .output()?;
    let restored = TestCluster::adopt(dir)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    phase("the user signs in on every node, the client key works, the organisation is there");
    for node in restored.ids() {
        let token = restored.login(node, &username, password).await?;
        let (s, org) = restored.get(node, &format!("/v1/organizations/{org_id}"), &token).await?;
        assert_eq!((s, org["name"].as_str()), (200, Some(marker.as_str())));
    }
    phase("the report and its time series are back on every node");
    let report_path = format!("/v1/analyses/{}", report["id"].as_str().expect("report id"));
    for node in restored.ids() {
        let token = restored.login(node, &username, password).await?;
        assert_eq!(restored.get(node, &report_path, &token).await?, (200, report.clone()));
        let (s, series) = restored.get(node, "/v1/subjects/subj-kept/analyses", &token).await?;
        assert_eq!((s, series["total"].as_u64()), (200, Some(1)));
    }
    phase("its stored image too, identical, from every node");
    for node in restored.ids() {
        let token = restored.login(node, &username, password).await?;
        let got = restored
            .client
            .get(restored.url(node, &format!("{report_path}/images/0")))
            .bearer_auth(&token)
            .send()
            .await?;
        assert_eq!(got.status(), 200, "node {node}");
        assert_eq!(got.bytes().await?.to_vec(), image, "node {node} serves the image that was backed up");
    }
    let r = restored.client.get(restored.url(2, "/v1/me")).header("x-api-key", &secret).send().await?;
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().await?;
    assert_eq!(me["clientId"].as_str(), Some(client_id.as_str()));

    phase("another identity cannot open the backup");
    let other = keys.path().join("other-identity.txt");
    assert!(std::process::Command::new(binary()).args(["backup-key", "--out"]).arg(&other).status()?.success());
    let out = std::process::Command::new(binary())
        .args(["restore", "--backup"])
        .arg(&backup)
        .arg("--identity")
        .arg(&other)
        .arg("--dir")
        .arg(keys.path().join("never"))
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be opened"));
    Ok(())
}
