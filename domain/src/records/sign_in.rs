//! Sign-in throttling, decided in the replicated state machine so that concurrent attempts on
//! different nodes are judged in one order (an attempt is allowed or refused by applying it).
//!
//! Guessing is slowed, but a stranger cannot lock an account out: failures are counted per
//! (username, client address), so an attacker's failures throttle the attacker's address, not
//! the user's; a second, much higher per-username threshold caps distributed guessing with a
//! short wait. Nothing is permanent: waits grow and then expire by themselves (NIST SP 800-63B
//! 5.2.2 favours rate limiting over lockout).

use serde::{Deserialize, Serialize};

/// The throttling policy, carried in the command so applying it is deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottlePolicy {
    /// Failures from one address before its attempts for the username must wait.
    pub per_source_failures: u32,
    /// Failures from all addresses before every attempt for the username must wait.
    pub per_user_failures: u32,
    /// The first wait; each further failure while throttled doubles it, up to `max_wait_ms`.
    pub base_wait_ms: i64,
    pub max_wait_ms: i64,
    /// The longest wait of the per-username threshold (kept short: it hits the real user too).
    pub per_user_max_wait_ms: i64,
    /// Failures older than this are forgotten.
    pub forget_after_ms: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            per_source_failures: 5,
            per_user_failures: 50,
            base_wait_ms: 30_000,
            max_wait_ms: 15 * 60_000,
            per_user_max_wait_ms: 60_000,
            forget_after_ms: 12 * 3_600_000,
        }
    }
}

/// Failures counted under one key (a username, or a username and an address).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCount {
    pub failures: u32,
    pub last_failure_ms: i64,
    /// Attempts under this key are refused until then.
    pub wait_until_ms: i64,
}

impl FailureCount {
    pub fn waiting(&self, now_ms: i64) -> bool {
        now_ms < self.wait_until_ms
    }

    /// Counts one more failure at `now_ms`: past `threshold`, attempts must wait, longer each time.
    pub fn fail(&mut self, now_ms: i64, threshold: u32, base_wait_ms: i64, max_wait_ms: i64, forget_after_ms: i64) {
        if now_ms - self.last_failure_ms > forget_after_ms {
            *self = FailureCount::default();
        }
        self.failures += 1;
        self.last_failure_ms = now_ms;
        if self.failures >= threshold {
            let doublings = (self.failures - threshold).min(16);
            let wait = base_wait_ms.saturating_mul(1 << doublings).min(max_wait_ms);
            self.wait_until_ms = now_ms + wait;
        }
    }
}
