//! Password hashing with argon2id (PHC strings, OWASP parameters by default). Hashing is slow on
//! purpose, so it runs on the blocking pool behind a semaphore: a sign-in flood queues here
//! instead of starving the async runtime or inference.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use super::ServiceError;

/// argon2id cost parameters (OWASP 2023: m=19 MiB, t=2, p=1).
#[derive(Debug, Clone)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub min_length: usize,
}

impl Default for PasswordSettings {
    fn default() -> Self {
        PasswordSettings { memory_kib: 19_456, iterations: 2, parallelism: 1, min_length: 12 }
    }
}

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// Verified against when the user does not exist, so both cases cost the same time.
    dummy_hash: Arc<String>,
    min_length: usize,
}

impl Passwords {
    pub fn new(settings: &PasswordSettings) -> Result<Passwords, String> {
        let params = Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let dummy = hash_with(&params, "dermagate-dummy-password-for-timing").map_err(|e| e.to_string())?;
        Ok(Passwords {
            params,
            permits: Arc::new(Semaphore::new(workers)),
            dummy_hash: Arc::new(dummy),
            min_length: settings.min_length,
        })
    }

    /// Checks the password policy (NIST SP 800-63B 5.1.1.2: a minimum length, no composition
    /// rules, but no password that is commonly used, trivially patterned or contains the
    /// username); returns the reason it is refused.
    pub fn check_policy(&self, password: &str, username: &str) -> Result<(), ServiceError> {
        if password.chars().count() < self.min_length {
            return Err(ServiceError::validation(
                "password",
                "min_length",
                format!("password must be at least {} characters", self.min_length),
            ));
        }
        if password.len() > 1024 {
            return Err(ServiceError::validation("password", "max_length", "password must be at most 1024 bytes"));
        }
        let lower = password.to_lowercase();
        if !username.is_empty() && lower.contains(&username.to_lowercase()) {
            return Err(ServiceError::validation("password", "not_username", "password must not contain the username"));
        }
        if is_common(&lower) || is_trivial(&lower) {
            return Err(ServiceError::validation(
                "password",
                "not_common",
                "password is too common or too simple (a repeated or sequential pattern); choose a passphrase",
            ));
        }
        Ok(())
    }

    pub async fn hash(&self, password: String) -> Result<String, ServiceError> {
        let _permit = self.permits.acquire().await.map_err(ServiceError::internal)?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_with(&params, &password))
            .await
            .map_err(ServiceError::internal)?
            .map_err(ServiceError::internal)
    }

    /// Verifies `password` against `phc`, or against a dummy hash when there is no user.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, ServiceError> {
        let _permit = self.permits.acquire().await.map_err(ServiceError::internal)?;
        let exists = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            Argon2::default().verify_password(password.as_bytes(), phc.as_str()).is_ok()
        })
        .await
        .map_err(ServiceError::internal)?;
        Ok(ok && exists)
    }
}

/// Passwords (and stems) that lists of breached passwords are full of.
const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "p@ssw0rd",
    "qwerty",
    "azerty",
    "letmein",
    "welcome",
    "admin",
    "administrator",
    "iloveyou",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "sunshine",
    "princess",
    "master",
    "shadow",
    "trustno1",
    "superman",
    "batman",
    "starwars",
    "whatever",
    "changeme",
    "secret",
    "abc123",
    "qazwsx",
    "1q2w3e4r",
    "zaq12wsx",
    "asdfgh",
    "zxcvbn",
    "hospital",
    "doctor",
    "clinic",
    "dermagate",
    "medical",
    "summer",
    "winter",
    "spring",
    "autumn",
];

/// Whether the password is a common one, possibly padded with digits or punctuation.
fn is_common(lower: &str) -> bool {
    let core: String =
        lower.trim_matches(|c: char| !c.is_alphabetic()).chars().filter(|c| c.is_alphanumeric()).collect();
    COMMON.iter().any(|w| core == *w || (core.starts_with(w) && core[w.len()..].chars().all(|c| c.is_ascii_digit())))
}

/// One character repeated, or a run of consecutive characters (`123456789012`, `abcdefghijkl`).
fn is_trivial(lower: &str) -> bool {
    let chars: Vec<char> = lower.chars().collect();
    let repeated = chars.windows(2).all(|w| w[0] == w[1]);
    // Digits wrap around (…8901…), as keyboards and habits do.
    let step = |a: char, b: char| match (a.to_digit(10), b.to_digit(10)) {
        (Some(x), Some(y)) => (y + 10 - x) % 10 == 1 || (x + 10 - y) % 10 == 1,
        _ => (b as i64 - a as i64).abs() == 1,
    };
    let sequential = chars.windows(2).all(|w| step(w[0], w[1]));
    let few_distinct = {
        let mut d = chars.clone();
        d.sort_unstable();
        d.dedup();
        d.len() <= 3
    };
    repeated || sequential || few_distinct
}

fn hash_with(params: &Params, password: &str) -> Result<String, argon2::password_hash::Error> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let hash: argon2::password_hash::phc::PasswordHash = argon.hash_password(password.as_bytes())?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // traces: FM-12
    #[tokio::test]
    async fn hashes_are_argon2id_phc_and_verify() {
        let p = Passwords::new(&PasswordSettings { memory_kib: 1024, iterations: 1, ..Default::default() }).unwrap();
        let h = p.hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(p.verify("correct horse battery".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("wrong".into(), Some(h)).await.unwrap());
        assert!(!p.verify("anything".into(), None).await.unwrap());
    }

    // traces: FM-07, FM-12
    #[test]
    fn the_policy_refuses_common_patterned_and_username_passwords() {
        let p = Passwords::new(&PasswordSettings { memory_kib: 1024, iterations: 1, ..Default::default() }).unwrap();
        for bad in [
            "short",
            "password1234",
            "Password2024!",
            "123456789012",
            "aaaaaaaaaaaa",
            "abcabcabcabc",
            "alice-is-my-name",
        ] {
            assert!(p.check_policy(bad, "alice").is_err(), "{bad} must be refused");
        }
        assert!(p.check_policy("violet tram seventeen lanterns", "alice").is_ok());
    }
}
