//! Which redirect targets count as object storage.
//!
//! The layer only follows a redirect when a [`StorageMatcher`] accepts the resolved target.
//! Matching is on the parsed host, never on substrings of the URL: `amazonaws.com.evil.net`
//! and `s3.amazonaws.com@evil.net` are not Amazon hosts.
//!
//! | matcher | accepts |
//! |---|---|
//! | [`HostPatterns`] | exact hosts and `*.suffix` wildcards, optionally with a port |
//! | [`WellKnownStorage`] | the storage hosts used by Docker Hub, GHCR, Quay, ECR, ACR, GCR and registry.k8s.io |
//! | [`SignedQuery`] | any URL whose query carries a recognised signature (opt-in) |
//! | [`predicate`] | whatever a closure over the resolved [`Uri`] says |
//!
//! Matchers combine with [`StorageMatcher::or`], [`StorageMatcher::and`] and
//! [`StorageMatcher::not`].
//!
//! # Example
//!
//! ```
//! use http::Uri;
//! use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};
//!
//! let internal = HostPatterns::new(["minio.internal:9000", "*.blobs.example.com"]).unwrap();
//! let matcher = WellKnownStorage::new().or(internal);
//!
//! let r2: Uri = "https://docker-images-prod.abc.r2.cloudflarestorage.com/x?X-Amz-Signature=00"
//!     .parse()
//!     .unwrap();
//! assert!(matcher.matches(&r2));
//! assert!(matcher.matches(&"http://minio.internal:9000/bucket/blob".parse().unwrap()));
//! assert!(!matcher.matches(&"https://amazonaws.com.evil.net/".parse().unwrap()));
//! ```

use http::Uri;
use std::fmt;
use std::sync::Arc;

mod combinators;
mod host_patterns;
mod predicate;
mod signed_query;
pub(crate) mod well_known;

pub use self::combinators::{And, Not, Or};
pub use self::host_patterns::{HostPatterns, InvalidHostPattern};
pub use self::predicate::{predicate, Predicate};
pub use self::signed_query::SignedQuery;
pub use self::well_known::WellKnownStorage;

/// Decides whether a redirect target is object storage that the layer may follow.
///
/// The URI is the resolved redirect target: always absolute, exactly as the upstream sent it
/// (or as resolved against the request URI for a relative `Location`).
///
/// Implemented by every matcher in this module, by [`Arc`] and [`Box`] of a matcher (so
/// `Box<dyn StorageMatcher + Send + Sync>` works), and by closures wrapped in [`predicate`].
///
/// Matchers are `Debug` so that a layer's `Debug` output says which hosts it follows to (the
/// setting that matters most when a redirect is not followed).
pub trait StorageMatcher: fmt::Debug {
    /// Returns `true` if a redirect to `uri` should be followed by the layer.
    fn matches(&self, uri: &Uri) -> bool;

    /// Accepts what either `self` or `other` accepts.
    ///
    /// ```
    /// use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher};
    ///
    /// let m = HostPatterns::new(["a.example"]).unwrap().or(HostPatterns::new(["b.example"]).unwrap());
    /// assert!(m.matches(&"https://b.example/".parse().unwrap()));
    /// ```
    fn or<M>(self, other: M) -> Or<Self, M>
    where
        Self: Sized,
        M: StorageMatcher,
    {
        Or::new(self, other)
    }

    /// Accepts what both `self` and `other` accept.
    ///
    /// ```
    /// use tower_signed_redirect::matcher::{SignedQuery, StorageMatcher, WellKnownStorage};
    ///
    /// // Only well-known storage, and only when the URL is actually signed.
    /// let m = WellKnownStorage::new().and(SignedQuery::new());
    /// assert!(!m.matches(&"https://bucket.s3.amazonaws.com/blob".parse().unwrap()));
    /// ```
    fn and<M>(self, other: M) -> And<Self, M>
    where
        Self: Sized,
        M: StorageMatcher,
    {
        And::new(self, other)
    }

    /// Accepts what `self` rejects.
    ///
    /// ```
    /// use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};
    ///
    /// let m = WellKnownStorage::new().and(HostPatterns::new(["*.cloudfront.net"]).unwrap().not());
    /// assert!(!m.matches(&"https://d1.cloudfront.net/blob".parse().unwrap()));
    /// ```
    fn not(self) -> Not<Self>
    where
        Self: Sized,
    {
        Not::new(self)
    }
}

impl<M> StorageMatcher for Arc<M>
where
    M: StorageMatcher + ?Sized,
{
    fn matches(&self, uri: &Uri) -> bool {
        (**self).matches(uri)
    }
}

impl<M> StorageMatcher for Box<M>
where
    M: StorageMatcher + ?Sized,
{
    fn matches(&self, uri: &Uri) -> bool {
        (**self).matches(uri)
    }
}

/// The host of `uri` as compared by matchers: without one trailing dot, and `None` when the
/// URI has no host.
pub(crate) fn normalized_host(uri: &Uri) -> Option<&str> {
    let host = uri.host()?;
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// The port a request to `uri` goes to: the explicit one, else the scheme's default.
pub(crate) fn effective_port(uri: &Uri) -> Option<u16> {
    uri.port_u16().or_else(|| match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
        Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
        _ => None,
    })
}

/// What a host (as [`Uri::host`] returns it) is: a name, or an IP literal (IPv4, or IPv6 in
/// brackets), parsed once.
pub(crate) enum IpLiteral {
    Name,
    Ip(std::net::IpAddr),
    /// Bracketed, but not an IPv6 address.
    Invalid,
}

pub(crate) fn ip_literal(host: &str) -> IpLiteral {
    if let Some(v6) = host.strip_prefix('[') {
        return match v6.strip_suffix(']').map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(ip)) => IpLiteral::Ip(ip.into()),
            _ => IpLiteral::Invalid,
        };
    }
    // A name cannot start with a digit and be an IPv4 address; skip the parse for names.
    match host.as_bytes().first() {
        Some(b) if b.is_ascii_digit() => match host.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => IpLiteral::Ip(ip.into()),
            Err(_) => IpLiteral::Name,
        },
        _ => IpLiteral::Name,
    }
}

/// `true` when `host` is an IP literal (see [`ip_literal`]).
pub(crate) fn is_ip_literal(host: &str) -> bool {
    !matches!(ip_literal(host), IpLiteral::Name)
}

/// `true` when `host` ends with `.suffix` (case-insensitive) and has at least one label
/// before it.
pub(crate) fn is_strict_subdomain(host: &str, suffix: &str) -> bool {
    let (h, s) = (host.as_bytes(), suffix.as_bytes());
    h.len() > s.len() + 1
        && h[h.len() - s.len() - 1] == b'.'
        && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
}
