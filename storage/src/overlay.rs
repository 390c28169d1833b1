//! One apply batch over the committed state: the domain's apply logic writes here, later entries
//! of the batch see the effects of earlier ones, and the whole batch lands in RocksDB in **one
//! atomic WriteBatch**, sealed, together with the applied log id.

use std::collections::BTreeMap;

use dermagate_domain::state::{StateError, StateRead, StateWrite};

use crate::db::{Store, CF_SM_DATA};

/// What an apply batch means for the blob store, acted on after the batch is written.
#[derive(Debug, Default, Clone)]
pub struct BlobEffects {
    pub referenced: Vec<String>,
    pub freed: Vec<String>,
}

/// Pending writes of one apply batch over the committed state.
pub struct Overlay<'a> {
    store: &'a Store,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Key ranges `[start, end)` deleted by this batch, applied before `writes`.
    deleted_ranges: Vec<(Vec<u8>, Vec<u8>)>,
    blobs: BlobEffects,
    credentials_changed: bool,
}

impl<'a> Overlay<'a> {
    pub fn new(store: &'a Store) -> Overlay<'a> {
        Overlay {
            store,
            writes: BTreeMap::new(),
            deleted_ranges: Vec::new(),
            blobs: BlobEffects::default(),
            credentials_changed: false,
        }
    }

    fn range_deleted(&self, key: &[u8]) -> bool {
        self.deleted_ranges.iter().any(|(start, end)| key >= start.as_slice() && key < end.as_slice())
    }

    /// The blob effects of the batch so far.
    pub fn blob_effects(&self) -> &BlobEffects {
        &self.blobs
    }

    /// Whether this batch changed anything a credential check reads.
    pub fn touches_credentials(&self) -> bool {
        self.credentials_changed
    }

    /// Moves the pending writes into `batch`, sealed.
    pub fn into_batch(self, batch: &mut rocksdb::WriteBatch) {
        let cf = self.store.cf(CF_SM_DATA);
        for (start, end) in &self.deleted_ranges {
            batch.delete_range_cf(cf, start, end);
        }
        for (key, value) in self.writes {
            match value {
                Some(v) => self.store.put_raw(batch, CF_SM_DATA, &key, &v),
                None => batch.delete_cf(cf, &key),
            }
        }
    }
}

impl StateRead for Overlay<'_> {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None if self.range_deleted(key) => Ok(None),
            None => StateRead::get_raw(self.store, key),
        }
    }

    /// Committed pairs under `prefix` as the batch sees them (plus pending, minus deleted).
    fn scan_raw(&self, prefix: &[u8]) -> Result<dermagate_domain::state::Pairs, StateError> {
        let mut pairs: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .store
            .scan_raw(prefix)?
            .into_iter()
            .filter(|(k, _)| !self.range_deleted(k))
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for (k, v) in self.writes.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            pairs.insert(k.clone(), v.clone());
        }
        Ok(pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }
}

impl StateWrite for Overlay<'_> {
    fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        let doomed: Vec<Vec<u8>> = self.writes.range(start.clone()..end.clone()).map(|(k, _)| k.clone()).collect();
        for key in doomed {
            self.writes.remove(&key);
        }
        self.deleted_ranges.push((start, end));
    }

    fn blob_referenced(&mut self, digest: &str) {
        self.blobs.freed.retain(|d| d != digest);
        self.blobs.referenced.push(digest.to_string());
    }

    fn blob_freed(&mut self, digest: &str) {
        self.blobs.referenced.retain(|d| d != digest);
        self.blobs.freed.push(digest.to_string());
    }

    fn credentials_changed(&mut self) {
        self.credentials_changed = true;
    }
}
