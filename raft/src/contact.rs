//! When this node last heard from a leader (an AppendEntries or snapshot it accepted, or a vote
//! it granted). Elections use it: a node that heard from a leader within the lease neither grants
//! a pre-vote nor stands. Whether the node may *serve* is a different question, answered by
//! [`crate::freshness`] with a round trip, because a frozen node can receive an old heartbeat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct LeaderContact {
    origin: Instant,
    /// Milliseconds since `origin` of the last contact; 0 means never.
    last_ms: Arc<AtomicU64>,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact { origin: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }
}

impl LeaderContact {
    pub fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// Time since the last contact, or `None` if the leader has never been heard from.
    pub fn since_last(&self) -> Option<Duration> {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.origin.elapsed().saturating_sub(Duration::from_millis(ms))),
        }
    }

    /// Time since this process started (a node that never heard from a leader waits as long
    /// after its start as after a last contact).
    pub fn since_start(&self) -> Duration {
        self.origin.elapsed()
    }
}
