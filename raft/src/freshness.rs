//! Whether this node's replicated state is known to be current, proven by a round trip rather
//! than inferred from a heartbeat.
//!
//! Every `freshness_interval` the node notes the time `t0`, asks the leader for its read index
//! (the leader confirms its leadership with a quorum first) and waits until it has applied that
//! index. It then knows that it holds every write acknowledged anywhere before `t0`, and records
//! `t0` as the instant it is **current as of**. A heartbeat would not do: a node returning from a
//! freeze reads heartbeats that were sent before the freeze, and a node behind by hundreds of
//! entries hears the leader long before it has applied what the leader committed.
//!
//! Serving rules (see [`crate::RaftNode::readiness`]):
//! - a follower authenticates only while it is current as of at most `staleness_bound` ago;
//! - a leader only while it confirmed its quorum, *as leader of its current term*, at most one
//!   lease ago: until then no other leader can have been elected, so nothing can have been
//!   acknowledged that it does not hold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use parking_lot::Mutex;

use crate::node::RaftNode;

/// The latest successful round.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// When the round started: the node holds every write acknowledged before this instant.
    as_of: Instant,
    term: u64,
    as_leader: bool,
}

/// What the node knows about how current it is.
#[derive(Default)]
pub struct Freshness {
    mark: Mutex<Option<Mark>>,
}

/// How current the node is, as [`Freshness::current_as_of`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Currency {
    /// Holds every write acknowledged up to this long ago.
    Since(Duration),
    /// Never proven current (just started), or not since it took its present role.
    Unknown,
}

impl Freshness {
    fn record(&self, mark: Mark) {
        let mut current = self.mark.lock();
        if current.is_none_or(|c| c.as_of <= mark.as_of) {
            *current = Some(mark);
        }
    }

    /// How long ago this node was last proven current in the given role and term. A leader's
    /// proof counts only if it was made as leader of `term`: a follower's proof from before an
    /// election says nothing about what the new leader must hold.
    pub fn current_as_of(&self, term: u64, as_leader: bool) -> Currency {
        match *self.mark.lock() {
            Some(m) if !as_leader || (m.as_leader && m.term == term) => Currency::Since(m.as_of.elapsed()),
            _ => Currency::Unknown,
        }
    }
}

/// Runs rounds until the Raft core stops.
pub async fn keep_fresh(node: Arc<RaftNode>) {
    let interval = node.settings().freshness_interval;
    loop {
        let (state, term) = {
            let rx = node.raft().metrics();
            let m = rx.borrow();
            (m.state, m.current_term)
        };
        if state == ServerState::Shutdown {
            return;
        }
        let as_of = Instant::now();
        let budget = node.settings().staleness_bound;
        match tokio::time::timeout(budget, node.catch_up(budget)).await {
            Ok(Ok(())) => {
                node.freshness().record(Mark { as_of, term, as_leader: state == ServerState::Leader });
                metrics::histogram!("dermagate_raft_freshness_round_seconds").record(as_of.elapsed().as_secs_f64());
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "freshness round failed"),
            Err(_) => tracing::debug!("freshness round timed out"),
        }
        tokio::time::sleep(interval.saturating_sub(as_of.elapsed())).await;
    }
}
