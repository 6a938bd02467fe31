//! The configuration shared by the layer, the service and its futures.

use crate::matcher::{StorageMatcher, WellKnownStorage};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use std::fmt;
use std::sync::Arc;

/// How many headers the allowlist can hold. Forwarded values are captured inline (without
/// allocating) when a request is sent, so the list has a fixed capacity.
pub const MAX_FORWARDED_HEADERS: usize = 8;

/// The default number of redirects followed in one chain (registry → storage counts one).
pub const DEFAULT_MAX_REDIRECTS: usize = 5;

/// How a `HEAD` request is answered when its redirect is followed.
///
/// Registries sign the storage URL either for `GET` only (Docker Hub, GHCR, ECR...) or for
/// the client's own method (CNCF distribution, Harbor, GitLab on S3). A `HEAD` on a
/// `GET`-signed URL fails the signature, and so does a `GET` on a `HEAD`-signed one.
///
/// ```
/// use tower_signed_redirect::{HeadStrategy, SignedRedirectLayer};
///
/// // Storage that always signs for the client's method: skip the probe.
/// let layer = SignedRedirectLayer::new().head_strategy(HeadStrategy::Head);
/// assert_eq!(HeadStrategy::default(), HeadStrategy::RangeProbe);
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeadStrategy {
    /// Sends `GET` with `Range: bytes=0-0` and answers `200` with the blob's real
    /// `Content-Length` (from `Content-Range`) and an empty body: one byte is transferred.
    /// If storage rejects that request (`400`, `401`, `403` or `405`: a URL signed for
    /// `HEAD`), sends a `HEAD` to the same URL instead and returns its answer. Works with
    /// both kinds of signing. The default.
    #[default]
    RangeProbe,
    /// Sends `GET` and answers with its status and headers and an empty body. The storage
    /// connection is closed to stop the download. For storage that ignores `Range` and
    /// rejects `HEAD`.
    Get,
    /// Sends `HEAD`. For storage whose URLs are always signed for the client's method.
    Head,
}

/// `true` for headers that can never be forwarded to storage, even when allowlisted:
/// credentials, cloud-provider headers that would need signing, content headers, and
/// hop-by-hop headers.
pub(crate) fn is_never_forwarded(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "expect"
    ) || ["x-amz-", "x-goog-", "x-ms-", "content-"]
        .iter()
        .any(|p| n.starts_with(p))
}

#[derive(Clone)]
pub(crate) struct Config(Arc<Inner>);

#[derive(Clone)]
pub(crate) struct Inner {
    pub(crate) matcher: Arc<dyn StorageMatcher + Send + Sync>,
    /// Bit `n` set: status `300 + n` is a redirect to follow.
    redirect_statuses: u128,
    pub(crate) max_redirects: usize,
    pub(crate) head: HeadStrategy,
    pub(crate) forward: Vec<HeaderName>,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) allow_downgrade: bool,
}

impl Config {
    pub(crate) fn new<M>(matcher: M) -> Self
    where
        M: StorageMatcher + Send + Sync + 'static,
    {
        let statuses = [301u16, 302, 303, 307, 308];
        Config(Arc::new(Inner {
            matcher: Arc::new(matcher),
            redirect_statuses: statuses.iter().fold(0, |bits, s| bits | 1 << (s - 300)),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            head: HeadStrategy::default(),
            forward: vec![
                header::USER_AGENT,
                header::RANGE,
                header::IF_RANGE,
                header::ACCEPT,
            ],
            user_agent: None,
            allow_downgrade: false,
        }))
    }

    pub(crate) fn get(&self) -> &Inner {
        &self.0
    }

    pub(crate) fn get_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.0)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(WellKnownStorage::new())
    }
}

impl Inner {
    #[inline]
    pub(crate) fn is_redirect(&self, status: StatusCode) -> bool {
        let s = status.as_u16();
        (300..=399).contains(&s) && self.redirect_statuses & (1 << (s - 300)) != 0
    }

    pub(crate) fn set_redirect_statuses(&mut self, statuses: impl IntoIterator<Item = StatusCode>) {
        self.redirect_statuses = statuses
            .into_iter()
            .map(|s| s.as_u16())
            .filter(|s| (300..=399).contains(s))
            .fold(0, |bits, s| bits | 1 << (s - 300));
    }

    pub(crate) fn add_forwarded(&mut self, name: HeaderName) {
        if is_never_forwarded(&name) {
            tracing::warn!(header = %name, "refusing to forward a credential, content or hop-by-hop header to storage");
        } else if self.forward.len() >= MAX_FORWARDED_HEADERS {
            tracing::warn!(header = %name, max = MAX_FORWARDED_HEADERS, "forwarded header allowlist is full; header ignored");
        } else if !self.forward.contains(&name) {
            self.forward.push(name);
        }
    }

    /// Clones the allowlisted header values of a request (cheap: header values are
    /// reference-counted, and the array is inline).
    #[inline]
    pub(crate) fn capture(&self, headers: &HeaderMap) -> Forwarded {
        let mut values: [Option<HeaderValue>; MAX_FORWARDED_HEADERS] = Default::default();
        // One pass over the request's headers, comparing names (an enum comparison for
        // standard headers) instead of hashing each allowlisted name. The first value of a
        // name wins, as `HeaderMap::get` would have it.
        for (name, value) in headers {
            if let Some(i) = self.forward.iter().position(|n| n == name) {
                if values[i].is_none() {
                    values[i] = Some(value.clone());
                }
            }
        }
        Forwarded(values)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.get();
        let statuses: Vec<u16> = (300..400u16)
            .filter(|s| c.redirect_statuses & (1 << (s - 300)) != 0)
            .collect();
        f.debug_struct("Config")
            .field("redirect_statuses", &statuses)
            .field("max_redirects", &c.max_redirects)
            .field("head_strategy", &c.head)
            .field("forward_headers", &c.forward)
            .field("user_agent", &c.user_agent)
            .field("allow_https_downgrade", &c.allow_downgrade)
            .finish_non_exhaustive()
    }
}

/// The values of the allowlisted headers of one request, in allowlist order.
pub(crate) struct Forwarded([Option<HeaderValue>; MAX_FORWARDED_HEADERS]);

impl Forwarded {
    /// Writes the forwarded headers into a fresh storage request's header map.
    pub(crate) fn write_to(&self, config: &Inner, headers: &mut HeaderMap, range_probe: bool) {
        for (name, value) in config.forward.iter().zip(&self.0) {
            let skip = (range_probe && (name == header::RANGE || name == header::IF_RANGE))
                || (config.user_agent.is_some() && name == header::USER_AGENT);
            if let (Some(value), false) = (value, skip) {
                headers.insert(name.clone(), value.clone());
            }
        }
        if let Some(ua) = &config.user_agent {
            headers.insert(header::USER_AGENT, ua.clone());
        }
        if range_probe {
            headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-0"));
        }
    }
}

/// Builder methods shared by [`SignedRedirectLayer`](crate::SignedRedirectLayer) and
/// [`SignedRedirect`](crate::SignedRedirect). `$config` is the path to their `Config`.
macro_rules! builder_methods {
    ($($config:ident).+) => {
        /// Sets which response statuses count as redirects to follow (default: 301, 302,
        /// 303, 307, 308). Statuses outside 300–399 are ignored.
        pub fn redirect_statuses<I>(mut self, statuses: I) -> Self
        where
            I: IntoIterator<Item = http::StatusCode>,
        {
            self.$($config).+.get_mut().set_redirect_statuses(statuses);
            self
        }

        /// Sets how many redirects one request may follow, registry → storage counting as
        /// one (default: [`DEFAULT_MAX_REDIRECTS`](crate::DEFAULT_MAX_REDIRECTS)). Past it the
        /// request fails with [`ErrorKind::TooManyRedirects`](crate::ErrorKind::TooManyRedirects).
        pub fn max_redirects(mut self, max: usize) -> Self {
            self.$($config).+.get_mut().max_redirects = max;
            self
        }

        /// Sets how `HEAD` requests are answered (default: [`HeadStrategy::RangeProbe`](crate::HeadStrategy::RangeProbe)).
        pub fn head_strategy(mut self, strategy: crate::HeadStrategy) -> Self {
            self.$($config).+.get_mut().head = strategy;
            self
        }

        /// Replaces the allowlist of request headers copied to storage hops (default:
        /// `User-Agent`, `Range`, `If-Range`, `Accept`).
        ///
        /// Credential, cloud-provider, content and hop-by-hop headers (`Authorization`,
        /// `Proxy-Authorization`, `Cookie`, `Host`, `x-amz-*`, `x-goog-*`, `x-ms-*`,
        /// `Content-*`, `Connection`, `Transfer-Encoding`...) are never forwarded: they
        /// are ignored here, with a `tracing` warning. So are names past
        /// [`MAX_FORWARDED_HEADERS`](crate::MAX_FORWARDED_HEADERS).
        pub fn forward_headers<I>(mut self, names: I) -> Self
        where
            I: IntoIterator<Item = http::header::HeaderName>,
        {
            let config = self.$($config).+.get_mut();
            config.forward.clear();
            for name in names {
                config.add_forwarded(name);
            }
            self
        }

        /// Adds one header to the allowlist (see [`forward_headers`](Self::forward_headers)
        /// for what is refused).
        pub fn forward_header(mut self, name: http::header::HeaderName) -> Self {
            self.$($config).+.get_mut().add_forwarded(name);
            self
        }

        /// Sends this `User-Agent` to storage instead of the client's.
        pub fn user_agent(mut self, value: http::header::HeaderValue) -> Self {
            self.$($config).+.get_mut().user_agent = Some(value);
            self
        }

        /// Allows following a redirect from `https` to `http` (default: refused with
        /// [`ErrorKind::Downgrade`](crate::ErrorKind::Downgrade)). Schemes other than
        /// `http` and `https` are never followed.
        pub fn allow_https_downgrade(mut self, allow: bool) -> Self {
            self.$($config).+.get_mut().allow_downgrade = allow;
            self
        }
    };
}
pub(crate) use builder_methods;
