//! Elections with a pre-vote round (Raft thesis §9.6) and a leader that steps aside when it has
//! lost its quorum (check-quorum). openraft 0.9 starts elections on its own timer and has neither,
//! so its timer is switched off (`enable_elect = false`) and this driver decides instead:
//!
//! - A node asks for votes only after a **majority answered a pre-vote**: "you may win". A voter
//!   says so only when it has not heard from a leader for a whole lease and the candidate's log is
//!   at least as up to date as its own. A node that merely lost contact by itself (a freeze, a
//!   one-way link, a restart) therefore never raises the term of a cluster whose leader is
//!   healthy, and never deposes it.
//! - A leader that has had no quorum acknowledgement for [`RaftSettings::step_down_after`] stops
//!   its heartbeats, so that followers which still hear it (a leader that can send but not
//!   receive) stop hearing it and elect a leader they can reach.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use rand::Rng;

use crate::node::RaftNode;
use crate::NodeId;

/// How often the driver looks at the clock and the metrics.
const TICK: Duration = Duration::from_millis(10);

/// "Would you vote for me if I stood for `term`?" Asking changes nothing on either side.
#[derive(Debug, Clone)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    pub term: u64,
    /// (term, index) of the candidate's last log entry.
    pub last_log: Option<(u64, u64)>,
}

#[derive(Debug, Clone)]
pub struct PreVoteAnswer {
    pub granted: bool,
    pub reason: String,
}

/// Runs until the Raft core stops.
pub async fn drive(node: Arc<RaftNode>) {
    let mut patience = election_wait(&node);
    let mut next_try = Instant::now();
    let mut heartbeats_on = true;
    loop {
        tokio::time::sleep(TICK).await;
        let (state, term, since_quorum_ack, voters) = {
            let rx = node.raft().metrics();
            let m = rx.borrow();
            if m.state == ServerState::Shutdown {
                return;
            }
            let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            (m.state, m.current_term, m.millis_since_quorum_ack, voters)
        };
        if node.is_stepping_aside() {
            continue;
        }
        heartbeats_on = keep_quorum_or_step_aside(&node, state, since_quorum_ack, voters.len(), heartbeats_on);
        if state == ServerState::Leader || !voters.contains(&node.id()) {
            continue;
        }
        if node.disk_problem().is_some() {
            // A node that cannot take data must not lead.
            continue;
        }
        if voters.len() == 1 {
            // The only voter is its own quorum: nobody else can lead, so it leads at once.
            if Instant::now() >= next_try {
                let _ = node.raft().trigger().elect().await;
                next_try = Instant::now() + node.settings().election_timeout_min;
            }
            continue;
        }
        // Stand only after a whole lease without a leader (voters grant nothing sooner) plus a
        // random wait, not again before that wait has passed since the last attempt, and not
        // right after promising another candidate a vote (two candidates split the vote).
        let quiet_for = node.contact().since_last().unwrap_or_else(|| node.contact().since_start());
        let promised =
            node.granted_pre_vote().since_last().is_some_and(|age| age < node.settings().election_timeout_min);
        if quiet_for < node.settings().lease() + patience || Instant::now() < next_try || promised {
            continue;
        }
        patience = election_wait(&node);
        next_try = Instant::now() + node.settings().election_timeout_min + patience;
        if pre_vote(&node, term + 1, &voters).await {
            // Another candidate may have been granted this node's (pre-)vote meanwhile, or a
            // leader may have spoken: standing now would only split the vote.
            if node.contact().since_last().is_some_and(|age| age < node.settings().lease())
                || node.granted_pre_vote().since_last().is_some_and(|age| age < node.settings().election_timeout_min)
            {
                continue;
            }
            tracing::info!(node_id = node.id(), term = term + 1, "pre-vote won by a majority; standing for election");
            metrics::counter!("dermagate_raft_elections_started_total").increment(1);
            if let Err(e) = node.raft().trigger().elect().await {
                tracing::warn!(error = %e, "could not start an election");
            }
        }
    }
}

/// A random wait in `[0, election_timeout_max - election_timeout_min]`: two followers that lost
/// the same leader rarely stand at the same moment, and a failed attempt is not repeated at once.
fn election_wait(node: &RaftNode) -> Duration {
    let s = node.settings();
    let spread = s.election_timeout_max.saturating_sub(s.election_timeout_min).as_millis() as u64;
    Duration::from_millis(if spread == 0 { 0 } else { rand::rng().random_range(0..=spread) })
}

/// Check-quorum: a leader without a quorum's acknowledgement for too long stops heartbeating
/// (and resumes once a quorum answers again or it is no longer leader). Returns whether
/// heartbeats are on.
fn keep_quorum_or_step_aside(
    node: &RaftNode,
    state: ServerState,
    since_quorum_ack: Option<u64>,
    voters: usize,
    heartbeats_on: bool,
) -> bool {
    let lost = state == ServerState::Leader
        && voters > 1
        && since_quorum_ack.is_none_or(|ms| Duration::from_millis(ms) > node.settings().step_down_after());
    if lost && heartbeats_on {
        tracing::warn!(
            node_id = node.id(),
            since_quorum_ack_ms = ?since_quorum_ack,
            "leader has not heard from a quorum; stopping heartbeats so the others can elect a leader they reach"
        );
        node.raft().runtime_config().heartbeat(false);
        return false;
    }
    if !lost && !heartbeats_on {
        tracing::info!(node_id = node.id(), "heartbeats resumed");
        node.raft().runtime_config().heartbeat(true);
        return true;
    }
    heartbeats_on
}

/// Asks every other voter; true when the grants (own included) make a majority.
async fn pre_vote(node: &RaftNode, term: u64, voters: &BTreeSet<NodeId>) -> bool {
    let last_log = match node.last_log_id().await {
        Ok(last) => last,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the last log id for a pre-vote");
            return false;
        }
    };
    let request = PreVoteRequest { candidate: node.id(), term, last_log };
    let timeout = node.settings().election_timeout_min;
    let asks =
        node.members().into_iter().filter(|(id, _)| *id != node.id() && voters.contains(id)).map(|(id, info)| {
            let request = request.clone();
            async move {
                let answer = node.network().pre_vote(id, &info.raft_addr, &request, timeout).await;
                match answer {
                    Ok(a) if a.granted => true,
                    Ok(a) => {
                        tracing::debug!(voter = id, reason = %a.reason, "pre-vote refused");
                        false
                    }
                    Err(e) => {
                        tracing::debug!(voter = id, error = %e, "pre-vote unanswered");
                        false
                    }
                }
            }
        });
    let granted = 1 + futures::future::join_all(asks).await.into_iter().filter(|g| *g).count();
    granted * 2 > voters.len()
}

/// The voter's side of a pre-vote. Grants only what the real vote would grant now: no leader
/// heard for a lease, and a log at least as up to date as ours.
pub async fn judge(node: &RaftNode, req: &PreVoteRequest) -> PreVoteAnswer {
    let refuse = |reason: String| PreVoteAnswer { granted: false, reason };
    let (state, term, since_quorum_ack) = {
        let rx = node.raft().metrics();
        let m = rx.borrow();
        (m.state, m.current_term, m.millis_since_quorum_ack)
    };
    let lease = node.settings().lease();
    if state == ServerState::Leader && since_quorum_ack.is_some_and(|ms| Duration::from_millis(ms) < lease) {
        return refuse("this node leads and its quorum hears it".into());
    }
    if let Some(age) = node.contact().since_last() {
        if age < lease && state != ServerState::Leader {
            return refuse(format!("heard from the leader {} ms ago", age.as_millis()));
        }
    }
    if req.term <= term {
        return refuse(format!("term {} is not above the current term {term}", req.term));
    }
    match node.last_log_id().await {
        Ok(mine) if req.last_log >= mine => {
            node.granted_pre_vote().touch();
            PreVoteAnswer { granted: true, reason: "granted".into() }
        }
        Ok(mine) => refuse(format!("candidate log {:?} is behind {:?}", req.last_log, mine)),
        Err(e) => refuse(format!("cannot read the log: {e}")),
    }
}
