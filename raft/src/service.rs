//! The server side of the node-to-node protocol: hands Raft RPCs to openraft, executes writes and
//! membership changes that followers forward to this node as leader, and serves read indexes,
//! pre-votes and blobs. Every message is checked against the caller's client certificate.

use std::sync::Arc;
use std::time::Duration;

use dermagate_domain::Request as DomainRequest;
use tonic::{Request, Response, Status};

use crate::error::{MembershipError, WriteError};
use crate::network::{LeaderAnswer, MembershipOp};
use crate::node::RaftNode;
use crate::proto;
use crate::proto::raft_service_server::RaftService;
use crate::wire;
use crate::NodeInfo;

pub struct RaftGrpc {
    node: Arc<RaftNode>,
}

impl RaftGrpc {
    pub fn new(node: Arc<RaftNode>) -> RaftGrpc {
        RaftGrpc { node }
    }

    pub fn into_server(self, max_message_bytes: usize) -> proto::raft_service_server::RaftServiceServer<RaftGrpc> {
        proto::raft_service_server::RaftServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

type Certs = Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>;

/// The node ids the caller's client certificate names; `None` without TLS (insecure mode).
fn caller_ids(certs: Certs) -> Option<Vec<u64>> {
    let certs = certs?;
    Some(certs.first().map(|c| crate::tls::node_ids_in(c.as_ref())).unwrap_or_default())
}

/// A message claiming to come from node `claimed` must be carried by that node's certificate.
fn check_caller_is(ids: &Option<Vec<u64>>, claimed: u64) -> Result<(), Status> {
    match ids {
        None => Ok(()),
        Some(ids) if ids.contains(&claimed) => Ok(()),
        Some(ids) => {
            tracing::warn!(?ids, claimed, "raft message refused: the certificate does not belong to its sender");
            Err(Status::permission_denied("the client certificate does not belong to the sending node"))
        }
    }
}

/// Forwarded requests may come from any member of the cluster.
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

fn malformed(e: wire::Malformed) -> Status {
    Status::invalid_argument(e.to_string())
}

/// openraft refuses only when its core stopped.
fn core_stopped<E: std::fmt::Display>(e: E) -> Status {
    Status::unavailable(format!("the raft core is not running: {e}"))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(
        &self,
        req: Request<proto::AppendEntriesRequest>,
    ) -> Result<Response<proto::AppendEntriesResponse>, Status> {
        let ids = caller_ids(req.peer_certs());
        let rpc = wire::append_from(req.into_inner()).map_err(malformed)?;
        check_caller_is(&ids, rpc.vote.leader_id().node_id)?;
        if let Some(problem) = self.node.disk_problem() {
            // Declined, not failed: the leader retries later and commits with the others
            // meanwhile. The leader was heard all the same, so this node does not stand.
            self.node.contact().touch();
            return Err(Status::resource_exhausted(problem));
        }
        let resp = self.node.raft().append_entries(rpc).await.map_err(core_stopped)?;
        // Any answer that is not "your vote is stale" means a live leader reached us.
        if !matches!(resp, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
            self.node.contact().touch();
        }
        Ok(Response::new(wire::append_response_to(&resp)))
    }

    async fn vote(&self, req: Request<proto::VoteRequest>) -> Result<Response<proto::VoteResponse>, Status> {
        let ids = caller_ids(req.peer_certs());
        let rpc = wire::vote_request_from(req.into_inner()).map_err(malformed)?;
        check_caller_is(&ids, rpc.vote.leader_id().node_id)?;
        if let Some(problem) = self.node.disk_problem() {
            return Err(Status::resource_exhausted(problem));
        }
        let resp = self.node.raft().vote(rpc).await.map_err(core_stopped)?;
        if resp.vote_granted {
            // Having voted, this node waits a whole lease before standing itself (as in Raft,
            // granting a vote resets the election timer).
            self.node.contact().touch();
        }
        Ok(Response::new(wire::vote_response_to(&resp)))
    }

    async fn install_snapshot(
        &self,
        req: Request<proto::InstallSnapshotRequest>,
    ) -> Result<Response<proto::InstallSnapshotResponse>, Status> {
        let ids = caller_ids(req.peer_certs());
        let rpc = wire::snapshot_from(req.into_inner()).map_err(malformed)?;
        check_caller_is(&ids, rpc.vote.leader_id().node_id)?;
        if let Some(problem) = self.node.disk_problem() {
            self.node.contact().touch();
            return Err(Status::resource_exhausted(problem));
        }
        let resp = self.node.raft().install_snapshot(rpc).await.map_err(core_stopped)?;
        self.node.contact().touch();
        Ok(Response::new(proto::InstallSnapshotResponse { vote: Some(wire::vote_to(&resp.vote)) }))
    }

    async fn client_write(
        &self,
        req: Request<proto::ClientWriteRequest>,
    ) -> Result<Response<proto::ClientWriteResponse>, Status> {
        use proto::client_write_response::Result as R;
        check_caller_is_member(&self.node, &caller_ids(req.peer_certs()))?;
        let request = DomainRequest::decode(&req.into_inner().request)
            .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))?;
        let result = match self.node.write_as_leader(request).await {
            LeaderAnswer::Done(outcome, index) => R::Applied(proto::Applied { outcome: outcome.encode(), index }),
            LeaderAnswer::NotLeader => R::NotLeader(proto::Empty {}),
            LeaderAnswer::Unknown(e) => R::OutcomeUnknown(e),
            LeaderAnswer::ShuttingDown => R::ShuttingDown(proto::Empty {}),
        };
        Ok(Response::new(proto::ClientWriteResponse { result: Some(result) }))
    }

    async fn change_membership(
        &self,
        req: Request<proto::ChangeMembershipRequest>,
    ) -> Result<Response<proto::ChangeMembershipResponse>, Status> {
        use proto::change_membership_request::Op;
        use proto::change_membership_response::Result as R;
        check_caller_is_member(&self.node, &caller_ids(req.peer_certs()))?;
        let op = match req.into_inner().op {
            Some(Op::Add(a)) => {
                MembershipOp::Add { id: a.id, info: NodeInfo { raft_addr: a.raft_addr, api_url: a.api_url } }
            }
            Some(Op::Remove(id)) => MembershipOp::Remove { id },
            None => return Err(Status::invalid_argument("no membership operation")),
        };
        let result = match self.node.change_membership_as_leader(op).await {
            Ok(()) => R::Done(proto::Empty {}),
            Err(MembershipError::Invalid(m)) => R::Invalid(m),
            Err(MembershipError::UnknownNode(id)) => R::UnknownNode(id),
            Err(MembershipError::InProgress) => R::InProgress(proto::Empty {}),
            Err(MembershipError::Write(WriteError::NoLeader)) => R::NoLeader(proto::Empty {}),
            Err(MembershipError::Write(WriteError::ShuttingDown)) => R::ShuttingDown(proto::Empty {}),
            Err(MembershipError::Write(other)) => R::OutcomeUnknown(other.to_string()),
        };
        Ok(Response::new(proto::ChangeMembershipResponse { result: Some(result) }))
    }

    async fn wait_applied(
        &self,
        req: Request<proto::WaitAppliedRequest>,
    ) -> Result<Response<proto::WaitAppliedResponse>, Status> {
        check_caller_is_member(&self.node, &caller_ids(req.peer_certs()))?;
        let r = req.into_inner();
        let timeout = Duration::from_millis(r.timeout_ms.min(5_000));
        self.node
            .raft()
            .wait(Some(timeout))
            .applied_index_at_least(Some(r.index), "peer asked")
            .await
            .map_err(|e| Status::deadline_exceeded(e.to_string()))?;
        Ok(Response::new(proto::WaitAppliedResponse {}))
    }

    async fn read_index(
        &self,
        req: Request<proto::ReadIndexRequest>,
    ) -> Result<Response<proto::ReadIndexResponse>, Status> {
        check_caller_is_member(&self.node, &caller_ids(req.peer_certs()))?;
        let (read, _applied) = self
            .node
            .raft()
            .get_read_log_id()
            .await
            .map_err(|e| Status::failed_precondition(format!("not a leader confirmed by a quorum: {e}")))?;
        Ok(Response::new(proto::ReadIndexResponse { index: read.map(|l| l.index) }))
    }

    async fn pre_vote(&self, req: Request<proto::PreVoteRequest>) -> Result<Response<proto::PreVoteResponse>, Status> {
        let ids = caller_ids(req.peer_certs());
        let r = req.into_inner();
        check_caller_is(&ids, r.candidate)?;
        let ask = crate::election::PreVoteRequest {
            candidate: r.candidate,
            term: r.term,
            last_log: r.last_log.map(|l| (l.term, l.index)),
        };
        let answer = crate::election::judge(&self.node, &ask).await;
        Ok(Response::new(proto::PreVoteResponse { granted: answer.granted, reason: answer.reason }))
    }

    async fn put_blob(
        &self,
        req: Request<tonic::Streaming<proto::BlobChunk>>,
    ) -> Result<Response<proto::BlobStored>, Status> {
        check_caller_is_member(&self.node, &caller_ids(req.peer_certs()))?;
        if let Some(problem) = self.node.disk_problem() {
            return Err(Status::resource_exhausted(problem));
        }
        let (digest, bytes) = crate::blobs::collect(req.into_inner()).await?;
        self.node.blobs().put(&digest, &bytes).await.map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(proto::BlobStored {}))
    }

    type GetBlobStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<proto::BlobChunk, Status>> + Send + 'static>>;

    async fn get_blob(&self, req: Request<proto::BlobWanted>) -> Result<Response<Self::GetBlobStream>, Status> {
        check_caller_is_member(&self.node, &caller_ids(req.peer_certs()))?;
        let digest = req.into_inner().digest;
        let bytes = self
            .node
            .blobs()
            .get(&digest)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found("this node does not hold the blob"))?;
        let stream = crate::blobs::chunks(digest, Arc::new(bytes));
        Ok(Response::new(Box::pin(futures::StreamExt::map(stream, Ok))))
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
