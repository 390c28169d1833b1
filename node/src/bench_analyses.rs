//! `dermagate bench analyses`: what one analysis costs and how many a node serves. Prints, for one
//! 1024x768 JPEG: the in-process stage latencies (decode, quality, model, total), the raw
//! pipeline's and the raw model's own throughput, end-to-end HTTPS latency, throughput at 1, 4 and
//! 16 clients through one node and through all three, the served/raw ratio, and what happens
//! under 2x overload (shed rate, latency of accepted and of shed requests). Asserts nothing.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use dermagate_inference::{Engine, EngineSettings, Model, UploadedImage};
use hdrhistogram::Histogram;

use crate::bench::{bench_client, login};
use crate::cluster_file::ClusterFile;

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A sharp, well-exposed synthetic skin photo (passes the quality gate, so the model runs).
fn test_jpeg() -> anyhow::Result<Vec<u8>> {
    let img = dermagate_inference::synthetic::skin_like(1024, 768);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)?;
    Ok(out.into_inner())
}

/// The model the cluster runs: `DERMAGATE_INFERENCE__MODEL_DIR` (as `make run` passes it to the
/// nodes), or the built-in demonstration model.
fn the_model() -> anyhow::Result<Model> {
    match std::env::var_os("DERMAGATE_INFERENCE__MODEL_DIR") {
        Some(dir) => Model::load(std::path::Path::new(&dir))
            .with_context(|| format!("loading the model in {}", dir.to_string_lossy())),
        None => Ok(Model::embedded_demo()?),
    }
}

/// In-process: the stages of one analysis, then the raw pipeline's and raw model's throughput.
async fn in_process(jpeg: &[u8], seconds: u64) -> anyhow::Result<Raw> {
    let model = the_model()?;
    let (name, side) = (model.manifest.name.clone(), model.manifest.input.width);
    println!("model: {name} ({side}x{side} input)");
    let engine = Arc::new(Engine::new(model, EngineSettings::default()));
    let workers = engine.settings().workers;
    let upload = || vec![UploadedImage { bytes: jpeg.to_vec(), content_type: "image/jpeg".into() }];
    let far = || Instant::now() + Duration::from_secs(60);
    for _ in 0..5 {
        engine.analyse(upload(), false, far()).await?;
    }
    let mut stages: Vec<(&str, Histogram<u64>)> =
        ["decode", "quality", "model", "total"].into_iter().map(|s| (s, histogram())).collect();
    for _ in 0..200 {
        let t = engine.analyse(upload(), false, far()).await?.timings;
        for (name, h) in &mut stages {
            let d = match *name {
                "decode" => t.decode,
                "quality" => t.quality,
                "model" => t.model,
                _ => t.total,
            };
            h.saturating_record((d.as_micros() as u64).max(1));
        }
    }
    println!("one analysis of one 1024x768 JPEG, in process, 200 runs (one at a time)");
    println!("{:>10} {:>10} {:>10}", "stage", "p50 ms", "p99 ms");
    for (name, h) in &stages {
        println!("{name:>10} {:>10.2} {:>10.2}", ms(h, 0.5), ms(h, 0.99));
    }

    let raw_one = raw_pipeline(&engine, jpeg, 1, seconds).await;
    let raw_full = raw_pipeline(&engine, jpeg, workers * 2, seconds).await;

    // The model alone (input tensor already prepared), on the same number of threads.
    let model = Arc::new(the_model()?);
    let input = vec![128u8; model.manifest.input.width * model.manifest.input.height * 3];
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds.min(5));
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (model, count, input) = (model.clone(), count.clone(), &input);
            s.spawn(move || {
                while Instant::now() < end {
                    if model.predict(input).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let raw_model = count.load(Ordering::Relaxed) as f64 / seconds.min(5) as f64;
    println!("\nraw throughput in process (no HTTP, no auth, no Raft)");
    println!("  pipeline (decode + quality + model), one at a time: {raw_one:.1} analyses/s");
    println!("  pipeline, {} in flight on {workers} workers: {raw_full:.1} analyses/s", workers * 2);
    println!(
        "  model alone ({side}x{side} tensor in, probabilities out), {workers} threads: {raw_model:.0} inferences/s"
    );
    println!("  per image, model stage alone: {:.1} ms", 1000.0 * workers as f64 / raw_model.max(1e-9));
    Ok(Raw { one: raw_one, full: raw_full, workers })
}

struct Raw {
    one: f64,
    full: f64,
    workers: usize,
}

/// Analyses/s of the engine with `in_flight` analyses submitted at all times.
async fn raw_pipeline(engine: &Arc<Engine>, jpeg: &[u8], in_flight: usize, seconds: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (engine, done, bytes) = (engine.clone(), done.clone(), jpeg.to_vec());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let up = vec![UploadedImage { bytes: bytes.clone(), content_type: "image/jpeg".into() }];
                    if engine.analyse(up, false, Instant::now() + Duration::from_secs(60)).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}

struct Target {
    client: reqwest::Client,
    key: String,
    /// The request body, serialised once so the client spends no CPU of the shared machine on it.
    body: bytes::Bytes,
}

/// The status and the latency (µs) of one analysis over HTTPS.
async fn analyse_once(t: &Target, url: &str) -> (u16, u64) {
    let started = Instant::now();
    let status = match t
        .client
        .post(format!("{url}/v1/analyses"))
        .header("X-API-Key", &t.key)
        .header("content-type", "application/json")
        .body(t.body.clone())
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    (status, (started.elapsed().as_micros() as u64).max(1))
}

/// Closed loop: `clients` clients, each sending its next analysis when the previous one answered
/// (or, after a 503, once its `Retry-After` has passed, as a well-behaved integrator does).
async fn closed_loop(
    t: Arc<Target>,
    urls: &[String],
    clients: usize,
    duration: Duration,
) -> (u64, u64, Histogram<u64>) {
    let hist = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (t, hist, errors, url) = (t.clone(), hist.clone(), errors.clone(), urls[i % urls.len()].clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let (status, us) = analyse_once(&t, &url).await;
                    if status == 201 {
                        hist.lock().expect("histogram lock").saturating_record(us);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if status == 503 {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let h = hist.lock().expect("histogram lock").clone();
    (h.len(), errors.load(Ordering::Relaxed), h)
}

/// Open loop at `rate` requests/s for `duration` against one node: arrivals do not wait for
/// answers, as real clients under overload do not.
async fn open_loop(t: Arc<Target>, url: &str, rate: f64, duration: Duration) -> (Histogram<u64>, Histogram<u64>, u64) {
    let accepted = Arc::new(Mutex::new(histogram()));
    let shed = Arc::new(Mutex::new(histogram()));
    let other = Arc::new(AtomicU64::new(0));
    let total = (rate * duration.as_secs_f64()).round().min(5_000.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until((start + interval.mul_f64(n as f64)).into()).await;
        let (t, accepted, shed, other, url) =
            (t.clone(), accepted.clone(), shed.clone(), other.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            match analyse_once(&t, &url).await {
                (201, us) => accepted.lock().expect("histogram lock").saturating_record(us),
                (503, us) => shed.lock().expect("histogram lock").saturating_record(us),
                _ => {
                    other.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let a = accepted.lock().expect("histogram lock").clone();
    let s = shed.lock().expect("histogram lock").clone();
    (a, s, other.load(Ordering::Relaxed))
}

/// A client key of a fresh organisation (scope analyses:write), as an integrator would use.
async fn client_key(client: &reqwest::Client, file: &ClusterFile) -> anyhow::Result<String> {
    let admin = login(client, file).await?;
    let api = &file.nodes[0].api_url;
    let org: serde_json::Value = client
        .post(format!("{api}/v1/organizations"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "name": "bench-clinic", "attestation": { "contractReference": "bench", "attestedBy": "bench" } }))
        .send()
        .await?
        .json()
        .await?;
    let org = org["id"].as_str().context("no organisation id")?;
    let created: serde_json::Value = client
        .post(format!("{api}/v1/organizations/{org}/clients"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "name": "bench-client", "scopes": ["analyses:write"], "breakGlass": true }))
        .send()
        .await?
        .json()
        .await?;
    created["clientSecret"].as_str().map(String::from).context("no client secret in the answer")
}

pub async fn analyses(dir: &Path, seconds: u64) -> anyhow::Result<()> {
    let jpeg = test_jpeg()?;
    let raw = in_process(&jpeg, seconds).await?;

    let file = ClusterFile::read(dir)?;
    let client = bench_client(&file)?;
    let key = client_key(&client, &file).await?;
    let body = serde_json::json!({
        "images": [{ "data": base64::engine::general_purpose::STANDARD.encode(&jpeg), "contentType": "image/jpeg" }],
        "subject": "bench-subject-0001",
        "bodySite": "ARM_LEFT",
    });
    let t = Arc::new(Target { client, key, body: bytes::Bytes::from(serde_json::to_vec(&body)?) });
    let all: Vec<String> = file.nodes.iter().map(|n| n.api_url.clone()).collect();
    let one = vec![all[0].clone()];
    if analyse_once(&t, &one[0]).await.0 != 201 {
        bail!("the first analysis was refused; is the cluster up with the per-principal rate limit disabled?");
    }

    let mut h = histogram();
    for _ in 0..100 {
        let (status, us) = analyse_once(&t, &one[0]).await;
        if status == 201 {
            h.saturating_record(us);
        }
    }
    println!("\nend to end over HTTPS (JSON + base64, auth, analysis, report replicated through Raft), 100 runs");
    println!("  p50 {:.2} ms, p99 {:.2} ms", ms(&h, 0.5), ms(&h, 0.99));

    println!("\nthroughput, {seconds} s per row (closed loop; errors = any answer but 201, a 503 is retried after Retry-After)");
    println!(
        "{:>12} {:>8} {:>12} {:>10} {:>10} {:>8} {:>12}",
        "target", "clients", "analyses/s", "p50 ms", "p99 ms", "errors", "served/raw"
    );
    let mut best_one = 0f64;
    for (label, urls) in [("node 1", &one), ("3 nodes", &all)] {
        for clients in [1usize, 4, 16] {
            let (ok, errors, h) = closed_loop(t.clone(), urls, clients, Duration::from_secs(seconds)).await;
            let rate = ok as f64 / seconds as f64;
            if label == "node 1" {
                best_one = best_one.max(rate);
            }
            println!(
                "{label:>12} {clients:>8} {rate:>12.1} {:>10.2} {:>10.2} {errors:>8} {:>12.2}",
                ms(&h, 0.5),
                ms(&h, 0.99),
                rate / if clients == 1 { raw.one } else { raw.full }
            );
        }
    }
    println!(
        "  served/raw = served analyses/s over the raw pipeline's at the same concurrency ({:.1}/s one at a time, {:.1}/s on {} workers)",
        raw.one, raw.full, raw.workers
    );
    println!("  the three nodes share this machine's cores, so \"3 nodes\" shows spreading, not more capacity");

    let rate = (best_one * 2.0).max(1.0);
    println!(
        "\n2x overload: open loop at {rate:.0} requests/s (twice the best one-node rate) for {seconds} s at node 1"
    );
    let (accepted, shed, other) = open_loop(t.clone(), &one[0], rate, Duration::from_secs(seconds)).await;
    let total = accepted.len() + shed.len() + other;
    println!(
        "  offered {total}, accepted {} ({:.1}/s), shed with 503 {} ({:.0}%), other {other}",
        accepted.len(),
        accepted.len() as f64 / seconds as f64,
        shed.len(),
        100.0 * shed.len() as f64 / total.max(1) as f64
    );
    println!("  accepted: p50 {:.2} ms, p99 {:.2} ms", ms(&accepted, 0.5), ms(&accepted, 0.99));
    if !shed.is_empty() {
        println!("  shed (503 + Retry-After): p50 {:.2} ms, p99 {:.2} ms", ms(&shed, 0.5), ms(&shed, 0.99));
    }
    Ok(())
}
