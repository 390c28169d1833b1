//! The attack suite: what the independent penetration test tried, kept as tests against a real
//! cluster behind HAProxy (issue 15). Forwarded-header spoofing through the load balancer,
//! slow bodies holding analysis slots (one tenant against another), request smuggling, oversize
//! uploads, and a scan of every log of the run for personal identifiers. The forgery, BOLA/BFLA,
//! mass-assignment, throttling-race and revocation classes live beside the features they attack
//! (`identity.rs`, `api/tests/router.rs`); sslyze runs in `scripts/check-tls.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dermagate_test_support::{phase, serial, unique, TestCluster};
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "attack-suite-violet-tram";

/// An organisation with an administrator; (org id, admin token).
async fn tenant(c: &TestCluster, admin: &str, name: &str) -> anyhow::Result<(String, String, String)> {
    let (s, org) = c.create_org(1, admin, name).await?;
    anyhow::ensure!(s == 201, "create org {s}");
    let org = org.expect("id");
    let user = unique("atk-admin");
    let body = json!({"username": user, "password": PASSWORD, "roles": ["org_admin"]});
    let (s, _) = c.post(1, &format!("/v1/organizations/{org}/users"), admin, &body).await?;
    anyhow::ensure!(s == 201, "create admin {s}");
    let token = c.login(1, &user, PASSWORD).await?;
    Ok((org, user, token))
}

/// A TLS connection to `url` (https://host:port) trusting the cluster CA, speaking HTTP/1.1.
async fn raw_tls(c: &TestCluster, url: &str) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let pem = std::fs::read(&c.file.ca_cert)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let host_port = url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(host_port).await?;
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    let name = rustls_pki_types::ServerName::try_from(host.to_string())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?)
}

/// Reads what the server sends until it closes or `within` passes.
async fn read_all(stream: &mut (impl AsyncReadExt + Unpin), within: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// traces: FM-06, FM-07
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_a_spoofed_forwarded_for_through_the_load_balancer_buys_no_extra_budget() -> anyhow::Result<()> {
    // M2: HAProxy appends the address it saw; the node reads that entry, not the client's.
    let _serial = serial().await;
    let env = [
        ("DERMAGATE_AUTH__RATE_LIMIT__SIGN_IN_PER_IP_PER_SECOND", "1"),
        ("DERMAGATE_AUTH__RATE_LIMIT__SIGN_IN_PER_IP_BURST", "5"),
    ];
    let c = TestCluster::start_with_lb(3, &env).await?;
    let lb = c.file.lb_url.clone().expect("lb");
    phase("40 sign-ins, each claiming another client address, through HAProxy");
    let mut limited = 0;
    for i in 0..40 {
        let r = c
            .client
            .post(format!("{lb}/v1/auth/login"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({"username": "nobody-here", "password": "wrong-wrong-wrong"}))
            .send()
            .await?;
        if r.status() == 429 {
            limited += 1;
        }
    }
    // Three nodes, each with its own budget of 5: at most 15 get through, the rest are limited.
    assert!(limited >= 25, "only {limited} of 40 were limited: the spoofed header bought budget");
    Ok(())
}

// traces: FM-04, R-17, FM-06
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_slow_uploads_of_one_tenant_neither_starve_another_nor_stay_open() -> anyhow::Result<()> {
    // M5: 24 uploads that send headers and then nothing, from one organisation, to one node.
    let _serial = serial().await;
    let env = [("DERMAGATE_INFERENCE__BODY_DEADLINE_MS", "3000")];
    let c = TestCluster::start(3, &env).await?;
    let admin = c.admin_token(1).await?;
    let (_, _, slow_token) = tenant(&c, &admin, &unique("slowpoke")).await?;
    let (_, _, fair_token) = tenant(&c, &admin, &unique("patient")).await?;
    let node = c.node(2).api_url.clone();
    phase("24 uploads that never finish");
    let mut held = Vec::new();
    for _ in 0..24 {
        let mut s = raw_tls(&c, &node).await?;
        let head = format!(
            "POST /v1/analyses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {slow_token}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{\"images\": ["
        );
        s.write_all(head.as_bytes()).await?;
        s.flush().await?;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    phase("another organisation's analysis is admitted meanwhile");
    let body = json!({"images": [{"data": tiny_png(), "contentType": "image/png"}], "subject": "fair-1", "bodySite": "ARM_LEFT"});
    let r = c.client.post(c.url(2, "/v1/analyses")).bearer_auth(&fair_token).json(&body).send().await?;
    let status = r.status().as_u16();
    let answer: Value = r.json().await.unwrap_or(Value::Null);
    assert_ne!(status, 503, "a tenant's slow uploads starved another tenant: {answer}");
    assert!(status == 201 || status == 400, "{status} {answer}");
    phase("the slow uploads are cut at the body deadline with 408 and closed");
    let started = Instant::now();
    for mut s in held {
        let text = read_all(&mut s, Duration::from_secs(10)).await;
        assert!(text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 503"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(12), "the connections stayed open");
    Ok(())
}

fn tiny_png() -> String {
    use base64::Engine;
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        let v = if (x / 4 + y / 4) % 2 == 0 { 190 } else { 60 };
        image::Rgb([v, (v as f32 * 0.8) as u8, (v as f32 * 0.7) as u8])
    });
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).expect("png");
    base64::engine::general_purpose::STANDARD.encode(png.into_inner())
}

// traces: FM-06, REQ-5.3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_request_smuggling_and_oversize_bodies_are_refused() -> anyhow::Result<()> {
    let _serial = serial().await;
    let c = TestCluster::start_with_lb(3, &[]).await?;
    let admin = c.admin_token(1).await?;
    let lb = c.file.lb_url.clone().expect("lb");
    for target in [lb.clone(), c.node(1).api_url.clone()] {
        phase(&format!("CL.TE smuggling against {target}"));
        let mut s = raw_tls(&c, &target).await?;
        let smuggled = format!("GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\r\n");
        let attack = format!(
            "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        );
        s.write_all(attack.as_bytes()).await?;
        let text = read_all(&mut s, Duration::from_secs(3)).await;
        let answers = text.matches("HTTP/1.1 ").count();
        let me_answered = text.contains("\"organizationId\"");
        assert!(!me_answered, "the smuggled request was answered through {target}: {text}");
        assert!(answers <= 1 || !text.contains("200 OK"), "{answers} answers: {text}");
        phase(&format!("TE.TE obfuscation against {target}"));
        let mut s = raw_tls(&c, &target).await?;
        let attack = "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n";
        s.write_all(attack.as_bytes()).await?;
        let text = read_all(&mut s, Duration::from_secs(3)).await;
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    }
    phase("an upload larger than the limit gets 413 as a problem, also over HTTP/2 through the load balancer");
    let (_, _, token) = tenant(&c, &admin, &unique("oversize")).await?;
    let big = "A".repeat(40 << 20);
    let body = format!("{{\"images\": [{{\"data\": \"{big}\", \"contentType\": \"image/png\"}}], \"subject\": \"s\", \"bodySite\": \"ARM_LEFT\"}}");
    for url in [format!("{lb}/v1/analyses"), c.url(1, "/v1/analyses")] {
        let r = c
            .client
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        assert_eq!(r.status(), 413, "{url}");
        let v: Value = r.json().await?;
        assert!(v["type"].as_str().is_some_and(|t| t.ends_with("payload-too-large")), "{v}");
    }
    Ok(())
}

// traces: REQ-5.4, R-13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_no_personal_identifier_in_any_log_of_a_run() -> anyhow::Result<()> {
    // M7: node logs and the load balancer's access log, after analyses, reads, export and erasure.
    let _serial = serial().await;
    let c = TestCluster::start_with_lb(3, &[]).await?;
    let lb = c.file.lb_url.clone().expect("lb");
    let admin = c.admin_token(1).await?;
    let (org, username, token) = tenant(&c, &admin, &unique("logscan")).await?;
    let subject = unique("ZZsubj-Private-7731");
    let clinician = unique("ZZuser-Private-1187");
    let body = json!({"username": clinician, "password": PASSWORD, "roles": ["clinician"]});
    let (s, _) = c.post(1, &format!("/v1/organizations/{org}/users"), &token, &body).await?;
    assert_eq!(s, 201);
    let clin = c.login(2, &clinician, PASSWORD).await?;
    let _ = c.login(3, &clinician, "a-wrong-password-for-the-log").await;
    phase("analyses, series, export and erasure through the load balancer");
    let analysis = json!({"images": [{"data": tiny_png(), "contentType": "image/png"}], "subject": subject, "bodySite": "ARM_LEFT"});
    let r = c.client.post(format!("{lb}/v1/analyses")).bearer_auth(&clin).json(&analysis).send().await?;
    assert_eq!(r.status(), 201);
    for path in [
        format!("/v1/subjects/{subject}/analyses"),
        format!("/v1/subjects/{subject}/export"),
        format!("/v1/subjects/{subject}/analyses/fhir"),
    ] {
        let r = c.client.get(format!("{lb}{path}")).bearer_auth(&token).send().await?;
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = c.client.delete(format!("{lb}/v1/subjects/{subject}")).bearer_auth(&token).send().await?;
    assert_eq!(r.status(), 200);
    let r = c.client.get(format!("{lb}/v1/subjects/{subject}/analyses")).bearer_auth(&token).send().await?;
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_millis(500)).await;
    phase("grep every log for the subject and the usernames");
    let logs =
        std::fs::read_dir(c.dir.path().join("logs"))?.filter_map(|e| e.ok()).map(|e| e.path()).collect::<Vec<_>>();
    assert!(
        logs.iter().any(|p| p.to_string_lossy().contains("haproxy")),
        "the load balancer's log is scanned too: {logs:?}"
    );
    for log in logs {
        let text = std::fs::read_to_string(&log)?;
        for secret in [subject.as_str(), clinician.as_str(), username.as_str(), PASSWORD] {
            assert!(!text.contains(secret), "{secret} found in {}", log.display());
        }
    }
    Ok(())
}
