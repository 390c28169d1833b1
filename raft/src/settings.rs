//! Timing and sizing of the Raft layer, with defaults chosen for a loaded 2-core machine: fast
//! enough to fail over in well under a second, slow enough not to hold spurious elections.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomised wait a follower adds to the leader lease before it asks
    /// for votes (see [`RaftSettings::lease`]).
    pub election_timeout_min: Duration,
    /// Upper bound of that wait, and the **leader lease**: a node that heard from a leader less
    /// than this long ago neither grants a (pre-)vote nor starts an election.
    pub election_timeout_max: Duration,
    /// How long a client write may take before its outcome is reported as unknown.
    pub write_timeout: Duration,
    /// Snapshot every this many applied entries (and purge the log behind it).
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so briefly lagging followers avoid a snapshot.
    pub keep_behind_snapshot: u64,
    /// A follower whose state is not known to be current as of this long ago fails closed; it is
    /// also how long a revocation waits for every member to confirm it before it is acknowledged.
    pub staleness_bound: Duration,
    /// How often a node proves that its state is current (a read-index round with the leader).
    pub freshness_interval: Duration,
    /// Largest gRPC message accepted between nodes (snapshots travel in smaller chunks).
    pub max_message_bytes: usize,
    /// Largest single Raft entry a node proposes: bulk data (images) travels as blobs, and a
    /// larger entry is refused at the proposer with a clear error rather than slowing
    /// replication and heartbeats for everyone.
    pub max_entry_bytes: usize,
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
            staleness_bound: Duration::from_secs(1),
            freshness_interval: Duration::from_millis(50),
            max_message_bytes: 16 << 20,
            max_entry_bytes: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
        }
    }
}

impl RaftSettings {
    /// The leader lease: openraft's voters refuse votes for this long after they last heard from
    /// a leader, so a leader that confirmed its quorum at `t` is the only leader until
    /// `t + lease`. A leader serves authenticated requests only inside that window.
    pub fn lease(&self) -> Duration {
        self.election_timeout_max
    }

    /// The longest a leader may go without a quorum's acknowledgement before it stops sending
    /// heartbeats, so that the followers it can no longer hear elect a leader they can.
    pub fn step_down_after(&self) -> Duration {
        self.lease() * 2
    }

    pub fn openraft_config(&self) -> Result<openraft::Config, Box<openraft::ConfigError>> {
        openraft::Config {
            cluster_name: "dermagate".into(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            // Elections are started by `election::drive`, only after a pre-vote round: a node
            // that merely lost contact (a freeze, a one-way link) must not depose a leader the
            // rest of the cluster still hears.
            enable_elect: false,
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
