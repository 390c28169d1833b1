//! The whole domain in one process, without Raft or RocksDB: a [`LocalCluster`] applies each
//! committed request to a [`MemoryState`] at once (as a single-node cluster would) and keeps
//! blobs in memory. The services run unchanged on it, so their rules are tested in
//! milliseconds, and benchmarks measure the domain alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::command::{Outcome, Request};
use crate::keys::Keyer;
use crate::memory::MemoryState;
use crate::services::{BlobStore, Context, Replicator, ServiceError, StateView};
use crate::state::{StateError, StateRead};

#[derive(Default)]
pub struct LocalCluster {
    state: RwLock<MemoryState>,
    epoch: AtomicU64,
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    /// Every request committed, in order (what the Raft log would hold).
    pub log: Mutex<Vec<Request>>,
}

impl LocalCluster {
    pub fn new() -> Arc<LocalCluster> {
        Arc::new(LocalCluster::default())
    }

    /// A context whose state, replicator and blob store are this cluster.
    pub fn context(self: &Arc<Self>) -> Context {
        Context { state: self.clone(), replicator: self.clone(), blobs: self.clone() }
    }

    /// Applies `req` as the state machine would and returns its outcome.
    pub fn apply(&self, req: &Request) -> Result<Outcome, StateError> {
        let mut state = self.state.write();
        let before = state.credential_changes;
        let outcome = crate::apply::apply(&mut *state, req)?;
        if state.credential_changes != before {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        for digest in std::mem::take(&mut state.freed_blobs) {
            self.blobs.lock().remove(&digest);
        }
        state.referenced_blobs.clear();
        self.log.lock().push(req.clone());
        Ok(outcome)
    }

    /// A copy of the state, for assertions.
    pub fn snapshot(&self) -> MemoryState {
        self.state.read().clone()
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blobs.lock().contains_key(digest)
    }
}

impl StateRead for LocalCluster {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.state.read().get_raw(key)
    }

    fn scan_raw(&self, prefix: &[u8]) -> Result<crate::state::Pairs, StateError> {
        self.state.read().scan_raw(prefix)
    }
}

impl StateView for LocalCluster {
    fn credentials_epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn keyer(&self) -> Result<Option<Keyer>, StateError> {
        crate::reads::keyer(self)
    }
}

#[async_trait::async_trait]
impl Replicator for LocalCluster {
    async fn commit(&self, req: Request) -> Result<Outcome, ServiceError> {
        Ok(self.apply(&req)?)
    }

    async fn linearize(&self) -> Result<(), ServiceError> {
        Ok(())
    }

    fn readiness(&self) -> Result<(), ServiceError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalCluster {
    async fn store(&self, digest: &str, bytes: Vec<u8>) -> Result<(), ServiceError> {
        if crate::blob_digest(&bytes) != digest {
            return Err(ServiceError::internal("blob does not match its digest"));
        }
        self.blobs.lock().insert(digest.to_string(), bytes);
        Ok(())
    }

    async fn fetch(&self, digest: &str) -> Result<Vec<u8>, ServiceError> {
        self.blobs.lock().get(digest).cloned().ok_or_else(|| ServiceError::unavailable("blob not found", 1))
    }
}
