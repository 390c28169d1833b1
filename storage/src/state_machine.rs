//! The replicated state machine on RocksDB. The applied log id, the membership and the data of
//! one apply call are written in **one atomic WriteBatch**, so a restart never re-applies or
//! skips an entry. Snapshots are built from a consistent RocksDB snapshot and installed
//! atomically (old state dropped and new state written in one batch).

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageError};
use rocksdb::{IteratorMode, ReadOptions, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::blobs::BlobStore;
use crate::db::{aad, Store, CF_SM_DATA, CF_SM_META, CF_SNAPSHOT};
use crate::error::StoreError;
use crate::overlay::{BlobEffects, Overlay};
use crate::snapshot::{self, CHUNK_SIZE};
use crate::types::{Entry, LogId, NodeId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use dermagate_domain::Outcome;

const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_SNAPSHOT_META: &[u8] = b"meta";

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    chunks: u32,
}

#[derive(Clone)]
pub struct StateMachineStore {
    store: Arc<Store>,
    /// Bumped by every snapshot build so ids are unique even for the same last log id.
    builds: Arc<AtomicU64>,
    /// The blob store and where to report blobs that applied entries referenced (see
    /// [`StateMachineStore::with_blobs`]).
    blobs: Option<(Arc<BlobStore>, tokio::sync::mpsc::UnboundedSender<BlobWork>)>,
}

/// Work for the node's blob keeper, announced by the state machine as it applies entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobWork {
    /// A committed report names this blob: fetch it from a peer if this node lacks it.
    Referenced(String),
    /// The state was replaced by a snapshot: compare every blob with the references.
    Rescan,
}

impl StateMachineStore {
    /// Opens the state machine and repairs the one state a crash can leave: a durable snapshot
    /// newer than the applied state (whose unsynced apply batches were lost with the OS).
    pub fn open(store: Arc<Store>) -> Result<StateMachineStore, StoreError> {
        let sm = StateMachineStore { store, builds: Arc::new(AtomicU64::new(0)), blobs: None };
        if let Some((meta, data)) = read_stored_snapshot(&sm.store)? {
            let applied: Option<LogId> = sm.store.get_json(CF_SM_META, KEY_APPLIED)?;
            if meta.last_log_id > applied {
                tracing::warn!(?applied, snapshot = ?meta.last_log_id, "state behind its snapshot; restoring it");
                install(&sm.store, &meta, &data)?;
            }
        }
        Ok(sm)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Applies also act on blobs: a blob freed by an erasure is deleted from `blobs` before the
    /// entry counts as applied (so an acknowledged erasure leaves no copy on any node that
    /// confirmed it), and referenced blobs are announced to `keeper`.
    pub fn with_blobs(mut self, blobs: Arc<BlobStore>, keeper: tokio::sync::mpsc::UnboundedSender<BlobWork>) -> Self {
        self.blobs = Some((blobs, keeper));
        self
    }

    /// Deletes freed blobs and announces referenced ones.
    async fn act_on_blobs(&self, effects: BlobEffects) -> Result<(), StoreError> {
        let Some((blobs, keeper)) = &self.blobs else { return Ok(()) };
        for digest in &effects.freed {
            blobs.delete(digest).await?;
        }
        for digest in effects.referenced {
            let _ = keeper.send(BlobWork::Referenced(digest));
        }
        Ok(())
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store)).await?
    }
}

fn apply_entries(store: &Store, entries: Vec<Entry>) -> Result<(Vec<Outcome>, BlobEffects), StoreError> {
    let mut overlay = Overlay::new(store);
    let mut responses = Vec::with_capacity(entries.len());
    let mut last_applied = None;
    let mut membership = None;
    for entry in &entries {
        last_applied = Some(entry.log_id);
        let response = match &entry.payload {
            EntryPayload::Blank => Outcome::Done,
            EntryPayload::Normal(req) => dermagate_domain::apply::apply(&mut overlay, req)?,
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                Outcome::Done
            }
        };
        responses.push(response);
    }
    let mut batch = WriteBatch::default();
    let credentials_changed = overlay.touches_credentials();
    let blob_effects = overlay.blob_effects().clone();
    overlay.into_batch(&mut batch);
    if let Some(applied) = last_applied {
        store.put_json(&mut batch, CF_SM_META, KEY_APPLIED, &Some(applied))?;
    }
    if let Some(m) = membership {
        store.put_json(&mut batch, CF_SM_META, KEY_MEMBERSHIP, &m)?;
    }
    // Not synced: the log is durable, so an apply lost in an OS crash is simply re-applied.
    store.write(batch, false)?;
    if credentials_changed {
        store.bump_credentials_epoch();
    }
    Ok((responses, blob_effects))
}

/// The replicated records of one consistent RocksDB snapshot, with the log id they reflect.
pub fn export_pairs(store: &Store) -> Result<(Option<LogId>, dermagate_domain::state::Pairs), StoreError> {
    let (meta, pairs) = read_consistent(store, u64::MAX)?;
    Ok((meta.last_log_id, pairs))
}

/// Reads the applied state and all data from one RocksDB snapshot, so they agree.
fn build(store: &Store, build_no: u64) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
    let (meta, pairs) = read_consistent(store, build_no)?;
    Ok((meta, snapshot::encode(pairs)))
}

fn read_consistent(store: &Store, build_no: u64) -> Result<(SnapshotMeta, dermagate_domain::state::Pairs), StoreError> {
    let view = store.db().snapshot();
    let read_meta = |key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
        match view.get_cf(store.cf(CF_SM_META), key)? {
            Some(sealed) => Ok(Some(store.sealer().open(&aad(CF_SM_META, key), &sealed)?)),
            None => Ok(None),
        }
    };
    let last_applied: Option<LogId> = match read_meta(KEY_APPLIED)? {
        Some(b) => serde_json::from_slice(&b)?,
        None => None,
    };
    let membership: StoredMembership = match read_meta(KEY_MEMBERSHIP)? {
        Some(b) => serde_json::from_slice(&b)?,
        None => StoredMembership::default(),
    };
    let mut ro = ReadOptions::default();
    ro.set_snapshot(&view);
    let mut pairs = Vec::new();
    for item in store.db().iterator_cf_opt(store.cf(CF_SM_DATA), ro, IteratorMode::Start) {
        let (k, v) = item?;
        let plain = store.sealer().open(&aad(CF_SM_DATA, &k), &v)?;
        pairs.push((k.to_vec(), plain));
    }
    let snapshot_id = match last_applied {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, build_no),
        None => format!("empty-{build_no}"),
    };
    let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
    Ok((meta, pairs))
}

/// Keeps the snapshot durably as sealed chunks, replacing the previous one atomically.
fn persist(store: &Store, batch: &mut WriteBatch, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
    let cf = store.cf(CF_SNAPSHOT);
    batch.delete_range_cf(cf, b"chunk/".as_slice(), b"chunk0".as_slice());
    let mut chunks = 0u32;
    for chunk in data.chunks(CHUNK_SIZE) {
        store.put_raw(batch, CF_SNAPSHOT, format!("chunk/{chunks:08}").as_bytes(), chunk);
        chunks += 1;
    }
    store.put_json(batch, CF_SNAPSHOT, KEY_SNAPSHOT_META, &StoredSnapshot { meta: meta.clone(), chunks })
}

fn read_stored_snapshot(store: &Store) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StoreError> {
    let Some(stored) = store.get_json::<StoredSnapshot>(CF_SNAPSHOT, KEY_SNAPSHOT_META)? else {
        return Ok(None);
    };
    let mut data = Vec::new();
    for n in 0..stored.chunks {
        let chunk = store
            .get_raw(CF_SNAPSHOT, format!("chunk/{n:08}").as_bytes())?
            .ok_or_else(|| StoreError::Corrupt(format!("snapshot chunk {n} missing")))?;
        data.extend_from_slice(&chunk);
    }
    Ok(Some((stored.meta, data)))
}

/// Replaces the whole state with a snapshot's, in one synced batch.
fn install(store: &Store, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
    let pairs = snapshot::decode(data)?;
    let mut batch = WriteBatch::default();
    // Every data key is printable ASCII, so [0x00, 0xff) covers the whole column family.
    batch.delete_range_cf(store.cf(CF_SM_DATA), [0u8].as_slice(), [0xffu8].as_slice());
    for (k, v) in &pairs {
        store.put_raw(&mut batch, CF_SM_DATA, k, v);
    }
    store.put_json(&mut batch, CF_SM_META, KEY_APPLIED, &meta.last_log_id)?;
    store.put_json(&mut batch, CF_SM_META, KEY_MEMBERSHIP, &meta.last_membership)?;
    persist(store, &mut batch, meta, data)?;
    store.write(batch, true)?;
    store.bump_credentials_epoch();
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError<NodeId>> {
        let build_no = self.builds.fetch_add(1, Ordering::Relaxed);
        let (meta, data) = self
            .blocking(move |s| {
                let (meta, data) = build(s, build_no)?;
                // The snapshot lets the log be purged, so the state it describes must be durable.
                s.db().flush_wal(true)?;
                let mut batch = WriteBatch::default();
                persist(s, &mut batch, &meta, &data)?;
                s.write(batch, true)?;
                Ok((meta, data))
            })
            .await
            .map_err(|e| StorageError::from(openraft::StorageIOError::write_snapshot(None, &e)))?;
        metrics::counter!("dermagate_raft_snapshot_builds_total").increment(1);
        tracing::info!(snapshot_id = %meta.snapshot_id, bytes = data.len(), "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        self.blocking(|s| {
            let applied: Option<LogId> = s.get_json::<Option<LogId>>(CF_SM_META, KEY_APPLIED)?.flatten();
            let membership: StoredMembership = s.get_json(CF_SM_META, KEY_MEMBERSHIP)?.unwrap_or_default();
            Ok((applied, membership))
        })
        .await
        .map_err(StoreError::into_read)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (responses, effects) = self
            .blocking(move |s| apply_entries(s, entries))
            .await
            .map_err(|e| StorageError::from(openraft::StorageIOError::write_state_machine(&e)))?;
        self.act_on_blobs(effects)
            .await
            .map_err(|e| StorageError::from(openraft::StorageIOError::write_state_machine(&e)))?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let meta_owned = meta.clone();
        let data = snapshot.into_inner();
        self.blocking(move |s| install(s, &meta_owned, &data))
            .await
            .map_err(|e| StorageError::from(openraft::StorageIOError::write_snapshot(Some(meta.signature()), &e)))?;
        metrics::counter!("dermagate_raft_snapshot_installs_total").increment(1);
        if let Some((_, keeper)) = &self.blobs {
            let _ = keeper.send(BlobWork::Rescan);
        }
        tracing::info!(snapshot_id = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError<NodeId>> {
        let stored = self.blocking(read_stored_snapshot).await.map_err(StoreError::into_read)?;
        Ok(stored.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
