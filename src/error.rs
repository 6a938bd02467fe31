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
    /// The inner service failed on the original request (before any redirect was seen).
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
/// hop URL's secrets before it is printed. [`source`](StdError::source) returns that
/// scrubbed message; [`Error::inner`] gives the inner service's error itself, for
/// downcasting.
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

    pub(crate) fn upstream(error: BoxError) -> Self {
        Error {
            kind: ErrorKind::Upstream,
            url: None,
            detail: None,
            inner: Some(ScrubbedInner {
                message: InnerMessage(chain(&*error).into()),
                error,
            }),
        }
    }

    pub(crate) fn storage(url: &Uri, error: BoxError) -> Self {
        let signed = SignedUrl::new(url);
        let message = InnerMessage(signed.scrub(&chain(&*error)).into());
        Error {
            inner: Some(ScrubbedInner { message, error }),
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
