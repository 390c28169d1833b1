//! A running Raft member: start-up, writes (forwarded to the leader from any node), membership
//! changes (one at a time, run by the leader), status and readiness.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dermagate_storage::model::{Request, Response};
use dermagate_storage::{LogStore, StateMachineStore};
use openraft::error::{ChangeMembershipError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState};
use serde::{Deserialize, Serialize};

use crate::contact::LeaderContact;
use crate::error::{MembershipError, WriteError};
use crate::network::{CallError, Network, Rpc};
use crate::settings::RaftSettings;
use crate::{NodeId, NodeInfo, TypeConfig};

/// How often a write waiting for a leader looks again.
const LEADER_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedWrite {
    pub request: Request,
}

/// The leader's answer to a forwarded write.
#[derive(Debug, Serialize, Deserialize)]
pub enum LeaderAnswer {
    /// Committed and applied on the leader at this log index.
    Done(Response, u64),
    /// This node is not (or no longer) the leader and the entry was not kept: safe to retry.
    NotLeader,
    Unknown(String),
    ShuttingDown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipOp {
    Add { id: NodeId, info: NodeInfo },
    Remove { id: NodeId },
}

pub struct RaftNode {
    id: NodeId,
    raft: Raft<TypeConfig>,
    network: Network,
    settings: RaftSettings,
    contact: LeaderContact,
    /// **Only one membership change at a time**: held by the leader for the whole change.
    membership_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub raft_addr: String,
    pub api_url: String,
    pub voter: bool,
    /// Last log index the leader knows this member holds (leader only).
    pub matched_index: Option<u64>,
    /// Entries this member is behind the leader's log (leader only).
    pub lag: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub role: &'static str,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub members: Vec<MemberStatus>,
}

/// Why a node should not receive traffic.
#[derive(Debug, Clone, Serialize)]
pub struct NotReady {
    pub reason: String,
}

/// Appended entries a node may still have to apply and be ready (normal load keeps it far below).
pub const MAX_APPLY_BACKLOG: u64 = 1_000;

pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

impl RaftNode {
    pub async fn start(
        id: NodeId,
        log: LogStore,
        sm: StateMachineStore,
        network: Network,
        settings: RaftSettings,
    ) -> Result<Arc<RaftNode>, String> {
        let config = Arc::new(settings.openraft_config().map_err(|e| e.to_string())?);
        let raft = Raft::new(id, config, network.clone(), log, sm).await.map_err(|e| e.to_string())?;
        Ok(Arc::new(RaftNode {
            id,
            raft,
            network,
            settings,
            contact: LeaderContact::default(),
            membership_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    pub fn contact(&self) -> &LeaderContact {
        &self.contact
    }

    pub fn settings(&self) -> &RaftSettings {
        &self.settings
    }

    /// Creates the cluster with `members` as voters; does nothing if it already exists.
    pub async fn initialize(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<bool, String> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    fn known_leader(&self) -> Option<(NodeId, NodeInfo)> {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let leader = m.current_leader?;
        let info = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, info))
    }

    /// Waits until some leader is known, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((id, _)) = self.known_leader() {
                return Some(id);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// Commits `req` through the leader, wherever it is, and returns what applying it produced.
    /// A write is retried only when it certainly was not proposed; otherwise an uncertain end is
    /// reported as [`WriteError::OutcomeUnknown`], never as success.
    ///
    /// On success this node has applied the write too, so a read that follows on this node sees
    /// it (read-your-writes on every node, which revocations rely on).
    pub async fn write(&self, req: Request) -> Result<Response, WriteError> {
        self.write_indexed(req).await.map(|(response, _)| response)
    }

    /// Like [`RaftNode::write`], also returning the log index the write was committed at.
    pub async fn write_indexed(&self, req: Request) -> Result<(Response, u64), WriteError> {
        let started = Instant::now();
        let deadline = started + self.settings.write_timeout;
        let result = self.write_until(req, deadline).await;
        metrics::histogram!("dermagate_raft_proposal_duration_seconds").record(started.elapsed().as_secs_f64());
        let (response, index) = result?;
        self.wait_applied(index, deadline).await;
        Ok((response, index))
    }

    /// Waits (up to `timeout`) until every other member has applied `index`. Used before a
    /// revocation is acknowledged, so no reachable node accepts the revoked credential after the
    /// acknowledgement. A member that does not answer is down or cut off, and a cut-off member
    /// stops authenticating once the staleness bound has passed.
    pub async fn propagate(&self, index: u64, timeout: Duration) {
        let members: Vec<(NodeId, NodeInfo)> = {
            let rx = self.raft.metrics();
            let m = rx.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, n)| (*id, n.clone()))
                .collect()
        };
        let waits = members.iter().map(|(id, info)| async move {
            let arg = (index, timeout.as_millis() as u64);
            let answer: Result<Result<(), String>, _> =
                self.network.call(*id, &info.raft_addr, Rpc::WaitApplied, &arg, timeout).await;
            if !matches!(answer, Ok(Ok(()))) {
                tracing::warn!(node = id, index, "member did not confirm applying a revocation in time");
            }
        });
        futures::future::join_all(waits).await;
    }

    /// Waits until this node has applied `index`; past the deadline the write still stands.
    async fn wait_applied(&self, index: u64, deadline: Instant) {
        let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        if let Err(e) =
            self.raft.wait(Some(remaining)).applied_index_at_least(Some(index), "write applied locally").await
        {
            tracing::warn!(index, error = %e, "committed write not yet applied on this node");
        }
    }

    async fn write_until(&self, req: Request, deadline: Instant) -> Result<(Response, u64), WriteError> {
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(WriteError::NoLeader);
            }
            let Some((leader, info)) = self.known_leader() else {
                tokio::time::sleep(LEADER_POLL.min(remaining)).await;
                continue;
            };
            let answer = if leader == self.id {
                match tokio::time::timeout(remaining, self.write_as_leader(req.clone())).await {
                    Ok(answer) => answer,
                    Err(_) => return Err(WriteError::OutcomeUnknown("timed out waiting for commit".into())),
                }
            } else {
                let fwd = ForwardedWrite { request: req.clone() };
                match self.network.call(leader, &info.raft_addr, Rpc::ClientWrite, &fwd, remaining).await {
                    Ok(answer) => answer,
                    Err(CallError::Unreachable(e)) => {
                        tracing::debug!(leader, error = %e, "leader unreachable; waiting for a new one");
                        tokio::time::sleep(LEADER_POLL.min(remaining)).await;
                        continue;
                    }
                    Err(CallError::Failed(e)) => return Err(WriteError::OutcomeUnknown(e)),
                }
            };
            match answer {
                LeaderAnswer::Done(resp, index) => return Ok((resp, index)),
                LeaderAnswer::NotLeader => tokio::time::sleep(LEADER_POLL.min(remaining)).await,
                LeaderAnswer::Unknown(e) => return Err(WriteError::OutcomeUnknown(e)),
                LeaderAnswer::ShuttingDown if leader == self.id => return Err(WriteError::ShuttingDown),
                LeaderAnswer::ShuttingDown => tokio::time::sleep(LEADER_POLL.min(remaining)).await,
            }
        }
    }

    /// Proposes on this node, which believes it is the leader.
    pub(crate) async fn write_as_leader(&self, req: Request) -> LeaderAnswer {
        let proposal = self.raft.client_write(req);
        match tokio::time::timeout(self.settings.write_timeout, proposal).await {
            Ok(Ok(resp)) => LeaderAnswer::Done(resp.data, resp.log_id.index),
            // openraft answers ForwardToLeader only for entries it never kept (not leader, or
            // truncated by a new leader), so the caller may retry.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => LeaderAnswer::NotLeader,
            Ok(Err(RaftError::APIError(e))) => LeaderAnswer::Unknown(e.to_string()),
            Ok(Err(RaftError::Fatal(_))) => LeaderAnswer::ShuttingDown,
            Err(_) => LeaderAnswer::Unknown("timed out waiting for commit".into()),
        }
    }

    /// Brings this node up to the leader's read index: afterwards it has applied every write
    /// acknowledged anywhere before the call (read-your-writes across nodes).
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), WriteError> {
        let (leader, info) = self.known_leader().ok_or(WriteError::NoLeader)?;
        let index = if leader == self.id {
            let (read, _) = self.raft.get_read_log_id().await.map_err(|e| WriteError::Internal(e.to_string()))?;
            read.map(|l| l.index)
        } else {
            let answer: Result<Option<u64>, String> = self
                .network
                .call(leader, &info.raft_addr, Rpc::ReadIndex, &(), timeout)
                .await
                .map_err(|e| WriteError::Internal(e.to_string()))?;
            answer.map_err(WriteError::Internal)?
        };
        if let Some(index) = index {
            self.raft
                .wait(Some(timeout))
                .applied_index_at_least(Some(index), "catch up with the leader")
                .await
                .map_err(|e| WriteError::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Adds a node: first as a learner that catches up, then as a voter.
    pub async fn add_node(&self, id: NodeId, info: NodeInfo) -> Result<(), MembershipError> {
        self.change_membership(MembershipOp::Add { id, info }).await
    }

    pub async fn remove_node(&self, id: NodeId) -> Result<(), MembershipError> {
        self.change_membership(MembershipOp::Remove { id }).await
    }

    async fn change_membership(&self, op: MembershipOp) -> Result<(), MembershipError> {
        let timeout = self.settings.write_timeout * 6;
        let Some((leader, info)) = self.known_leader() else {
            return Err(WriteError::NoLeader.into());
        };
        if leader == self.id {
            return self.change_membership_as_leader(op).await;
        }
        // The leader's error comes back as it is, so a follower answers 409/404/422 like the leader.
        let answer: Result<(), MembershipError> = self
            .network
            .call(leader, &info.raft_addr, Rpc::ChangeMembership, &op, timeout)
            .await
            .map_err(|e| MembershipError::Write(WriteError::OutcomeUnknown(e.to_string())))?;
        answer
    }

    pub(crate) async fn change_membership_as_leader(&self, op: MembershipOp) -> Result<(), MembershipError> {
        let _guard = self.membership_lock.try_lock().map_err(|_| MembershipError::InProgress)?;
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        let is_member = |id: &NodeId| membership.get_node(id).is_some();
        match op {
            MembershipOp::Add { id, info } => {
                if is_member(&id) {
                    return Err(MembershipError::Invalid(format!("node {id} is already a member")));
                }
                tracing::info!(node = id, raft_addr = %info.raft_addr, "adding learner");
                self.raft.add_learner(id, info, true).await.map_err(membership_error)?;
                tracing::info!(node = id, "learner caught up; promoting to voter");
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(membership_error)?;
            }
            MembershipOp::Remove { id } => {
                if !is_member(&id) {
                    return Err(MembershipError::UnknownNode(id));
                }
                let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                let change = if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(MembershipError::Invalid("cannot remove the last voter".into()));
                    }
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                tracing::info!(node = id, "removing node");
                self.raft.change_membership(change, false).await.map_err(membership_error)?;
            }
        }
        Ok(())
    }

    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(id, info)| {
                let matched = m.replication.as_ref().and_then(|r| r.get(id).cloned()).flatten().map(|l| l.index);
                let matched = if *id == self.id && m.state == ServerState::Leader { Some(last) } else { matched };
                MemberStatus {
                    id: *id,
                    raft_addr: info.raft_addr.clone(),
                    api_url: info.api_url.clone(),
                    voter: voters.contains(id),
                    matched_index: matched,
                    lag: matched.map(|i| last.saturating_sub(i)),
                }
            })
            .collect();
        ClusterStatus {
            node_id: self.id,
            role: role_name(m.state),
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            members,
        }
    }

    /// Ready means: a member of a cluster with a known leader that was heard from recently, and
    /// no long backlog of entries still to apply.
    pub fn readiness(&self) -> Result<(), NotReady> {
        // Called on every authenticated request: read the metrics in place, never clone them.
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let bound = self.settings.staleness_bound;
        let not_ready = |reason: String| Err(NotReady { reason });
        if m.membership_config.membership().get_node(&self.id).is_none() {
            return not_ready("not a member of any cluster yet".into());
        }
        // A node with a long backlog of appended but unapplied entries would answer from old
        // state (a revocation among them not yet in force): not ready until it has caught up.
        let backlog = m.last_log_index.unwrap_or(0).saturating_sub(m.last_applied.map_or(0, |l| l.index));
        if backlog > MAX_APPLY_BACKLOG {
            return not_ready(format!("applying a backlog of {backlog} entries"));
        }
        match (m.state, m.current_leader) {
            (ServerState::Leader, _) => match m.millis_since_quorum_ack {
                Some(ms) if Duration::from_millis(ms) <= bound => Ok(()),
                // A single-voter cluster has no one to ack; it is its own quorum.
                _ if m.membership_config.membership().voter_ids().count() == 1 => Ok(()),
                _ => not_ready("leader has lost contact with a quorum".into()),
            },
            (ServerState::Candidate, _) | (_, None) => not_ready("no known leader (election in progress)".into()),
            (_, Some(leader)) => match self.contact.since_last() {
                Some(age) if age <= bound => Ok(()),
                Some(age) => not_ready(format!("leader {leader} not heard from for {} ms", age.as_millis())),
                None => not_ready(format!("leader {leader} not heard from yet")),
            },
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown reported an error");
        }
    }
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))) => {
            MembershipError::InProgress
        }
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MembershipError::Write(WriteError::NoLeader),
        RaftError::APIError(e) => MembershipError::Invalid(e.to_string()),
        RaftError::Fatal(_) => MembershipError::Write(WriteError::ShuttingDown),
    }
}
