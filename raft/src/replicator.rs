//! The Raft node as the domain's replicator and blob store: the services commit through it and
//! read linearizably through it, without knowing Raft.

use std::time::Duration;

use dermagate_domain::services::{BlobStore, Replicator, ServiceError};
use dermagate_domain::{ErrorCode, Outcome, Request};

use crate::blobs::BlobError;
use crate::error::WriteError;
use crate::node::{NotReadyKind, RaftNode};

impl From<WriteError> for ServiceError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NoLeader => ServiceError::unavailable("no cluster leader is available", 1),
            WriteError::ShuttingDown => ServiceError::unavailable("this node is shutting down", 1),
            WriteError::OutcomeUnknown(m) => {
                tracing::warn!(error = %m, "write outcome unknown");
                ServiceError::new(
                    ErrorCode::OutcomeUnknown,
                    "the write may or may not have been applied; check before retrying",
                )
            }
            WriteError::TooLarge { bytes, limit } => ServiceError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the record to replicate is {bytes} bytes; one replicated record may hold at most {limit} bytes"
                ),
            ),
            WriteError::Internal(m) => ServiceError::internal(m),
        }
    }
}

impl From<BlobError> for ServiceError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NoQuorum { .. } => {
                ServiceError::unavailable(format!("the images could not be stored safely: {e}"), 2)
            }
            BlobError::Unavailable(_) => ServiceError::unavailable("no node can provide this image right now", 2),
            BlobError::Store(e) if dermagate_storage::disk::is_out_of_space(&e.to_string()) => {
                ServiceError::new(ErrorCode::InsufficientStorage, "this node has no room for the images")
                    .with_retry_after(5)
            }
            BlobError::Store(e) => ServiceError::internal(e),
        }
    }
}

#[async_trait::async_trait]
impl Replicator for RaftNode {
    async fn commit(&self, req: Request) -> Result<Outcome, ServiceError> {
        if let Some(problem) = self.disk_problem() {
            return Err(ServiceError::new(
                ErrorCode::InsufficientStorage,
                format!("this node takes no new data: {problem}"),
            )
            .with_retry_after(5));
        }
        let revocation = req.command.is_revocation();
        let (outcome, index) = self.write_indexed(req).await?;
        if revocation {
            // Waiting the staleness bound for every member makes the bound hold with no delay:
            // a member that has not confirmed by then has stopped authenticating.
            self.propagate(index, self.settings().staleness_bound).await;
        }
        Ok(outcome)
    }

    async fn linearize(&self) -> Result<(), ServiceError> {
        self.catch_up(Duration::from_secs(1))
            .await
            .map_err(|e| ServiceError::unavailable(format!("cannot confirm the latest state with the leader: {e}"), 1))
    }

    fn readiness(&self) -> Result<(), ServiceError> {
        RaftNode::readiness(self).map_err(|n| match n.kind {
            NotReadyKind::DiskFull => {
                ServiceError::new(ErrorCode::InsufficientStorage, format!("this node takes no new data: {}", n.reason))
                    .with_retry_after(5)
            }
            _ => ServiceError::unavailable(format!("this node cannot authenticate right now: {}", n.reason), 1),
        })
    }
}

#[async_trait::async_trait]
impl BlobStore for RaftNode {
    async fn store(&self, digest: &str, bytes: Vec<u8>) -> Result<(), ServiceError> {
        Ok(self.store_blob_on_quorum(digest, bytes).await?)
    }

    async fn fetch(&self, digest: &str) -> Result<Vec<u8>, ServiceError> {
        Ok(self.blob(digest).await?)
    }
}
