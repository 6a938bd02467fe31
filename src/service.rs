use crate::body::ResponseBody;
use crate::cache::Lookup;
use crate::config::{builder_methods, Config};
use crate::error::{BoxError, Error};
use crate::future::{Asked, Chain, Origin, ResponseFuture};
use crate::matcher::StorageMatcher;
use crate::SignedRedirectLayer;
use http::{Method, Request, Response, Uri};
use http_body::Body;
use std::task::{Context, Poll};
use tower_service::Service;

/// Follows redirects to pre-signed storage URLs with a fresh, credential-free `GET`.
///
/// Wraps an HTTP client service; see the [crate documentation](crate) for the rules and
/// [`SignedRedirectLayer`] for the configuration. The builder methods here are the same.
///
/// ```
/// # use std::convert::Infallible;
/// # use http::{Request, Response, StatusCode};
/// # use tower::{service_fn, ServiceExt};
/// use tower_signed_redirect::SignedRedirect;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let client = service_fn(|req: Request<String>| async move {
/// #     let res = if req.uri().host() == Some("registry.example") {
/// #         Response::builder().status(307)
/// #             .header("location", "https://bucket.s3.us-east-1.amazonaws.com/blob?X-Amz-Signature=abc")
/// #             .body(String::new())
/// #     } else {
/// #         Response::builder().body(String::from("blob bytes"))
/// #     };
/// #     Ok::<_, Infallible>(res.unwrap())
/// # });
/// let client = SignedRedirect::new(client).max_redirects(2);
/// let res = client
///     .oneshot(Request::get("https://registry.example/v2/library/alpine/blobs/sha256:00").body(String::new()).unwrap())
///     .await
///     .unwrap();
/// assert_eq!(res.status(), StatusCode::OK);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SignedRedirect<S> {
    inner: S,
    config: Config,
}

impl<S> SignedRedirect<S> {
    /// Wraps `inner`, following redirects to [`WellKnownStorage`](crate::matcher::WellKnownStorage).
    pub fn new(inner: S) -> Self {
        Self::from_config(inner, Config::default())
    }

    /// Wraps `inner`, following redirects to what `matcher` accepts.
    pub fn with_matcher<M>(inner: S, matcher: M) -> Self
    where
        M: StorageMatcher + Send + Sync + 'static,
    {
        Self::from_config(inner, Config::new(matcher))
    }

    /// A [`SignedRedirectLayer`] with the default configuration.
    pub fn layer() -> SignedRedirectLayer {
        SignedRedirectLayer::new()
    }

    pub(crate) fn from_config(inner: S, config: Config) -> Self {
        SignedRedirect { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    builder_methods!(config);
}

/// `ReqBody: Default` is how the layer makes the empty body of a storage request (storage
/// requests never carry the caller's body). `Empty`, `Full`, `String` and http-body-util's
/// `BoxBody`/`UnsyncBoxBody` have it; a proxy that forwards `hyper::body::Incoming` boxes it
/// first (see [the crate documentation](crate#the-request-body)).
impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SignedRedirect<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ReqBody: Default,
    ResBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            // Not ready yet for any request: there is no URL whose secrets could be quoted.
            .map_err(|e| Error::upstream(&Uri::default(), e.into()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let uri = req.uri().clone();
            return ResponseFuture::pass_through(self.inner.call(req), uri);
        }
        let lookup = match &self.config.settings().redirect_cache {
            Some(cache) => cache.lookup(&req),
            None => Lookup::Bypass,
        };
        let ticket = match lookup {
            Lookup::Hit(entry, ticket) => {
                let origin =
                    Origin::new(self.inner.clone(), self.config.clone(), &req, Some(ticket));
                let chain = Chain::from_cache(origin, req, entry);
                let future = self.inner.call(chain.request());
                return ResponseFuture::from_cache(future, chain);
            }
            Lookup::Wait(waiting) => {
                return ResponseFuture::waiting(
                    waiting,
                    self.inner.clone(),
                    self.config.clone(),
                    req,
                )
            }
            Lookup::Miss(ticket) => Some(ticket),
            Lookup::Bypass => None,
        };
        // Sent upstream, ready to follow its redirect (one place, so that it is inlined
        // into `call`: the pass-through path's cost).
        let origin = Origin::new(self.inner.clone(), self.config.clone(), &req, ticket);
        let asked = Asked::new(origin, &req);
        ResponseFuture::upstream(self.inner.call(req), asked)
    }
}
