//! The request extractors, in one place: who is calling ([`Caller`]), from where ([`ClientIp`]),
//! and a JSON body whose refusals are problems ([`Json`]). A handler that takes a `Caller` cannot
//! run for an unauthenticated, revoked, suspended, rate-limited or stale request.

mod caller;
mod client_ip;
mod json;

pub use caller::Caller;
pub use client_ip::ClientIp;
pub use json::Json;
