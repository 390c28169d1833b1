//! The client side of the node-to-node protocol: one lazily connected, multiplexed mTLS gRPC
//! channel per peer, used by openraft for replication and by this node to forward writes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::proto::raft_service_client::RaftServiceClient;
use crate::proto::Payload;
use crate::settings::RaftSettings;
use crate::tls::PeerTls;
use crate::{NodeId, NodeInfo, TypeConfig};

/// The RPCs of `proto/raft.proto`.
#[derive(Debug, Clone, Copy)]
pub enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    ClientWrite,
    ChangeMembership,
    ReadIndex,
    WaitApplied,
    PreVote,
}

/// A failed call: either the request certainly never left (`Unreachable`), or it may have.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("rpc failed: {0}")]
    Failed(String),
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

/// One connection per (peer, address, lane).
type ChannelKey = (NodeId, String, Lane);

/// Connections to one peer are kept per lane, so bulk transfers (blobs) never queue in front of
/// consensus traffic (heartbeats, votes) on one TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Consensus,
    Bulk,
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
            .map_err(|e| CallError::Unreachable(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .local_address(self.local_ip)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.client_config(target))
                .map_err(|e| CallError::Unreachable(format!("tls config: {e}")))?;
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

    /// Streams a blob to `target`, which stores it durably after checking its digest.
    pub async fn put_blob(
        &self,
        target: NodeId,
        addr: &str,
        chunks: impl futures::Stream<Item = crate::proto::BlobChunk> + Send + 'static,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let mut client = self.client(target, addr, crate::blobs::BLOB_LANE)?;
        let mut request = tonic::Request::new(chunks);
        request.set_timeout(timeout);
        client.put_blob(request).await.map_err(classify)?;
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
        let mut request = tonic::Request::new(crate::proto::BlobWanted { digest: digest.to_string() });
        request.set_timeout(timeout);
        let stream = client.get_blob(request).await.map_err(classify)?.into_inner();
        let (_, bytes) = crate::blobs::collect(stream).await.map_err(classify)?;
        Ok(bytes)
    }

    /// Sends one JSON payload to `target` and decodes its JSON answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: NodeId,
        addr: &str,
        rpc: Rpc,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let json = serde_json::to_vec(req).map_err(|e| CallError::Unreachable(format!("encode: {e}")))?;
        let mut client = self.client(target, addr, Lane::Consensus)?;
        let mut request = tonic::Request::new(Payload { json });
        request.set_timeout(timeout);
        let result = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
            Rpc::ClientWrite => client.client_write(request).await,
            Rpc::ChangeMembership => client.change_membership(request).await,
            Rpc::ReadIndex => client.read_index(request).await,
            Rpc::WaitApplied => client.wait_applied(request).await,
            Rpc::PreVote => client.pre_vote(request).await,
        };
        let payload = result.map_err(classify)?.into_inner();
        serde_json::from_slice(&payload.json).map_err(|e| CallError::Failed(format!("decode: {e}")))
    }
}

/// A connection that was never established means the request never left this node.
fn classify(status: tonic::Status) -> CallError {
    let mut text = status.to_string();
    let mut source = std::error::Error::source(&status);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let never_sent = status.code() == tonic::Code::Unavailable
        && (text.contains("tcp connect error") || text.contains("Connection refused") || text.contains("connect"));
    if never_sent {
        CallError::Unreachable(text)
    } else {
        CallError::Failed(text)
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
    async fn raft_call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> =
            self.net.call(self.target, &self.node.raft_addr, rpc, req, option.hard_ttl()).await.map_err(
                |e| match e {
                    CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m))),
                    CallError::Failed(m) => RPCError::Network(NetworkError::new(&std::io::Error::other(m))),
                },
            )?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.raft_call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.raft_call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.raft_call(Rpc::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry a dead peer often enough that it catches up soon after it restarts.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
