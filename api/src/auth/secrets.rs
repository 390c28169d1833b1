//! Client secrets ("client keys"): 256-bit random values shown once, stored only as SHA-256.
//! A fast hash is right here (unlike passwords): the secret has full entropy, so there is
//! nothing to brute-force, and every API-key request must be verified quickly.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of client secrets, so they are recognisable as API keys (and by secret scanners).
pub const SECRET_PREFIX: &str = "dgk_";
pub const CLIENT_ID_PREFIX: &str = "dgc_";

pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub fn new_client_id() -> String {
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    format!("{CLIENT_ID_PREFIX}{}", hex::encode(bytes))
}

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of two hex hashes.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
