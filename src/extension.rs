use crate::signed_url::SignatureScheme;
use http::StatusCode;
use std::time::SystemTime;

/// Response extension: what the layer did to produce this response.
///
/// Present only on responses the layer fetched from storage. A proxy can log or meter it;
/// the URL in it is redacted.
///
/// ```
/// use http::Response;
/// use tower_signed_redirect::FollowedRedirect;
///
/// fn log_it<B>(res: &Response<B>) {
///     if let Some(f) = res.extensions().get::<FollowedRedirect>() {
///         println!("{} after {} hop(s): {} ({})", f.redirect_status(), f.hops(), f.storage_url(), f.scheme());
///     }
/// }
/// # log_it(&Response::new(()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowedRedirect {
    pub(crate) redirect_status: StatusCode,
    pub(crate) storage_url: String,
    pub(crate) hops: usize,
    pub(crate) scheme: SignatureScheme,
    pub(crate) expires_at: Option<SystemTime>,
    pub(crate) head_fallback: bool,
}

impl FollowedRedirect {
    /// The status of the upstream's redirect (301, 302, 303, 307 or 308 by default).
    pub fn redirect_status(&self) -> StatusCode {
        self.redirect_status
    }

    /// The URL storage answered from (the last hop), with credentials redacted.
    pub fn storage_url(&self) -> &str {
        &self.storage_url
    }

    /// How many redirects were followed: 1 for registry → storage.
    pub fn hops(&self) -> usize {
        self.hops
    }

    /// How the storage URL is signed.
    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// When the storage URL's signature expires, where it says.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// `true` when a `HEAD` was answered by a real `HEAD` to storage after the ranged `GET`
    /// probe was rejected (a URL signed for `HEAD` only).
    pub fn head_fallback(&self) -> bool {
        self.head_fallback
    }
}
