//! The fault-injection harness of dermagate. Clusters come from `dermagate-test-support`; this
//! crate adds what chaos needs on top: a record of what clients were told (`History`) and the
//! checks of what must hold whatever the faults (`checker`). Safety first: nothing acknowledged
//! is lost. Liveness second: the cluster heals.

pub mod checker;
pub mod history;

pub use dermagate_test_support as cluster;
