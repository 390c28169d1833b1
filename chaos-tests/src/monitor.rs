//! Watches every node's own view (`/readyz`: role, term, leader, applied index, readiness) ten
//! times a second, for the checkers (leaders per term, elections per fault) and for the nemesis
//! (who leads now, has the cluster healed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::api::Targets;
use crate::history::History;

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_us: u64,
    pub node: u64,
    /// False when the node did not answer (down, frozen or overloaded).
    pub answered: bool,
    pub ready: bool,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub applied: u64,
}

/// One round of asking every node.
pub async fn poll(targets: &Targets, history: &History) -> Vec<Sample> {
    let asks = targets.nodes.iter().map(|(id, _)| async move {
        let a = targets.send(targets.get(&format!("node{id}"), "/readyz"), Duration::from_millis(700)).await;
        let b = &a.body;
        Sample {
            t_us: history.now_us(),
            node: *id,
            answered: a.status.is_some() && b.is_object(),
            ready: a.status == Some(200),
            role: b["role"].as_str().unwrap_or("unknown").to_string(),
            term: b["term"].as_u64().unwrap_or(0),
            leader: b["leaderId"].as_u64(),
            applied: b["appliedIndex"].as_u64().unwrap_or(0),
        }
    });
    futures::future::join_all(asks).await
}

/// Samples until `stop`; returns every sample taken.
pub async fn run(targets: Targets, history: Arc<History>, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Sample>>>) {
    while !stop.load(Ordering::Relaxed) {
        let round = poll(&targets, &history).await;
        out.lock().extend(round);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node that currently leads, by its own word (the highest term claimed), if any answers.
pub fn leader_in(round: &[Sample]) -> Option<u64> {
    round.iter().filter(|s| s.answered && s.role == "leader").max_by_key(|s| s.term).map(|s| s.node)
}
