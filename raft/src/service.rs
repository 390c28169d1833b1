//! The server side of the node-to-node protocol: hands Raft RPCs to openraft and executes writes
//! and membership changes that followers forward to this node as leader.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::node::{ForwardedWrite, MembershipOp, RaftNode};
use crate::proto::raft_service_server::RaftService;
use crate::proto::Payload;

pub struct RaftGrpc {
    node: Arc<RaftNode>,
}

impl RaftGrpc {
    pub fn new(node: Arc<RaftNode>) -> RaftGrpc {
        RaftGrpc { node }
    }

    pub fn into_server(
        self,
        max_message_bytes: usize,
    ) -> crate::proto::raft_service_server::RaftServiceServer<RaftGrpc> {
        crate::proto::raft_service_server::RaftServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

/// The node ids the caller's client certificate names; `None` without TLS (insecure mode).
fn caller_ids(req: &Request<Payload>) -> Option<Vec<u64>> {
    caller_ids_of(req.peer_certs())
}

fn caller_ids_of(certs: Option<std::sync::Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>) -> Option<Vec<u64>> {
    let certs = certs?;
    Some(certs.first().map(|c| crate::tls::node_ids_in(c.as_ref())).unwrap_or_default())
}

/// A message claiming to come from node `claimed` must be carried by that node's certificate.
fn check_caller_is(ids: &Option<Vec<u64>>, claimed: Option<u64>) -> Result<(), Status> {
    match (ids, claimed) {
        (None, _) => Ok(()),
        (Some(ids), Some(id)) if ids.contains(&id) => Ok(()),
        (Some(ids), claimed) => {
            tracing::warn!(?ids, ?claimed, "raft message refused: the certificate does not belong to its sender");
            Err(Status::permission_denied("the client certificate does not belong to the sending node"))
        }
    }
}

/// Forwarded requests may come from any member of the cluster (or one being added).
fn check_caller_is_member(node: &RaftNode, ids: &Option<Vec<u64>>) -> Result<(), Status> {
    let Some(ids) = ids else { return Ok(()) };
    let rx = node.raft().metrics();
    let m = rx.borrow();
    if ids.iter().any(|id| m.membership_config.membership().get_node(id).is_some()) {
        Ok(())
    } else {
        Err(Status::permission_denied("the client certificate does not belong to a cluster member"))
    }
}

fn decode<T: DeserializeOwned>(req: Request<Payload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().json).map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    let json = serde_json::to_vec(value).map_err(|e| Status::internal(format!("encode: {e}")))?;
    Ok(Response::new(Payload { json }))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let ids = caller_ids(&req);
        let rpc: openraft::raft::AppendEntriesRequest<crate::TypeConfig> = decode(req)?;
        check_caller_is(&ids, rpc.vote.leader_id().voted_for())?;
        if let Some(problem) = self.node.disk_problem() {
            // Declined, not failed: the leader retries later and commits with the others
            // meanwhile. The leader was heard all the same, so this node does not stand.
            self.node.contact().touch();
            return Err(Status::resource_exhausted(problem));
        }
        let result = self.node.raft().append_entries(rpc).await;
        if let Ok(resp) = &result {
            // Any answer that is not "your vote is stale" means a live leader reached us.
            if !matches!(resp, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                self.node.contact().touch();
            }
        }
        encode(&result)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let ids = caller_ids(&req);
        let rpc: openraft::raft::VoteRequest<u64> = decode(req)?;
        check_caller_is(&ids, rpc.vote.leader_id().voted_for())?;
        if let Some(problem) = self.node.disk_problem() {
            return Err(Status::resource_exhausted(problem));
        }
        let result = self.node.raft().vote(rpc).await;
        if result.as_ref().is_ok_and(|r| r.vote_granted) {
            // Having voted, this node waits a whole lease before standing itself (as in Raft,
            // granting a vote resets the election timer).
            self.node.contact().touch();
        }
        encode(&result)
    }

    async fn put_blob(
        &self,
        req: Request<tonic::Streaming<crate::proto::BlobChunk>>,
    ) -> Result<Response<crate::proto::BlobStored>, Status> {
        check_caller_is_member(&self.node, &caller_ids_of(req.peer_certs()))?;
        if let Some(problem) = self.node.disk_problem() {
            return Err(Status::resource_exhausted(problem));
        }
        let (digest, bytes) = crate::blobs::collect(req.into_inner()).await?;
        self.node.blobs().put(&digest, &bytes).await.map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(crate::proto::BlobStored {}))
    }

    type GetBlobStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<crate::proto::BlobChunk, Status>> + Send + 'static>>;

    async fn get_blob(&self, req: Request<crate::proto::BlobWanted>) -> Result<Response<Self::GetBlobStream>, Status> {
        check_caller_is_member(&self.node, &caller_ids_of(req.peer_certs()))?;
        let digest = req.into_inner().digest;
        let bytes = self
            .node
            .blobs()
            .get(&digest)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found("this node does not hold the blob"))?;
        let bytes = std::sync::Arc::new(bytes);
        let size = bytes.len() as u64;
        let count = bytes.len().div_ceil(crate::blobs::CHUNK_BYTES).max(1);
        let stream = futures::stream::iter((0..count).map(move |i| {
            let end = ((i + 1) * crate::blobs::CHUNK_BYTES).min(bytes.len());
            Ok(crate::proto::BlobChunk {
                digest: if i == 0 { digest.clone() } else { String::new() },
                size: if i == 0 { size } else { 0 },
                data: bytes[i * crate::blobs::CHUNK_BYTES..end].to_vec(),
            })
        }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn pre_vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let ids = caller_ids(&req);
        let ask: crate::election::PreVoteRequest = decode(req)?;
        check_caller_is(&ids, Some(ask.candidate))?;
        encode(&crate::election::judge(&self.node, &ask).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let ids = caller_ids(&req);
        let rpc: openraft::raft::InstallSnapshotRequest<crate::TypeConfig> = decode(req)?;
        check_caller_is(&ids, rpc.vote.leader_id().voted_for())?;
        if let Some(problem) = self.node.disk_problem() {
            self.node.contact().touch();
            return Err(Status::resource_exhausted(problem));
        }
        let result = self.node.raft().install_snapshot(rpc).await;
        if result.is_ok() {
            self.node.contact().touch();
        }
        encode(&result)
    }

    async fn client_write(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        check_caller_is_member(&self.node, &caller_ids(&req))?;
        let write: ForwardedWrite = decode(req)?;
        encode(&self.node.write_as_leader(write.request).await)
    }

    async fn change_membership(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        check_caller_is_member(&self.node, &caller_ids(&req))?;
        let op: MembershipOp = decode(req)?;
        encode(&self.node.change_membership_as_leader(op).await)
    }

    async fn wait_applied(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let (index, timeout_ms): (u64, u64) = decode(req)?;
        let waited = self
            .node
            .raft()
            .wait(Some(std::time::Duration::from_millis(timeout_ms.min(5_000))))
            .applied_index_at_least(Some(index), "peer asked")
            .await;
        encode(&waited.map(|_| ()).map_err(|e| e.to_string()))
    }

    async fn read_index(&self, _req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let result = self.node.raft().get_read_log_id().await.map(|(read, _applied)| read.map(|l| l.index));
        encode(&result.map_err(|e| e.to_string()))
    }
}

/// Binds `addr` and serves the node-to-node protocol (mutual TLS unless `tls` is `None`, the
/// explicit insecure mode) until `stop` resolves. Binding errors are returned, not logged later.
pub fn spawn_endpoint(
    addr: std::net::SocketAddr,
    node: Arc<RaftNode>,
    tls: Option<&crate::PeerTls>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let incoming = tonic::transport::server::TcpIncoming::bind(addr)
        .map_err(|e| format!("cannot bind raft.listen {addr}: {e}"))?
        .with_nodelay(Some(true));
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)));
    if let Some(tls) = tls {
        server = server.tls_config(tls.server_config()).map_err(|e| format!("raft TLS configuration: {e}"))?;
    }
    let svc = RaftGrpc::new(node.clone()).into_server(node.settings().max_message_bytes);
    Ok(tokio::spawn(async move {
        if let Err(e) = server.add_service(svc).serve_with_incoming_shutdown(incoming, stop).await {
            tracing::error!(error = %e, "raft endpoint failed");
        }
    }))
}
