//! The redirect cache: the storage URL a redirect chain led to, remembered per request
//! (method, URI and credentials) until shortly before its signature expires, so that the
//! same request can go straight to storage without asking the registry again.

use crate::extension::FollowedRedirect;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, Method, StatusCode, Uri};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How long before its signature expires a cached URL stops being used, by default.
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// A cache of the storage URLs that redirects led to, shared by every service given it
/// (and by their clones): an opt-in for [`SignedRedirectLayer::redirect_cache`].
///
/// When a `GET` or `HEAD` has followed its redirects to storage and storage answered with
/// success, the final storage URL is remembered for that request: its method, its URI and
/// its credential identity (the values of `Authorization` and `Cookie`; a request without
/// them is the anonymous identity). The next request with the same three goes straight to
/// storage, under every rule a followed redirect has (a fresh request, the allowlisted
/// headers, the `HEAD` strategy, the URL's exact bytes). A URL is never used for another
/// identity.
///
/// A URL is kept until its signature's expiry ([`SignedUrl::expires_at`](crate::SignedUrl::expires_at)) minus a margin
/// ([`expiry_margin`](Self::expiry_margin), 60 s by default), and no longer than
/// [`max_age`](Self::max_age) if one is set. A URL whose expiry cannot be read is cached
/// only when a maximum age is set. If storage still refuses a cached URL (`400`, `401` or
/// `403`: revoked, clock skew...), the entry is dropped and the request is sent to the
/// registry again; the caller sees only that answer, and
/// [`FollowedRedirect::refreshed`](crate::FollowedRedirect::refreshed) says it happened.
///
/// The cache holds at most `capacity` entries; past it the oldest entries are dropped, so
/// memory stays flat under any number of distinct requests. Keys are 128-bit hashes (keyed
/// at random for each cache): credentials are not stored, and an entry cannot be found
/// without them. The URLs are secrets: `Debug` prints only the settings and the size.
/// Concurrent misses for one request each ask the registry; the last answer is kept.
///
/// ```
/// use std::time::Duration;
/// use tower_signed_redirect::{RedirectCache, SignedRedirectLayer};
///
/// let cache = RedirectCache::new(10_000).expiry_margin(Duration::from_secs(120));
/// // Several layers (one per worker thread, say) can share one cache.
/// let layer = SignedRedirectLayer::new().redirect_cache(cache.clone());
/// assert!(cache.is_empty());
/// # let _ = layer;
/// ```
///
/// [`SignedRedirectLayer::redirect_cache`]: crate::SignedRedirectLayer::redirect_cache
#[derive(Clone)]
pub struct RedirectCache {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    margin: Duration,
    max_age: Option<Duration>,
    keys: (RandomState, RandomState),
    map: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<CacheKey, Entry, BuildHasherDefault<KeyHasher>>,
    /// Keys in the order they were stored, with the store's number: the oldest go first.
    order: VecDeque<(CacheKey, u64)>,
    stores: u64,
}

/// A request's identity in the cache: a keyed 128-bit hash of its method, URI and
/// credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey(u64, u64);

/// The map's hasher: a [`CacheKey`] is already a keyed hash, so its bits are used as they
/// are instead of being hashed again.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `CacheKey`; this keeps any other input well mixed.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(32) ^ n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A remembered chain: where it ended, and what the record of following it says.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) storage: Uri,
    pub(crate) redirect_status: StatusCode,
    pub(crate) hops: usize,
    pub(crate) head_fallback: bool,
    valid_until: SystemTime,
    store: u64,
}

impl RedirectCache {
    /// A cache of at most `capacity` entries (`0`: nothing is cached).
    pub fn new(capacity: usize) -> Self {
        RedirectCache::with(capacity, DEFAULT_EXPIRY_MARGIN, None)
    }

    fn with(capacity: usize, margin: Duration, max_age: Option<Duration>) -> Self {
        RedirectCache {
            shared: Arc::new(Shared {
                capacity,
                margin,
                max_age,
                keys: (RandomState::new(), RandomState::new()),
                map: Mutex::default(),
            }),
        }
    }

    /// Stops using a URL this long before its signature expires (default 60 s), so that a
    /// download starts well before the deadline. Returns a new, empty cache: set it before
    /// sharing the cache.
    pub fn expiry_margin(self, margin: Duration) -> Self {
        let s = &self.shared;
        RedirectCache::with(s.capacity, margin, s.max_age)
    }

    /// Keeps no URL longer than `max_age`, and caches URLs whose expiry cannot be read for
    /// that long (by default they are not cached). Returns a new, empty cache: set it before
    /// sharing the cache.
    pub fn max_age(self, max_age: Duration) -> Self {
        let s = &self.shared;
        RedirectCache::with(s.capacity, s.margin, Some(max_age))
    }

    /// How many entries are held (some may have expired and not been dropped yet).
    pub fn len(&self) -> usize {
        self.entries().by_key.len()
    }

    /// `true` when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry.
    pub fn clear(&self) {
        *self.entries() = Entries::default();
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.shared.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key of a request: method, URI, and every `Authorization` and `Cookie` value.
    pub(crate) fn key(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> CacheKey {
        let hash = |state: &RandomState| {
            let mut h = state.build_hasher();
            // Whole strings, each ending in a marker (`str`'s `Hash`): no two requests
            // write the same sequence. (`Uri`'s own `Hash` goes byte by byte.)
            method.as_str().hash(&mut h);
            uri.scheme_str().hash(&mut h);
            uri.authority().map(|a| a.as_str()).hash(&mut h);
            uri.path_and_query().map(|p| p.as_str()).hash(&mut h);
            for name in [AUTHORIZATION, COOKIE] {
                for value in headers.get_all(&name) {
                    value.as_bytes().hash(&mut h);
                }
                // Ends this header's values: an `Authorization` never reads as a `Cookie`.
                0xffu8.hash(&mut h);
            }
            h.finish()
        };
        CacheKey(hash(&self.shared.keys.0), hash(&self.shared.keys.1))
    }

    /// The entry for `key`, if it is still valid (an expired one is dropped).
    pub(crate) fn get(&self, key: CacheKey) -> Option<Entry> {
        let mut entries = self.entries();
        let entry = entries.by_key.get(&key)?;
        if entry.valid_until > SystemTime::now() {
            return Some(entry.clone());
        }
        entries.by_key.remove(&key);
        None
    }

    /// Remembers where the request `key` ended, as `record` says, if its lifetime allows.
    pub(crate) fn insert(&self, key: CacheKey, record: &FollowedRedirect) {
        let shared = &self.shared;
        if shared.capacity == 0 {
            return;
        }
        let now = SystemTime::now();
        let by_signature = record
            .expires_at()
            .and_then(|expiry| expiry.checked_sub(shared.margin));
        let by_age = shared.max_age.and_then(|age| now.checked_add(age));
        let valid_until = match (by_signature, by_age) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        if valid_until <= now {
            return;
        }
        let mut entries = self.entries();
        entries.stores += 1;
        let store = entries.stores;
        let entry = Entry {
            storage: record.storage_uri().clone(),
            redirect_status: record.redirect_status(),
            hops: record.hops(),
            head_fallback: record.head_fallback(),
            valid_until,
            store,
        };
        entries.by_key.insert(key, entry);
        entries.order.push_back((key, store));
        while entries.by_key.len() > shared.capacity {
            let Some((oldest, store)) = entries.order.pop_front() else {
                break;
            };
            // A key stored again since is younger than this place in the order: keep it.
            if entries
                .by_key
                .get(&oldest)
                .is_some_and(|e| e.store == store)
            {
                entries.by_key.remove(&oldest);
            }
        }
        // Stale places (keys stored again, or dropped) are shed so the order stays bounded.
        if entries.order.len() > 2 * shared.capacity.max(16) {
            let Entries { by_key, order, .. } = &mut *entries;
            order.retain(|(k, s)| by_key.get(k).is_some_and(|e| e.store == *s));
        }
    }

    /// Forgets `key` (its URL was refused).
    pub(crate) fn remove(&self, key: CacheKey) {
        self.entries().by_key.remove(&key);
    }
}

impl fmt::Debug for RedirectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedirectCache")
            .field("capacity", &self.shared.capacity)
            .field("expiry_margin", &self.shared.margin)
            .field("max_age", &self.shared.max_age)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(expires_in_secs: u64, n: usize) -> Uri {
        let date = crate::signed_url::format_basic_timestamp(SystemTime::now());
        format!(
            "https://b.s3.amazonaws.com/{n}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={date}&X-Amz-Expires={expires_in_secs}&X-Amz-Signature=s"
        )
        .parse()
        .unwrap()
    }

    fn record(status: StatusCode, storage: &Uri) -> FollowedRedirect {
        FollowedRedirect::new(status, storage)
    }

    fn key(cache: &RedirectCache, auth: Option<&'static str>) -> CacheKey {
        let mut headers = HeaderMap::new();
        if let Some(a) = auth {
            headers.insert(AUTHORIZATION, http::HeaderValue::from_static(a));
        }
        cache.key(
            &Method::GET,
            &"https://r/v2/x/blobs/sha256:1".parse().unwrap(),
            &headers,
        )
    }

    #[test]
    fn entries_live_until_the_margin_before_expiry() {
        let cache = RedirectCache::new(8);
        let k = key(&cache, None);
        cache.insert(k, &record(StatusCode::TEMPORARY_REDIRECT, &signed(600, 0)));
        assert!(cache.get(k).is_some());
        // Expiring within the margin: not kept.
        let k2 = key(&cache, Some("Bearer other"));
        cache.insert(k2, &record(StatusCode::TEMPORARY_REDIRECT, &signed(30, 1)));
        assert!(cache.get(k2).is_none());
        // No readable expiry: not kept, unless a maximum age is set.
        let unsigned: Uri = "https://b.s3.amazonaws.com/x".parse().unwrap();
        cache.insert(k2, &record(StatusCode::FOUND, &unsigned));
        assert!(cache.get(k2).is_none());
        let aged = RedirectCache::new(8).max_age(Duration::from_secs(60));
        let k3 = key(&aged, None);
        aged.insert(k3, &record(StatusCode::FOUND, &unsigned));
        assert!(aged.get(k3).is_some());
    }

    #[test]
    fn identities_and_methods_are_distinct_keys() {
        let cache = RedirectCache::new(8);
        let uri: Uri = "https://r/v2/x/blobs/sha256:1".parse().unwrap();
        let mut cookie = HeaderMap::new();
        cookie.insert(COOKIE, http::HeaderValue::from_static("Bearer a"));
        let mut auth = HeaderMap::new();
        auth.insert(AUTHORIZATION, http::HeaderValue::from_static("Bearer a"));
        let mut two = HeaderMap::new();
        two.append(AUTHORIZATION, http::HeaderValue::from_static("Bearer"));
        two.append(AUTHORIZATION, http::HeaderValue::from_static(" a"));
        let other = |u: &str| cache.key(&Method::GET, &u.parse().unwrap(), &HeaderMap::new());
        let keys = [
            cache.key(&Method::GET, &uri, &HeaderMap::new()),
            cache.key(&Method::HEAD, &uri, &HeaderMap::new()),
            cache.key(&Method::GET, &uri, &auth),
            cache.key(&Method::GET, &uri, &cookie),
            cache.key(&Method::GET, &uri, &two),
            other("http://r/v2/x/blobs/sha256:1"),
            other("https://r2/v2/x/blobs/sha256:1"),
            other("https://r/v2/x/blobs/sha256:2"),
            other("https://r/v2/x/blobs/sha256:1?a=b"),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(keys[2], cache.key(&Method::GET, &uri, &auth));
        // Another cache keys differently: keys say nothing outside their cache.
        assert_ne!(
            keys[2],
            RedirectCache::new(8).key(&Method::GET, &uri, &auth)
        );
    }

    #[test]
    fn capacity_holds_under_any_number_of_keys() {
        let cache = RedirectCache::new(4);
        let uri = signed(600, 0);
        for i in 0..1000u64 {
            cache.insert(CacheKey(i, i), &record(StatusCode::FOUND, &uri));
            // Some keys come back, so the order has stale places to shed.
            cache.insert(CacheKey(i % 3, i % 3), &record(StatusCode::FOUND, &uri));
        }
        assert!(cache.len() <= 4);
        assert!(cache.entries().order.len() <= 2 * 16 + 2);
        assert!(
            cache.get(CacheKey(999, 999)).is_some(),
            "the newest are kept"
        );
        assert!(!format!("{cache:?}").contains("amazonaws"));
    }
}
