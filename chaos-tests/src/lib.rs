//! The fault-injection harness of dermagate. Clusters come from `dermagate-test-support`; this
//! crate adds what chaos needs on top: a `network` of nftables faults between per-node loopback
//! addresses, a small `disk`, the seeded `nemesis`, the `workload` and `monitor` that record a
//! `history`, the `checker`s over it and the `report`. Safety first: nothing acknowledged is
//! lost, no revoked credential is accepted, registers are linearizable. Liveness second: the
//! cluster heals after every fault.

pub mod api;
pub mod checker;
pub mod disk;
pub mod history;
pub mod monitor;
pub mod nemesis;
pub mod network;
pub mod report;
pub mod runner;
pub mod tenant;
pub mod workload;

pub use dermagate_test_support as cluster;
