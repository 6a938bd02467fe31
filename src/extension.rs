use crate::signed_url::{SignatureScheme, SignedUrl};
use http::{StatusCode, Uri};
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
    redirect_status: StatusCode,
    storage_url: String,
    hops: usize,
    scheme: SignatureScheme,
    expires_at: Option<SystemTime>,
    head_fallback: bool,
}

impl FollowedRedirect {
    /// A record of one redirect, answered `redirect_status`, followed to `storage_url`.
    ///
    /// For tests of code that reads this extension, and for services that answer as the
    /// layer does. The URL is redacted here, and its scheme and expiry read from it, so the
    /// record never holds a secret.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_signed_redirect::{FollowedRedirect, SignatureScheme};
    ///
    /// let uri = "https://bucket.s3.amazonaws.com/blob?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab12"
    ///     .parse()
    ///     .unwrap();
    /// let followed = FollowedRedirect::new(StatusCode::TEMPORARY_REDIRECT, &uri).with_hops(2);
    /// assert_eq!(followed.storage_url(), "https://bucket.s3.amazonaws.com/blob?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=REDACTED");
    /// assert_eq!(followed.scheme(), SignatureScheme::AwsSigV4);
    /// assert_eq!((followed.hops(), followed.head_fallback()), (2, false));
    /// ```
    pub fn new(redirect_status: StatusCode, storage_url: &Uri) -> Self {
        let signed = SignedUrl::new(storage_url);
        FollowedRedirect {
            redirect_status,
            storage_url: signed.to_string(),
            hops: 1,
            scheme: signed.scheme(),
            expires_at: signed.expires_at(),
            head_fallback: false,
        }
    }

    /// Sets how many redirects were followed (default 1).
    pub fn with_hops(mut self, hops: usize) -> Self {
        self.hops = hops;
        self
    }

    /// Sets whether a `HEAD` was answered by a real `HEAD` after the range probe was
    /// rejected (default `false`).
    pub fn with_head_fallback(mut self, head_fallback: bool) -> Self {
        self.head_fallback = head_fallback;
        self
    }

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
