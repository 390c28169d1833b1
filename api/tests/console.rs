//! The administration console over the real router, domain services, single-node Raft and
//! RocksDB: the session cookie's flags, the CSP and `no-store` on every page, CSRF refusals, a
//! session ended by sign-out, by disabling its user and by sign-out everywhere, RBAC pages
//! (403), another organisation's subject (404), an analysis submitted as a browser form, and the
//! console kept out of the OpenAPI document.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use dermagate_api::console::CONSOLE_CSP;
use dermagate_api::ApiSettings;
use dermagate_test_support::app::{get, post_json, TestApp, ADMIN, ADMIN_PASSWORD};
use serde_json::json;

const PASSWORD: &str = "console-test-amber-kite";

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

async fn send(app: &TestApp, req: Request<Body>) -> Page {
    let resp = app.call(req).await;
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
    Page { status: parts.status.as_u16(), headers: parts.headers, body: String::from_utf8_lossy(&bytes).into() }
}

fn form(path: &str, cookie: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn page(path: &str, cookie: &str) -> Request<Body> {
    Request::get(path).header("cookie", cookie).body(Body::empty()).unwrap()
}

/// Signs in to the console; returns the `Cookie` header value and the Set-Cookie as sent.
async fn sign_in(app: &TestApp, username: &str, password: &str) -> (String, String) {
    let p = send(app, form("/console/login", None, &format!("username={username}&password={password}"))).await;
    assert_eq!(p.status, 303, "console sign-in of {username}: {}", p.body);
    assert_eq!(p.headers["location"], "/console/");
    let set_cookie = p.headers["set-cookie"].to_str().unwrap().to_string();
    let pair = set_cookie.split(';').next().unwrap().to_string();
    (pair, set_cookie)
}

/// The CSRF token of the forms on a page.
fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    body[at..at + 64].to_string()
}

async fn csrf_of(app: &TestApp, cookie: &str) -> String {
    let home = send(app, page("/console/", cookie)).await;
    assert_eq!(home.status, 200, "{}", home.body);
    csrf(&home.body)
}

/// An organisation with an administrator and a clinician (API setup); returns the org id.
async fn tenant(app: &TestApp, admin_token: &str, name: &str) -> String {
    let body = json!({"name": name, "attestation": {"contractReference": "c-1", "attestedBy": "qa"}});
    let (s, _, org) = app.json(post_json("/v1/organizations", Some(admin_token), &body)).await;
    assert_eq!(s, 201, "{org}");
    let org = org["id"].as_str().unwrap().to_string();
    let users = format!("/v1/organizations/{org}/users");
    for (user, role) in [("admin", "org_admin"), ("clinician", "clinician"), ("auditor", "auditor")] {
        let body = json!({"username": format!("{name}-{user}"), "password": PASSWORD, "roles": [role]});
        let (s, _, v) = app.json(post_json(&users, Some(admin_token), &body)).await;
        assert_eq!(s, 201, "{v}");
    }
    org
}

fn skin_png() -> Vec<u8> {
    let img = dermagate_inference::synthetic::skin(dermagate_inference::synthetic::Fitzpatrick::III, 640, 480, 5);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A browser's multipart form for a new analysis (the second and third file inputs left empty).
fn analysis_form(cookie: &str, token: &str, subject: &str, png: &[u8]) -> Request<Body> {
    let boundary = "----consoletestboundary";
    let mut body = Vec::new();
    let mut text = |name: &str, value: &str| {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    };
    text("csrf", token);
    text("subject", subject);
    text("bodySite", "ARM_LEFT");
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"lesion.png\"\r\nContent-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(png);
    body.extend_from_slice(b"\r\n");
    for _ in 0..2 {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"\"\r\nContent-Type: application/octet-stream\r\n\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"previousReportId\"\r\n\r\n\r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    Request::post("/console/analyses")
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .header("cookie", cookie)
        .body(Body::from(body))
        .unwrap()
}

// traces: FM-06, R-13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_session_cookie_flags_csp_and_no_store_on_every_page() {
    let app = TestApp::start(ApiSettings::default()).await.unwrap();

    let login = send(&app, Request::get("/console/login").body(Body::empty()).unwrap()).await;
    assert_eq!(login.status, 200);
    assert_eq!(login.headers["content-security-policy"], CONSOLE_CSP);
    assert_eq!(login.headers["cache-control"], "no-store");
    assert!(!login.body.contains("<script") && !login.body.contains("style="), "no script, no inline style");

    let (cookie, set_cookie) = sign_in(&app, ADMIN, ADMIN_PASSWORD).await;
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/console"] {
        assert!(set_cookie.contains(flag), "{flag} missing from {set_cookie}");
    }
    assert!(cookie.starts_with("dermagate_session=") && cookie.len() > 40, "{cookie}");

    for path in ["/console/", "/console/organizations", "/console/cluster", "/console/users", "/console/nowhere"] {
        let p = send(&app, page(path, &cookie)).await;
        assert!(p.status == 200 || p.status == 404, "{path}: {} {}", p.status, p.body);
        assert_eq!(p.headers["content-security-policy"], CONSOLE_CSP, "{path}");
        assert_eq!(p.headers["cache-control"], "no-store", "{path}");
        assert_eq!(p.headers["x-frame-options"], "DENY", "{path}");
        assert!(p.headers["content-type"].to_str().unwrap().starts_with("text/html"), "{path}: an HTML page");
        assert!(!p.body.contains("<script") && !p.body.contains("style="), "{path}");
    }
    let css = send(&app, Request::get("/console/static/console.css").body(Body::empty()).unwrap()).await;
    assert_eq!((css.status, css.headers["content-type"].to_str().unwrap()), (200, "text/css; charset=utf-8"));

    // Wrong password: the sign-in page again, no session.
    let bad = send(&app, form("/console/login", None, &format!("username={ADMIN}&password=wrong"))).await;
    assert_eq!(bad.status, 401);
    assert!(bad.headers.get("set-cookie").is_none());
    // No session: back to sign-in; a forged cookie too.
    let anon = send(&app, Request::get("/console/users").body(Body::empty()).unwrap()).await;
    assert_eq!((anon.status, anon.headers["location"].to_str().unwrap()), (303, "/console/login"));
    let forged =
        send(&app, page("/console/users", "dermagate_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await;
    assert_eq!(forged.status, 303);

    // The console is not part of the API's documented contract.
    let (s, _, doc) = app.json(get("/openapi.json", None)).await;
    assert_eq!(s, 200);
    assert!(!doc["paths"].as_object().unwrap().keys().any(|k| k.starts_with("/console")));
}

// traces: FM-06, R-13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c20_forms_without_the_sessions_csrf_token_or_from_another_site_are_refused() {
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let (cookie, _) = sign_in(&app, ADMIN, ADMIN_PASSWORD).await;
    let token = csrf_of(&app, &cookie).await;
    let org = "name=csrf-org&contract_reference=c-9&attested_by=qa";

    let missing = send(&app, form("/console/organizations", Some(&cookie), org)).await;
    assert_eq!(missing.status, 403, "{}", missing.body);
    let wrong =
        send(&app, form("/console/organizations", Some(&cookie), &format!("{org}&csrf={}", "0".repeat(64)))).await;
    assert_eq!(wrong.status, 403);
    // Another session's token is wrong for this one.
    let (other, _) = sign_in(&app, ADMIN, ADMIN_PASSWORD).await;
    let other_token = csrf_of(&app, &other).await;
    assert_ne!(other_token, token);
    let crossed = send(&app, form("/console/organizations", Some(&cookie), &format!("{org}&csrf={other_token}"))).await;
    assert_eq!(crossed.status, 403);
    // From another site, even with the right token.
    let mut cross_site = form("/console/organizations", Some(&cookie), &format!("{org}&csrf={token}"));
    cross_site.headers_mut().insert("sec-fetch-site", "cross-site".parse().unwrap());
    assert_eq!(send(&app, cross_site).await.status, 403);
    let mut foreign = form("/console/organizations", Some(&cookie), &format!("{org}&csrf={token}"));
    foreign.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    foreign.headers_mut().insert("host", "dermagate.test".parse().unwrap());
    assert_eq!(send(&app, foreign).await.status, 403);
    // Nothing was created by the refused forms.
    let list = send(&app, page("/console/organizations", &cookie)).await;
    assert!(!list.body.contains("csrf-org"));

    let mut ok = form("/console/organizations", Some(&cookie), &format!("{org}&csrf={token}"));
    ok.headers_mut().insert("origin", "https://dermagate.test".parse().unwrap());
    ok.headers_mut().insert("host", "dermagate.test".parse().unwrap());
    ok.headers_mut().insert("sec-fetch-site", "same-origin".parse().unwrap());
    let created = send(&app, ok).await;
    assert_eq!(created.status, 303, "{}", created.body);
    let list = send(&app, page("/console/organizations", &cookie)).await;
    assert!(list.body.contains("csrf-org"));
}

// traces: FM-10, R-13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c30_sessions_end_with_sign_out_user_disabling_and_sign_out_everywhere() {
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin_token = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    tenant(&app, &admin_token, "ends").await;

    // Sign-out ends the session (the cookie no longer opens anything).
    let (cookie, _) = sign_in(&app, "ends-clinician", PASSWORD).await;
    let token = csrf_of(&app, &cookie).await;
    let out = send(&app, form("/console/logout", Some(&cookie), &format!("csrf={token}"))).await;
    assert_eq!((out.status, out.headers["location"].to_str().unwrap()), (303, "/console/login"));
    assert!(out.headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(send(&app, page("/console/", &cookie)).await.status, 303);

    // The organisation's administrator disables the clinician: its open session ends.
    let (clinician, _) = sign_in(&app, "ends-clinician", PASSWORD).await;
    let (org_admin, _) = sign_in(&app, "ends-admin", PASSWORD).await;
    let users = send(&app, page("/console/users", &org_admin)).await;
    assert_eq!(users.status, 200);
    let row = users.body.find("ends-clinician").unwrap();
    let action = users.body[row..].find("/console/users/").unwrap() + row + "/console/users/".len();
    let clinician_id = users.body[action..action + 36].to_string();
    let token = csrf(&users.body);
    let disable =
        send(&app, form(&format!("/console/users/{clinician_id}/disable"), Some(&org_admin), &format!("csrf={token}")))
            .await;
    assert_eq!(disable.status, 303, "{}", disable.body);
    assert_eq!(send(&app, page("/console/", &clinician)).await.status, 303, "a disabled user's session ends");
    let refused =
        send(&app, form("/console/login", None, &format!("username=ends-clinician&password={PASSWORD}"))).await;
    assert_eq!(refused.status, 401);
    let enable =
        send(&app, form(&format!("/console/users/{clinician_id}/enable"), Some(&org_admin), &format!("csrf={token}")))
            .await;
    assert_eq!(enable.status, 303);
    assert_eq!(send(&app, page("/console/", &clinician)).await.status, 303, "enabling again does not revive it");

    // Sign-out everywhere (here through the API) ends console sessions opened before it.
    let (clinician, _) = sign_in(&app, "ends-clinician", PASSWORD).await;
    assert_eq!(send(&app, page("/console/", &clinician)).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (s, _, v) = app
        .json(post_json(&format!("/v1/users/{clinician_id}/sign-out-everywhere"), Some(&admin_token), &json!({})))
        .await;
    assert!(s == 204 || s == 200, "{s} {v}");
    assert_eq!(send(&app, page("/console/", &clinician)).await.status, 303, "signed out everywhere");
}

// traces: FM-06, R-13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c40_pages_follow_the_rbac_table_and_another_organisations_subject_is_not_found() {
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin_token = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    tenant(&app, &admin_token, "alpha").await;
    tenant(&app, &admin_token, "beta").await;

    let (clinician, _) = sign_in(&app, "alpha-clinician", PASSWORD).await;
    for path in ["/console/users", "/console/clients", "/console/organizations", "/console/cluster", "/console/audit"] {
        let p = send(&app, page(path, &clinician)).await;
        assert_eq!(p.status, 403, "{path}: {}", p.body);
        assert!(p.body.contains("403 Forbidden"), "{path}: an HTML page says why");
    }
    let (auditor, _) = sign_in(&app, "alpha-auditor", PASSWORD).await;
    assert_eq!(send(&app, page("/console/users", &auditor)).await.status, 200);
    assert_eq!(send(&app, page("/console/audit", &auditor)).await.status, 200);
    assert_eq!(send(&app, page("/console/analyses/new", &auditor)).await.status, 403);
    let (platform, _) = sign_in(&app, ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(send(&app, page("/console/subjects/alpha-s1", &platform)).await.status, 403, "no data permission");

    // The clinician submits analyses from the browser form; the series page draws the chart.
    let png = skin_png();
    let token = csrf_of(&app, &clinician).await;
    let mut report = String::new();
    for _ in 0..2 {
        let p = send(&app, analysis_form(&clinician, &token, "alpha-s1", &png)).await;
        assert_eq!(p.status, 303, "{}", p.body);
        report = p.headers["location"].to_str().unwrap().to_string();
        assert!(report.starts_with("/console/reports/"), "{report}");
    }
    let detail = send(&app, page(&report, &clinician)).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert!(detail.body.contains("Conclusions") && detail.body.contains("Quality verdict"));
    let series = send(&app, page("/console/subjects/alpha-s1", &clinician)).await;
    assert_eq!(series.status, 200, "{}", series.body);
    assert!(
        series.body.contains("<svg") && series.body.contains(&format!("href=\"{report}\"")),
        "chart links its points"
    );
    let export = send(&app, page("/console/subjects/alpha-s1/export.json", &clinician)).await;
    assert_eq!(export.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&export.body).unwrap();
    assert_eq!(doc["reports"].as_array().unwrap().len(), 2);
    let fhir = send(&app, page("/console/subjects/alpha-s1/export.fhir.json", &clinician)).await;
    assert_eq!((fhir.status, fhir.headers["content-type"].to_str().unwrap()), (200, "application/fhir+json"));
    // A refused image is explained on the form, with the API's status.
    let refused = send(&app, analysis_form(&clinician, &token, "alpha-s1", b"not an image")).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("role=\"alert\"") && refused.body.contains("enctype=\"multipart/form-data\""));
    // A forged form (no token) does not analyse.
    assert_eq!(send(&app, analysis_form(&clinician, &"0".repeat(64), "alpha-s1", &png)).await.status, 403);

    // Another organisation: not found, whatever its role.
    let (beta, _) = sign_in(&app, "beta-admin", PASSWORD).await;
    assert_eq!(send(&app, page("/console/subjects/alpha-s1", &beta)).await.status, 404);
    assert_eq!(send(&app, page(&report, &beta)).await.status, 404);
    assert_eq!(send(&app, page("/console/subjects/alpha-s1/export.json", &beta)).await.status, 404);

    // Erasure needs the subject typed again, then the subject is gone.
    let (alpha_admin, _) = sign_in(&app, "alpha-admin", PASSWORD).await;
    let token = csrf_of(&app, &alpha_admin).await;
    let erase = "/console/subjects/alpha-s1/erase";
    let wrong = send(&app, form(erase, Some(&alpha_admin), &format!("csrf={token}&confirm=alpha-s2"))).await;
    assert_eq!(wrong.status, 400);
    let done = send(&app, form(erase, Some(&alpha_admin), &format!("csrf={token}&confirm=alpha-s1"))).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(send(&app, page("/console/subjects/alpha-s1", &alpha_admin)).await.status, 404);
}

// traces: FM-06
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c50_org_admin_creates_users_and_client_keys_whose_secret_is_shown_once() {
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin_token = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    tenant(&app, &admin_token, "gamma").await;
    let (org_admin, _) = sign_in(&app, "gamma-admin", PASSWORD).await;
    let token = csrf_of(&app, &org_admin).await;

    let user = format!("csrf={token}&username=gamma-new&password={PASSWORD}&role_clinician=on");
    assert_eq!(send(&app, form("/console/users", Some(&org_admin), &user)).await.status, 303);
    sign_in(&app, "gamma-new", PASSWORD).await;
    // An org admin may not grant platform_admin (no such field is honoured either).
    let escalate = format!("csrf={token}&username=gamma-evil&password={PASSWORD}&role_platform_admin=on");
    let p = send(&app, form("/console/users", Some(&org_admin), &escalate)).await;
    assert_eq!(p.status, 400, "no role chosen: {}", p.body);

    let key = format!("csrf={token}&name=PACS&scope_analyses_write=on&scope_reports_read=on");
    let created = send(&app, form("/console/clients", Some(&org_admin), &key)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let at = created.body.find("id=\"client-secret\">").unwrap() + "id=\"client-secret\">".len();
    let secret = &created.body[at..at + 47];
    assert!(secret.starts_with("dgk_"), "{secret}");
    let list = send(&app, page("/console/clients", &org_admin)).await;
    assert!(list.body.contains("PACS") && !list.body.contains(secret), "the secret is shown once");
    // The secret works as an API key.
    let req = Request::get("/v1/me").header("x-api-key", secret).body(Body::empty()).unwrap();
    let (s, _, me) = app.json(req).await;
    assert_eq!((s, me["kind"].as_str()), (200, Some("client")), "{me}");
}
