//! Authentication and authorisation: password hashing, access tokens, the principal extractor
//! and the RBAC table.

pub mod password;
pub mod principal;
pub mod rbac;
pub mod secrets;
pub mod tokens;

pub use principal::Principal;
