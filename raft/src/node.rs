//! A running Raft member: start-up, writes (forwarded to the leader from any node), membership
//! changes (one at a time, run by the leader), status and readiness.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dermagate_domain::{Outcome, Request};
use dermagate_storage::{BlobStore, LogStore, StateMachineStore, Store};
use openraft::error::{ChangeMembershipError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState};
use serde::Serialize;

use crate::contact::LeaderContact;
use crate::error::{MembershipError, WriteError};
use crate::freshness::{Currency, Freshness};
use crate::network::{LeaderAnswer, MembershipOp, Network};
use crate::settings::RaftSettings;
use crate::{NodeId, NodeInfo, TypeConfig};

/// How often a write waiting for a leader looks again.
const LEADER_POLL: Duration = Duration::from_millis(20);

/// How one attempt of a write ended.
enum Attempt {
    Done(Outcome, u64),
    /// Try again (at the next leader); `maybe_proposed` when this attempt may have been proposed.
    Retry {
        maybe_proposed: bool,
    },
    Stop(WriteError),
}

pub struct RaftNode {
    id: NodeId,
    raft: Raft<TypeConfig>,
    network: Network,
    settings: RaftSettings,
    contact: LeaderContact,
    /// When this node last granted a pre-vote: it then lets that candidate stand first.
    granted_pre_vote: LeaderContact,
    freshness: Freshness,
    /// Set when the node is shutting down: it neither leads on nor stands for election.
    stepping_aside: std::sync::atomic::AtomicBool,
    /// The node's store, read directly for the last log id (pre-votes) and blob references.
    store: Arc<Store>,
    blobs: Arc<BlobStore>,
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
    pub kind: NotReadyKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotReadyKind {
    NotMember,
    /// No leader known, or this node's state is not proven current: it fails closed.
    Stale,
    /// The data directory is (almost) full: the node takes no new data.
    DiskFull,
}

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
        blobs: Arc<BlobStore>,
        network: Network,
        settings: RaftSettings,
    ) -> Result<Arc<RaftNode>, String> {
        let config = Arc::new(settings.openraft_config().map_err(|e| e.to_string())?);
        let store = log.store().clone();
        let raft = Raft::new(id, config, network.clone(), log, sm).await.map_err(|e| e.to_string())?;
        Ok(Arc::new(RaftNode {
            id,
            raft,
            network,
            settings,
            contact: LeaderContact::default(),
            granted_pre_vote: LeaderContact::default(),
            freshness: Freshness::default(),
            stepping_aside: Default::default(),
            store,
            blobs,
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

    pub(crate) fn granted_pre_vote(&self) -> &LeaderContact {
        &self.granted_pre_vote
    }

    pub fn settings(&self) -> &RaftSettings {
        &self.settings
    }

    /// Gives up leadership before a shutdown: heartbeats stop (the election driver keeps them
    /// off), so the followers elect a successor within a lease while this node drains.
    pub fn step_aside(&self) {
        self.stepping_aside.store(true, std::sync::atomic::Ordering::Release);
        self.raft.runtime_config().heartbeat(false);
    }

    pub fn is_stepping_aside(&self) -> bool {
        self.stepping_aside.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The node's content-addressed blob store (image bytes).
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Why this node must not take new data now (its disk is almost full), if so.
    pub fn disk_problem(&self) -> Option<String> {
        self.store.disk().problem()
    }

    pub fn freshness(&self) -> &Freshness {
        &self.freshness
    }

    pub(crate) fn network(&self) -> &Network {
        &self.network
    }

    /// Every member of the current membership with its addresses.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo)> {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        m.membership_config.membership().nodes().map(|(id, n)| (*id, n.clone())).collect()
    }

    /// (term, index) of the last entry of this node's log.
    pub(crate) async fn last_log_id(&self) -> Result<Option<(u64, u64)>, String> {
        let store = self.store.clone();
        let last = tokio::task::spawn_blocking(move || dermagate_storage::log_store::last_log_id(&store))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(last.map(|l| (l.leader_id.term, l.index)))
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
    ///
    /// An attempt that fails or stalls is repeated on whichever node leads next, until the write
    /// timeout: the request carries its own id and the state machine applies one id once, so a
    /// second proposal of a request whose first proposal did land changes nothing and answers
    /// with the first outcome. Only when the deadline passes after an attempt that may have
    /// been proposed is the outcome reported as [`WriteError::OutcomeUnknown`], never as success.
    ///
    /// On success this node has applied the write too, so a read that follows on this node sees
    /// it (read-your-writes on every node, which revocations rely on).
    pub async fn write(&self, req: Request) -> Result<Outcome, WriteError> {
        self.write_indexed(req).await.map(|(response, _)| response)
    }

    /// Like [`RaftNode::write`], also returning the log index the write was committed at.
    pub async fn write_indexed(&self, req: Request) -> Result<(Outcome, u64), WriteError> {
        let bytes = req.encode().len();
        if bytes > self.settings.max_entry_bytes {
            return Err(WriteError::TooLarge { bytes, limit: self.settings.max_entry_bytes });
        }
        metrics::histogram!("dermagate_raft_entry_bytes", "command" => req.command.name()).record(bytes as f64);
        let started = Instant::now();
        let deadline = started + self.settings.write_timeout;
        let result = self.write_until(req, deadline).await;
        metrics::histogram!("dermagate_raft_proposal_duration_seconds").record(started.elapsed().as_secs_f64());
        let (response, index) = result?;
        self.wait_applied(index, deadline).await;
        Ok((response, index))
    }

    /// Waits (up to `timeout`) until every other member has applied `index`, asking again while
    /// a member does not answer. Used before a revocation is acknowledged: a member that has not
    /// confirmed by then has not been proven current for at least `timeout` either, and a
    /// follower stops authenticating once `staleness_bound` has passed without such a proof, so
    /// with `timeout >= staleness_bound` no node accepts a revoked credential after the
    /// acknowledgement.
    pub async fn propagate(&self, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let members: Vec<(NodeId, NodeInfo)> = self.members().into_iter().filter(|(id, _)| *id != self.id).collect();
        let waits = members.iter().map(|(id, info)| async move {
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if self.network.wait_applied(*id, &info.raft_addr, index, remaining).await.is_ok() {
                    return;
                }
                if Instant::now() + LEADER_POLL >= deadline {
                    tracing::warn!(node = id, index, "member did not confirm applying a revocation in time");
                    return;
                }
                tokio::time::sleep(LEADER_POLL).await;
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

    async fn write_until(&self, req: Request, deadline: Instant) -> Result<(Outcome, u64), WriteError> {
        let mut maybe_proposed = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(if maybe_proposed {
                    WriteError::OutcomeUnknown("no leader confirmed the write before the deadline".into())
                } else {
                    WriteError::NoLeader
                });
            }
            let Some((leader, info)) = self.known_leader() else {
                tokio::time::sleep(LEADER_POLL.min(remaining)).await;
                continue;
            };
            // A leader that stops answering is often already replaced: give up on it as soon as
            // this node learns of another one, and try there.
            let outcome = tokio::select! {
                outcome = self.attempt(leader, &info, &req, remaining) => outcome,
                () = self.leader_changes_from(leader, remaining) => Attempt::Retry { maybe_proposed: true },
            };
            match outcome {
                Attempt::Done(response, index) => {
                    if maybe_proposed {
                        if let Outcome::Rejected(rejection) = &response {
                            // A retry after an unknown outcome that is refused may be a refusal of
                            // our own first attempt: worth seeing in the logs (docs/chaos.md).
                            tracing::warn!(request_id = %req.id, index, ?rejection,
                                "a write retried after an unknown outcome was refused");
                        }
                    }
                    return Ok((response, index));
                }
                Attempt::Retry { maybe_proposed: m } => {
                    maybe_proposed |= m;
                    tokio::time::sleep(LEADER_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
                }
                Attempt::Stop(e) => return Err(e),
            }
        }
    }

    /// One try at the node believed to lead.
    async fn attempt(&self, leader: NodeId, info: &NodeInfo, req: &Request, remaining: Duration) -> Attempt {
        let answer = if leader == self.id {
            match tokio::time::timeout(remaining, self.write_as_leader(req.clone())).await {
                Ok(answer) => answer,
                Err(_) => return Attempt::Retry { maybe_proposed: true },
            }
        } else {
            match self.network.client_write(leader, &info.raft_addr, req, remaining).await {
                Ok(answer) => answer,
                Err(e) if e.certainly_not_sent() => {
                    tracing::debug!(leader, error = %e, "leader unreachable before the write was sent");
                    return Attempt::Retry { maybe_proposed: false };
                }
                Err(e) => {
                    tracing::debug!(leader, error = %e, "forwarded write failed; it may have been proposed");
                    return Attempt::Retry { maybe_proposed: true };
                }
            }
        };
        match answer {
            LeaderAnswer::Done(response, index) => Attempt::Done(response, index),
            LeaderAnswer::NotLeader => Attempt::Retry { maybe_proposed: false },
            LeaderAnswer::Unknown(_) => Attempt::Retry { maybe_proposed: true },
            LeaderAnswer::ShuttingDown if leader == self.id => Attempt::Stop(WriteError::ShuttingDown),
            LeaderAnswer::ShuttingDown => Attempt::Retry { maybe_proposed: true },
        }
    }

    /// Resolves once this node's view of the leader is no longer `leader` (or after `limit`).
    async fn leader_changes_from(&self, leader: NodeId, limit: Duration) {
        let mut rx = self.raft.metrics();
        let changed = rx.wait_for(|m| m.current_leader != Some(leader) || m.state == openraft::ServerState::Shutdown);
        if tokio::time::timeout(limit, changed).await.is_err() {
            // The deadline passed: let the attempt's own timeout answer.
            std::future::pending::<()>().await;
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
            self.network
                .read_index(leader, &info.raft_addr, timeout)
                .await
                .map_err(|e| WriteError::Internal(e.to_string()))?
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
        self.network
            .change_membership(leader, &info.raft_addr, &op, timeout)
            .await
            .map_err(|e| MembershipError::Write(WriteError::OutcomeUnknown(e.to_string())))?
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

    /// Ready means: a member of a cluster that is proven current (see [`crate::freshness`]): a
    /// leader that confirmed its quorum as leader within the lease, or a follower that applied
    /// the leader's read index from a round started within the staleness bound.
    pub fn readiness(&self) -> Result<(), NotReady> {
        // Called on every authenticated request: read the metrics in place, never clone them.
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let not_ready = |reason: String| Err(NotReady { kind: NotReadyKind::Stale, reason });
        if m.membership_config.membership().get_node(&self.id).is_none() {
            return Err(NotReady { kind: NotReadyKind::NotMember, reason: "not a member of any cluster yet".into() });
        }
        if let Some(reason) = self.disk_problem() {
            return Err(NotReady { kind: NotReadyKind::DiskFull, reason });
        }
        match (m.state, m.current_leader) {
            (ServerState::Leader, _) => match self.freshness.current_as_of(m.current_term, true) {
                Currency::Since(age) if age <= self.settings.lease() => Ok(()),
                Currency::Since(age) => {
                    not_ready(format!("leader has not confirmed its quorum for {} ms", age.as_millis()))
                }
                Currency::Unknown => {
                    not_ready(format!("leader of term {} not yet confirmed by a quorum", m.current_term))
                }
            },
            (ServerState::Candidate, _) | (_, None) => not_ready("no known leader (election in progress)".into()),
            (_, Some(leader)) => match self.freshness.current_as_of(m.current_term, false) {
                Currency::Since(age) if age <= self.settings.staleness_bound => Ok(()),
                Currency::Since(age) => not_ready(format!(
                    "not proven current for {} ms (leader {leader} unreachable or behind)",
                    age.as_millis()
                )),
                Currency::Unknown => not_ready(format!("not yet caught up with leader {leader}")),
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
