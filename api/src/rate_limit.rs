//! Token-bucket rate limits per source IP (on the sign-in endpoints), per user and per client
//! key (on every authenticated request). Over the limit the answer is 429 with `Retry-After`
//! and the IETF `RateLimit` / `RateLimit-Policy` headers. Limits are per node: spreading over
//! nodes multiplies a caller's budget by the node count, which the defaults account for;
//! guessing passwords is slowed cluster-wide by the replicated sign-in throttle instead.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::error::ApiError;

/// (requests per second, burst); a rate of 0 disables that limit.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimitSettings {
    pub per_ip_sign_in: Limit,
    pub per_principal: Limit,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            per_ip_sign_in: Limit { per_second: 10, burst: 30 },
            per_principal: Limit { per_second: 200, burst: 400 },
        }
    }
}

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

pub struct Bucket<K: Hash + Eq + Clone> {
    name: &'static str,
    limit: Limit,
    limiter: Option<Keyed<K>>,
}

impl<K: Hash + Eq + Clone> Bucket<K> {
    fn new(name: &'static str, limit: Limit) -> Bucket<K> {
        let limiter = NonZeroU32::new(limit.per_second).map(|rate| {
            let burst = NonZeroU32::new(limit.burst.max(limit.per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
                .with_middleware::<StateInformationMiddleware>()
        });
        Bucket { name, limit, limiter }
    }

    /// Takes one token for `key`, or says how long to wait.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        match limiter.check_key(key) {
            Ok(_) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(ApiError::TooManyRequests {
                    retry_after_secs: retry_after_secs.max(1),
                    policy: format!("\"{}\";q={};w=1", self.name, self.limit.burst.max(self.limit.per_second)),
                    name: self.name,
                })
            }
        }
    }

    fn forget_idle(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

pub struct RateLimits {
    pub sign_in_by_ip: Bucket<IpAddr>,
    pub by_principal: Bucket<String>,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Arc<RateLimits> {
        let limits = Arc::new(RateLimits {
            sign_in_by_ip: Bucket::new("sign-in-per-ip", settings.per_ip_sign_in),
            by_principal: Bucket::new("per-principal", settings.per_principal),
        });
        let weak = Arc::downgrade(&limits);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    let Some(l) = weak.upgrade() else { return };
                    l.sign_in_by_ip.forget_idle();
                    l.by_principal.forget_idle();
                }
            });
        }
        limits
    }
}

impl RateLimits {
    /// The per-IP budget of the sign-in endpoints (login and token).
    pub fn check_sign_in(&self, ip: &crate::extract::ClientIp) -> Result<(), ApiError> {
        match ip.0 {
            Some(ip) => self.sign_in_by_ip.check(&ip),
            None => Ok(()),
        }
    }
}
