//! The HTTP surface in one process (`tower::ServiceExt::oneshot` over the real router, domain
//! services, single-node Raft and RocksDB): validation and error mapping, the security headers,
//! one credential per request, the body deadline, and the security findings each fixed by a
//! design decision (H1 role changes, M4 password change, M6 break-glass, and the low ones).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use dermagate_api::ApiSettings;
use dermagate_test_support::app::{get, post_json, with_json, TestApp, ADMIN, ADMIN_PASSWORD};
use serde_json::json;

const PASSWORD: &str = "router-test-violet-tram";

/// An organisation with an administrator and a clinician; (org id, admin token, clinician id, clinician token).
async fn tenant(app: &TestApp, admin: &str, name: &str) -> (String, String, String, String) {
    let body = json!({"name": name, "attestation": {"contractReference": "c-1", "attestedBy": "qa"}});
    let (s, _, org) = app.json(post_json("/v1/organizations", Some(admin), &body)).await;
    assert_eq!(s, 201, "{org}");
    let org = org["id"].as_str().unwrap().to_string();
    let users = format!("/v1/organizations/{org}/users");
    let oa = format!("{name}-admin");
    let (s, _, _) = app
        .json(post_json(&users, Some(admin), &json!({"username": oa, "password": PASSWORD, "roles": ["org_admin"]})))
        .await;
    assert_eq!(s, 201);
    let oa_token = app.login(&oa, PASSWORD).await.unwrap();
    let cl = format!("{name}-clinician");
    let (s, _, u) = app
        .json(post_json(
            &users,
            Some(&oa_token),
            &json!({"username": cl, "password": PASSWORD, "roles": ["clinician"]}),
        ))
        .await;
    assert_eq!(s, 201, "{u}");
    let cl_token = app.login(&cl, PASSWORD).await.unwrap();
    (org, oa_token, u["id"].as_str().unwrap().to_string(), cl_token)
}

// traces: R-16, REQ-5.3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_errors_are_problems_naming_the_field_and_rule_never_a_rust_type() {
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();

    let (s, h, v) = app.json(post_json("/v1/organizations", Some(&admin), &json!({"name": "x"}))).await;
    assert_eq!((s, v["field"].as_str(), v["rule"].as_str()), (400, Some("attestation"), Some("required")), "{v}");
    assert_eq!(h["content-type"], "application/problem+json");
    let body = json!({"name": "x", "attestation": {"contractReference": "c"}});
    let (s, _, v) = app.json(post_json("/v1/organizations", Some(&admin), &body)).await;
    assert_eq!((s, v["rule"].as_str()), (400, Some("required")), "{v}");
    assert!(v["field"].as_str().unwrap().contains("attestedBy"), "{v}");
    let body = json!({"name": "x", "attestation": {"contractReference": "c", "attestedBy": "a"}, "status": "active"});
    let (s, _, v) = app.json(post_json("/v1/organizations", Some(&admin), &body)).await;
    assert_eq!((s, v["rule"].as_str()), (400, Some("unknown_field")), "{v}");
    let body = json!({"name": 5, "attestation": {"contractReference": "c", "attestedBy": "a"}});
    let (s, _, v) = app.json(post_json("/v1/organizations", Some(&admin), &body)).await;
    assert_eq!(s, 400, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        !detail.contains("struct") && !detail.contains("NewAttestation") && !detail.contains("Request"),
        "{detail}"
    );

    let bad_json = Request::post("/v1/organizations")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {admin}"))
        .body(Body::from("{not json"))
        .unwrap();
    let (s, h, v) = app.json(bad_json).await;
    assert_eq!((s, h["content-type"].to_str().unwrap()), (400, "application/problem+json"), "{v}");
    let no_type = Request::post("/v1/organizations")
        .header("authorization", format!("Bearer {admin}"))
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(app.json(no_type).await.0, 415);
    let (s, h, _) = app.json(get("/v1/nowhere", None)).await;
    assert_eq!((s, h["content-type"].to_str().unwrap()), (404, "application/problem+json"));
    let (s, h, _) = app.json(Request::delete("/v1/me").body(Body::empty()).unwrap()).await;
    assert_eq!((s, h["content-type"].to_str().unwrap()), (405, "application/problem+json"));
    let (s, _, _) = app.json(get("/v1/organizations/not-a-uuid", Some(&admin))).await;
    assert_eq!(s, 400);
}

// traces: R-13, REQ-5.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_every_answer_carries_the_security_headers_and_personal_data_is_never_cached() {
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    for req in [get("/livez", None), get("/v1/me", None), get("/v1/nowhere", None)] {
        let resp = app.call(req).await;
        let h = resp.headers();
        assert!(h["strict-transport-security"].to_str().unwrap().starts_with("max-age="), "{h:?}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h.contains_key("cache-control"));
    }
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    let resp = app.call(get("/v1/me", Some(&admin))).await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
}

// traces: FM-06, FM-11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_one_request_carries_one_credential() {
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    let (org, oa, _, _) = tenant(&app, &admin, "onecred").await;
    let (s, _, key) =
        app.json(post_json(&format!("/v1/organizations/{org}/clients"), Some(&oa), &json!({"name": "pacs"}))).await;
    assert_eq!(s, 201);
    let secret = key["clientSecret"].as_str().unwrap();
    // A valid API key does not paper over an invalid bearer token (or the other way round).
    let req = Request::get("/v1/me")
        .header("x-api-key", secret)
        .header("authorization", "Bearer forged.token.here")
        .body(Body::empty())
        .unwrap();
    let (s, h, v) = app.json(req).await;
    assert_eq!(s, 401, "{v}");
    assert!(h["www-authenticate"].to_str().unwrap().contains("invalid_request"));
    let req = Request::get("/v1/me").header("x-api-key", secret).body(Body::empty()).unwrap();
    assert_eq!(app.json(req).await.0, 200, "the key alone works");
}

// traces: R-17, FM-04
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_an_upload_that_never_finishes_is_cut_at_its_deadline_and_frees_its_slot() {
    let mut settings = ApiSettings::default();
    settings.analyses.body_deadline = Duration::from_millis(300);
    let app = TestApp::start(settings).await.unwrap();
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    let (_, oa, _, _) = tenant(&app, &admin, "slow").await;
    let started = std::time::Instant::now();
    let req = Request::post("/v1/analyses")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {oa}"))
        .body(Body::from_stream(never_ending_body()))
        .unwrap();
    let (s, h, v) = app.json(req).await;
    assert_eq!((s, v["type"].as_str()), (408, Some("https://dermagate.dev/problems/request-timeout")), "{v}");
    assert_eq!(h["connection"], "close");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(app.state.slots.per_tenant(), 4, "a tenant holds at most half of the node's slots");
}

/// A request body that sends its first bytes and then nothing, forever (a slow client).
fn never_ending_body() -> impl futures::Stream<Item = Result<axum::body::Bytes, std::io::Error>> + Send + 'static {
    use futures::StreamExt;
    futures::stream::once(async { Ok(axum::body::Bytes::from_static(b"{\"images\": [")) })
        .chain(futures::stream::pending())
}

// traces: FM-06, FM-10, R-13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_a_demoted_administrator_acts_with_the_new_roles_at_once() {
    // H1: roles come from the replicated record on every request, not from the token.
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    let (org, oa, _, _) = tenant(&app, &admin, "demote").await;
    let second = "demote-second-admin";
    let users = format!("/v1/organizations/{org}/users");
    let (s, _, u) = app
        .json(post_json(&users, Some(&oa), &json!({"username": second, "password": PASSWORD, "roles": ["org_admin"]})))
        .await;
    assert_eq!(s, 201);
    let token = app.login(second, PASSWORD).await.unwrap();
    let make_admin = json!({"username": "demote-made", "password": PASSWORD, "roles": ["org_admin"]});
    let patch = with_json(
        "PATCH",
        &format!("{users}/{}", u["id"].as_str().unwrap()),
        Some(&oa),
        &json!({"roles": ["clinician"]}),
    );
    assert_eq!(app.json(patch).await.0, 200);
    let (s, _, v) = app.json(post_json(&users, Some(&token), &make_admin)).await;
    assert_eq!(s, 403, "the old token acts as a clinician now: {v}");
    let (s, _, _) =
        app.json(post_json(&format!("/v1/organizations/{org}/clients"), Some(&token), &json!({"name": "x"}))).await;
    assert_eq!(s, 403);
    let (_, _, me) = app.json(get("/v1/me", Some(&token))).await;
    assert_eq!(me["roles"], json!(["clinician"]));
}

// traces: FM-12, FM-06
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_a_password_changes_only_with_the_current_one() {
    // M4: a stolen token alone cannot take the account over.
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    let (org, _, clinician, token) = tenant(&app, &admin, "pwchange").await;
    let path = format!("/v1/organizations/{org}/users/{clinician}");
    let (s, _, v) =
        app.json(with_json("PATCH", &path, Some(&token), &json!({"password": "a-new-long-passphrase"}))).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("currentPassword")), "{v}");
    let wrong = json!({"password": "a-new-long-passphrase", "currentPassword": "not-the-password"});
    let (s, _, v) = app.json(with_json("PATCH", &path, Some(&token), &wrong)).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("currentPassword")), "{v}");
    let weak = json!({"password": "password12345", "currentPassword": PASSWORD});
    let (s, _, v) = app.json(with_json("PATCH", &path, Some(&token), &weak)).await;
    assert_eq!((s, v["rule"].as_str()), (400, Some("not_common")), "{v}");
    let right = json!({"password": "a-new-long-passphrase", "currentPassword": PASSWORD});
    let (s, _, v) = app.json(with_json("PATCH", &path, Some(&token), &right)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(app.json(get("/v1/me", Some(&token))).await.0, 401, "every other session ends");
    assert!(app.login("pwchange-clinician", "a-new-long-passphrase").await.is_ok());
}

// traces: R-13, REQ-5.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_the_platform_mints_no_tenant_key_without_break_glass_and_the_tenant_sees_it() {
    // M6.
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    let (org, oa, _, _) = tenant(&app, &admin, "glass").await;
    let clients = format!("/v1/organizations/{org}/clients");
    let (s, _, v) =
        app.json(post_json(&clients, Some(&admin), &json!({"name": "quiet", "scopes": ["reports:read"]}))).await;
    assert_eq!(s, 403, "{v}");
    let (s, _, _) = app
        .json(post_json(
            &clients,
            Some(&admin),
            &json!({"name": "loud", "scopes": ["reports:read"], "breakGlass": true}),
        ))
        .await;
    assert_eq!(s, 201);
    let (s, _, trail) = app.json(get("/v1/audit?limit=500", Some(&oa))).await;
    assert_eq!(s, 200, "{trail}");
    let actions: Vec<&str> = trail["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"client_created_break_glass"), "{actions:?}");
    assert!(actions.contains(&"user_created_break_glass"), "the org admin the platform created shows too: {actions:?}");
    // The platform reads its own trail, not the tenant's.
    let (_, _, own) = app.json(get("/v1/audit", Some(&admin))).await;
    assert!(own["items"].as_array().unwrap().iter().all(|e| e["organizationId"] != json!(org)), "{own}");
}

// traces: FM-06, FM-10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t80_low_findings_introspection_oracles_and_scope_narrowing() {
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    let (org, oa, _, clinician) = tenant(&app, &admin, "lows").await;
    let (_, other_oa, other_clinician_id, _) = tenant(&app, &admin, "lows-b").await;

    let form = |token: &str, auth: &str| {
        Request::post("/oauth/introspect")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Bearer {auth}"))
            .body(Body::from(format!("token={token}")))
            .unwrap()
    };
    let (s, _, v) = app.json(form(&oa, &clinician)).await;
    assert_eq!((s, v["active"].as_bool()), (200, Some(false)), "a clinician learns nothing of an admin's token: {v}");
    let (_, _, v) = app.json(form(&clinician, &oa)).await;
    assert_eq!(v["active"].as_bool(), Some(true), "its administrator may introspect it");

    let path = format!("/v1/users/{other_clinician_id}/sign-out-everywhere");
    let (s, _, _) = app.json(post_json(&path, Some(&oa), &json!({}))).await;
    assert_eq!(s, 404, "another organisation's user is not found, not forbidden");
    let (s, _, _) = app.json(post_json(&path, Some(&other_oa), &json!({}))).await;
    assert_eq!(s, 204);

    let (_, _, key) =
        app.json(post_json(&format!("/v1/organizations/{org}/clients"), Some(&oa), &json!({"name": "narrow"}))).await;
    let basic = |scope: &str| {
        use base64::Engine;
        let creds = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            key["clientId"].as_str().unwrap(),
            key["clientSecret"].as_str().unwrap()
        ));
        Request::post("/oauth/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Basic {creds}"))
            .body(Body::from(format!("grant_type=client_credentials&scope={scope}")))
            .unwrap()
    };
    let (s, _, v) = app.json(basic("subjects:erase")).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")), "{v}");
    let (s, _, v) = app.json(basic("reports:read")).await;
    assert_eq!(s, 200, "{v}");
    let narrow = v["access_token"].as_str().unwrap();
    let body =
        json!({"images": [{"data": "AAAA", "contentType": "image/png"}], "subject": "s-1", "bodySite": "ARM_LEFT"});
    let (s, _, _) = app.json(post_json("/v1/analyses", Some(narrow), &body)).await;
    assert_eq!(s, 403, "a token narrowed to reports:read cannot analyse");
}

fn png_base64(img: &image::RgbImage) -> String {
    use base64::Engine;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    base64::engine::general_purpose::STANDARD.encode(out.into_inner())
}

// traces
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_the_legit_health_profile_is_the_same_device_in_their_shape() {
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    let (_, _, _, _) = tenant(&app, &admin, "legit").await;
    let login = Request::post("/compat/legit/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("username=legit-clinician&password={PASSWORD}")))
        .unwrap();
    let (s, _, token) = app.json(login).await;
    assert_eq!(s, 200, "{token}");
    assert!(token["expires_in_minutes"].as_u64().unwrap() > 0);
    let token = token["access_token"].as_str().unwrap().to_string();

    let skin =
        png_base64(&dermagate_inference::synthetic::skin(dermagate_inference::synthetic::Fitzpatrick::V, 640, 480, 3));
    let request = |previous: Option<&str>| {
        let mut body = json!({
            "payload": [{"contentAttachment": {"data": skin, "title": "close-up", "contentType": "image/png"}}],
            "bodySite": "armLeft",
            "knownCondition": {"conclusion": {"text": "Naevus"}},
            "subject": {"reference": "legit-subject-1"},
        });
        if let Some(p) = previous {
            body["previousDiagnosticReportId"] = json!(p);
        }
        body
    };
    let first_req = Request::post("/compat/legit/diagnosis-support")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("idempotency-key", "legit-key-1")
        .body(Body::from(request(None).to_string()))
        .unwrap();
    let (s, h, first) = app.json(first_req).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["status"], "preliminary");
    assert_eq!(first["conclusions"][0]["coding"]["system"], "ICD-11", "{first}");
    let validity = &first["imagingStudySeries"][0]["media"]["validity"];
    assert_eq!(validity["isValid"], true, "{first}");
    assert_eq!(validity["metrics"]["domain"]["isDermatological"], true);
    let id = first["identifier"]["value"].as_str().unwrap().to_string();
    assert!(h["location"].to_str().unwrap().ends_with(&format!("/v1/analyses/{id}")));

    let (s, _, native) = app.json(get(&format!("/v1/analyses/{id}"), Some(&token))).await;
    assert_eq!(
        (s, native["bodySite"]["code"].as_str(), native["knownCondition"].as_str()),
        (200, Some("ARM_LEFT"), Some("Naevus"))
    );

    let replay = Request::post("/compat/legit/diagnosis-support")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("idempotency-key", "legit-key-1")
        .body(Body::from(request(None).to_string()))
        .unwrap();
    let (s, h, again) = app.json(replay).await;
    assert_eq!((s, again["identifier"]["value"].as_str()), (200, Some(id.as_str())));
    assert_eq!(h["idempotent-replayed"], "true");

    let second = app.json(post_json("/compat/legit/diagnosis-support", Some(&token), &request(Some(&id)))).await;
    assert_eq!(second.0, 200, "{}", second.2);
    assert_eq!(second.2["previousDiagnosticReportId"].as_str(), Some(id.as_str()));
    let (_, _, series) = app.json(get("/v1/subjects/legit-subject-1/analyses", Some(&token))).await;
    assert_eq!(series["total"], 2, "one series for both shapes: {series}");
    assert_eq!(series["items"][0]["nextReportId"], second.2["identifier"]["value"]);

    let noise = dermagate_inference::synthetic::noise(640, 480, 9);
    let body = json!({"payload": [{"contentAttachment": {"data": png_base64(&noise), "contentType": "image/png"}}], "bodySite": "armLeft"});
    let (s, _, out) = app.json(post_json("/compat/legit/diagnosis-support", Some(&token), &body)).await;
    assert_eq!(s, 200, "{out}");
    let media = &out["imagingStudySeries"][0]["media"]["validity"];
    assert_eq!(
        (media["isValid"].as_bool(), media["metrics"]["domain"]["isDermatological"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(out["conclusions"], json!([]), "no diagnosis from an image that is not of skin");
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn login_body(username: &str, password: &str, otp: Option<&str>) -> serde_json::Value {
    match otp {
        Some(code) => json!({"username": username, "password": password, "otp": code}),
        None => json!({"username": username, "password": password}),
    }
}

// traces: FM-06, R-13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t95_a_second_factor_is_enrolled_confirmed_required_used_once_and_removed_by_the_admin() {
    use dermagate_domain::services::totp;
    let app = TestApp::start(ApiSettings::default()).await.unwrap();
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    let (org, oa, clinician, token) = tenant(&app, &admin, "totp").await;
    let user = "totp-clinician";

    let (s, h, enrolment) = app.json(post_json("/v1/me/totp", Some(&token), &json!({}))).await;
    assert_eq!(s, 201, "{enrolment}");
    assert_eq!(h["cache-control"], "no-store", "the secret and recovery codes are shown once");
    assert!(enrolment["otpauthUri"].as_str().unwrap().starts_with("otpauth://totp/"), "{enrolment}");
    let recovery: Vec<String> =
        enrolment["recoveryCodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert!(recovery.len() >= 8, "{enrolment}");
    let secret = totp::decode_secret(enrolment["secret"].as_str().unwrap()).unwrap();
    // Until it is confirmed, the factor does not count: a lost enrolment cannot lock anyone out.
    assert!(app.login(user, PASSWORD).await.is_ok());

    let (s, _, v) = app.json(post_json("/v1/me/totp/confirm", Some(&token), &json!({"code": "000000x"}))).await;
    assert_eq!(s, 400, "{v}");
    let now = now_secs();
    let current = totp::code_at(&secret, now).unwrap();
    let (s, _, v) = app.json(post_json("/v1/me/totp/confirm", Some(&token), &json!({"code": current}))).await;
    assert_eq!(s, 204, "{v}");

    // Confirmed: the password alone no longer signs in, and the problem names the missing field.
    let (s, _, v) = app.json(post_json("/v1/auth/login", None, &login_body(user, PASSWORD, None))).await;
    assert_eq!(s, 401, "{v}");
    assert!(v.to_string().contains("otp"), "{v}");
    let wrong = if current == "123456" { "654321" } else { "123456" };
    let (s, _, _) = app.json(post_json("/v1/auth/login", None, &login_body(user, PASSWORD, Some(wrong)))).await;
    assert_eq!(s, 401);
    // A code already used (the confirmation's) is not accepted again: no replay within its step.
    let (s, _, _) = app.json(post_json("/v1/auth/login", None, &login_body(user, PASSWORD, Some(&current)))).await;
    assert_eq!(s, 401, "a used code must not sign in again");
    let next = totp::code_at(&secret, now + 30).unwrap();
    let (s, _, signed) = app.json(post_json("/v1/auth/login", None, &login_body(user, PASSWORD, Some(&next)))).await;
    assert_eq!(s, 200, "{signed}");
    let with_factor = signed["access_token"].as_str().unwrap().to_string();
    let (_, _, me) = app.json(get("/v1/me", Some(&with_factor))).await;
    assert_eq!(me["secondFactorUsed"], true, "{me}");

    // A recovery code works once.
    let body = login_body(user, PASSWORD, Some(&recovery[0]));
    assert_eq!(app.json(post_json("/v1/auth/login", None, &body)).await.0, 200);
    assert_eq!(app.json(post_json("/v1/auth/login", None, &body)).await.0, 401, "recovery codes are single-use");

    // The organisation's administrator removes the factor of a user who lost the device.
    let del = Request::builder()
        .method("DELETE")
        .uri(format!("/v1/organizations/{org}/users/{clinician}/totp"))
        .header("authorization", format!("Bearer {oa}"))
        .body(Body::empty())
        .unwrap();
    let (s, _, v) = app.json(del).await;
    assert_eq!(s, 204, "{v}");
    assert!(app.login(user, PASSWORD).await.is_ok(), "the password alone signs in again");

    // The platform may require a second factor of administrators only once its own
    // administrator has used one; without it, an administrator keeps only non-admin roles.
    let (s, _, v) =
        app.json(with_json("PUT", "/v1/platform/settings", Some(&admin), &json!({"requireAdminMfa": true}))).await;
    assert_eq!(s, 409, "{v}");
    let (s, _, v) = app.json(get("/v1/platform/settings", Some(&admin))).await;
    assert_eq!((s, &v["requireAdminMfa"]), (200, &json!(false)), "{v}");
}
