//! Password hashing with argon2id (PHC strings, OWASP parameters by default). Hashing is slow on
//! purpose, so it runs on the blocking pool behind a semaphore: a sign-in flood queues here
//! instead of starving the async runtime or inference.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::error::ApiError;

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

    /// Checks the password policy; returns the reason it is refused.
    pub fn check_policy(&self, password: &str) -> Result<(), ApiError> {
        if password.chars().count() < self.min_length {
            return Err(ApiError::validation(
                "password",
                "min_length",
                format!("password must be at least {} characters", self.min_length),
            ));
        }
        if password.len() > 1024 {
            return Err(ApiError::validation("password", "max_length", "password must be at most 1024 bytes"));
        }
        Ok(())
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_with(&params, &password))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    /// Verifies `password` against `phc`, or against a dummy hash when there is no user.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let exists = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            Argon2::default().verify_password(password.as_bytes(), phc.as_str()).is_ok()
        })
        .await
        .map_err(ApiError::internal)?;
        Ok(ok && exists)
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String, argon2::password_hash::Error> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let hash: argon2::password_hash::phc::PasswordHash = argon.hash_password(password.as_bytes())?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
