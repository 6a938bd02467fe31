use http::Uri;
use std::error::Error as StdError;
use std::fmt;

use crate::signed_url::{Redacted, SignedUrl};

/// A boxed error, as the inner service's errors are carried.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong, see [`Error::kind`].
///
/// ```
/// use tower_signed_redirect::ErrorKind;
///
/// // Redirect-handling failures, as opposed to network ones.
/// fn is_redirect_policy(kind: ErrorKind) -> bool {
///     !matches!(kind, ErrorKind::Upstream | ErrorKind::Storage)
/// }
/// assert!(is_redirect_policy(ErrorKind::RedirectLoop));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The inner service failed on the caller's request (before any redirect was seen).
    Upstream,
    /// The inner service failed on a storage hop (connect, TLS, reset, timeout...).
    Storage,
    /// More storage redirects than [`max_redirects`](crate::SignedRedirectLayer::max_redirects) allows.
    TooManyRedirects,
    /// A redirect pointed back to a URL already visited in this chain.
    RedirectLoop,
    /// A redirect from `https` to `http`, refused unless
    /// [`allow_https_downgrade`](crate::SignedRedirectLayer::allow_https_downgrade) is set.
    Downgrade,
    /// Storage redirected again with a `Location` that is missing, not a URI, ambiguous
    /// (several `Location` headers) or not `http`/`https`: there is no response the layer
    /// could safely hand to the caller.
    InvalidLocation,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Upstream => "upstream request failed",
            ErrorKind::Storage => "storage request failed",
            ErrorKind::TooManyRedirects => "too many storage redirects",
            ErrorKind::RedirectLoop => "storage redirect loop",
            ErrorKind::Downgrade => "refused https to http storage redirect",
            ErrorKind::InvalidLocation => "storage answered a redirect with an unusable Location",
        }
    }
}

/// The error of [`SignedRedirect`](crate::SignedRedirect).
///
/// `Display` and `Debug` never contain a signature or credential: URLs are printed
/// redacted (see [`SignedUrl`]), and the inner service's error message is scrubbed of the
/// secrets of the URL it failed on (the caller's own request URL, or a storage hop's) before
/// it is printed. [`source`](StdError::source) returns that scrubbed message;
/// [`Error::find_cause`] finds a typed cause (a timeout, say) in the inner service's error,
/// and [`Error::inner`] gives that error itself, for downcasting.
///
/// ```
/// use tower_signed_redirect::{Error, ErrorKind};
///
/// fn status_for(err: &Error) -> u16 {
///     match err.kind() {
///         ErrorKind::Upstream | ErrorKind::Storage => 502,
///         _ => 508,
///     }
/// }
/// # let _ = status_for;
/// ```
pub struct Error {
    kind: ErrorKind,
    url: Option<Box<str>>,
    detail: Option<Box<str>>,
    inner: Option<ScrubbedInner>,
}

struct ScrubbedInner {
    message: InnerMessage,
    error: BoxError,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, url: &Uri) -> Self {
        Error {
            kind,
            url: Some(Redacted(url).to_string().into()),
            detail: None,
            inner: None,
        }
    }

    /// The inner service failed on the caller's own request to `url`. Its URL is not
    /// printed (the caller has it), but its secrets are scrubbed from the inner error's
    /// message, which often quotes it.
    pub(crate) fn upstream(url: &Uri, error: BoxError) -> Self {
        Error {
            kind: ErrorKind::Upstream,
            url: None,
            detail: None,
            inner: Some(ScrubbedInner::new(url, error)),
        }
    }

    /// The inner service failed on the storage hop to `url`.
    pub(crate) fn storage(url: &Uri, error: BoxError) -> Self {
        Error {
            inner: Some(ScrubbedInner::new(url, error)),
            ..Error::new(ErrorKind::Storage, url)
        }
    }

    pub(crate) fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The URL of the hop that failed, redacted. `None` for [`ErrorKind::Upstream`].
    pub fn redacted_url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The inner service's error, for downcasting (e.g. to hyper-util's client error to tell
    /// a connect failure from a timeout).
    ///
    /// This is the inner service's own value: its `Display` or `Debug` may quote the
    /// signed URL, so print [`Error`] or its [`source`](StdError::source) instead.
    pub fn inner(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.inner.as_ref().map(|i| &*i.error)
    }

    /// Takes the inner service's error out (see [`Error::inner`]).
    pub fn into_inner(self) -> Option<BoxError> {
        self.inner.map(|i| i.error)
    }

    /// The first error of type `T` in the inner service's error and its chain of
    /// [`source`](StdError::source)s: a typed way to tell a timeout from a refused
    /// connection, which [`source`](StdError::source) (a scrubbed message) cannot.
    ///
    /// As with [`Error::inner`], the value found is the inner service's own: its `Display`
    /// may quote a signed URL, so match on its type and fields rather than print it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use http::{Request, Response};
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower::timeout::error::Elapsed;
    /// use tower_signed_redirect::SignedRedirectLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let client = tower::service_fn(|_: Request<String>| async {
    /// #     tokio::time::sleep(Duration::from_secs(10)).await;
    /// #     Ok::<_, std::convert::Infallible>(Response::new(String::new()))
    /// # });
    /// let client = ServiceBuilder::new()
    ///     .layer(SignedRedirectLayer::new())
    ///     .timeout(Duration::from_millis(10))
    ///     .service(client);
    /// let err = client.oneshot(Request::get("https://registry.example/v2/").body(String::new()).unwrap())
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.find_cause::<Elapsed>().is_some());
    /// # }
    /// ```
    pub fn find_cause<T: StdError + 'static>(&self) -> Option<&T> {
        let mut next = self.inner().map(|e| e as &(dyn StdError + 'static));
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<T>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }
}

impl ScrubbedInner {
    /// Keeps `error`, and its message with `url`'s secrets scrubbed for printing.
    fn new(url: &Uri, error: BoxError) -> Self {
        let message = InnerMessage(SignedUrl::new(url).scrub(&chain(&*error)).into());
        ScrubbedInner { message, error }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.describe())?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(url) = &self.url {
            write!(f, ": {url}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(url) = &self.url {
            d.field("url", url);
        }
        if let Some(detail) = &self.detail {
            d.field("detail", detail);
        }
        if let Some(inner) = &self.inner {
            d.field("inner", &inner.message);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .as_ref()
            .map(|i| &i.message as &(dyn StdError + 'static))
    }
}

/// The inner service's error message with the hop URL's secrets scrubbed: what
/// [`Error`]'s `source` returns.
struct InnerMessage(Box<str>);

impl fmt::Display for InnerMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InnerMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl StdError for InnerMessage {}

/// `error: its source: its source...`, the whole chain on one line.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}
