//! Where the mirror may connect. Its own requests (to an upstream registry or token
//! service) are marked [`OwnRequest`]; everything else the client sends is a storage hop the
//! layer built (storage hops carry no request extensions), and goes through a connector that
//! refuses every address that is not globally reachable ([`is_public`]), after DNS
//! resolution, unless the host is a listed `--storage-host`. `--resolve` overrides DNS
//! for both.

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher};
use tower_signed_redirect::BoxError;

/// Marks a request the mirror itself sends upstream (registry, token service): not a
/// storage hop. The layer's storage hops carry no request extensions, so they never have it.
#[derive(Clone, Copy, Debug)]
pub struct OwnRequest;

/// `--resolve` entries: a name and the addresses it resolves to.
pub type Overrides = Arc<HashMap<String, Vec<IpAddr>>>;

/// Parses `--resolve` values (`host=ip`).
pub fn overrides(entries: &[String]) -> Result<Overrides, String> {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for entry in entries {
        let (host, ip) = entry
            .split_once('=')
            .ok_or_else(|| format!("--resolve {entry:?}: use HOST=IP"))?;
        let ip: IpAddr = ip
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|e| format!("--resolve {entry:?}: {e}"))?;
        map.entry(host.trim().to_ascii_lowercase())
            .or_default()
            .push(ip);
    }
    Ok(Arc::new(map))
}

/// Whether an address is globally reachable: not in any IANA special-purpose range whose
/// "globally reachable" is false (RFC 6890 and the registries' later entries).
///
/// IPv4: `0/8`, `10/8`, `100.64/10` (CGNAT), `127/8`, `169.254/16` (link-local, incl. cloud
/// metadata), `172.16/12`, `192.0.0/24`, `192.0.2/24`, `192.88.99/24` (6to4 relay),
/// `192.168/16`, `198.18/15` (benchmarking), `198.51.100/24`, `203.0.113/24`, `224/4`
/// (multicast), `240/4` (reserved, broadcast).
///
/// IPv6: only global unicast `2000::/3` is, less `2001::/23` (IETF protocol assignments:
/// Teredo, benchmarking, ORCHID...), `2001:db8::/32` and `3fff::/20` (documentation); so
/// `::/8` (unspecified, loopback, IPv4-compatible, SIIT), `64:ff9b:1::/48` (local-use
/// NAT64), `100::/64` (discard), `5f00::/16` (SRv6), `fc00::/7` (ULA), `fe80::/10`,
/// `fec0::/10` and `ff00::/8` are refused. Forms that embed an IPv4 address are judged by
/// it: IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(a == 0
        || a == 10
        || (a == 100 && (64..128).contains(&b))
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        // IPv4-mapped: the IPv4 address is the destination.
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => is_public_v4(embedded(hi, lo)),
        // NAT64, well-known prefix: judged by the IPv4 address it reaches.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => is_public_v4(embedded(hi, lo)),
        // 6to4: judged by the IPv4 address in bits 16-48.
        [0x2002, hi, lo, ..] => is_public_v4(embedded(hi, lo)),
        // Only global unicast (2000::/3) is globally reachable, less its special ranges.
        [first, second, ..] => {
            (first & 0xe000) == 0x2000
                // 2001::/23, IETF protocol assignments; 2001:db8::/32, documentation.
                && !(first == 0x2001 && (second < 0x200 || second == 0x0db8))
                // 3fff::/20, documentation.
                && !(first == 0x3fff && second < 0x1000)
        }
    }
}

/// DNS for the mirror's connectors: `--resolve` first, the system's resolver otherwise;
/// with `guarded`, only public addresses are kept.
#[derive(Clone)]
pub struct Resolver {
    overrides: Overrides,
    system: GaiResolver,
    guarded: bool,
}

impl Resolver {
    /// A resolver with `overrides`, keeping only public addresses if `guarded`.
    pub fn new(overrides: Overrides, guarded: bool) -> Self {
        Resolver {
            overrides,
            system: GaiResolver::new(),
            guarded,
        }
    }
}

/// A name that resolved only to addresses a storage hop may not use.
#[derive(Debug)]
pub struct NotPublic(pub String);

impl std::fmt::Display for NotPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused to connect to {} for storage: it is not a public address \
             (list the host with --storage-host to allow it)",
            self.0
        )
    }
}

impl std::error::Error for NotPublic {}

impl Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guarded = self.guarded;
        let overridden = self
            .overrides
            .get(&name.as_str().to_ascii_lowercase())
            .cloned();
        let mut system = self.system.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match overridden {
                Some(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect(),
                None => system.call(name.clone()).await?.collect(),
            };
            if !guarded {
                return Ok(addrs.into_iter());
            }
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(NotPublic(name.as_str().to_owned()).into());
            }
            Ok(public.into_iter())
        })
    }
}

/// The connector of storage hops: hosts listed with `--storage-host` connect anywhere;
/// others only to public addresses (an IP literal is checked here, a name by the
/// resolver, after resolution).
#[derive(Clone)]
pub struct StorageConnector<C> {
    trusted: Arc<HostPatterns>,
    listed: C,
    guarded: C,
}

impl<C> StorageConnector<C> {
    /// Connects hosts matching `trusted` (`--storage-host`) with `listed`, and all others
    /// with `guarded`.
    pub fn new(trusted: HostPatterns, listed: C, guarded: C) -> Self {
        StorageConnector {
            trusted: Arc::new(trusted),
            listed,
            guarded,
        }
    }
}

impl<C> Service<http::Uri> for StorageConnector<C>
where
    C: Service<http::Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both connectors are made ready in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let trusted = self.trusted.matches(&uri);
        let literal = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if let (false, Some(ip)) = (trusted, literal) {
            if !is_public(ip) {
                let host = uri.host().unwrap_or_default().to_owned();
                return Box::pin(async move { Err(NotPublic(host).into()) });
            }
        }
        let mut connector = if trusted {
            self.listed.clone()
        } else {
            self.guarded.clone()
        };
        Box::pin(async move {
            std::future::poll_fn(|cx| connector.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            connector.call(uri).await.map_err(Into::into)
        })
    }
}

/// A plain connector resolving with `resolver`.
pub fn http_connector(resolver: Resolver) -> HttpConnector<Resolver> {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_nodelay(true);
    http.enforce_http(false);
    http
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "3fff:fff::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is not public");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "3fff:1000::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn resolve_overrides_parse() {
        let o = overrides(&["Storage.Example.com=127.0.0.1".into(), "x=[::1]".into()]).unwrap();
        assert_eq!(
            o["storage.example.com"],
            ["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(o["x"], ["::1".parse::<IpAddr>().unwrap()]);
        assert!(overrides(&["nope".into()]).is_err());
        assert!(overrides(&["h=not-an-ip".into()]).is_err());
    }
}
