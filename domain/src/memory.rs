//! The replicated state in memory: a sorted map implementing the state traits, so the business
//! rules can be tested without RocksDB or a cluster (and a batch's effects inspected).

use std::collections::BTreeMap;

use crate::state::{StateError, StateRead, StateWrite};

#[derive(Debug, Default, Clone)]
pub struct MemoryState {
    pub data: BTreeMap<Vec<u8>, Vec<u8>>,
    pub referenced_blobs: Vec<String>,
    pub freed_blobs: Vec<String>,
    pub credential_changes: u64,
}

impl StateRead for MemoryState {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.data.get(key).cloned())
    }

    fn scan_raw(&self, prefix: &[u8]) -> Result<crate::state::Pairs, StateError> {
        Ok(self
            .data
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl StateWrite for MemoryState {
    fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.data.insert(key, value);
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.data.remove(&key);
    }

    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        let doomed: Vec<Vec<u8>> = self.data.range(start..end).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.data.remove(&k);
        }
    }

    fn blob_referenced(&mut self, digest: &str) {
        self.referenced_blobs.push(digest.to_string());
    }

    fn blob_freed(&mut self, digest: &str) {
        self.freed_blobs.push(digest.to_string());
    }

    fn credentials_changed(&mut self) {
        self.credential_changes += 1;
    }
}
