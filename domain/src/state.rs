//! What the domain needs of the replicated state, as two small traits the storage layer
//! implements: reading (point reads and prefix scans of opened values) and, inside one apply
//! batch, writing. Records are stored as JSON (self-describing, so a record gains fields without
//! a migration); keys are those of [`crate::keys`].

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failure of the storage underneath (fatal for an apply: the node stops rather than diverge).
#[derive(Debug, thiserror::Error)]
#[error("state: {0}")]
pub struct StateError(pub String);

impl From<serde_json::Error> for StateError {
    fn from(e: serde_json::Error) -> Self {
        StateError(format!("record codec: {e}"))
    }
}

/// Raw (key, opened value) pairs of a scan.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

pub trait StateRead {
    /// The opened value under `key`.
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Every (key, opened value) under `prefix`, in key order.
    fn scan_raw(&self, prefix: &[u8]) -> Result<Pairs, StateError>;
    /// Keys under `prefix` (values not opened), in key order.
    fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        Ok(self.scan_raw(prefix)?.into_iter().map(|(k, _)| k).collect())
    }
}

pub trait StateWrite: StateRead {
    fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
    /// Deletes every key in `[start, end)`.
    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>);
    /// A report now names this blob (the node fetches it if it lacks it).
    fn blob_referenced(&mut self, digest: &str);
    /// No report names this blob any more (every node deletes it).
    fn blob_freed(&mut self, digest: &str);
    /// Credentials changed: cached authorisation decisions must be made again.
    fn credentials_changed(&mut self);
}

pub fn get<T: DeserializeOwned>(state: &(impl StateRead + ?Sized), key: &[u8]) -> Result<Option<T>, StateError> {
    match state.get_raw(key)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        None => Ok(None),
    }
}

pub fn exists(state: &(impl StateRead + ?Sized), key: &[u8]) -> Result<bool, StateError> {
    Ok(state.get_raw(key)?.is_some())
}

pub fn scan<T: DeserializeOwned>(state: &(impl StateRead + ?Sized), prefix: &str) -> Result<Vec<T>, StateError> {
    state.scan_raw(prefix.as_bytes())?.into_iter().map(|(_, v)| Ok(serde_json::from_slice(&v)?)).collect()
}

pub fn put<T: Serialize>(state: &mut (impl StateWrite + ?Sized), key: Vec<u8>, value: &T) -> Result<(), StateError> {
    state.put_raw(key, serde_json::to_vec(value)?);
    Ok(())
}
