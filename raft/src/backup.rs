//! Backup and restore as cluster operations: an export of one consistent snapshot of the
//! replicated records plus every image blob they name (fetched, verified, from wherever it is),
//! and a restore that stores the blobs on a quorum first and then commits the records through
//! Raft in bounded chunks, so every node gets them. The format is `storage::backup`'s.

use std::collections::BTreeSet;
use std::time::Duration;

use dermagate_domain::command::Command;
use dermagate_domain::records::StoredImage;
use dermagate_domain::services::ServiceError;
use dermagate_domain::{reads, Request};
use dermagate_storage::backup;

use crate::node::RaftNode;

/// Records per restore entry stay well under the entry size limit.
const RESTORE_CHUNK_BYTES: usize = 512 * 1024;

/// What a restore brought back.
#[derive(Debug, Clone, Copy)]
pub struct Restored {
    pub records: usize,
    pub blobs: usize,
}

impl RaftNode {
    /// A backup of the whole replicated state (plaintext: the caller encrypts it before it leaves).
    pub async fn export_backup(&self) -> Result<(u64, Vec<u8>), ServiceError> {
        if let Err(e) = self.catch_up(Duration::from_secs(1)).await {
            tracing::debug!(error = %e, "backing up from local state without catching up");
        }
        let store = self.store().clone();
        let (applied, records, images) = tokio::task::spawn_blocking(move || {
            let (applied, records) = backup::export_records(&store)?;
            let images: Vec<StoredImage> = reads::all_stored_images(store.as_ref())
                .map_err(|e| dermagate_storage::StoreError::Corrupt(e.to_string()))?;
            Ok::<_, dermagate_storage::StoreError>((applied, records, images))
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::internal)?;
        let digests: BTreeSet<String> = images.into_iter().map(|i| i.digest).collect();
        let mut blobs = Vec::with_capacity(digests.len());
        for digest in digests {
            let bytes = self.blob(&digest).await?;
            blobs.push((digest, bytes));
        }
        Ok((applied.unwrap_or(0), backup::encode(&records, &blobs)))
    }

    /// Restores a backup: every blob verified and stored on a quorum, then the records.
    pub async fn restore_backup(&self, data: &[u8], actor: &str) -> Result<Restored, ServiceError> {
        let decoded =
            backup::decode(data).map_err(|e| ServiceError::validation("body", "backup_format", e.to_string()))?;
        let blobs = decoded.blobs.len();
        for (digest, bytes) in decoded.blobs {
            self.store_blob_on_quorum(&digest, bytes).await?;
        }
        let records = decoded.records.len();
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        let mut pending = decoded.records.into_iter().peekable();
        let mut first = true;
        while let Some((k, v)) = pending.next() {
            chunk_bytes += k.len() + v.len();
            chunk.push((k, v));
            if chunk_bytes > RESTORE_CHUNK_BYTES || pending.peek().is_none() {
                let records = std::mem::take(&mut chunk);
                let command =
                    Command::RestoreRecords { records, replace: false, into_new_cluster: std::mem::take(&mut first) };
                let request = Request::new(dermagate_domain::services::now_ms(), actor, command);
                let (outcome, _) = self.write_indexed(request).await?;
                outcome.into_result().map_err(ServiceError::from)?;
                chunk_bytes = 0;
            }
        }
        Ok(Restored { records, blobs })
    }
}
