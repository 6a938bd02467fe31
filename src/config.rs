//! The settings shared by a layer, its services and their futures, and the builder methods
//! that set them (the same on [`SignedRedirectLayer`](crate::SignedRedirectLayer) and
//! [`SignedRedirect`](crate::SignedRedirect)).

use crate::cache::RedirectCache;
use crate::forward::ForwardHeaders;
use crate::head::HeadStrategy;
use crate::matcher::{StorageMatcher, WellKnownStorage};
use crate::redirect::RedirectRules;
use http::HeaderValue;
use std::sync::Arc;

/// Cheap to clone: the settings are shared, and copied only when a builder method changes
/// them.
#[derive(Clone, Debug)]
pub(crate) struct Config(Arc<Settings>);

/// One field per builder method, named as the method is (the redirect rules' in
/// [`RedirectRules`]).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) rules: RedirectRules,
    pub(crate) head_strategy: HeadStrategy,
    pub(crate) forward_headers: ForwardHeaders,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) redirect_cache: Option<RedirectCache>,
}

impl Config {
    pub(crate) fn new<M>(matcher: M) -> Self
    where
        M: StorageMatcher + Send + Sync + 'static,
    {
        Config(Arc::new(Settings {
            rules: RedirectRules::new(Arc::new(matcher)),
            head_strategy: HeadStrategy::default(),
            forward_headers: ForwardHeaders::default(),
            user_agent: None,
            redirect_cache: None,
        }))
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.0
    }

    pub(crate) fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.0)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(WellKnownStorage::new())
    }
}

/// The builder methods of [`SignedRedirectLayer`](crate::SignedRedirectLayer) and
/// [`SignedRedirect`](crate::SignedRedirect). `$config` is the path to their `Config`.
macro_rules! builder_methods {
    ($($config:ident).+) => {
        /// Sets which response statuses count as redirects to follow (default: 301, 302,
        /// 303, 307, 308). Statuses outside 300–399 are ignored.
        pub fn redirect_statuses<I>(mut self, statuses: I) -> Self
        where
            I: IntoIterator<Item = http::StatusCode>,
        {
            self.$($config).+.settings_mut().rules.redirect_statuses = statuses.into_iter().collect();
            self
        }

        /// Sets how many redirects one request may follow, registry → storage counting as
        /// one (default: [`DEFAULT_MAX_REDIRECTS`](crate::DEFAULT_MAX_REDIRECTS)).
        ///
        /// `0` turns following off: every redirect passes through to the caller unchanged,
        /// as with tower-http's `Limited::new(0)`. With `n > 0`, a chain that would follow
        /// more than `n` redirects fails with
        /// [`ErrorKind::TooManyRedirects`](crate::ErrorKind::TooManyRedirects): by then the
        /// caller's credentials are no longer on the request, so there is no response the
        /// layer could hand back that the caller could use.
        pub fn max_redirects(mut self, max: usize) -> Self {
            self.$($config).+.settings_mut().rules.max_redirects = max;
            self
        }

        /// Sets how `HEAD` requests are answered (default: [`HeadStrategy::RangeProbe`](crate::HeadStrategy::RangeProbe)).
        pub fn head_strategy(mut self, strategy: crate::HeadStrategy) -> Self {
            self.$($config).+.settings_mut().head_strategy = strategy;
            self
        }

        /// Replaces the allowlist of request headers copied to storage requests (default:
        /// `User-Agent`, `Range`, `If-Range`, `Accept`). Every value of a repeated header is
        /// copied, in order.
        ///
        /// # Panics
        ///
        /// On a header that can never be forwarded, and when the list would hold more than
        /// [`MAX_FORWARDED_HEADERS`](crate::MAX_FORWARDED_HEADERS) names. Never forwarded:
        /// credentials (`Authorization`, `Proxy-Authorization`, `Cookie`), `Host`,
        /// hop-by-hop headers (`Connection`, `Keep-Alive`, `Proxy-Connection`,
        /// `Proxy-Authenticate`, `TE`, `Trailer`, `Trailers`, `Transfer-Encoding`,
        /// `Upgrade`), `Expect`, and the `x-amz-*`, `x-goog-*`, `x-ms-*` and `Content-*`
        /// families. Like an invalid header name, these are mistakes in the program, so
        /// they are refused when the layer is built rather than ignored at run time.
        ///
        /// ```should_panic
        /// use http::header::{AUTHORIZATION, USER_AGENT};
        /// use tower_signed_redirect::SignedRedirectLayer;
        ///
        /// // panics: "`authorization` can never be forwarded to storage (a credential)"
        /// SignedRedirectLayer::new().forward_headers([USER_AGENT, AUTHORIZATION]);
        /// ```
        pub fn forward_headers<I>(mut self, names: I) -> Self
        where
            I: IntoIterator<Item = http::header::HeaderName>,
        {
            self.$($config).+.settings_mut().forward_headers.set(names);
            self
        }

        /// Adds one header to the allowlist.
        ///
        /// # Panics
        ///
        /// As [`forward_headers`](Self::forward_headers) does.
        pub fn forward_header(mut self, name: http::header::HeaderName) -> Self {
            self.$($config).+.settings_mut().forward_headers.add(name);
            self
        }

        /// Sends this `User-Agent` to storage instead of the caller's.
        pub fn user_agent(mut self, value: http::header::HeaderValue) -> Self {
            self.$($config).+.settings_mut().user_agent = Some(value);
            self
        }

        /// Remembers where redirects led, in `cache`, so that the same request (method, URI
        /// and credentials) goes straight to storage while the URL is valid (default: no
        /// cache). See [`RedirectCache`](crate::RedirectCache) for what is kept, for how
        /// long, and what happens when storage refuses a cached URL.
        pub fn redirect_cache(mut self, cache: crate::RedirectCache) -> Self {
            self.$($config).+.settings_mut().redirect_cache = Some(cache);
            self
        }

        /// Allows following a redirect from `https` to `http` (default: refused with
        /// [`ErrorKind::Downgrade`](crate::ErrorKind::Downgrade)), for private storage served
        /// over plain http. Schemes other than `http` and `https` are never followed.
        pub fn allow_https_downgrade(mut self, allow: bool) -> Self {
            self.$($config).+.settings_mut().rules.allow_https_downgrade = allow;
            self
        }
    };
}
pub(crate) use builder_methods;
