//! The Raft log on RocksDB. **Durability is not optional**: an append is reported complete only
//! after the WAL is synced (group commit on a dedicated thread), the vote is synced before it is acknowledged, and `purge` records the
//! last purged id in the same atomic batch that deletes the entries.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageError};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::db::{aad, Store, CF_LOGS, CF_RAFT_META};
use crate::error::StoreError;
use crate::types::{Entry, LogId, NodeId, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    /// Appended batches waiting for their fsync (see [`run_syncer`]).
    syncer: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    pub fn new(store: Arc<Store>) -> LogStore {
        let (tx, rx) = std::sync::mpsc::channel();
        // A weak reference: the sync thread must not keep the database open (and its lock held)
        // after every owner has let go of it, or a reopen in the same process would fail.
        let syncing = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || run_syncer(&syncing, rx))
            .expect("spawning the log sync thread");
        LogStore { store, syncer: tx }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Runs a RocksDB operation on the blocking pool so fsyncs never stall the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store)).await?
    }

    fn put_meta<T: serde::Serialize>(store: &Store, key: &[u8], value: &T) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        store.put_json(&mut batch, CF_RAFT_META, key, value)?;
        let started = Instant::now();
        store.write(batch, true)?;
        metrics::histogram!("dermagate_storage_sync_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Group commit: waits for appended batches, syncs the WAL once for all that are waiting, then
/// tells openraft they are durable. **An append is reported complete only after this fsync**;
/// until then openraft neither acknowledges the entries to the leader nor counts them for commit.
/// Meanwhile the Raft core keeps working (replicating, accepting proposals), which is what lets
/// concurrent writes share one fsync.
fn run_syncer(store: &std::sync::Weak<Store>, rx: std::sync::mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let Some(store) = store.upgrade() else {
            for callback in waiting {
                callback.log_io_completed(Err(std::io::Error::other("the log store was closed")));
            }
            return;
        };
        let started = Instant::now();
        let result = store.db().flush_wal(true);
        if let Err(e) = &result {
            store.note_if_out_of_space(e);
        }
        drop(store);
        metrics::histogram!("dermagate_storage_sync_duration_seconds").record(started.elapsed().as_secs_f64());
        for callback in waiting {
            match &result {
                Ok(()) => callback.log_io_completed(Ok(())),
                Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
            }
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::Corrupt("log key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Bytes of log entries one replication message carries at most (always at least one entry).
/// Replication RPCs must finish within a heartbeat interval; a catch-up batch of large entries
/// (reports with stored images) would never finish and the follower would never catch up.
pub const REPLICATION_BATCH_BYTES: usize = 256 << 10;

fn read_entries(store: &Store, start: u64, end: Option<u64>) -> Result<Vec<Entry>, StoreError> {
    read_entries_limited(store, start, end, usize::MAX)
}

/// Entries from `start` (before `end`), stopping once `max_bytes` of them have been read.
fn read_entries_limited(
    store: &Store,
    start: u64,
    end: Option<u64>,
    max_bytes: usize,
) -> Result<Vec<Entry>, StoreError> {
    let cf = store.cf(CF_LOGS);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in store.db().iterator_cf(cf, IteratorMode::From(&index_key(start), Direction::Forward)) {
        let (k, v) = item?;
        let index = index_of(&k)?;
        if end.is_some_and(|end| index >= end) || (!out.is_empty() && bytes + v.len() > max_bytes) {
            break;
        }
        bytes += v.len();
        let plain = store.sealer().open(&aad(CF_LOGS, &k), &v)?;
        out.push(postcard::from_bytes(&plain)?);
    }
    Ok(out)
}

/// The id of the last entry in the log (or the last purged one), for comparing logs before an
/// election.
pub fn last_log_id(store: &Store) -> Result<Option<LogId>, StoreError> {
    let last_purged: Option<LogId> = store.get_json(CF_RAFT_META, KEY_LAST_PURGED)?;
    Ok(last_entry(store)?.map(|e| e.log_id).or(last_purged))
}

fn last_entry(store: &Store) -> Result<Option<Entry>, StoreError> {
    let cf = store.cf(CF_LOGS);
    match store.db().iterator_cf(cf, IteratorMode::End).next() {
        Some(item) => {
            let (k, v) = item?;
            let plain = store.sealer().open(&aad(CF_LOGS, &k), &v)?;
            Ok(Some(postcard::from_bytes(&plain)?))
        }
        None => Ok(None),
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => Some(e + 1),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let (start, end) = bounds(&range);
        self.blocking(move |s| read_entries(s, start, end)).await.map_err(StoreError::into_read)
    }

    /// What replication sends in one message: a prefix of `[start, end)` of bounded size.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError<NodeId>> {
        self.blocking(move |s| read_entries_limited(s, start, Some(end), REPLICATION_BATCH_BYTES))
            .await
            .map_err(StoreError::into_read)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        self.blocking(|s| {
            let last_purged: Option<LogId> = s.get_json(CF_RAFT_META, KEY_LAST_PURGED)?;
            Ok(LogState { last_purged_log_id: last_purged, last_log_id: last_log_id(s)? })
        })
        .await
        .map_err(StoreError::into_read)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.blocking(move |s| LogStore::put_meta(s, KEY_VOTE, &vote)).await.map_err(StoreError::into_write)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError<NodeId>> {
        self.blocking(|s| s.get_json(CF_RAFT_META, KEY_VOTE)).await.map_err(StoreError::into_read)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError<NodeId>> {
        // The committed id is an optimisation (faster re-apply after restart), so it need not be
        // synced: the WAL still orders it after the entries it refers to.
        self.blocking(move |s| {
            let mut batch = WriteBatch::default();
            s.put_json(&mut batch, CF_RAFT_META, KEY_COMMITTED, &committed)?;
            s.write(batch, false)
        })
        .await
        .map_err(StoreError::into_write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        self.blocking(|s| Ok(s.get_json::<Option<LogId>>(CF_RAFT_META, KEY_COMMITTED)?.flatten()))
            .await
            .map_err(StoreError::into_read)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // Written (visible to reads) now, made durable by the syncer before `callback` fires.
        let written = self
            .blocking(move |s| {
                let mut batch = WriteBatch::default();
                for entry in &entries {
                    // Entries are binary (postcard): compact and fast to encode; the log is
                    // short-lived (purged behind snapshots), the state keeps self-describing JSON.
                    let bytes = postcard::to_stdvec(entry)?;
                    s.put_raw(&mut batch, CF_LOGS, &index_key(entry.log_id.index), &bytes);
                }
                s.write(batch, false)
            })
            .await;
        match written {
            Ok(()) => {
                if let Err(std::sync::mpsc::SendError(callback)) = self.syncer.send(callback) {
                    callback.log_io_completed(Err(std::io::Error::other("log sync thread stopped")));
                }
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_write())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(index = log_id.index, "truncating conflicting log entries");
        self.blocking(move |s| {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(s.cf(CF_LOGS), index_key(log_id.index), index_key(u64::MAX));
            batch.delete_cf(s.cf(CF_LOGS), index_key(u64::MAX));
            s.write(batch, true)
        })
        .await
        .map_err(StoreError::into_write)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(index = log_id.index, "purging log entries covered by a snapshot");
        self.blocking(move |s| {
            // last_purged is recorded in the same atomic batch as the deletion, so a crash can
            // never leave a gap that the log state does not account for.
            let mut batch = WriteBatch::default();
            s.put_json(&mut batch, CF_RAFT_META, KEY_LAST_PURGED, &log_id)?;
            batch.delete_range_cf(s.cf(CF_LOGS), index_key(0), index_key(log_id.index + 1));
            s.write(batch, true)
        })
        .await
        .map_err(StoreError::into_write)
    }
}
