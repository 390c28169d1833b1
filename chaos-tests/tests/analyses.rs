//! The device's output against a real 3-node cluster over HTTPS (issue 4): analyses, reports
//! served by every node after the computing node dies, every input rule, the quality gate, the
//! time series, idempotent retries across nodes, tenant isolation, FHIR, images opt-in with
//! metadata stripped, and erasure on every node.

#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::collections::HashSet;
use std::io::Cursor;
use std::time::Duration;

use base64::Engine;
use dermagate_chaos_tests::cluster::{phase, serial, unique, TestCluster};
use dermagate_inference::synthetic::skin_like as sharp;
use serde_json::{json, Value};

const PASSWORD: &str = "correct-horse-battery-staple";
const B64: base64::engine::general_purpose::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const ICD11: &str = "http://id.who.int/icd/release/11/mms";

fn map(img: &image::RgbImage, f: impl Fn(u8) -> u8) -> image::RgbImage {
    image::RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let p = img.get_pixel(x, y);
        image::Rgb([f(p[0]), f(p[1]), f(p[2])])
    })
}

fn encode(img: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn jpeg(img: &image::RgbImage) -> Vec<u8> {
    encode(img, image::ImageFormat::Jpeg)
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    encode(img, image::ImageFormat::Png)
}

fn image_json(bytes: &[u8], content_type: &str) -> Value {
    json!({ "data": B64.encode(bytes), "contentType": content_type })
}

fn request(images: Vec<Value>, subject: &str) -> Value {
    json!({ "images": images, "subject": subject, "bodySite": "ARM_LEFT" })
}

/// An organisation and its administrator's token (org admins may analyse, read and erase).
async fn tenant(c: &TestCluster, admin: &str) -> anyhow::Result<(String, String)> {
    let (status, org) = c.create_org(1, admin, &unique("clinic")).await?;
    anyhow::ensure!(status == 201, "create org: {status}");
    let org = org.unwrap();
    let user = unique("orgadmin");
    let body = json!({"username": user, "password": PASSWORD, "roles": ["org_admin"]});
    let (s, _) = c.post(1, &format!("/v1/organizations/{org}/users"), admin, &body).await?;
    anyhow::ensure!(s == 201, "create org admin: {s}");
    Ok((org.clone(), c.login(1, &user, PASSWORD).await?))
}

async fn analyse(c: &TestCluster, node: u64, token: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    c.post(node, "/v1/analyses", token, body).await
}

fn assert_problem(status: u16, body: &Value, want_status: u16, field: &str, rule: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["status"], want_status, "{body}");
    assert_eq!(body["field"], field, "{body}");
    assert_eq!(body["rule"], rule, "{body}");
}

fn check_report_shape(r: &Value) {
    assert!(r["id"].as_str().unwrap().parse::<uuid_like::Id>().is_ok(), "{r}");
    assert_eq!(r["status"], "final");
    assert!(r["issued"].as_str().unwrap().ends_with('Z'));
    assert!(r["analysisDuration"].as_f64().unwrap() >= 0.0);
    assert_eq!(r["demonstration"], true, "the demo model labels every report");
    assert_eq!(r["notice"], "Demonstration model, not for clinical use");
    assert_eq!(r["model"]["name"], "dermagate-demo");
    let conclusions = r["conclusions"].as_array().unwrap();
    assert_eq!(conclusions.len(), 8, "{}", r["imagingStudySeries"]);
    let sum: f64 = conclusions.iter().map(|c| c["probability"].as_f64().unwrap()).sum();
    assert!((sum - 100.0).abs() < 0.011, "probabilities sum to {sum}");
    let probs: Vec<f64> = conclusions.iter().map(|c| c["probability"].as_f64().unwrap()).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "ordered highest first: {probs:?}");
    for c in conclusions {
        assert_eq!(c["system"], ICD11);
        assert!(!c["code"].as_str().unwrap().is_empty() && !c["display"].as_str().unwrap().is_empty());
    }
    let ind = &r["clinicalIndicators"];
    let malignant: f64 =
        conclusions.iter().filter(|c| c["malignant"] == true).map(|c| c["probability"].as_f64().unwrap()).sum();
    assert!(
        (ind["malignancy"].as_f64().unwrap() - malignant).abs() < 0.011,
        "malignancy is the malignant classes' share"
    );
    assert!(ind["urgentReferral"].as_f64().unwrap() <= 100.0);
    assert!((0.0..=1.0).contains(&r["normalizedEntropy"].as_f64().unwrap()));
    let p: Vec<f64> = probs.iter().map(|v| v / 100.0).filter(|v| *v > 0.0).collect();
    let entropy: f64 = -p.iter().map(|v| v * v.log2()).sum::<f64>();
    assert!((r["entropy"].as_f64().unwrap() - entropy).abs() < 0.01, "entropy of the distribution in bits");
    let q = &r["imagingStudySeries"][0]["quality"];
    assert_eq!(q["isValid"], true, "{q}");
    assert!(q["score"].as_u64().unwrap() <= 100);
}

/// Minimal UUID shape check without another dependency.
mod uuid_like {
    pub struct Id;
    impl std::str::FromStr for Id {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let ok = s.len() == 36
                && s.chars().enumerate().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_hexdigit(),
                });
            ok.then_some(Id).ok_or(())
        }
    }
}

// traces, REQ-5.1, REQ-5.3, REQ-5.5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_a_report_survives_the_node_that_computed_it() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut c = TestCluster::start(3, &[]).await?;
    let admin = c.admin_token(1).await?;
    let (_, token) = tenant(&c, &admin).await?;

    phase("POST one 1024x768 JPEG to node 2");
    let body = request(vec![image_json(&jpeg(&sharp(1024, 768)), "image/jpeg")], "subj-0001");
    let r = c.client.post(c.url(2, "/v1/analyses")).bearer_auth(&token).json(&body).send().await?;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str()?.to_string();
    let report: Value = r.json().await?;
    check_report_shape(&report);
    // Under the cluster's public URL (here node 1's: the cluster runs without a load balancer).
    assert_eq!(location, c.url(1, &format!("/v1/analyses/{}", report["id"].as_str().unwrap())));
    let location = format!("/v1/analyses/{}", report["id"].as_str().unwrap());
    assert_eq!(report["subject"], "subj-0001");
    assert_eq!(report["bodySite"]["code"], "ARM_LEFT");

    phase("every node serves the same report, also after node 2 is killed");
    for node in [1, 3] {
        assert_eq!(c.wait_found(node, &location, &token, Duration::from_secs(5)).await?, report);
    }
    c.kill(2);
    for node in [1, 3] {
        let (s, again) = c.get(node, &location, &token).await?;
        assert_eq!((s, &again), (200, &report));
    }

    phase("the platform operator organisation cannot be suspended (it would lock out administration)");
    let r = c
        .client
        .patch(c.url(1, "/v1/organizations/6465726d-6167-6174-6500-000000000001"))
        .bearer_auth(&admin)
        .json(&json!({"status": "suspended"}))
        .send()
        .await?;
    assert_eq!(r.status(), 422);

    phase("the catalogue endpoints");
    let (s, sites) = c.get(1, "/v1/body-sites", &token).await?;
    assert_eq!(s, 200);
    assert!(sites.as_array().unwrap().iter().any(|s| s["code"] == "ARM_LEFT" && s["display"].is_string()));
    let (s, models) = c.get(3, "/v1/models", &token).await?;
    assert_eq!(s, 200);
    let m = &models[0];
    assert_eq!((m["name"].as_str(), m["demonstration"].as_bool()), (Some("dermagate-demo"), Some(true)));
    assert!(m["intendedUse"].as_str().unwrap().contains("not for clinical use"));
    let (s, oip) = c.get(1, "/v2/models/dermagate-demo", &token).await?;
    assert_eq!((s, oip["name"].as_str()), (200, Some("dermagate-demo")));
    let (s, ready) = c.get(1, "/v2/health/ready", "").await?;
    assert_eq!((s, ready["ready"].as_bool()), (200, Some(true)));

    phase("the product documents itself: OpenAPI, the interactive reference and the IFU, from the binary");
    let (s, doc) = c.get(3, "/openapi.json", "").await?;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/v1/analyses"]["post"].is_object());
    for (path, kind) in
        [("/docs", "text/html"), ("/docs/swagger-ui-bundle.js", "text/javascript"), ("/ifu", "text/html")]
    {
        let r = c.client.get(c.url(1, path)).send().await?;
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"].to_str()?.starts_with(kind), "{path}");
    }
    let ifu = c.client.get(c.url(1, "/ifu")).send().await?.text().await?;
    assert!(ifu.contains("Intended purpose") && ifu.contains("Input requirements"));
    Ok(())
}

/// A PNG whose header claims `w` x `h` pixels, with a tiny (valid) body: a decompression bomb's
/// signature without spending the test's memory on building one.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for b in data {
            crc ^= *b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { 0xedb8_8320 ^ (crc >> 1) } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

// traces: FM-06, R-01, R-02, R-03, R-08, R-09, R-10, R-12, R-14, R-16, REQ-5.3, REQ-5.5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_every_input_rule_and_the_quality_gate() -> anyhow::Result<()> {
    let _serial = serial().await;
    // Small limits so the size rules are cheap to reach.
    let env = [("DERMAGATE_INFERENCE__MAX_IMAGE_BYTES", "1000000"), ("DERMAGATE_INFERENCE__MAX_BODY_BYTES", "3000000")];
    let c = TestCluster::start(3, &env).await?;
    let admin = c.admin_token(1).await?;
    let (_, token) = tenant(&c, &admin).await?;
    let good = sharp(640, 480);
    let good_png = png(&good);
    let ok = |images: Vec<Value>| request(images, "subj-rules");

    phase("rules on the request");
    let (s, b) = analyse(&c, 1, &token, &ok(vec![])).await?;
    assert_problem(s, &b, 400, "images", "required");
    let four = vec![image_json(&good_png, "image/png"); 4];
    let (s, b) = analyse(&c, 2, &token, &ok(four)).await?;
    assert_problem(s, &b, 400, "images", "max_items");
    let mut body = ok(vec![image_json(&good_png, "image/png")]);
    body["bodySite"] = json!("ELBOW_OF_THE_MOON");
    let (s, b) = analyse(&c, 3, &token, &body).await?;
    assert_problem(s, &b, 400, "bodySite", "known_body_site");
    let mut body = ok(vec![image_json(&good_png, "image/png")]);
    body["subject"] = json!("John Smith");
    let (s, b) = analyse(&c, 1, &token, &body).await?;
    assert_problem(s, &b, 400, "subject", "pattern");
    let mut body = ok(vec![image_json(&good_png, "image/png")]);
    body["previousReportId"] = json!("not-a-uuid");
    let (s, b) = analyse(&c, 1, &token, &body).await?;
    assert_problem(s, &b, 400, "previousReportId", "uuid");
    let mut body = ok(vec![image_json(&good_png, "image/png")]);
    body["patientName"] = json!("Jane Doe");
    let (s, b) = analyse(&c, 1, &token, &body).await?;
    assert_problem(s, &b, 400, "body", "schema");

    for (field, rule, mut body) in [
        ("subject", "required", ok(vec![image_json(&good_png, "image/png")])),
        ("bodySite", "required", ok(vec![image_json(&good_png, "image/png")])),
        ("knownCondition", "max_length", ok(vec![image_json(&good_png, "image/png")])),
    ] {
        match field {
            "knownCondition" => body["knownCondition"] = json!("x".repeat(201)),
            other => {
                body.as_object_mut().unwrap().remove(other);
            }
        }
        let (s, b) = analyse(&c, 2, &token, &body).await?;
        assert_problem(s, &b, 400, field, rule);
    }
    let r = c
        .client
        .post(c.url(1, "/v1/analyses"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "x".repeat(300))
        .json(&ok(vec![image_json(&good_png, "image/png")]))
        .send()
        .await?;
    let (s, b) = (r.status().as_u16(), r.json::<Value>().await?);
    assert_problem(s, &b, 400, "Idempotency-Key", "pattern");

    phase("rules on each image");
    let (s, b) =
        analyse(&c, 1, &token, &ok(vec![json!({"data": "***not base64***", "contentType": "image/png"})])).await?;
    assert_problem(s, &b, 400, "images[0].data", "base64");
    let (s, b) = analyse(&c, 2, &token, &ok(vec![image_json(&good_png, "image/gif")])).await?;
    assert_problem(s, &b, 400, "images[0].contentType", "content_type");
    let second_lies = vec![image_json(&good_png, "image/png"), image_json(&good_png, "image/jpeg")];
    let (s, b) = analyse(&c, 3, &token, &ok(second_lies)).await?;
    assert_problem(s, &b, 400, "images[1].data", "content_type_matches_bytes");
    let mut corrupt = good_png.clone();
    corrupt.truncate(corrupt.len() / 3);
    let (s, b) = analyse(&c, 1, &token, &ok(vec![image_json(&corrupt, "image/png")])).await?;
    assert_problem(s, &b, 400, "images[0].data", "decodable");
    let (s, b) = analyse(&c, 1, &token, &ok(vec![image_json(&png(&sharp(200, 150)), "image/png")])).await?;
    assert_problem(s, &b, 400, "images[0].data", "min_resolution");
    let whole = jpeg(&good);
    for keep in [whole.len() * 9 / 10, whole.len() / 5] {
        let (s, b) = analyse(&c, 2, &token, &ok(vec![image_json(&whole[..keep], "image/jpeg")])).await?;
        assert_problem(s, &b, 400, "images[0].data", "decodable");
    }
    let (s, b) = analyse(&c, 2, &token, &ok(vec![image_json(&png_claiming(20_000, 20_000), "image/png")])).await?;
    assert_problem(s, &b, 400, "images[0].data", "max_pixels");
    let noise = image::RgbImage::from_fn(800, 600, |x, y| {
        let v = (x.wrapping_mul(2_654_435_761).wrapping_add(y.wrapping_mul(40_503))) as u8;
        image::Rgb([v, v.rotate_left(3), v.rotate_left(5)])
    });
    let big = png(&noise);
    assert!(big.len() > 1_000_000, "noise must exceed the 1 MB image limit: {}", big.len());
    let (s, b) = analyse(&c, 3, &token, &ok(vec![image_json(&big, "image/png")])).await?;
    assert_problem(s, &b, 400, "images[0].data", "max_bytes");

    for site in ["ARM_LEFT ", " ARM_LEFT", "arm_left"] {
        let mut body = ok(vec![image_json(&good_png, "image/png")]);
        body["bodySite"] = json!(site);
        let (s, b) = analyse(&c, 1, &token, &body).await?;
        assert_problem(s, &b, 400, "bodySite", "known_body_site");
    }
    for subject in ["..", "subj\n", " subj"] {
        let mut body = ok(vec![image_json(&good_png, "image/png")]);
        body["subject"] = json!(subject);
        let (s, b) = analyse(&c, 3, &token, &body).await?;
        assert_problem(s, &b, 400, "subject", "pattern");
    }

    phase("a refusal decided before the upload is read still reaches the client");
    let upload = serde_json::to_vec(&ok(vec![image_json(&big, "image/png")]))?;
    let r = c
        .client
        .post(c.url(1, "/v1/analyses"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(upload.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 415);
    let r = c
        .client
        .post(c.url(1, "/v1/analyses"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(upload.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 403, "the platform administrator analyses nothing");
    let r = c
        .client
        .post(c.url(1, "/v1/analyses"))
        .bearer_auth("expired-or-garbage")
        .header("content-type", "application/json")
        .body(upload)
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    // Management routes too, twice on one kept-alive connection.
    let padding = json!({ "name": "x".repeat(600_000) });
    for _ in 0..2 {
        let r = c.client.post(c.url(2, "/v1/organizations")).json(&padding).send().await?;
        assert_eq!(r.status(), 401);
    }

    phase("transport rules: 413, 415, malformed JSON; all problem+json");
    let huge = json!({ "images": [{ "data": "A".repeat(3_500_000), "contentType": "image/png" }], "subject": "s", "bodySite": "FACE" });
    let r = c.client.post(c.url(1, "/v1/analyses")).bearer_auth(&token).json(&huge).send().await?;
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = c
        .client
        .post(c.url(1, "/v1/analyses"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await?;
    assert_eq!(r.status(), 415);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = c
        .client
        .post(c.url(1, "/v1/analyses"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"images\": [")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = c.client.post(c.url(1, "/v1/analyses")).json(&ok(vec![image_json(&good_png, "image/png")])).send().await?;
    assert_eq!(r.status(), 401, "no credentials, no analysis");

    phase("the quality gate: sharp passes, blurred / dark / over-exposed fail with reasons and no diagnosis");
    let (s, passed) = analyse(&c, 1, &token, &ok(vec![image_json(&jpeg(&good), "image/jpeg")])).await?;
    assert_eq!(s, 201, "{passed}");
    check_report_shape(&passed);
    let blurred = image::imageops::blur(&good, 6.0);
    let cases = [
        (jpeg(&blurred), "sharpness"),
        (jpeg(&map(&good, |v| v / 12)), "underexposure"),
        (jpeg(&map(&good, |v| v.saturating_add(170))), "overexposure"),
    ];
    for (bytes, check) in cases {
        let (s, r) = analyse(&c, 2, &token, &ok(vec![image_json(&bytes, "image/jpeg")])).await?;
        assert_eq!(s, 201, "{r}");
        let q = &r["imagingStudySeries"][0]["quality"];
        assert_eq!(q["isValid"], false, "{check}: {q}");
        assert!(q["failedChecks"].as_array().unwrap().iter().any(|c| c == check), "{check}: {q}");
        assert_eq!(r["outcome"], "no_valid_image");
        assert_eq!(r["conclusions"], json!([]), "no diagnosis from an image that failed the gate");
        assert!(r["clinicalIndicators"].is_null() && r["entropy"].is_null());
        assert_eq!(r["imagingStudySeries"][0]["usedForDiagnosis"], false);
    }
    phase("a mixed request: only the valid image is used");
    let (s, r) = analyse(
        &c,
        3,
        &token,
        &ok(vec![image_json(&jpeg(&blurred), "image/jpeg"), image_json(&good_png, "image/png")]),
    )
    .await?;
    assert_eq!(s, 201);
    assert_eq!(r["imagingStudySeries"][0]["usedForDiagnosis"], false);
    assert_eq!(r["imagingStudySeries"][1]["usedForDiagnosis"], true);
    assert_eq!(r["outcome"], "diagnosis");

    phase("multipart/form-data upload");
    let form = reqwest::multipart::Form::new()
        .text("subject", "subj-multipart")
        .text("bodySite", "FACE")
        .part("images", reqwest::multipart::Part::bytes(jpeg(&good)).file_name("a.jpg").mime_str("image/jpeg")?);
    let r = c.client.post(c.url(2, "/v1/analyses")).bearer_auth(&token).multipart(form).send().await?;
    assert_eq!(r.status(), 201);
    let m: Value = r.json().await?;
    assert_eq!((m["subject"].as_str(), m["bodySite"]["code"].as_str()), (Some("subj-multipart"), Some("FACE")));
    check_report_shape(&m);

    let form = reqwest::multipart::Form::new().text("subject", "s").text("patientName", "Jane Doe");
    let r = c.client.post(c.url(2, "/v1/analyses")).bearer_auth(&token).multipart(form).send().await?;
    let (s, b) = (r.status().as_u16(), r.json::<Value>().await?);
    assert_problem(s, &b, 400, "patientName", "schema");

    phase("WebP is read like JPEG and PNG");
    let (s, w) =
        analyse(&c, 3, &token, &ok(vec![image_json(&encode(&good, image::ImageFormat::WebP), "image/webp")])).await?;
    assert_eq!(s, 201, "{w}");
    assert_eq!(w["imagingStudySeries"][0]["contentType"], "image/webp");

    phase("malformed paths and queries answer problem+json too");
    for path in ["/v1/organizations/not-a-uuid", "/v1/subjects/subj-rules/analyses?limit=abc"] {
        let r = c.client.get(c.url(1, path)).bearer_auth(&token).send().await?;
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{path}");
    }

    phase("FHIR: a Bundle whose references all resolve inside it");
    let path = format!("/v1/analyses/{}", passed["id"].as_str().unwrap());
    let r = c
        .client
        .get(c.url(1, &path))
        .bearer_auth(&token)
        .header("accept", "application/fhir+json;q=0.5, application/json")
        .send()
        .await?;
    let kind = r.headers()["content-type"].to_str()?.to_string();
    assert!(kind.starts_with("application/json"), "q-values are honoured: {kind} {}", r.text().await?);
    let r = c.client.get(c.url(3, &path)).bearer_auth(&token).header("accept", "application/fhir+json").send().await?;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str()?.starts_with("application/fhir+json"));
    check_fhir_bundle(&r.json().await?, &passed);
    Ok(())
}

fn check_fhir_bundle(bundle: &Value, report: &Value) {
    assert_eq!(bundle["resourceType"], "Bundle");
    let entries = bundle["entry"].as_array().unwrap();
    let urls: HashSet<&str> = entries.iter().map(|e| e["fullUrl"].as_str().unwrap()).collect();
    assert_eq!(urls.len(), entries.len(), "full URLs are unique");
    let count = |t: &str| entries.iter().filter(|e| e["resource"]["resourceType"] == t).count();
    assert_eq!(count("DiagnosticReport"), 1);
    assert_eq!(count("Device"), 1);
    assert_eq!(count("Patient"), 1);
    assert_eq!(count("Media"), report["imagingStudySeries"].as_array().unwrap().len());
    assert!(count("Observation") >= report["conclusions"].as_array().unwrap().len());
    let mut refs = Vec::new();
    collect_references(bundle, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        assert!(urls.contains(r.as_str()), "reference {r} does not resolve inside the bundle");
    }
    let dr = &entries.iter().find(|e| e["resource"]["resourceType"] == "DiagnosticReport").unwrap()["resource"];
    assert_eq!(dr["id"], report["id"]);
    assert_eq!(dr["status"], "preliminary", "the output supports a clinician's decision; it is not final");
    assert_eq!(dr["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(dr["conclusionCode"][0]["coding"][0]["system"], ICD11);
    assert_eq!(dr["conclusionCode"][0]["coding"][0]["code"], report["conclusions"][0]["code"]);
    let device = &entries.iter().find(|e| e["resource"]["resourceType"] == "Device").unwrap()["resource"];
    assert_eq!(device["version"][0]["value"], report["model"]["version"]);
}

fn collect_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                if k == "reference" {
                    out.push(val.as_str().unwrap().to_string());
                } else {
                    collect_references(val, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_references(i, out)),
        _ => {}
    }
}

/// A JPEG with an EXIF segment carrying a GPS-like marker, as phones write them.
fn jpeg_with_exif(img: &image::RgbImage, marker: &str) -> Vec<u8> {
    let plain = jpeg(img);
    let mut payload = b"Exif\0\0MM\0*\0\0\0\x08".to_vec();
    payload.extend_from_slice(marker.as_bytes());
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&plain[2..]);
    out
}

// traces: FM-05, FM-06, R-02, R-05, R-13, R-15, REQ-5.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_series_idempotency_isolation_images_and_erasure() -> anyhow::Result<()> {
    let _serial = serial().await;
    // One worker, so a queue of slow analyses keeps a keyed request in flight long enough.
    let env = [("DERMAGATE_INFERENCE__WORKERS", "1"), ("DERMAGATE_INFERENCE__QUEUE_CAPACITY", "16")];
    let c = TestCluster::start(3, &env).await?;
    let admin = c.admin_token(1).await?;
    let (org, token) = tenant(&c, &admin).await?;
    let (_, other) = tenant(&c, &admin).await?;
    let img = |seed: u32| image_json(&jpeg(&map(&sharp(640, 480), |v| v.wrapping_add(seed as u8))), "image/jpeg");

    phase("a time series of three points, linked, written through three nodes");
    let mut previous: Option<String> = None;
    let mut ids = Vec::new();
    for node in 1..=3u64 {
        let mut body = request(vec![img(node as u32)], "subj-series");
        if let Some(p) = &previous {
            body["previousReportId"] = json!(p);
        }
        let (s, r) = analyse(&c, node, &token, &body).await?;
        assert_eq!(s, 201, "{r}");
        let id = r["id"].as_str().unwrap().to_string();
        previous = Some(id.clone());
        ids.push(id);
    }
    let (s, page1) = c.get(2, "/v1/subjects/subj-series/analyses?limit=2", &token).await?;
    assert_eq!(s, 200, "{page1}");
    assert_eq!(page1["total"], 3);
    let got: Vec<&str> = page1["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids[..2].iter().map(String::as_str).collect::<Vec<_>>());
    let cursor = page1["nextCursor"].as_str().unwrap();
    let (_, page2) = c.get(3, &format!("/v1/subjects/subj-series/analyses?limit=2&cursor={cursor}"), &token).await?;
    assert_eq!(page2["items"][0]["id"].as_str(), Some(ids[2].as_str()));
    assert_eq!(page2["items"][0]["previousReportId"].as_str(), Some(ids[1].as_str()));
    assert!(page2["nextCursor"].is_null());
    let issued: Vec<String> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["items"].as_array().unwrap())
        .map(|r| r["issued"].as_str().unwrap().to_string())
        .collect();
    assert!(issued.windows(2).all(|w| w[0] <= w[1]), "ordered by issued: {issued:?}");
    let mut bad_link = request(vec![img(9)], "subj-another");
    bad_link["previousReportId"] = json!(ids[0]);
    let (s, b) = analyse(&c, 1, &token, &bad_link).await?;
    assert_problem(s, &b, 400, "previousReportId", "same_subject");

    phase("idempotent retry on another node returns the original; no second point");
    let keyed = request(vec![img(42)], "subj-idem");
    let send = |node: u64, key: &'static str, body: Value| {
        let r =
            c.client.post(c.url(node, "/v1/analyses")).bearer_auth(&token).header("Idempotency-Key", key).json(&body);
        async move {
            let r = r.send().await.unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (r.status().as_u16(), replayed, r.json::<Value>().await.unwrap())
        }
    };
    let (s1, replay1, first) = send(1, "key-0001", keyed.clone()).await;
    assert_eq!((s1, replay1), (201, false));
    let (s2, replay2, second) = send(2, "key-0001", keyed.clone()).await;
    assert_eq!((s2, replay2), (201, true));
    assert_eq!(first, second, "the original report, not a second analysis");
    let (_, series) = c.get(3, "/v1/subjects/subj-idem/analyses", &token).await?;
    assert_eq!(series["total"], 1);
    let (s3, _, problem) = send(3, "key-0001", request(vec![img(43)], "subj-idem")).await;
    assert_eq!(s3, 422, "same key, different body: {problem}");

    phase("same key while the first is still in flight: 409");
    let big = |seed: u32| image_json(&jpeg(&map(&sharp(1024, 768), |v| v.wrapping_add(seed as u8))), "image/jpeg");
    let heavy = request(vec![big(1), big(2), big(3)], "subj-busy");
    let backlog = futures::future::join_all((0..6).map(|_| analyse(&c, 3, &token, &heavy)));
    let in_flight = request(vec![img(7)], "subj-inflight");
    let probe = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first = send(3, "key-0002", in_flight.clone());
        let retry = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            send(1, "key-0002", in_flight.clone()).await
        };
        tokio::join!(first, retry)
    };
    let (done, ((sa, _, a), (sb, _, b))) = tokio::join!(backlog, probe);
    assert!(done.iter().all(|r| matches!(r, Ok((201, _)))), "the backlog is served");
    assert_eq!(sa, 201, "{a}");
    assert_eq!(sb, 409, "a retry while the original is in flight: {b}");
    // The replay, retried on 503 as the IFU tells integrators: right after the heavy backlog a
    // node may briefly not prove its state current (fail closed) or still be busy.
    let mut replay = send(2, "key-0002", in_flight.clone()).await;
    for _ in 0..10 {
        if replay.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        replay = send(2, "key-0002", in_flight.clone()).await;
    }
    let (sc, replayed, again) = replay;
    assert_eq!((sc, replayed, &again["id"]), (201, true, &a["id"]), "{again}");

    phase("another organisation sees nothing: 404 for the report, the subject, its export and erasure");
    assert_eq!(c.get(1, &format!("/v1/analyses/{}", ids[0]), &other).await?.0, 404);
    assert_eq!(c.get(2, "/v1/subjects/subj-series/analyses", &other).await?.0, 404);
    assert_eq!(c.get(3, "/v1/subjects/subj-series/export", &other).await?.0, 404);
    assert_eq!(c.delete(1, "/v1/subjects/subj-series", &other).await?.0, 404);
    assert_eq!(c.get(1, "/v1/subjects/subj-series/analyses", &token).await?.1["total"], 3, "untouched");

    phase("images opt-in: stored copies carry no EXIF");
    let r = c
        .client
        .patch(c.url(1, &format!("/v1/organizations/{org}")))
        .bearer_auth(&token)
        .json(&json!({"storeImages": true}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let marker = "GPS-41.40338N-2.17403E-DEVICE-SN-7731";
    let exif = jpeg_with_exif(&sharp(640, 480), marker);
    let (s, r) = analyse(&c, 2, &token, &request(vec![image_json(&exif, "image/jpeg")], "subj-series")).await?;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["imagingStudySeries"][0]["stored"], true);
    let url = r["imagingStudySeries"][0]["url"].as_str().unwrap().to_string();
    let stored = c.client.get(c.url(3, &url)).bearer_auth(&token).send().await?;
    assert_eq!(stored.status(), 200);
    let bytes = stored.bytes().await?;
    assert!(image::load_from_memory(&bytes).is_ok());
    assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "EXIF marker survived");
    assert!(!bytes.windows(4).any(|w| w == b"Exif"), "an EXIF segment survived");

    phase("export returns everything; erasure removes it on every node, audited");
    let (s, export) = c.get(3, "/v1/subjects/subj-series/export", &token).await?;
    assert_eq!(s, 200);
    assert_eq!(export["reports"].as_array().unwrap().len(), 4);
    assert_eq!(export["images"].as_array().unwrap().len(), 1);
    let (s, erased) = c.delete(1, "/v1/subjects/subj-series", &token).await?;
    assert_eq!(s, 200, "{erased}");
    assert_eq!(erased["erasedReports"], 4);
    assert!(erased["auditId"].is_string());
    for node in 1..=3 {
        assert_eq!(c.get(node, "/v1/subjects/subj-series/analyses", &token).await?.0, 404, "node {node}");
        for id in &ids {
            assert_eq!(c.get(node, &format!("/v1/analyses/{id}"), &token).await?.0, 404, "node {node}");
        }
        assert_eq!(c.client.get(c.url(node, &url)).bearer_auth(&token).send().await?.status(), 404);
    }
    assert_eq!(c.get(1, "/v1/subjects/subj-idem/analyses", &token).await?.0, 200, "other subjects stay");
    Ok(())
}

// traces: FM-02, FM-03, FM-04, R-03, R-17, REQ-5.1, REQ-5.2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_overload_is_shed_at_once_with_retry_after() -> anyhow::Result<()> {
    let _serial = serial().await;
    let env = [("DERMAGATE_INFERENCE__WORKERS", "1"), ("DERMAGATE_INFERENCE__QUEUE_CAPACITY", "1")];
    let c = TestCluster::start(3, &env).await?;
    let admin = c.admin_token(1).await?;
    let (_, token) = tenant(&c, &admin).await?;
    let big = image_json(&jpeg(&sharp(1024, 768)), "image/jpeg");
    let heavy = request(vec![big.clone(), big.clone(), big], "subj-load");

    phase("eight concurrent analyses against one worker and one queue slot");
    let send = || {
        let r = c.client.post(c.url(1, "/v1/analyses")).bearer_auth(&token).json(&heavy);
        async move {
            let r = r.send().await.unwrap();
            let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry_after, r.json::<Value>().await.unwrap())
        }
    };
    let answers = futures::future::join_all((0..8).map(|_| send())).await;
    let shed: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    let served = answers.iter().filter(|(s, _, _)| *s == 201).count();
    assert_eq!(shed.len() + served, 8, "only 201 or 503: {answers:?}");
    assert!(served >= 1, "the worker keeps serving");
    assert!(!shed.is_empty(), "overload must be shed");
    for (_, retry_after, problem) in &shed {
        assert!(retry_after.as_deref().is_some_and(|v| v.parse::<u64>().is_ok()), "Retry-After on every 503");
        assert_eq!(problem["type"], "https://dermagate.dev/problems/overloaded");
    }
    assert!(c.metric(1, "dermagate_inference_shed_total").await.unwrap_or(0.0) >= shed.len() as f64);
    assert!(c.metric(1, "dermagate_http_rejected_total{reason=\"shed\"}").await.unwrap_or(0.0) >= 1.0);

    phase("the inference series an operator watches are exported; client-chosen methods stay bounded");
    let odd = reqwest::Method::from_bytes(b"XDERMAGATEPROBE")?;
    let r = c.client.request(odd, c.url(1, "/livez")).send().await?;
    assert!(r.status().is_client_error());
    let text = c.client.get(&c.node(1).metrics_url).send().await?.text().await?;
    assert!(!text.contains("XDERMAGATEPROBE"), "a request method became a label value");
    for series in [
        "dermagate_inference_queue_depth",
        "dermagate_inference_stage_duration_seconds_bucket{stage=\"decode\"",
        "dermagate_inference_stage_duration_seconds_bucket{stage=\"quality\"",
        "dermagate_inference_stage_duration_seconds_bucket{stage=\"model\"",
        "dermagate_analyses_total{outcome=\"diagnosis\"}",
        "dermagate_build_info{",
    ] {
        assert!(text.contains(series), "{series} missing from /metrics");
    }
    assert!(!text.contains("git_sha=\"unknown\""), "the build is stamped with its commit");

    phase("after the burst the node serves normally");
    let (s, r) = analyse(&c, 1, &token, &heavy).await?;
    assert_eq!(s, 201, "{r}");
    Ok(())
}

// traces: FM-04, R-04, R-06, R-17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_a_follower_behind_on_reports_with_images_catches_up() -> anyhow::Result<()> {
    let _serial = serial().await;
    let c = TestCluster::start(3, &[]).await?;
    let admin = c.admin_token(1).await?;
    let (org, token) = tenant(&c, &admin).await?;
    let r = c
        .client
        .patch(c.url(1, &format!("/v1/organizations/{org}")))
        .bearer_auth(&token)
        .json(&json!({"storeImages": true}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let leader = c.leader().await?;
    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let serving = c.ids().into_iter().find(|id| *id != leader && *id != lagging).unwrap();

    phase("a follower is paused while reports with stored images pile up");
    c.pause(lagging);
    let heavy = |seed: u8| {
        let img = map(&sharp(1600, 1200), |v| v.wrapping_add(seed));
        request(vec![image_json(&jpeg(&img), "image/jpeg"); 3], "subj-catch-up")
    };
    let mut last = String::new();
    for n in 0..30u8 {
        let (s, r) = analyse(&c, if n % 2 == 0 { leader } else { serving }, &token, &heavy(n)).await?;
        assert_eq!(s, 201, "{r}");
        last = r["id"].as_str().unwrap().to_string();
    }
    c.resume(lagging);

    phase("it catches up within seconds and the cluster stays available");
    let target = c.health(leader).await.unwrap()["appliedIndex"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let applied = c.health(lagging).await.and_then(|h| h["appliedIndex"].as_u64()).unwrap_or(0);
        if applied >= target {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node {lagging} stuck at {applied} of {target}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.wait_ready(lagging, Duration::from_secs(10)).await?;
    for node in c.ids() {
        assert!(c.is_ready(node).await, "node {node} not ready after the catch-up");
        assert_eq!(c.get(node, &format!("/v1/analyses/{last}"), &token).await?.0, 200, "node {node}");
    }
    let (s, r) = analyse(&c, lagging, &token, &heavy(99)).await?;
    assert_eq!(s, 201, "{r}");
    Ok(())
}

/// The blob files of a node's data directory (digests).
fn blob_files(c: &TestCluster, node: u64) -> HashSet<String> {
    let root = c.node(node).data_dir.join("blobs");
    let mut out = HashSet::new();
    for shard in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if name.len() == 64 {
                out.insert(name);
            }
        }
    }
    out
}

async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while !ok() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn image_bytes(
    c: &TestCluster,
    node: u64,
    token: &str,
    report: &str,
    index: u32,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let r =
        c.client.get(c.url(node, &format!("/v1/analyses/{report}/images/{index}"))).bearer_auth(token).send().await?;
    Ok((r.status().as_u16(), r.bytes().await?.to_vec()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex_lower(&sha2::Sha256::digest(bytes))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// traces: FM-04, R-04, R-17, REQ-5.2, REQ-5.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_images_live_off_the_log_on_a_quorum_and_every_node_gets_its_copy() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut c = TestCluster::start(3, &[]).await?;
    let admin = c.admin_token(1).await?;
    let (org, token) = tenant(&c, &admin).await?;
    let r = c
        .client
        .patch(c.url(1, &format!("/v1/organizations/{org}")))
        .bearer_auth(&token)
        .json(&json!({"storeImages": true}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let leader = c.leader().await?;
    let away = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let present: Vec<u64> = c.ids().into_iter().filter(|id| *id != away).collect();

    phase("a follower is down while reports with stored images are written through the others");
    c.kill(away);
    let mut reports = Vec::new();
    for n in 0..3u8 {
        let images = vec![
            image_json(&jpeg(&map(&sharp(900, 700), |v| v.wrapping_add(n))), "image/jpeg"),
            image_json(&jpeg(&map(&sharp(900, 700), |v| v.wrapping_add(n + 50))), "image/jpeg"),
        ];
        let (s, r) = analyse(&c, present[(n as usize) % 2], &token, &request(images, "subj-blobs")).await?;
        assert_eq!(s, 201, "{r}");
        reports.push(r["id"].as_str().unwrap().to_string());
    }
    let mut digests = HashSet::new();
    for id in &reports {
        for index in 0..2 {
            let (s, bytes) = image_bytes(&c, present[0], &token, id, index).await?;
            assert_eq!(s, 200);
            digests.insert(sha256_hex(&bytes));
        }
    }
    assert_eq!(digests.len(), 6);
    for node in &present {
        assert!(digests.is_subset(&blob_files(&c, *node)), "node {node} holds every blob (stored on a quorum)");
    }

    phase("the Raft entry of a report carries digests, not bytes");
    let mut sum = 0.0;
    let mut count = 0.0;
    for node in &present {
        sum += c.metric(*node, "dermagate_raft_entry_bytes_sum{command=\"store_report\"}").await.unwrap_or(0.0);
        count += c.metric(*node, "dermagate_raft_entry_bytes_count{command=\"store_report\"}").await.unwrap_or(0.0);
    }
    assert!(count >= 3.0);
    eprintln!("store_report entries: {:.1} KiB on average", sum / count / 1024.0);
    assert!(sum / count < 32.0 * 1024.0, "a report entry must be kilobytes, not megabytes: {} bytes", sum / count);

    phase("the returning follower fetches every blob by itself, verified, before anyone asks");
    c.restart(away)?;
    c.wait_ready(away, Duration::from_secs(30)).await?;
    wait_until("the returning node holds every blob", Duration::from_secs(30), || {
        digests.is_subset(&blob_files(&c, away))
    })
    .await?;
    for id in &reports {
        let (s, bytes) = image_bytes(&c, away, &token, id, 1).await?;
        assert_eq!(s, 200);
        assert!(digests.contains(&sha256_hex(&bytes)));
    }

    phase("a node whose copy is deleted repairs it from a peer when asked for it");
    let victim = sha256_hex(&image_bytes(&c, away, &token, &reports[0], 0).await?.1);
    let path = c.node(away).data_dir.join("blobs").join(&victim[..2]).join(&victim);
    std::fs::remove_file(&path)?;
    let (s, bytes) = image_bytes(&c, away, &token, &reports[0], 0).await?;
    assert_eq!(s, 200);
    assert_eq!(sha256_hex(&bytes), victim);
    assert!(path.is_file(), "the repaired copy is kept");

    phase("an erasure while a node is down: its copies go when it returns");
    let down = present[1];
    c.kill(down);
    let (s, erased) = c.delete(present[0], "/v1/subjects/subj-blobs", &token).await?;
    assert_eq!(s, 200, "{erased}");
    for node in [present[0], away] {
        assert!(
            blob_files(&c, node).is_disjoint(&digests),
            "node {node} deleted the erased subject's images before the acknowledgement"
        );
    }
    assert!(!blob_files(&c, down).is_disjoint(&digests), "the node that was down still has them");
    c.restart(down)?;
    c.wait_ready(down, Duration::from_secs(30)).await?;
    wait_until("the returning node deletes the erased images", Duration::from_secs(30), || {
        blob_files(&c, down).is_disjoint(&digests)
    })
    .await?;
    Ok(())
}

/// A local S3-compatible server (moto, from PyPI) for the S3 blob backend; killed on drop.
struct S3Server {
    child: std::process::Child,
    url: String,
}

impl S3Server {
    async fn start(bucket: &str) -> anyhow::Result<S3Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("moto_server (pip install 'moto[server]', done by scripts/install-deps.sh): {e}")
            })?;
        let server = S3Server { child, url: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.put(format!("{}/{bucket}", server.url)).send().await {
                if r.status().is_success() {
                    return Ok(server);
                }
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "the S3 server did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Keys of the bucket's objects.
    async fn keys(&self, bucket: &str) -> anyhow::Result<Vec<String>> {
        let xml = reqwest::get(format!("{}/{bucket}?list-type=2", self.url)).await?.text().await?;
        Ok(xml.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(String::from).collect())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// traces, REQ-5.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_images_can_live_in_a_shared_s3_bucket_sealed() -> anyhow::Result<()> {
    let _serial = serial().await;
    let bucket = "dermagate-images";
    let s3 = S3Server::start(bucket).await?;
    let keys = tempfile::tempdir()?;
    let (id_file, secret_file) = (keys.path().join("id"), keys.path().join("secret"));
    std::fs::write(&id_file, "testing")?;
    std::fs::write(&secret_file, "testing")?;
    let (id_file, secret_file) = (id_file.display().to_string(), secret_file.display().to_string());
    let env = [
        ("DERMAGATE_STORAGE__BLOBS__BACKEND", "s3"),
        ("DERMAGATE_STORAGE__BLOBS__S3__BUCKET", bucket),
        ("DERMAGATE_STORAGE__BLOBS__S3__ENDPOINT", s3.url.as_str()),
        ("DERMAGATE_STORAGE__BLOBS__S3__ALLOW_HTTP", "true"),
        ("DERMAGATE_STORAGE__BLOBS__S3__ACCESS_KEY_ID_FILE", id_file.as_str()),
        ("DERMAGATE_STORAGE__BLOBS__S3__SECRET_ACCESS_KEY_FILE", secret_file.as_str()),
    ];
    let c = TestCluster::start(3, &env).await?;
    let admin = c.admin_token(1).await?;
    let (org, token) = tenant(&c, &admin).await?;
    let r = c
        .client
        .patch(c.url(1, &format!("/v1/organizations/{org}")))
        .bearer_auth(&token)
        .json(&json!({"storeImages": true}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    phase("an image stored through one node is one sealed object, served by every node");
    let (s, report) =
        analyse(&c, 1, &token, &request(vec![image_json(&jpeg(&sharp(800, 600)), "image/jpeg")], "subj-s3")).await?;
    assert_eq!(s, 201, "{report}");
    let id = report["id"].as_str().unwrap();
    let (s, first) = image_bytes(&c, 2, &token, id, 0).await?;
    assert_eq!(s, 200);
    for node in [1, 3] {
        assert_eq!(image_bytes(&c, node, &token, id, 0).await?, (200, first.clone()), "node {node}");
    }
    let objects = s3.keys(bucket).await?;
    let digest = sha256_hex(&first);
    assert_eq!(objects, vec![format!("dermagate/blobs/{digest}")]);
    let object = reqwest::get(format!("{}/{bucket}/{}", s3.url, objects[0])).await?.bytes().await?;
    assert!(!object.windows(64).any(|w| w == &first[1000..1064]), "the bucket holds no plaintext image");
    for node in c.ids() {
        assert!(blob_files(&c, node).is_empty(), "node {node} keeps no local copy with a shared store");
    }

    phase("erasure deletes the object");
    let (s, _) = c.delete(3, "/v1/subjects/subj-s3", &token).await?;
    assert_eq!(s, 200);
    assert!(s3.keys(bucket).await?.is_empty(), "the erased subject's image is gone from the bucket");
    Ok(())
}
