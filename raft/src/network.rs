//! The client side of the node-to-node protocol: lazily connected, multiplexed mTLS gRPC
//! channels per peer (one per lane), typed calls per RPC, and the one place that decides whether
//! a failed call may have reached the peer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dermagate_domain::{Outcome, Request};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::error::{MembershipError, WriteError};
use crate::proto;
use crate::proto::raft_service_client::RaftServiceClient;
use crate::settings::RaftSettings;
use crate::tls::PeerTls;
use crate::wire;
use crate::{NodeId, NodeInfo, TypeConfig};

/// A failed call, typed by what it means for a retry.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request certainly never reached the peer: the connection could not be made.
    #[error("peer unreachable (nothing sent): {0}")]
    NotSent(String),
    /// The request may have reached the peer (a reset, a timeout after sending, a lost answer).
    #[error("rpc failed after it may have been sent: {0}")]
    MaybeSent(String),
    /// The peer answered with an error.
    #[error("peer refused: {0}")]
    Refused(tonic::Status),
    #[error(transparent)]
    Malformed(#[from] wire::Malformed),
}

impl CallError {
    /// Whether the peer certainly did not act on the request.
    pub fn certainly_not_sent(&self) -> bool {
        matches!(self, CallError::NotSent(_))
    }
}

/// A status from a call: refused by the peer, or a transport failure before or after sending.
fn classify(status: tonic::Status) -> CallError {
    if never_connected(&status) {
        return CallError::NotSent(status.message().to_string());
    }
    match status.code() {
        // The transport's own failures come as Unavailable/Unknown/Cancelled/DeadlineExceeded.
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            if std::error::Error::source(&status).is_some() || status.code() == tonic::Code::DeadlineExceeded =>
        {
            CallError::MaybeSent(format!("{}: {}", status.code(), status.message()))
        }
        _ => CallError::Refused(status),
    }
}

/// True when the chain of causes holds a connection-establishment failure (typed: the HTTP
/// client's connect error, or a refused/unreachable socket), so nothing was sent.
fn never_connected(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// Connections to one peer are kept per lane, so bulk transfers (blobs) never queue in front of
/// consensus traffic (heartbeats, votes) on one TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Consensus,
    Bulk,
}

/// One connection per (peer, address, lane).
type ChannelKey = (NodeId, String, Lane);

/// The leader's answer to a forwarded write.
#[derive(Debug)]
pub enum LeaderAnswer {
    /// Committed and applied on the leader at this log index.
    Done(Outcome, u64),
    /// This node is not (or no longer) the leader and the entry was not kept: safe to retry.
    NotLeader,
    Unknown(String),
    ShuttingDown,
}

#[derive(Debug, Clone)]
pub enum MembershipOp {
    Add { id: NodeId, info: NodeInfo },
    Remove { id: NodeId },
}

#[derive(Clone)]
pub struct Network {
    tls: Option<PeerTls>,
    max_message_bytes: usize,
    /// The address outgoing connections are made from (this node's Raft address), so that a
    /// peer, a firewall rule or a packet capture sees which node a connection belongs to.
    local_ip: Option<IpAddr>,
    channels: Arc<Mutex<HashMap<ChannelKey, Channel>>>,
}

impl Network {
    /// `tls: None` is the explicit insecure mode for local experiments (warned about at start-up).
    /// `local_ip`: bind outgoing connections to this address (`None`: the system chooses).
    pub fn new(tls: Option<PeerTls>, settings: &RaftSettings, local_ip: Option<IpAddr>) -> Network {
        Network { tls, max_message_bytes: settings.max_message_bytes, local_ip, channels: Arc::default() }
    }

    fn channel(&self, target: NodeId, addr: &str, lane: Lane) -> Result<Channel, CallError> {
        let key = (target, addr.to_string(), lane);
        if let Some(ch) = self.channels.lock().get(&key) {
            return Ok(ch.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| CallError::NotSent(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .local_address(self.local_ip)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.client_config(target))
                .map_err(|e| CallError::NotSent(format!("tls config: {e}")))?;
        }
        let ch = endpoint.connect_lazy();
        self.channels.lock().insert(key, ch.clone());
        Ok(ch)
    }

    fn client(&self, target: NodeId, addr: &str, lane: Lane) -> Result<RaftServiceClient<Channel>, CallError> {
        Ok(RaftServiceClient::new(self.channel(target, addr, lane)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout);
        r
    }

    pub async fn append_entries(
        &self,
        target: NodeId,
        addr: &str,
        rpc: &AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<NodeId>, CallError> {
        let msg = wire::append_to(rpc)?;
        let resp = self.client(target, addr, Lane::Consensus)?.append_entries(Self::request(msg, timeout)).await;
        Ok(wire::append_response_from(resp.map_err(classify)?.into_inner())?)
    }

    pub async fn vote(
        &self,
        target: NodeId,
        addr: &str,
        rpc: &VoteRequest<NodeId>,
        timeout: Duration,
    ) -> Result<VoteResponse<NodeId>, CallError> {
        let msg = wire::vote_request_to(rpc);
        let resp = self.client(target, addr, Lane::Consensus)?.vote(Self::request(msg, timeout)).await;
        Ok(wire::vote_response_from(resp.map_err(classify)?.into_inner())?)
    }

    pub async fn install_snapshot(
        &self,
        target: NodeId,
        addr: &str,
        rpc: &InstallSnapshotRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<InstallSnapshotResponse<NodeId>, CallError> {
        let msg = wire::snapshot_to(rpc)?;
        let resp = self.client(target, addr, Lane::Bulk)?.install_snapshot(Self::request(msg, timeout)).await;
        Ok(InstallSnapshotResponse { vote: wire::vote_from(resp.map_err(classify)?.into_inner().vote)? })
    }

    /// Forwards a write to the leader.
    pub async fn client_write(
        &self,
        target: NodeId,
        addr: &str,
        req: &Request,
        timeout: Duration,
    ) -> Result<LeaderAnswer, CallError> {
        use proto::client_write_response::Result as R;
        let msg = proto::ClientWriteRequest { request: req.encode() };
        let resp = self.client(target, addr, Lane::Consensus)?.client_write(Self::request(msg, timeout)).await;
        Ok(match resp.map_err(classify)?.into_inner().result {
            Some(R::Applied(a)) => {
                LeaderAnswer::Done(Outcome::decode(&a.outcome).map_err(wire::Malformed::from)?, a.index)
            }
            Some(R::NotLeader(_)) => LeaderAnswer::NotLeader,
            Some(R::OutcomeUnknown(e)) => LeaderAnswer::Unknown(e),
            Some(R::ShuttingDown(_)) => LeaderAnswer::ShuttingDown,
            None => return Err(wire::Malformed("empty client-write response".into()).into()),
        })
    }

    pub async fn change_membership(
        &self,
        target: NodeId,
        addr: &str,
        op: &MembershipOp,
        timeout: Duration,
    ) -> Result<Result<(), MembershipError>, CallError> {
        use proto::change_membership_request::Op;
        use proto::change_membership_response::Result as R;
        let op = match op {
            MembershipOp::Add { id, info } => {
                Op::Add(proto::AddNode { id: *id, raft_addr: info.raft_addr.clone(), api_url: info.api_url.clone() })
            }
            MembershipOp::Remove { id } => Op::Remove(*id),
        };
        let msg = proto::ChangeMembershipRequest { op: Some(op) };
        let resp = self.client(target, addr, Lane::Consensus)?.change_membership(Self::request(msg, timeout)).await;
        Ok(match resp.map_err(classify)?.into_inner().result {
            Some(R::Done(_)) => Ok(()),
            Some(R::Invalid(m)) => Err(MembershipError::Invalid(m)),
            Some(R::UnknownNode(id)) => Err(MembershipError::UnknownNode(id)),
            Some(R::InProgress(_)) => Err(MembershipError::InProgress),
            Some(R::NoLeader(_)) => Err(MembershipError::Write(WriteError::NoLeader)),
            Some(R::OutcomeUnknown(m)) => Err(MembershipError::Write(WriteError::OutcomeUnknown(m))),
            Some(R::ShuttingDown(_)) => Err(MembershipError::Write(WriteError::ShuttingDown)),
            None => return Err(wire::Malformed("empty membership response".into()).into()),
        })
    }

    /// The leader's read index (after it confirmed its leadership with a quorum).
    pub async fn read_index(&self, target: NodeId, addr: &str, timeout: Duration) -> Result<Option<u64>, CallError> {
        let resp = self
            .client(target, addr, Lane::Consensus)?
            .read_index(Self::request(proto::ReadIndexRequest {}, timeout))
            .await;
        Ok(resp.map_err(classify)?.into_inner().index)
    }

    /// Waits until `target` has applied `index` (an error when it did not within `timeout`).
    pub async fn wait_applied(
        &self,
        target: NodeId,
        addr: &str,
        index: u64,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let msg = proto::WaitAppliedRequest { index, timeout_ms: timeout.as_millis() as u64 };
        let resp = self.client(target, addr, Lane::Consensus)?.wait_applied(Self::request(msg, timeout)).await;
        resp.map_err(classify)?;
        Ok(())
    }

    pub async fn pre_vote(
        &self,
        target: NodeId,
        addr: &str,
        req: &crate::election::PreVoteRequest,
        timeout: Duration,
    ) -> Result<crate::election::PreVoteAnswer, CallError> {
        let msg = proto::PreVoteRequest {
            candidate: req.candidate,
            term: req.term,
            last_log: req.last_log.map(|(term, index)| proto::LogId { term, node_id: 0, index }),
        };
        let resp = self.client(target, addr, Lane::Consensus)?.pre_vote(Self::request(msg, timeout)).await;
        let r = resp.map_err(classify)?.into_inner();
        Ok(crate::election::PreVoteAnswer { granted: r.granted, reason: r.reason })
    }

    /// Streams a blob to `target`, which stores it durably after checking its digest.
    pub async fn put_blob(
        &self,
        target: NodeId,
        addr: &str,
        chunks: impl futures::Stream<Item = proto::BlobChunk> + Send + 'static,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let mut client = self.client(target, addr, crate::blobs::BLOB_LANE)?;
        client.put_blob(Self::request(chunks, timeout)).await.map_err(classify)?;
        Ok(())
    }

    /// Reads a blob from `target` (the caller verifies its digest).
    pub async fn get_blob(
        &self,
        target: NodeId,
        addr: &str,
        digest: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let mut client = self.client(target, addr, crate::blobs::BLOB_LANE)?;
        let msg = proto::BlobWanted { digest: digest.to_string() };
        let stream = client.get_blob(Self::request(msg, timeout)).await.map_err(classify)?.into_inner();
        let (_, bytes) = crate::blobs::collect(stream).await.map_err(classify)?;
        Ok(bytes)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient { net: self.clone(), target, node: node.clone() }
    }
}

/// openraft's handle on one peer.
pub struct PeerClient {
    net: Network,
    target: NodeId,
    node: NodeInfo,
}

impl PeerClient {
    /// openraft's view of a failed call: unreachable (back off) or a network error.
    fn rpc_error<E: std::error::Error>(&self, e: CallError) -> RPCError<NodeId, NodeInfo, RaftError<NodeId, E>> {
        match e {
            CallError::NotSent(m) => RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m))),
            CallError::Refused(s) if s.code() == tonic::Code::Unavailable => {
                RPCError::RemoteError(RemoteError::new_with_node(
                    self.target,
                    self.node.clone(),
                    RaftError::Fatal(openraft::error::Fatal::Stopped),
                ))
            }
            other => RPCError::Network(NetworkError::new(&std::io::Error::other(other.to_string()))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.net
            .append_entries(self.target, &self.node.raft_addr, &rpc, option.hard_ttl())
            .await
            .map_err(|e| self.rpc_error(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.net
            .install_snapshot(self.target, &self.node.raft_addr, &rpc, option.hard_ttl())
            .await
            .map_err(|e| self.rpc_error(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.net.vote(self.target, &self.node.raft_addr, &rpc, option.hard_ttl()).await.map_err(|e| self.rpc_error(e))
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry a dead peer often enough that it catches up soon after it restarts.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
