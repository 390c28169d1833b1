//! The RocksDB instance of a node: column families, sealed reads and writes, and the typed
//! read-only view of the replicated state that the API serves from.
//!
//! Point reads are served inline (they hit the block cache in microseconds); writes and scans
//! run on tokio's blocking pool (the log store, the state machine, and the API's `AppState::scan`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use dermagate_domain::state::{StateError, StateRead};

use crate::error::StoreError;
use crate::seal::{Kek, Sealer};

/// (key, opened value) pairs read from a column family.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Raft log entries, keyed by big-endian index.
pub const CF_LOGS: &str = "logs";
/// Raft metadata: vote, committed, last purged.
pub const CF_RAFT_META: &str = "raft_meta";
/// State machine metadata: last applied log id and membership.
pub const CF_SM_META: &str = "sm_meta";
/// State machine data: the replicated records.
pub const CF_SM_DATA: &str = "sm_data";
/// The current snapshot, as sealed chunks plus its metadata.
pub const CF_SNAPSHOT: &str = "snapshot";

const ALL_CFS: [&str; 5] = [CF_LOGS, CF_RAFT_META, CF_SM_META, CF_SM_DATA, CF_SNAPSHOT];

pub struct Store {
    db: DB,
    sealer: Sealer,
    dir: PathBuf,
    /// Bumped after every applied batch that touched credentials (organisations, users,
    /// clients, revoked tokens, refresh families), so readers can cache "not revoked" decisions
    /// and know exactly when they must look again.
    credentials_epoch: std::sync::atomic::AtomicU64,
    disk: crate::disk::DiskGuard,
    keyer_cache: parking_lot::Mutex<Option<(u64, dermagate_domain::keys::Keyer)>>,
}

impl Store {
    pub fn open(dir: &Path, kek: &Kek) -> Result<Arc<Store>, StoreError> {
        crate::private::make_private(dir)?;
        crate::format::check_or_create(dir)?;
        let sealer = Sealer::load_or_create(dir, kek)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(5);
        opts.set_max_total_wal_size(64 << 20);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir.join("rocksdb"), cfs)?;
        let disk = crate::disk::DiskGuard::new(dir, 0);
        Ok(Arc::new(Store {
            db,
            sealer,
            dir: dir.to_path_buf(),
            credentials_epoch: Default::default(),
            disk,
            keyer_cache: Default::default(),
        }))
    }

    /// The current credentials epoch (see the field's documentation).
    pub fn credentials_epoch(&self) -> u64 {
        self.credentials_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called after a batch that changed credentials has been written, never before.
    pub(crate) fn bump_credentials_epoch(&self) {
        self.credentials_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Reads the free space again, counting what pending compactions will write as used (a
    /// compaction that runs out of space stops the whole store).
    pub fn refresh_disk(&self) {
        let pending =
            self.db.property_int_value("rocksdb.estimate-pending-compaction-bytes").ok().flatten().unwrap_or(0);
        self.disk.refresh_with(pending);
    }

    /// Free space and the reserve this node keeps (see [`crate::disk`]).
    pub fn disk(&self) -> &crate::disk::DiskGuard {
        &self.disk
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Reads and opens one sealed value; the RocksDB key is the AEAD's associated data.
    pub fn get_raw(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.db.get_pinned_cf(self.cf(cf), key)? {
            Some(sealed) => Ok(Some(self.sealer.open(&aad(cf, key), &sealed)?)),
            None => Ok(None),
        }
    }

    pub fn get_json<T: DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.get_raw(cf, key)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn put_raw(&self, batch: &mut WriteBatch, cf: &str, key: &[u8], value: &[u8]) {
        batch.put_cf(self.cf(cf), key, self.sealer.seal(&aad(cf, key), value));
    }

    pub(crate) fn put_json<T: Serialize>(
        &self,
        batch: &mut WriteBatch,
        cf: &str,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.put_raw(batch, cf, key, &serde_json::to_vec(value)?);
        Ok(())
    }

    /// Writes one state-machine record outside Raft, sealed as usual. **It bypasses replication**:
    /// only offline tools and tests that simulate tampering with a stopped node's data use it.
    #[doc(hidden)]
    pub fn overwrite_record_offline(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put_raw(&mut batch, CF_SM_DATA, key, value);
        self.write(batch, true)
    }

    /// Writes a batch; `sync` makes the call return only after the WAL reached the disk.
    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(batch, &opts).inspect_err(|e| self.note_if_out_of_space(e))?;
        Ok(())
    }

    /// Records a failure for lack of space, so the node stops taking data (see [`crate::disk`]).
    pub(crate) fn note_if_out_of_space(&self, e: &rocksdb::Error) {
        if crate::disk::is_out_of_space(e.as_ref()) {
            self.disk.note_out_of_space();
        }
    }

    /// Every (key, opened value) pair whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, cf: &str, prefix: &[u8]) -> Result<Pairs, StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_prefix_same_as_start(false);
        let iter = self.db.iterator_cf_opt(self.cf(cf), ro, IteratorMode::From(prefix, Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), self.sealer.open(&aad(cf, &k), &v)?));
        }
        Ok(out)
    }

    pub fn scan_json<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        self.scan_prefix(CF_SM_DATA, prefix.as_bytes())?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(StoreError::from))
            .collect()
    }

    /// Approximate bytes on disk of the whole data directory's RocksDB files.
    pub fn size_on_disk(&self) -> u64 {
        ALL_CFS
            .iter()
            .filter_map(|cf| self.db.property_int_value_cf(self.cf(cf), "rocksdb.total-sst-files-size").ok().flatten())
            .sum::<u64>()
            + self.db.property_int_value("rocksdb.cur-size-all-mem-tables").ok().flatten().unwrap_or(0)
    }

    /// Whether RocksDB is currently stalling writes (a sign the disk cannot keep up).
    pub fn write_stalled(&self) -> bool {
        self.db.property_int_value("rocksdb.actual-delayed-write-rate").ok().flatten().unwrap_or(0) > 0
            || self.db.property_int_value("rocksdb.is-write-stopped").ok().flatten().unwrap_or(0) > 0
    }

    /// Flushes memtables and syncs the WAL; called on shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        for cf in ALL_CFS {
            self.db.flush_cf(self.cf(cf))?;
        }
        Ok(())
    }

    /// The keyer of the cluster secret (cached; looked up again after credentials change, which a
    /// restore does), once the bootstrap recorded the secret.
    pub fn keyer(&self) -> Result<Option<dermagate_domain::keys::Keyer>, StoreError> {
        let epoch = self.credentials_epoch();
        if let Some((at, keyer)) = self.keyer_cache.lock().as_ref() {
            if *at == epoch {
                return Ok(Some(keyer.clone()));
            }
        }
        let keyer = dermagate_domain::reads::keyer(self)?;
        if let Some(k) = &keyer {
            *self.keyer_cache.lock() = Some((epoch, k.clone()));
        }
        Ok(keyer)
    }
}

/// The replicated state as the domain reads it: the state machine's column family, opened.
impl StateRead for Store {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Store::get_raw(self, CF_SM_DATA, key).map_err(StateError::from)
    }

    fn scan_raw(&self, prefix: &[u8]) -> Result<dermagate_domain::state::Pairs, StateError> {
        self.scan_prefix(CF_SM_DATA, prefix).map_err(StateError::from)
    }

    fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        let mut ro = ReadOptions::default();
        ro.set_prefix_same_as_start(false);
        let mut out = Vec::new();
        for item in self.db.iterator_cf_opt(self.cf(CF_SM_DATA), ro, IteratorMode::From(prefix, Direction::Forward)) {
            let (k, _) = item.map_err(|e| StateError(e.to_string()))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k.to_vec());
        }
        Ok(out)
    }
}

/// The associated data that binds a sealed value to its column family and key.
pub(crate) fn aad(cf: &str, key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(cf.len() + 1 + key.len());
    a.extend_from_slice(cf.as_bytes());
    a.push(0);
    a.extend_from_slice(key);
    a
}

impl dermagate_domain::services::StateView for Store {
    fn credentials_epoch(&self) -> u64 {
        Store::credentials_epoch(self)
    }

    fn keyer(&self) -> Result<Option<dermagate_domain::keys::Keyer>, StateError> {
        Store::keyer(self).map_err(StateError::from)
    }
}
