//! The caller's source address. Behind a trusted proxy (HAProxy with `option forwardfor`, which
//! appends the address it saw) it is the **last** `X-Forwarded-For` entry; entries before it are
//! whatever the client wrote, and from anyone but a configured proxy the header is ignored.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::state::AppState;

/// `None` when the server does not know it (socket-less router tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// As the sign-in throttle counts sources.
    pub fn source(&self) -> String {
        self.0.map_or_else(|| "unknown".into(), |ip| ip.to_string())
    }

    pub fn of(parts: &Parts, trusted_proxies: &[IpAddr]) -> ClientIp {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let forwarded = || {
            let last = parts.headers.get_all("x-forwarded-for").iter().next_back()?.to_str().ok()?;
            last.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
        };
        ClientIp(match peer {
            Some(p) if trusted_proxies.contains(&p) => forwarded().or(Some(p)),
            other => other,
        })
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp::of(parts, &state.settings.trusted_proxies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, xff: &[&str]) -> Parts {
        let mut b = axum::http::Request::builder();
        for v in xff {
            b = b.header("x-forwarded-for", *v);
        }
        let (mut parts, ()) = b.body(()).expect("request").into_parts();
        parts.extensions.insert(ConnectInfo(peer.parse::<SocketAddr>().expect("addr")));
        parts
    }

    // traces: FM-06, FM-07
    #[test]
    fn only_the_entry_the_trusted_proxy_appended_counts() {
        let proxy: IpAddr = "127.0.0.5".parse().expect("ip");
        // The client wrote "1.2.3.4"; HAProxy appended the address it saw.
        let p = parts("127.0.0.5:4000", &["1.2.3.4, 10.9.8.7"]);
        assert_eq!(ClientIp::of(&p, &[proxy]).0, Some("10.9.8.7".parse().expect("ip")));
        let p = parts("127.0.0.5:4000", &["1.2.3.4", "10.9.8.7"]);
        assert_eq!(ClientIp::of(&p, &[proxy]).0, Some("10.9.8.7".parse().expect("ip")));
        // Not from the proxy: the header is the client's own words and is ignored.
        let p = parts("10.0.0.1:4000", &["1.2.3.4"]);
        assert_eq!(ClientIp::of(&p, &[proxy]).0, Some("10.0.0.1".parse().expect("ip")));
    }
}
