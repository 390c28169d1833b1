//! The typed errors of the storage layer, and their conversion into openraft's `StorageError`.

use openraft::{StorageError, StorageIOError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("codec: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("sealed value could not be opened (wrong key or tampered data): {0}")]
    Unseal(String),
    #[error("key-encryption key: {0}")]
    Kek(String),
    #[error("keyring: {0}")]
    Keyring(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("blocking task failed: {0}")]
    Join(String),
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    State(String),
}

impl From<StoreError> for dermagate_domain::state::StateError {
    fn from(e: StoreError) -> Self {
        dermagate_domain::state::StateError(e.to_string())
    }
}

impl From<dermagate_domain::state::StateError> for StoreError {
    fn from(e: dermagate_domain::state::StateError) -> Self {
        StoreError::State(e.0)
    }
}

impl From<postcard::Error> for StoreError {
    fn from(e: postcard::Error) -> Self {
        StoreError::Corrupt(format!("binary codec: {e}"))
    }
}

impl StoreError {
    pub fn into_read(self) -> StorageError<u64> {
        StorageIOError::read(&self).into()
    }

    pub fn into_write(self) -> StorageError<u64> {
        StorageIOError::write(&self).into()
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::Join(e.to_string())
    }
}
