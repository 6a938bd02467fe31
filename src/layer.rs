use crate::config::{builder_methods, Config};
use crate::matcher::StorageMatcher;
use crate::SignedRedirect;
use tower_layer::Layer;

/// Wraps an HTTP client service in [`SignedRedirect`].
///
/// See the [crate documentation](crate) for what it does. Cloning the layer, and the
/// services it makes, is cheap: the configuration is shared.
///
/// ```
/// use http::header::{HeaderValue, RANGE, USER_AGENT};
/// use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};
/// use tower_signed_redirect::{HeadStrategy, SignedRedirectLayer};
///
/// let storage = WellKnownStorage::new().or(HostPatterns::new(["minio.internal:9000"]).unwrap());
/// let layer = SignedRedirectLayer::with_matcher(storage)
///     .max_redirects(3)
///     .head_strategy(HeadStrategy::RangeProbe)
///     .forward_headers([USER_AGENT, RANGE])
///     .user_agent(HeaderValue::from_static("my-mirror/1.0"));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug, Default)]
pub struct SignedRedirectLayer {
    config: Config,
}

impl SignedRedirectLayer {
    /// A layer that follows redirects to [`WellKnownStorage`](crate::matcher::WellKnownStorage).
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer that follows redirects to what `matcher` accepts.
    pub fn with_matcher<M>(matcher: M) -> Self
    where
        M: StorageMatcher + Send + Sync + 'static,
    {
        SignedRedirectLayer {
            config: Config::new(matcher),
        }
    }

    builder_methods!(config);
}

impl<S> Layer<S> for SignedRedirectLayer {
    type Service = SignedRedirect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SignedRedirect::from_config(inner, self.config.clone())
    }
}
