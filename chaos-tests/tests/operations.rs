//! Operations with the real tools: HAProxy in front of the cluster keeps authenticated traffic
//! flowing while a node dies and comes back.

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
