//! The openraft type configuration shared by storage and network: it lives here because the
//! storage traits are implemented for it and `raft` depends on `storage`, not the reverse.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use dermagate_domain::{Outcome, Request};

/// Where a cluster member can be reached: its Raft (mTLS gRPC) address and its public API URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub raft_addr: String,
    pub api_url: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{raft: {}, api: {}}}", self.raft_addr, self.api_url)
    }
}

openraft::declare_raft_types!(
    /// dermagate's Raft types: typed commands in, typed responses out, u64 node ids.
    pub TypeConfig:
        D = Request,
        R = Outcome,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
