use super::StorageMatcher;
use crate::signed_url::{SignatureScheme, SignedUrl};
use http::Uri;

/// Accepts any URL whose query carries a recognised signature, whatever its host.
///
/// Opt-in, and best combined with a host matcher: it follows a redirect to *any* host that
/// presents something shaped like a pre-signed URL (see [`SignatureScheme`] for what is
/// recognised), including internal hosts.
///
/// ```
/// use tower_signed_redirect::matcher::{SignedQuery, StorageMatcher};
///
/// let m = SignedQuery::new();
/// assert!(m.matches(&"https://minio.local/b/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab".parse().unwrap()));
/// assert!(!m.matches(&"https://minio.local/b/o?version=2".parse().unwrap()));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignedQuery {
    _priv: (),
}

impl SignedQuery {
    /// The matcher.
    pub const fn new() -> Self {
        SignedQuery { _priv: () }
    }
}

impl StorageMatcher for SignedQuery {
    fn matches(&self, uri: &Uri) -> bool {
        SignedUrl::new(uri).scheme() != SignatureScheme::Unknown
    }
}
