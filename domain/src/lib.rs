//! The business rules of dermagate in one place: the typed records of the replicated state, the
//! commands that change it and how they apply, the key layout, the RBAC table, the error-code
//! table, and the services the HTTP layer calls. **This crate knows neither HTTP, nor gRPC, nor
//! RocksDB** (`scripts/check-boundaries.sh` fails otherwise): storage implements its state traits,
//! the Raft node implements its replicator, the API maps its error codes.

pub mod apply;
pub mod command;
pub mod error;
pub mod keys;
pub mod local;
pub mod memory;
pub mod rbac;
pub mod reads;
pub mod records;
pub mod services;
pub mod state;

pub use command::{Command, Outcome, Request, SCHEMA_VERSION};
pub use error::{Entity, ErrorCode, Rejection};

/// Whether `s` can be a blob name (64 lowercase hex characters, a SHA-256).
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The SHA-256 of `bytes`, lowercase hex: a blob's name.
pub fn blob_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
