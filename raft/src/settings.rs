//! Timing and sizing of the Raft layer, with defaults chosen for a loaded 2-core machine: fast
//! enough to fail over in well under a second, slow enough not to hold spurious elections.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How long a client write may take before its outcome is reported as unknown.
    pub write_timeout: Duration,
    /// Snapshot every this many applied entries (and purge the log behind it).
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so briefly lagging followers avoid a snapshot.
    pub keep_behind_snapshot: u64,
    /// A node that has not heard from its leader for this long is not ready and fails closed.
    pub staleness_bound: Duration,
    /// Largest gRPC message accepted between nodes (snapshots travel in smaller chunks).
    pub max_message_bytes: usize,
    pub snapshot_chunk_bytes: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_interval: Duration::from_millis(40),
            election_timeout_min: Duration::from_millis(120),
            election_timeout_max: Duration::from_millis(240),
            write_timeout: Duration::from_secs(5),
            snapshot_every: 5000,
            keep_behind_snapshot: 1000,
            staleness_bound: Duration::from_secs(2),
            max_message_bytes: 16 << 20,
            snapshot_chunk_bytes: 1 << 20,
        }
    }
}

impl RaftSettings {
    pub fn openraft_config(&self) -> Result<openraft::Config, Box<openraft::ConfigError>> {
        openraft::Config {
            cluster_name: "dermagate".into(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: 2000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            max_payload_entries: 512,
            ..Default::default()
        }
        .validate()
        .map_err(Box::new)
    }
}
