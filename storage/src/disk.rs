//! Free space on the filesystem of the data directory. A node keeps a reserve: below it, it takes
//! no new data (client writes are refused with a clear error, replicated entries are declined
//! until space returns) instead of running into `ENOSPC` halfway through a write. The reserve
//! covers what is already under way (entries appended but not yet applied, memtable flushes).
//! When space is freed the node takes data again by itself; nothing acknowledged depends on the
//! full node, because a quorum of the others holds every acknowledged entry.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct DiskGuard {
    dir: PathBuf,
    /// Bytes that must stay free; 0 disables the guard.
    reserve: AtomicU64,
    free: AtomicU64,
    /// A write failed for lack of space since the last refresh that found space.
    ran_out: AtomicBool,
}

impl DiskGuard {
    pub fn new(dir: &Path, reserve: u64) -> DiskGuard {
        let guard = DiskGuard {
            dir: dir.to_path_buf(),
            reserve: AtomicU64::new(reserve),
            free: AtomicU64::new(u64::MAX),
            ran_out: AtomicBool::new(false),
        };
        guard.refresh();
        guard
    }

    pub fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
        self.refresh();
    }

    fn reserve(&self) -> u64 {
        self.reserve.load(Ordering::Relaxed)
    }

    /// Reads the free space again (a `statvfs`, microseconds); called on a timer.
    pub fn refresh(&self) {
        self.refresh_with(0);
    }

    /// Like [`DiskGuard::refresh`], counting `pending` bytes that work already under way (a
    /// compaction) will need as not free.
    pub fn refresh_with(&self, pending: u64) {
        match nix::sys::statvfs::statvfs(&self.dir) {
            Ok(s) => {
                let free = s.blocks_available().saturating_mul(s.fragment_size()).saturating_sub(pending);
                self.free.store(free, Ordering::Relaxed);
                metrics::gauge!("dermagate_storage_free_bytes").set(free as f64);
                if free >= self.reserve() {
                    self.ran_out.store(false, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read free disk space"),
        }
    }

    /// Records that a write failed with "no space left on device".
    pub fn note_out_of_space(&self) {
        if !self.ran_out.swap(true, Ordering::Relaxed) {
            tracing::error!(dir = %self.dir.display(), "a write failed: no space left on device");
        }
        self.refresh();
    }

    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// Why this node must not take new data now, if it must not.
    pub fn problem(&self) -> Option<String> {
        let free = self.free_bytes();
        if self.ran_out.load(Ordering::Relaxed) {
            return Some(format!("disk full: a write failed for lack of space ({} MiB free)", free >> 20));
        }
        let reserve = self.reserve();
        (free < reserve)
            .then(|| format!("disk almost full: {} MiB free, {} MiB must stay free", free >> 20, reserve >> 20))
    }
}

/// Whether a RocksDB or I/O error means the disk is full.
pub fn is_out_of_space(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("NoSpace")
}
