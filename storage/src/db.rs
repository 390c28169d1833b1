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
use uuid::Uuid;

use crate::error::StoreError;
use crate::model::{keys, Client, Organization, SigningKey, User};
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
}

impl Store {
    pub fn open(dir: &Path, kek: &Kek) -> Result<Arc<Store>, StoreError> {
        std::fs::create_dir_all(dir)?;
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
        Ok(Arc::new(Store { db, sealer, dir: dir.to_path_buf(), credentials_epoch: Default::default(), disk }))
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

    // ---- typed reads of the replicated state, used by the API ----

    pub fn organization(&self, id: &Uuid) -> Result<Option<Organization>, StoreError> {
        self.get_json(CF_SM_DATA, &keys::org(id))
    }

    pub fn organizations(&self) -> Result<Vec<Organization>, StoreError> {
        self.scan_json(keys::ORG)
    }

    pub fn user(&self, id: &Uuid) -> Result<Option<User>, StoreError> {
        self.get_json(CF_SM_DATA, &keys::user(id))
    }

    pub fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        match self.get_json::<Uuid>(CF_SM_DATA, &keys::username(username))? {
            Some(id) => self.user(&id),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        self.scan_json(keys::USER)
    }

    pub fn client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        self.get_json(CF_SM_DATA, &keys::client(client_id))
    }

    pub fn clients(&self) -> Result<Vec<Client>, StoreError> {
        self.scan_json(keys::CLIENT)
    }

    pub fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        self.scan_json(keys::SIGNING_KEY)
    }

    pub fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(CF_SM_DATA), keys::revoked_jti(jti))?.is_some())
    }

    /// The client whose secret hashes to `secret_hash`, if any (static API keys).
    pub fn client_by_secret_hash(&self, secret_hash: &str) -> Result<Option<Client>, StoreError> {
        match self.get_json::<String>(CF_SM_DATA, &keys::client_secret(secret_hash))? {
            Some(client_id) => self.client(&client_id),
            None => Ok(None),
        }
    }

    pub fn sign_in_state(&self, username: &str) -> Result<crate::model::SignInState, StoreError> {
        Ok(self.get_json(CF_SM_DATA, &keys::sign_in(username))?.unwrap_or_default())
    }

    pub fn is_refresh_family_revoked(&self, family: &Uuid) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(CF_SM_DATA), keys::revoked_family(family))?.is_some())
    }

    pub fn report(&self, id: &Uuid) -> Result<Option<crate::model::StoredReport>, StoreError> {
        self.record(crate::model::Collection::Report, &id.to_string())
    }

    /// A subject's reports in time-series order (by issue time, then id).
    pub fn subject_reports(&self, org_id: &Uuid, subject: &str) -> Result<Vec<crate::model::StoredReport>, StoreError> {
        let mut out = Vec::new();
        for id in self.scan_json::<Uuid>(&keys::subject_prefix(org_id, subject))? {
            // An index entry whose report is missing cannot happen (both change in one apply);
            // skipping is still safer than failing the listing.
            if let Some(report) = self.report(&id)? {
                out.push(report);
            }
        }
        Ok(out)
    }

    pub fn report_image(&self, report: &Uuid, index: u32) -> Result<Option<crate::model::StoredImage>, StoreError> {
        self.get_json(CF_SM_DATA, &keys::image(report, index))
    }

    pub fn report_images(&self, report: &Uuid) -> Result<Vec<crate::model::StoredImage>, StoreError> {
        self.scan_json(&keys::image_prefix(report))
    }

    /// Every stored image of every report (the blob keeper's full scan).
    pub fn all_stored_images(&self) -> Result<Vec<crate::model::StoredImage>, StoreError> {
        self.scan_json(keys::IMAGE)
    }

    /// Whether any report still names the blob.
    pub fn blob_is_referenced(&self, digest: &str) -> Result<bool, StoreError> {
        let prefix = keys::blob_ref_prefix(digest);
        let mut ro = ReadOptions::default();
        ro.set_prefix_same_as_start(false);
        let mut iter =
            self.db.iterator_cf_opt(self.cf(CF_SM_DATA), ro, IteratorMode::From(prefix.as_bytes(), Direction::Forward));
        Ok(match iter.next() {
            Some(item) => item?.0.starts_with(prefix.as_bytes()),
            None => false,
        })
    }

    /// Whether an erasure freed the blob (every node must delete it).
    pub fn blob_is_gone(&self, digest: &str) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(CF_SM_DATA), keys::blob_gone(digest))?.is_some())
    }

    pub fn record<T: DeserializeOwned>(
        &self,
        collection: crate::model::Collection,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get_json(CF_SM_DATA, &keys::record(collection, id))
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
