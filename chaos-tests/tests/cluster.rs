//! The replicated core under faults, with real node processes, real TLS and real RocksDB:
//! replication through followers, leader SIGKILL and failover, catch-up by snapshot, membership
//! changes, refusal of foreign peers, full restarts, and encryption at rest.

#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::time::Duration;

use dermagate_chaos_tests::checker::no_acknowledged_write_lost;
use dermagate_chaos_tests::cluster::{phase, serial, unique, TestCluster};
use dermagate_chaos_tests::history::{History, OpClass};
use serde_json::json;

const SECS_10: Duration = Duration::from_secs(10);

/// Creates organisations through `node` until `count` are acknowledged (retrying refusals that
/// happen while an election settles), recording every outcome.
async fn write_orgs(
    cluster: &TestCluster,
    node: u64,
    token: &str,
    count: usize,
    history: &History,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut done = 0;
    while done < count {
        anyhow::ensure!(std::time::Instant::now() < deadline, "writes through node {node} kept failing");
        let op = history.invoke("test", OpClass::Write, "create_org", &format!("node{node}"));
        match cluster.create_org(node, token, &unique("org")).await {
            Ok((201, Some(id))) => {
                op.done(Some(201), Some(format!("/v1/organizations/{id}")));
                done += 1;
            }
            Ok((status, _)) => {
                op.done(Some(status), None);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                op.done(None, None);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

fn follower_of(cluster: &TestCluster, leader: u64) -> u64 {
    cluster.ids().into_iter().find(|id| *id != leader).expect("a follower")
}

// traces: FM-05, R-02
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_three_nodes_apply_a_write_sent_to_a_follower() -> anyhow::Result<()> {
    let _serial = serial().await;
    let cluster = TestCluster::start(3, &[]).await?;
    phase("every node agrees on one leader");
    let leader = cluster.leader().await?;
    let follower = follower_of(&cluster, leader);
    let token = cluster.admin_token(follower).await?;

    phase("a write sent to a follower is committed through the leader");
    let (status, id) = cluster.create_org(follower, &token, &unique("clinic")).await?;
    assert_eq!(status, 201, "create through follower {follower}");
    let path = format!("/v1/organizations/{}", id.expect("id"));

    phase("the write is applied on all three nodes");
    for node in cluster.ids() {
        let org = cluster.wait_found(node, &path, &token, SECS_10).await?;
        assert_eq!(org["status"], "active");
    }
    Ok(())
}

// traces: FM-03, FM-05, R-06
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_leader_sigkill_fails_over_and_loses_nothing() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut cluster = TestCluster::start(3, &[]).await?;
    let history = History::default();
    let old_leader = cluster.leader().await?;
    let survivors: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old_leader).collect();
    let token = cluster.admin_token(survivors[0]).await?;

    phase("acknowledged writes before the crash");
    write_orgs(&cluster, survivors[0], &token, 10, &history).await?;

    phase("SIGKILL the leader");
    cluster.kill(old_leader);
    let new_leader = cluster.leader_among(&survivors, SECS_10).await?;
    assert_ne!(new_leader, old_leader);

    phase("writes succeed again through both survivors");
    for node in &survivors {
        write_orgs(&cluster, *node, &token, 5, &history).await?;
    }

    phase("the killed node restarts on its data and catches up");
    cluster.restart(old_leader)?;
    cluster.wait_ready(old_leader, Duration::from_secs(30)).await?;
    no_acknowledged_write_lost(&cluster, &history, &token).await?;
    assert_eq!(history.acknowledged_paths().len(), 20);
    Ok(())
}

// traces: FM-05, R-04, R-17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_node_behind_a_purged_log_catches_up_by_snapshot() -> anyhow::Result<()> {
    let _serial = serial().await;
    let env = [("DERMAGATE_RAFT__SNAPSHOT_EVERY", "20"), ("DERMAGATE_RAFT__KEEP_BEHIND_SNAPSHOT", "2")];
    let mut cluster = TestCluster::start(3, &env).await?;
    let history = History::default();
    let leader = cluster.leader().await?;
    let lagging = follower_of(&cluster, leader);
    let token = cluster.admin_token(leader).await?;

    phase("stop a follower");
    cluster.stop(lagging);

    phase("write far past the snapshot threshold so the leader purges its log");
    write_orgs(&cluster, leader, &token, 60, &history).await?;
    let builds = cluster.metric(leader, "dermagate_raft_snapshot_builds_total").await.unwrap_or(0.0);
    assert!(builds >= 1.0, "the leader built no snapshot");

    phase("the follower restarts and is brought up to date with a snapshot");
    cluster.restart(lagging)?;
    cluster.wait_ready(lagging, Duration::from_secs(30)).await?;
    no_acknowledged_write_lost(&cluster, &history, &token).await?;
    let installs = cluster.metric(lagging, "dermagate_raft_snapshot_installs_total").await.unwrap_or(0.0);
    assert!(installs >= 1.0, "node {lagging} caught up without installing a snapshot");
    Ok(())
}

// traces: R-06
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_a_fourth_node_joins_then_leaves() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut cluster = TestCluster::start(3, &[]).await?;
    let leader = cluster.leader().await?;
    let follower = follower_of(&cluster, leader);
    let token = cluster.admin_token(follower).await?;
    let (_, org) = cluster.create_org(follower, &token, &unique("before-join")).await?;
    let org_path = format!("/v1/organizations/{}", org.expect("id"));

    phase("start node 4 outside the cluster: alive, not ready");
    let n4 = cluster.spawn_new_node(4)?;
    let deadline = std::time::Instant::now() + SECS_10;
    while cluster.health(4).await.is_none() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "node 4 did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!cluster.is_ready(4).await, "a node outside any cluster must not be ready");

    phase("add node 4 through a follower: learner, catch-up, voter");
    let body = json!({ "id": 4, "raftAddr": n4.raft_addr, "apiUrl": n4.api_url });
    let (status, view) = cluster.post(follower, "/v1/cluster/nodes", &token, &body).await?;
    assert_eq!(status, 201, "{view}");
    let (_, view) = cluster.get(leader, "/v1/cluster", &token).await?;
    let nodes = view["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4, "{view}");
    assert!(nodes.iter().all(|n| n["voter"] == true), "{view}");
    cluster.wait_ready(4, SECS_10).await?;
    cluster.wait_found(4, &org_path, &token, SECS_10).await?;

    phase("adding it again is refused; membership unchanged");
    let (status, _) = cluster.post(leader, "/v1/cluster/nodes", &token, &body).await?;
    assert_eq!(status, 422);

    phase("remove node 4");
    let (status, view) = cluster.delete(leader, "/v1/cluster/nodes/4", &token).await?;
    assert_eq!(status, 200, "{view}");
    cluster.stop(4);
    cluster.forget(4);
    let (_, view) = cluster.get(leader, "/v1/cluster", &token).await?;
    let ids: Vec<u64> = view["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["id"].as_u64()).collect();
    assert_eq!(ids, vec![1, 2, 3], "{view}");

    phase("removing an unknown node is a 404, through the leader or a follower; the cluster still writes");
    for node in [leader, follower] {
        let (status, _) = cluster.delete(node, "/v1/cluster/nodes/42", &token).await?;
        assert_eq!(status, 404, "through node {node}");
    }
    let (status, _) = cluster.create_org(follower, &token, &unique("after-leave")).await?;
    assert_eq!(status, 201);
    Ok(())
}

// traces: FM-01, REQ-5.1, REQ-5.2, REQ-5.5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_a_peer_with_a_foreign_ca_certificate_is_refused() -> anyhow::Result<()> {
    let _serial = serial().await;
    let cluster = TestCluster::start(3, &[]).await?;
    let leader = cluster.leader().await?;
    let term_before = cluster.health(leader).await.expect("health")["term"].as_u64();

    phase("a rogue node with a certificate from another CA");
    let evil = tempfile::tempdir()?;
    let out = std::process::Command::new(dermagate_chaos_tests::cluster::binary())
        .args(["certs", "init", "--nodes", "9", "--ca-name", "rogue CA", "--out"])
        .arg(evil.path())
        .output()?;
    assert!(out.status.success());
    let rogue_tls = dermagate_raft::PeerTls::from_files(
        &cluster.file.ca_cert,
        &evil.path().join("node9.pem"),
        &evil.path().join("node9.key"),
    )?;
    let net = dermagate_raft::network::Network::new(Some(rogue_tls), &dermagate_raft::RaftSettings::default(), None);

    phase("its vote request with a huge term is refused at the TLS handshake");
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1_000, 9), None);
    let result = net.vote(leader, &cluster.node(leader).raft_addr, &vote, Duration::from_secs(3)).await;
    assert!(result.is_err(), "the rogue peer got an answer: {result:?}");

    phase("a certificate of the cluster CA for another node cannot speak for a member");
    let out = std::process::Command::new(dermagate_chaos_tests::cluster::binary())
        .args(["certs", "issue", "--node-id", "9", "--dir"])
        .arg(cluster.dir.path().join("certs"))
        .output()?;
    assert!(out.status.success());
    let impostor_tls = dermagate_raft::PeerTls::from_files(
        &cluster.file.ca_cert,
        &cluster.dir.path().join("certs/node9.pem"),
        &cluster.dir.path().join("certs/node9.key"),
    )?;
    let impostor =
        dermagate_raft::network::Network::new(Some(impostor_tls), &dermagate_raft::RaftSettings::default(), None);
    let member = cluster.ids().into_iter().find(|id| *id != leader).expect("member");
    let claims_to_be_member = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1_000, member), None);
    let result =
        impostor.vote(leader, &cluster.node(leader).raft_addr, &claims_to_be_member, Duration::from_secs(3)).await;
    assert!(result.is_err(), "node 9's certificate was accepted for node {member}: {result:?}");

    phase("nothing changed: same leader, same term");
    assert_eq!(cluster.leader().await?, leader);
    assert_eq!(cluster.health(leader).await.expect("health")["term"].as_u64(), term_before);
    Ok(())
}

// traces: R-06
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_whole_cluster_restart_keeps_every_acknowledged_write() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut cluster = TestCluster::start(3, &[]).await?;
    let history = History::default();
    let leader = cluster.leader().await?;
    let token = cluster.admin_token(leader).await?;
    for node in cluster.ids() {
        write_orgs(&cluster, node, &token, 5, &history).await?;
    }

    phase("stop all three nodes (SIGTERM)");
    for node in cluster.ids() {
        cluster.stop(node);
    }
    phase("start all three again on their data");
    for node in cluster.ids() {
        cluster.restart(node)?;
    }
    for node in cluster.ids() {
        cluster.wait_ready(node, Duration::from_secs(30)).await?;
    }
    let token = cluster.admin_token(cluster.leader().await?).await?;
    no_acknowledged_write_lost(&cluster, &history, &token).await?;

    phase("SIGTERM drains and exits 0");
    let node = cluster.ids()[0];
    let status = cluster.stop(node).expect("restarted nodes are children of the test");
    assert!(status.success(), "exit status {status:?}");
    Ok(())
}

/// Searches every file of a directory tree for `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).unwrap_or_default().windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

// traces, REQ-5.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_no_plaintext_personal_data_in_any_data_directory() -> anyhow::Result<()> {
    let _serial = serial().await;
    let env = [("DERMAGATE_RAFT__SNAPSHOT_EVERY", "10")];
    let mut cluster = TestCluster::start(3, &env).await?;
    let leader = cluster.leader().await?;
    let token = cluster.admin_token(leader).await?;
    let markers = ["ZZMARKER-Clinica-Dermatologica-Sant-Pau", "zzmarker.user.7391", "ZZMARKER-CONTRACT-2291"];

    phase("write personal data through the public API");
    let body = json!({
        "name": markers[0],
        "attestation": { "contractReference": markers[2], "attestedBy": "Dr Marker" },
        "storeImages": true,
    });
    let (status, org) = cluster.post(leader, "/v1/organizations", &token, &body).await?;
    assert_eq!(status, 201);
    let org_id = org["id"].as_str().expect("id").to_string();
    let user = json!({ "username": markers[1], "password": "a-long-enough-passw0rd", "roles": ["clinician"] });
    let (status, _) = cluster.post(leader, &format!("/v1/organizations/{org_id}/users"), &token, &user).await?;
    assert_eq!(status, 201);
    for i in 0..15 {
        cluster.create_org(leader, &token, &format!("{}-{i}", markers[0])).await?;
    }
    phase("a stored image (a blob, outside the Raft log)");
    let clinician = cluster.login(leader, markers[1], "a-long-enough-passw0rd").await?;
    let img = dermagate_inference::synthetic::skin_like(640, 480);
    let mut jpeg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpeg, image::ImageFormat::Jpeg)?;
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(jpeg.into_inner());
    let body = json!({"images": [{"data": data, "contentType": "image/jpeg"}], "subject": "subj-at-rest", "bodySite": "ARM_LEFT"});
    let (status, report) = cluster.post(leader, "/v1/analyses", &clinician, &body).await?;
    assert_eq!(status, 201, "{report}");
    let url = cluster.url(leader, &format!("/v1/analyses/{}/images/0", report["id"].as_str().expect("id")));
    let stored = cluster.client.get(url).bearer_auth(&clinician).send().await?.bytes().await?.to_vec();
    assert!(stored.len() > 2000);
    let image_window = stored[1000..1064].to_vec();

    phase("stop the nodes so memtables and WAL are flushed to files");
    for node in cluster.ids() {
        cluster.stop(node);
    }

    phase("no marker appears in any file of any data directory");
    for node in &cluster.file.nodes {
        let files = std::fs::read_dir(&node.data_dir)?.count();
        assert!(files > 0, "empty data dir {}", node.data_dir.display());
        for marker in markers {
            let hits = files_containing(&node.data_dir, marker.as_bytes());
            assert!(hits.is_empty(), "plaintext {marker:?} found in {hits:?}");
        }
        let hits = files_containing(&node.data_dir, &image_window);
        assert!(hits.is_empty(), "plaintext image bytes found in {hits:?}");
    }
    Ok(())
}
