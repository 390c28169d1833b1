//! Blobs between nodes: storing an image on a quorum before the report naming it is proposed,
//! fetching a blob a node lacks from a peer, and the keeper that brings every node to a full copy
//! and deletes what no report names any more. Transfers are streamed in chunks over the mTLS
//! gRPC protocol, on connections of their own so they never delay heartbeats, and every blob is
//! verified against its digest by the receiver.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dermagate_storage::blobs::{digest_of, is_digest};
use dermagate_storage::BlobWork;
use futures::StreamExt;
use rand::seq::SliceRandom;

use crate::network::Lane;
use crate::node::RaftNode;
use crate::proto::BlobChunk;
use crate::NodeId;

/// Bytes per streamed chunk.
pub const CHUNK_BYTES: usize = 256 << 10;
/// The largest blob accepted from a peer.
pub const MAX_BLOB_BYTES: u64 = 64 << 20;
/// How long storing one blob on a quorum may take.
const QUORUM_TIMEOUT: Duration = Duration::from_secs(10);
/// Unreferenced blobs younger than this are kept: their report may not be committed yet.
const GC_GRACE: Duration = Duration::from_secs(600);
/// How often the keeper compares every reference with the local copies.
const RESCAN_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the image could be stored on only {stored} of the {needed} nodes a quorum needs")]
    NoQuorum { stored: usize, needed: usize },
    #[error("no member could provide blob {0}")]
    Unavailable(String),
    #[error("storage: {0}")]
    Store(#[from] dermagate_storage::StoreError),
}

/// The chunks of one blob as a stream (the first chunk names it).
pub(crate) fn chunks(digest: String, bytes: Arc<Vec<u8>>) -> impl futures::Stream<Item = BlobChunk> {
    let size = bytes.len() as u64;
    let count = bytes.len().div_ceil(CHUNK_BYTES).max(1);
    futures::stream::iter((0..count).map(move |i| {
        let data = bytes[i * CHUNK_BYTES..((i + 1) * CHUNK_BYTES).min(bytes.len())].to_vec();
        BlobChunk {
            digest: if i == 0 { digest.clone() } else { String::new() },
            size: if i == 0 { size } else { 0 },
            data,
        }
    }))
}

/// Reads a stream of chunks into one blob, bounded by the size its first chunk announced.
pub(crate) async fn collect(
    mut stream: impl futures::Stream<Item = Result<BlobChunk, tonic::Status>> + Unpin,
) -> Result<(String, Vec<u8>), tonic::Status> {
    let first = stream.next().await.ok_or_else(|| tonic::Status::invalid_argument("empty blob stream"))??;
    if !is_digest(&first.digest) || first.size > MAX_BLOB_BYTES {
        return Err(tonic::Status::invalid_argument(
            "the first chunk must name a blob digest and a size within limits",
        ));
    }
    let mut bytes = Vec::with_capacity(first.size as usize);
    bytes.extend_from_slice(&first.data);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?.data);
        if bytes.len() as u64 > first.size {
            return Err(tonic::Status::invalid_argument("the blob is longer than announced"));
        }
    }
    if bytes.len() as u64 != first.size {
        return Err(tonic::Status::invalid_argument("the blob is shorter than announced"));
    }
    Ok((first.digest, bytes))
}

impl RaftNode {
    /// Stores `bytes` (named `digest`) durably here and on enough peers that a quorum of voters
    /// holds it; the copies still under way finish in the background. With a shared backend
    /// (an object store) one write is the whole story.
    pub async fn store_blob_on_quorum(&self, digest: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        let started = Instant::now();
        self.blobs().put(digest, &bytes).await?;
        if self.blobs().shared() {
            return Ok(());
        }
        let voters: BTreeSet<NodeId> =
            self.raft().metrics().borrow().membership_config.membership().voter_ids().collect();
        let needed = voters.len() / 2 + 1;
        let bytes = Arc::new(bytes);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (id, info) in self.members().into_iter().filter(|(id, _)| *id != self.id()) {
            let (network, digest, bytes, tx) = (self.network().clone(), digest.to_string(), bytes.clone(), tx.clone());
            let voter = voters.contains(&id);
            // Spawned, not awaited here: the copies beyond a quorum complete on their own.
            tokio::spawn(async move {
                let result = network.put_blob(id, &info.raft_addr, chunks(digest.clone(), bytes), QUORUM_TIMEOUT).await;
                if let Err(e) = &result {
                    tracing::warn!(peer = id, digest = %digest, error = %e, "a peer did not store a blob; the keeper will repair it");
                }
                let _ = tx.send(voter && result.is_ok());
            });
        }
        drop(tx);
        let mut stored = usize::from(voters.contains(&self.id()));
        while stored < needed {
            match rx.recv().await {
                Some(true) => stored += 1,
                Some(false) => {}
                None => break,
            }
        }
        metrics::histogram!("dermagate_blob_quorum_store_seconds").record(started.elapsed().as_secs_f64());
        if stored < needed {
            return Err(BlobError::NoQuorum { stored, needed });
        }
        Ok(())
    }

    /// The blob's bytes: the local copy, or one fetched from a peer (verified and then kept).
    pub async fn blob(&self, digest: &str) -> Result<Vec<u8>, BlobError> {
        if let Some(bytes) = self.blobs().get(digest).await? {
            return Ok(bytes);
        }
        self.fetch_blob(digest).await
    }

    /// Fetches a blob from the peers in random order; the first verified copy is stored here.
    pub async fn fetch_blob(&self, digest: &str) -> Result<Vec<u8>, BlobError> {
        let mut peers: Vec<_> = self.members().into_iter().filter(|(id, _)| *id != self.id()).collect();
        peers.shuffle(&mut rand::rng());
        let bytes = fetch_verified(self.network(), &peers, digest).await?;
        self.blobs().put(digest, &bytes).await?;
        metrics::counter!("dermagate_blob_repairs_total").increment(1);
        Ok(bytes)
    }
}

/// The first copy of `digest` among `peers` whose bytes hash to it; a peer that sends anything
/// else is refused (and logged) and the next one asked.
pub async fn fetch_verified(
    network: &crate::network::Network,
    peers: &[(NodeId, crate::NodeInfo)],
    digest: &str,
) -> Result<Vec<u8>, BlobError> {
    for (id, info) in peers {
        match network.get_blob(*id, &info.raft_addr, digest, QUORUM_TIMEOUT).await {
            Ok(bytes) if digest_of(&bytes) == digest => {
                tracing::info!(peer = id, digest = %digest, bytes = bytes.len(), "blob fetched from a peer");
                return Ok(bytes);
            }
            Ok(_) => {
                metrics::counter!("dermagate_blob_digest_mismatches_total").increment(1);
                tracing::error!(peer = id, digest = %digest, "a peer sent bytes that do not match the blob's digest; refused");
            }
            Err(e) => tracing::debug!(peer = id, digest = %digest, error = %e, "peer could not provide a blob"),
        }
    }
    Err(BlobError::Unavailable(digest.to_string()))
}

/// The blob keeper: fetches blobs that committed reports name and this node lacks, and deletes
/// blobs no report names (at once when an erasure freed them, after a grace period otherwise).
/// Runs until the Raft core stops.
pub async fn keep(node: Arc<RaftNode>, mut work: tokio::sync::mpsc::UnboundedReceiver<BlobWork>) {
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut next_rescan = Instant::now();
    let mut retry = tokio::time::interval(Duration::from_secs(5));
    loop {
        if node.raft().metrics().borrow().state == openraft::ServerState::Shutdown {
            return;
        }
        tokio::select! {
            item = work.recv() => match item {
                Some(BlobWork::Referenced(digest)) => { pending.insert(digest); }
                Some(BlobWork::Rescan) => next_rescan = Instant::now(),
                None => return,
            },
            _ = retry.tick() => {}
        }
        if Instant::now() >= next_rescan {
            next_rescan = Instant::now() + RESCAN_EVERY;
            match rescan(&node).await {
                Ok(missing) => pending.extend(missing),
                Err(e) => tracing::warn!(error = %e, "blob rescan failed"),
            }
        }
        if node.blobs().shared() {
            pending.clear();
            continue;
        }
        let mut still_missing = BTreeSet::new();
        for digest in std::mem::take(&mut pending) {
            match node.blobs().contains(&digest).await {
                Ok(true) => {}
                _ => {
                    if let Err(e) = node.fetch_blob(&digest).await {
                        tracing::debug!(digest = %digest, error = %e, "blob still missing; will retry");
                        still_missing.insert(digest);
                    }
                }
            }
        }
        metrics::gauge!("dermagate_blobs_missing").set(still_missing.len() as f64);
        pending = still_missing;
    }
}

/// Compares every reference with the local copies: returns the missing digests and deletes
/// local blobs that no report names (freed by an erasure, or orphaned past the grace period).
async fn rescan(node: &RaftNode) -> Result<Vec<String>, BlobError> {
    let store = node.store().clone();
    let referenced: BTreeSet<String> =
        tokio::task::spawn_blocking(move || dermagate_domain::reads::all_stored_images(store.as_ref()))
            .await
            .map_err(|e| BlobError::Store(dermagate_storage::StoreError::Join(e.to_string())))?
            .map_err(|e| BlobError::Store(e.into()))?
            .into_iter()
            .map(|i| i.digest)
            .collect();
    let held = node.blobs().list().await?;
    // A shared store is collected by the leader only; every node collects its own files.
    let collect = !node.blobs().shared() || node.raft().metrics().borrow().state == openraft::ServerState::Leader;
    if collect {
        for (digest, written) in &held {
            if referenced.contains(digest) {
                continue;
            }
            let store = node.store().as_ref();
            let gone = dermagate_domain::reads::blob_is_gone(store, digest).map_err(|e| BlobError::Store(e.into()))?;
            let old = SystemTime::now().duration_since(*written).unwrap_or_default() > GC_GRACE;
            let referenced =
                dermagate_domain::reads::blob_is_referenced(store, digest).map_err(|e| BlobError::Store(e.into()))?;
            if (gone || old) && !referenced {
                node.blobs().delete(digest).await?;
                metrics::counter!("dermagate_blob_collected_total").increment(1);
                tracing::info!(digest = %digest, erased = gone, "unreferenced blob deleted");
            }
        }
    }
    let held: BTreeSet<&String> = held.iter().map(|(d, _)| d).collect();
    Ok(referenced.iter().filter(|d| !held.contains(d)).cloned().collect())
}

/// The lane blobs travel on (see [`Lane`]).
pub(crate) const BLOB_LANE: Lane = Lane::Bulk;

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use tonic::{Request, Response, Status};

    use super::*;
    use crate::proto::raft_service_server::{RaftService, RaftServiceServer};
    use crate::proto::*;

    /// A peer that answers every blob request with the bytes it was given, whatever was asked.
    struct LyingPeer(Vec<u8>);

    fn refuse<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("test peer"))
    }

    #[tonic::async_trait]
    impl RaftService for LyingPeer {
        async fn append_entries(
            &self,
            _: Request<AppendEntriesRequest>,
        ) -> Result<Response<AppendEntriesResponse>, Status> {
            refuse()
        }
        async fn vote(&self, _: Request<VoteRequest>) -> Result<Response<VoteResponse>, Status> {
            refuse()
        }
        async fn install_snapshot(
            &self,
            _: Request<InstallSnapshotRequest>,
        ) -> Result<Response<InstallSnapshotResponse>, Status> {
            refuse()
        }
        async fn client_write(&self, _: Request<ClientWriteRequest>) -> Result<Response<ClientWriteResponse>, Status> {
            refuse()
        }
        async fn change_membership(
            &self,
            _: Request<ChangeMembershipRequest>,
        ) -> Result<Response<ChangeMembershipResponse>, Status> {
            refuse()
        }
        async fn read_index(&self, _: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
            refuse()
        }
        async fn wait_applied(&self, _: Request<WaitAppliedRequest>) -> Result<Response<WaitAppliedResponse>, Status> {
            refuse()
        }
        async fn pre_vote(&self, _: Request<PreVoteRequest>) -> Result<Response<PreVoteResponse>, Status> {
            refuse()
        }
        async fn put_blob(&self, _: Request<tonic::Streaming<BlobChunk>>) -> Result<Response<BlobStored>, Status> {
            Err(Status::unimplemented("test peer"))
        }
        type GetBlobStream = Pin<Box<dyn futures::Stream<Item = Result<BlobChunk, Status>> + Send + 'static>>;
        async fn get_blob(&self, req: Request<BlobWanted>) -> Result<Response<Self::GetBlobStream>, Status> {
            let chunk = BlobChunk { digest: req.into_inner().digest, size: self.0.len() as u64, data: self.0.clone() };
            Ok(Response::new(Box::pin(futures::stream::iter([Ok(chunk)]))))
        }
    }

    async fn serve(peer: LyingPeer) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServiceServer::new(peer))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr.to_string()
    }

    #[tokio::test]
    async fn a_peer_sending_other_bytes_than_the_digest_names_is_refused() {
        let wanted = b"the image a report names".to_vec();
        let digest = digest_of(&wanted);
        let network = crate::network::Network::new(None, &crate::RaftSettings::default(), None);
        let liar = serve(LyingPeer(b"something else entirely".to_vec())).await;
        let honest = serve(LyingPeer(wanted.clone())).await;
        let info = |addr: &str| crate::NodeInfo { raft_addr: addr.to_string(), api_url: String::new() };
        let only_liar = [(2, info(&liar))];
        assert!(matches!(fetch_verified(&network, &only_liar, &digest).await, Err(BlobError::Unavailable(_))));
        // With an honest peer after the liar, the verified copy is the one returned.
        let both = [(2, info(&liar)), (3, info(&honest))];
        assert_eq!(fetch_verified(&network, &both, &digest).await.unwrap(), wanted);
    }
}
