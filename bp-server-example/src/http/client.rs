//! Who is asking: the client's address, and the source its requests are counted against.
//!
//! Behind a reverse proxy every connection comes from the proxy, so counting by the socket's
//! address would give all customers one budget. A connection from one of `server.trusted_proxies`
//! is therefore attributed to the address that proxy says it forwarded for (`Forwarded: for=`,
//! RFC 7239, or `X-Forwarded-For`), read from the right, skipping the trusted proxies of a chain;
//! from anyone else those headers are ignored, since a client can write them. A source is an IPv4
//! address, or an IPv6 /64: one subscriber is given a whole /64, so counting its addresses one by
//! one would give it an unbounded budget.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// IPv6 addresses of one source share this prefix length.
const IPV6_SOURCE_PREFIX_LEN: u8 = 64;

/// The client of a request, as far as this server can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// What requests are counted against: an IPv4 address or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Source(IpAddr);

impl Source {
    /// Its bytes, as the shared counts key it (hashed with what they count).
    pub fn key_bytes(self) -> Vec<u8> {
        match self.0 {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }
    }
}

impl ClientAddr {
    /// The client of a connection from `peer` that sent `headers`, trusting the forwarding
    /// headers only from `trusted` proxies.
    pub fn of(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Self {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
        if !is_trusted(&peer) {
            return Self(peer);
        }
        // The chain of addresses, nearest last; the client is the last one no trusted proxy
        // added. A chain that ends in trusted proxies only, or cannot be read, is the peer's.
        let chain = forwarded_for(headers);
        Self(chain.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer))
    }

    /// The source this client's requests are counted against.
    pub fn source(self) -> Source {
        match self.0 {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let keep = u128::MAX << (128 - u32::from(IPV6_SOURCE_PREFIX_LEN));
                    Source(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep)))
                }
            },
        }
    }
}

/// The addresses of `Forwarded` (RFC 7239) `for=` parameters, or else of `X-Forwarded-For`, in
/// the order the proxies appended them; unreadable entries (`unknown`, obfuscated ids) stop the
/// chain there, since nothing before them can be attributed.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    };
    let forwarded = values("forwarded");
    let entries: Vec<String> = if forwarded.is_empty() {
        values("x-forwarded-for").iter().flat_map(|v| v.split(',').map(|s| s.trim().to_owned())).collect()
    } else {
        forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(k, _)| k.eq_ignore_ascii_case("for"))
                    .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                    .unwrap_or_default()
            })
            .collect()
    };
    let mut chain = Vec::new();
    for entry in entries {
        match parse_node(&entry) {
            Some(ip) => chain.push(ip),
            None => chain.clear(),
        }
    }
    chain
}

/// An address of a forwarding header: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`,
/// `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    node.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// Puts the [`ClientAddr`] of a request in its extensions, trusting `trusted` proxies (a step of
/// every request: `crate::http::middleware`).
pub fn client_addr(trusted: &[IpNet], req: &mut Request) {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let client = ClientAddr::of(peer.ip(), req.headers(), trusted);
        req.extensions_mut().insert(client);
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Every connection the server serves has its peer's address; a request built without
        // one (a test calling the router directly) is the unspecified address.
        Ok(parts.extensions.get::<ClientAddr>().copied().unwrap_or(ClientAddr(IpAddr::from([0, 0, 0, 0]))))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let xff = headers(&[("x-forwarded-for", "198.51.100.7, 10.1.2.3")]);
        assert_eq!(
            ClientAddr::of(ip("203.0.113.9"), &xff, &proxies),
            ClientAddr(ip("203.0.113.9")),
            "a stranger's header"
        );
        assert_eq!(
            ClientAddr::of(ip("10.0.0.1"), &xff, &proxies),
            ClientAddr(ip("198.51.100.7")),
            "skips trusted hops"
        );
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7")]);
        assert_eq!(
            ClientAddr::of(ip("10.0.0.1"), &spoofed, &proxies),
            ClientAddr(ip("198.51.100.7")),
            "what the client wrote before the proxy's entry is not believed"
        );
        let forwarded = headers(&[("forwarded", "for=192.0.2.60;proto=https, for=\"[2001:db8:cafe::17]:4711\"")]);
        assert_eq!(ClientAddr::of(ip("10.0.0.1"), &forwarded, &proxies), ClientAddr(ip("2001:db8:cafe::17")));
        let unknown = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(ClientAddr::of(ip("10.0.0.1"), &unknown, &proxies), ClientAddr(ip("10.0.0.1")));
        assert_eq!(ClientAddr::of(ip("10.0.0.1"), &HeaderMap::new(), &proxies), ClientAddr(ip("10.0.0.1")));
    }

    #[test]
    fn an_ipv6_subscriber_is_one_source_per_64() {
        let a = ClientAddr(ip("2001:db8:1:2:aaaa::1")).source();
        let b = ClientAddr(ip("2001:db8:1:2:ffff::9")).source();
        let c = ClientAddr(ip("2001:db8:1:3::1")).source();
        assert_eq!(a, b, "one /64");
        assert_ne!(a, c);
        assert_ne!(ClientAddr(ip("192.0.2.1")).source(), ClientAddr(ip("192.0.2.2")).source());
        assert_eq!(ClientAddr(ip("::ffff:192.0.2.1")).source(), ClientAddr(ip("192.0.2.1")).source(), "mapped IPv4");
    }
}
