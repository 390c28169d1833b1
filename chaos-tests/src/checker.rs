//! Checks run against a cluster after faults: every acknowledged write is readable on every
//! node (nothing acknowledged is lost, and every node converged).

use std::time::Duration;

use anyhow::Context;

use crate::cluster::TestCluster;
use crate::history::History;

/// Fails unless every acknowledged write of `history` is found on every node of `cluster`.
pub async fn no_acknowledged_write_lost(cluster: &TestCluster, history: &History, token: &str) -> anyhow::Result<()> {
    let acked = history.acknowledged();
    for id in cluster.ids() {
        for path in &acked {
            cluster
                .wait_found(id, path, token, Duration::from_secs(15))
                .await
                .with_context(|| format!("acknowledged write {path} missing on node {id}"))?;
        }
    }
    eprintln!("checker: {} acknowledged writes present on all {} nodes", acked.len(), cluster.ids().len());
    Ok(())
}
