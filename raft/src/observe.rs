//! Publishes the Raft state of this node as Prometheus metrics, and logs leader changes.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;

use crate::node::RaftNode;

/// Runs until the Raft core stops: refreshes gauges on every metrics change and once a second.
pub async fn publish_metrics(node: Arc<RaftNode>) {
    let mut rx = node.raft().metrics();
    let mut last_leader = None;
    loop {
        let m = rx.borrow_and_update().clone();
        if m.state == ServerState::Shutdown {
            return;
        }
        if m.current_leader != last_leader {
            tracing::info!(node_id = node.id(), term = m.current_term, leader_id = ?m.current_leader, "leader changed");
            if last_leader.is_some() || m.current_leader.is_some() {
                metrics::counter!("dermagate_raft_leader_changes_total").increment(1);
            }
            last_leader = m.current_leader;
        }
        metrics::gauge!("dermagate_raft_term").set(m.current_term as f64);
        metrics::gauge!("dermagate_raft_is_leader").set(if m.state == ServerState::Leader { 1.0 } else { 0.0 });
        metrics::gauge!("dermagate_raft_leader_id").set(m.current_leader.map_or(-1.0, |l| l as f64));
        metrics::gauge!("dermagate_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
        metrics::gauge!("dermagate_raft_applied_index").set(m.last_applied.map_or(0.0, |l| l.index as f64));
        metrics::gauge!("dermagate_node_ready").set(if node.readiness().is_ok() { 1.0 } else { 0.0 });
        publish_replication(&node, &m);
        // At most ten refreshes a second: under load the metrics change on every write.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

fn publish_replication(node: &RaftNode, m: &openraft::RaftMetrics<u64, crate::NodeInfo>) {
    let status = node.status();
    // The committed index is not in openraft 0.9's metrics; on a leader the quorum-matched index
    // is it, elsewhere the applied index is the best lower bound this node knows.
    let mut matched: Vec<u64> = status.members.iter().filter(|s| s.voter).filter_map(|s| s.matched_index).collect();
    matched.sort_unstable();
    let committed = if m.state == ServerState::Leader && !matched.is_empty() {
        matched[(matched.len() - 1) / 2]
    } else {
        m.last_applied.map_or(0, |l| l.index)
    };
    metrics::gauge!("dermagate_raft_committed_index").set(committed as f64);
    if m.state != ServerState::Leader {
        return;
    }
    let since_ack = m.millis_since_quorum_ack.map_or(0.0, |ms| ms as f64 / 1000.0);
    for member in status.members.iter().filter(|s| s.id != node.id()) {
        let peer = member.id.to_string();
        metrics::gauge!("dermagate_raft_replication_lag_entries", "peer" => peer.clone())
            .set(member.lag.unwrap_or(0) as f64);
        metrics::gauge!("dermagate_raft_replication_last_ack_seconds", "peer" => peer).set(since_ack);
    }
}
