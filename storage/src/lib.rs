//! Durable, encrypted storage of a dermagate node: the Raft log and the replicated state machine
//! on RocksDB, every value sealed with AES-256-GCM. This crate does no network I/O.

pub mod backup;
pub mod blobs;
pub mod db;
pub mod disk;
pub mod error;
pub mod format;
pub mod log_store;
pub mod overlay;
pub mod private;
pub mod seal;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use blobs::{BlobBackend, BlobStore, FileBlobs};
pub use db::Store;
pub use error::StoreError;
pub use log_store::LogStore;
pub use seal::{Kek, Sealer};
pub use state_machine::{BlobWork, StateMachineStore};
pub use types::{NodeInfo, TypeConfig};

use std::path::Path;
use std::sync::Arc;

/// Opens (or creates) the store in `dir` and returns the two halves openraft needs.
pub fn open(dir: &Path, kek: &Kek) -> Result<(Arc<Store>, LogStore, StateMachineStore), StoreError> {
    let store = Store::open(dir, kek)?;
    let log = LogStore::new(store.clone());
    let sm = StateMachineStore::open(store.clone())?;
    Ok((store, log, sm))
}
