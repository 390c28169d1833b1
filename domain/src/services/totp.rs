//! The second factor: time-based one-time passwords (RFC 6238: HMAC-SHA1, 6 digits, 30 s steps,
//! one step of clock skew either way) computed by `totp-rs`, and single-use recovery codes kept
//! as hashes. Which time step a code matched is returned, so the state machine can refuse the
//! same code a second time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, TOTP};

use super::ServiceError;

const DIGITS: usize = 6;
const STEP_SECS: u64 = 30;
/// Codes of the previous and the next step are accepted too (clock skew).
const SKEW: u8 = 1;
pub const RECOVERY_CODES: usize = 10;

fn totp(secret: &[u8]) -> Result<TOTP, ServiceError> {
    TOTP::new(Algorithm::SHA1, DIGITS, SKEW, STEP_SECS, secret.to_vec()).map_err(ServiceError::internal)
}

/// A fresh 160-bit secret (RFC 4226 recommends at least 128).
pub fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; 20];
    rand::rng().fill_bytes(&mut s);
    s
}

/// The secret in base32, as authenticator apps take it.
pub fn encoded_secret(secret: &[u8]) -> String {
    totp_rs::Secret::Raw(secret.to_vec()).to_encoded().to_string()
}

/// The `otpauth://` URI an authenticator app can scan or import.
pub fn provisioning_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let enc =
        |s: &str| s.replace('%', "%25").replace(' ', "%20").replace(':', "%3A").replace('&', "%26").replace('?', "%3F");
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        encoded_secret(secret),
        enc(issuer)
    )
}

/// The time step `code` is valid for at `now_secs` (within the skew), if any.
pub fn matching_step(secret: &[u8], code: &str, now_secs: u64) -> Result<Option<u64>, ServiceError> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let t = totp(secret)?;
    let step = now_secs / STEP_SECS;
    for s in step.saturating_sub(SKEW as u64)..=step + SKEW as u64 {
        if subtle_eq(t.generate(s * STEP_SECS).as_bytes(), code.as_bytes()) {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Compares in constant time (a code must not leak digit by digit).
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The code of `now_secs` (for tests and tools that act as an authenticator app).
pub fn code_at(secret: &[u8], now_secs: u64) -> Result<String, ServiceError> {
    Ok(totp(secret)?.generate(now_secs))
}

/// The secret behind its base32 form (as an authenticator app reads it from the enrolment).
pub fn decode_secret(encoded: &str) -> Result<Vec<u8>, ServiceError> {
    totp_rs::Secret::Encoded(encoded.to_string())
        .to_bytes()
        .map_err(|_| ServiceError::validation("secret", "base32", "the secret is not base32"))
}

/// Fresh recovery codes (shown once) and the hashes kept of them.
pub fn new_recovery_codes() -> (Vec<String>, Vec<String>) {
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let mut b = [0u8; 8];
            rand::rng().fill_bytes(&mut b);
            let h = hex::encode(b);
            format!("{}-{}-{}-{}", &h[0..4], &h[4..8], &h[8..12], &h[12..16])
        })
        .collect();
    let hashes = codes.iter().map(|c| hash_recovery_code(c)).collect();
    (codes, hashes)
}

pub fn hash_recovery_code(code: &str) -> String {
    hex::encode(Sha256::digest(code.trim().to_lowercase().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_codes_match_their_step_and_nothing_else() {
        // RFC 6238 appendix B, SHA1 secret "12345678901234567890", T = 59 s -> 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, 59).unwrap(), "287082");
        assert_eq!(matching_step(secret, "287082", 59).unwrap(), Some(1));
        assert_eq!(matching_step(secret, "287082", 59 + 30).unwrap(), Some(1), "one step of skew");
        assert_eq!(matching_step(secret, "287082", 59 + 120).unwrap(), None);
        assert_eq!(matching_step(secret, "28708", 59).unwrap(), None);
        assert!(provisioning_uri(secret, "dermagate", "alice").starts_with("otpauth://totp/dermagate:alice?secret="));
        let (codes, hashes) = new_recovery_codes();
        assert_eq!(hash_recovery_code(&codes[0].to_uppercase()), hashes[0]);
    }
}
