//! When this node last heard from a leader. A follower that has not heard from one within the
//! staleness bound cannot know about revocations made meanwhile, so it stops serving (fails
//! closed) until it is back in contact.

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
}
