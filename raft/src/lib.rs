//! Consensus for dermagate: openraft wired to the RocksDB store, a tonic gRPC transport with
//! mutual TLS between nodes, write forwarding to the leader, and membership changes.
//! **Only this crate knows tonic and protobuf.**

pub mod backup;
pub mod blobs;
pub mod contact;
pub mod election;
pub mod error;
pub mod freshness;
pub mod network;
pub mod node;
pub mod observe;
pub mod replicator;
pub mod service;
pub mod settings;
pub mod tls;
pub mod wire;

pub mod proto {
    //! Generated gRPC code for `proto/raft.proto`.
    #![allow(clippy::all, clippy::unwrap_used)]
    tonic::include_proto!("dermagate.raft.v2");
}

pub use dermagate_storage::types::{NodeId, NodeInfo, TypeConfig};
pub use error::{MembershipError, WriteError};
pub use node::{ClusterStatus, MemberStatus, NotReady, NotReadyKind, RaftNode};
pub use settings::RaftSettings;
pub use tls::PeerTls;
