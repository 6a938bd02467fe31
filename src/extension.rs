use crate::signed_url::{SignatureScheme, SignedUrl};
use http::{StatusCode, Uri};
use std::fmt;
use std::sync::OnceLock;
use std::time::SystemTime;

/// Response extension: what the layer did to produce this response.
///
/// Present only on responses the layer fetched from storage. A proxy can log or meter it;
/// the URL it gives is redacted. (It keeps the storage URL to render it redacted, and read
/// its scheme and expiry, the first time they are asked for: nothing is formatted for a
/// response whose record nobody reads.)
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
#[derive(Clone)]
pub struct FollowedRedirect {
    redirect_status: StatusCode,
    /// The signed URL itself: never printed or handed out whole.
    storage: Uri,
    hops: usize,
    head_fallback: bool,
    from_cache: bool,
    refreshed: bool,
    joined_flight: bool,
    read: OnceLock<Read>,
}

/// What is read from the storage URL, once.
#[derive(Clone)]
struct Read {
    redacted: Box<str>,
    scheme: SignatureScheme,
    expires_at: Option<SystemTime>,
}

impl FollowedRedirect {
    /// A record of one redirect, answered `redirect_status`, followed to `storage_url`.
    ///
    /// For tests of code that reads this extension, and for services that answer as the
    /// layer does. The record keeps the URL but hands out only its redacted form, its
    /// scheme and its expiry (read from it the first time one is asked for).
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
        FollowedRedirect {
            redirect_status,
            storage: storage_url.clone(),
            hops: 1,
            head_fallback: false,
            from_cache: false,
            refreshed: false,
            joined_flight: false,
            read: OnceLock::new(),
        }
    }

    /// The signed URL itself, for the redirect cache.
    pub(crate) fn storage_uri(&self) -> &Uri {
        &self.storage
    }

    fn read(&self) -> &Read {
        self.read.get_or_init(|| {
            let signed = SignedUrl::new(&self.storage);
            Read {
                redacted: signed.to_string().into(),
                scheme: signed.scheme(),
                expires_at: signed.expires_at(),
            }
        })
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

    /// Sets whether the answer came from a cached storage URL, and whether a cached URL was
    /// refused and the registry asked again (both `false` by default).
    pub fn with_cache(mut self, from_cache: bool, refreshed: bool) -> Self {
        self.from_cache = from_cache;
        self.refreshed = refreshed;
        self
    }

    /// `true` when the answer came from a storage URL in the
    /// [`RedirectCache`](crate::RedirectCache), without asking the registry. The status,
    /// hops and URL are then those of the chain that led to it when it was cached.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// `true` when storage refused a cached URL, and the answer came from asking the
    /// registry again.
    pub fn refreshed(&self) -> bool {
        self.refreshed
    }

    /// Sets whether the request waited for another's registry round trip (`false` by
    /// default).
    pub fn with_joined_flight(mut self, joined: bool) -> Self {
        self.joined_flight = joined;
        self
    }

    /// `true` when, with [`RedirectCache::single_flight`](crate::RedirectCache::single_flight),
    /// the request waited for another request's registry round trip and went to storage with
    /// the URL that one cached.
    pub fn joined_flight(&self) -> bool {
        self.joined_flight
    }

    /// The status of the upstream's redirect (301, 302, 303, 307 or 308 by default).
    pub fn redirect_status(&self) -> StatusCode {
        self.redirect_status
    }

    /// The URL storage answered from (the last hop), with credentials redacted.
    pub fn storage_url(&self) -> &str {
        &self.read().redacted
    }

    /// How many redirects were followed: 1 for registry → storage.
    pub fn hops(&self) -> usize {
        self.hops
    }

    /// How the storage URL is signed.
    pub fn scheme(&self) -> SignatureScheme {
        self.read().scheme
    }

    /// When the storage URL's signature expires, where it says.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.read().expires_at
    }

    /// `true` when a `HEAD` was answered by a real `HEAD` to storage after the ranged `GET`
    /// probe was rejected (a URL signed for `HEAD` only).
    pub fn head_fallback(&self) -> bool {
        self.head_fallback
    }
}

impl PartialEq for FollowedRedirect {
    fn eq(&self, other: &Self) -> bool {
        (
            self.redirect_status,
            &self.storage,
            self.hops,
            self.head_fallback,
            self.from_cache,
            self.refreshed,
            self.joined_flight,
        ) == (
            other.redirect_status,
            &other.storage,
            other.hops,
            other.head_fallback,
            other.from_cache,
            other.refreshed,
            other.joined_flight,
        )
    }
}

impl Eq for FollowedRedirect {}

impl fmt::Debug for FollowedRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowedRedirect")
            .field("redirect_status", &self.redirect_status)
            .field("storage_url", &self.storage_url())
            .field("hops", &self.hops)
            .field("scheme", &self.scheme())
            .field("expires_at", &self.expires_at())
            .field("head_fallback", &self.head_fallback)
            .field("from_cache", &self.from_cache)
            .field("refreshed", &self.refreshed)
            .field("joined_flight", &self.joined_flight)
            .finish()
    }
}
