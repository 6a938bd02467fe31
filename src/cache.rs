//! The redirect cache: the storage URL a redirect chain led to, remembered per request
//! (method, URI and credential identity) until shortly before its signature expires, so
//! that the same request can go straight to storage without asking the registry again.
//!
//! Every rule of the cache is here: how a request is keyed ([`RedirectCache::lookup`]), how
//! long an entry lives ([`Ticket::store`]), and what a refused cached URL does
//! ([`Ticket::forget`]). The response future only calls these.

use crate::extension::FollowedRedirect;
use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE};
use http::{Extensions, HeaderMap, Method, Request, StatusCode, Uri};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, SystemTime};

/// How long before its signature expires a cached URL stops being used, by default.
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// A cache of the storage URLs that redirects led to, shared by every service given it
/// (and by their clones): an opt-in for [`SignedRedirectLayer::redirect_cache`].
///
/// When a `GET` or `HEAD` has followed its redirects to storage and storage answered with
/// success, the final storage URL is remembered for that request: its method, its URI and
/// its credential **identity**. By default the identity is the values of `Authorization`
/// and `Cookie` (a request without them is the anonymous identity); [`identity`](Self::identity)
/// replaces that rule. The next request with the same three goes straight to storage,
/// under every rule a followed redirect has (a fresh request, the allowlisted headers, the
/// `HEAD` strategy, the URL's exact bytes). A URL is never used for another identity.
///
/// A URL is kept until its signature's expiry ([`SignedUrl::expires_at`](crate::SignedUrl::expires_at)) minus a margin
/// ([`expiry_margin`](Self::expiry_margin), 60 s by default), no longer than
/// [`max_age`](Self::max_age) if one is set, and no longer than the identity's own
/// [`valid_until`](CacheIdentity::valid_until) (a login's token lifetime, say). A URL whose
/// expiry cannot be read is cached only when a maximum age is set. If storage still refuses
/// a cached URL (`400`, `401`, `403` or `405`: revoked, clock skew...), the entry is dropped
/// and the request is sent to the registry again; the caller sees only that answer, and
/// [`FollowedRedirect::refreshed`](crate::FollowedRedirect::refreshed) says it happened.
///
/// The cache holds at most `capacity` entries; past it the oldest entries are dropped, so
/// memory stays flat under any number of distinct requests. Keys are 128-bit hashes (keyed
/// at random for each cache): credentials are not stored, and an entry cannot be found
/// without them. The URLs are secrets: `Debug` prints only the settings and the size.
/// Concurrent misses for one request each ask the registry (the last answer is kept), unless
/// [`single_flight`](Self::single_flight) is on.
///
/// The builder methods change the settings of this handle (and of the clones made from it
/// afterwards); the entries are kept, and shared with every clone.
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
    settings: Arc<Settings>,
    store: Arc<Store>,
}

#[derive(Clone)]
struct Settings {
    margin: Duration,
    max_age: Option<Duration>,
    identity: Identify,
    single_flight: bool,
}

/// How a request's identity is found.
#[derive(Clone)]
enum Identify {
    /// The values of `Authorization` and `Cookie`.
    Credentials,
    /// The caller's rule.
    With(Arc<IdentityFn>),
}

type IdentityFn = dyn Fn(&HeaderMap, &Extensions) -> Option<CacheIdentity> + Send + Sync;

struct Store {
    capacity: usize,
    keys: (RandomState, RandomState),
    map: Mutex<Entries>,
    /// The registry round trips under way, with single-flight: one per key.
    flights: Mutex<HashMap<CacheKey, Arc<Flight>, BuildHasherDefault<KeyHasher>>>,
}

/// One registry round trip that requests of the same key wait for.
#[derive(Default)]
struct Flight {
    state: Mutex<FlightState>,
}

#[derive(Default)]
struct FlightState {
    /// `Some` once the leader is done: `true` when it stored a URL.
    stored: Option<bool>,
    wakers: Vec<Waker>,
}

impl Flight {
    fn finish(&self, stored: bool) {
        let wakers = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.stored.is_some() {
                return;
            }
            state.stored = Some(stored);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Who a request is, for the [`RedirectCache`]: entries stored for one identity are found
/// only by requests of the same identity.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_signed_redirect::{CacheIdentity, RedirectCache};
///
/// /// The proxy's own login stands for every client: they all share its entries.
/// #[derive(Clone)]
/// struct ProxyLogin;
///
/// let cache = RedirectCache::new(10_000).identity(|headers, extensions| {
///     if extensions.get::<ProxyLogin>().is_some() {
///         return Some(CacheIdentity::new("proxy"));
///     }
///     // A client's own token: its entries live no longer than the token.
///     let token = headers.get("authorization")?.as_bytes().to_vec();
///     Some(CacheIdentity::new(token).valid_until(SystemTime::now() + Duration::from_secs(300)))
/// });
/// # let _ = cache;
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CacheIdentity {
    key: Bytes,
    valid_until: Option<SystemTime>,
}

impl CacheIdentity {
    /// An identity named by `key` (a user name, a hash of a login, `"anonymous"`...). Only
    /// its hash, keyed for each cache, is kept.
    pub fn new(key: impl Into<Bytes>) -> Self {
        CacheIdentity {
            key: key.into(),
            valid_until: None,
        }
    }

    /// Entries stored for this request are used no later than `t`: the end of the login's
    /// token, so that a login the registry revokes loses what it cached when its token
    /// would have expired anyway.
    pub fn valid_until(mut self, t: SystemTime) -> Self {
        self.valid_until = Some(t);
        self
    }
}

impl fmt::Debug for CacheIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key may be a credential.
        f.debug_struct("CacheIdentity")
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("valid_until", &self.valid_until)
            .finish()
    }
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<CacheKey, Entry, BuildHasherDefault<KeyHasher>>,
    /// Keys in the order they were stored, with the store's number: the oldest go first.
    order: VecDeque<(CacheKey, u64)>,
    stores: u64,
}

/// A request's place in the cache: a keyed 128-bit hash of its method, URI and identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CacheKey(u64, u64);

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

/// What the cache says about a request.
pub(crate) enum Lookup {
    /// Not cached: the request's identity rule said so, or there is no cache.
    Bypass,
    /// Nothing valid is held: where to store the chain's end. With single-flight, this
    /// request leads: the others with its key wait for it.
    Miss(Ticket),
    /// Storage's URL for the request, and where to drop it if storage refuses it.
    Hit(Entry, Ticket),
    /// With single-flight: another request with this key is asking the registry.
    Wait(Waiting),
}

/// A request's place in the cache, kept by its future: the chain's end is stored through
/// it, or a refused URL forgotten. A leader's ticket ends its flight when it stores, or when
/// it is dropped without storing (the answer was no redirect, storage refused, an error,
/// the caller gave up).
pub(crate) struct Ticket {
    cache: RedirectCache,
    key: CacheKey,
    /// The identity's own limit.
    valid_until: Option<SystemTime>,
    /// The flight this request leads.
    flight: Option<Arc<Flight>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.end_flight(false);
    }
}

/// A request waiting for the flight of its key to end.
pub(crate) struct Waiting {
    cache: RedirectCache,
    flight: Arc<Flight>,
}

impl fmt::Debug for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiting").finish_non_exhaustive()
    }
}

/// What a waiting request does once the flight ended.
pub(crate) enum Resumed {
    /// The leader stored a URL (or another did since): look it up.
    Lookup(Lookup),
    /// The leader stored nothing: this request asks the registry itself (and may store).
    OwnTry(Ticket),
}

impl Waiting {
    /// Ready when the flight ended; then what the request does, for `req`.
    pub(crate) fn poll_resume<B>(
        &self,
        req: &Request<B>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Resumed> {
        let stored = {
            let mut state = self.flight.state.lock().unwrap_or_else(|e| e.into_inner());
            match state.stored {
                Some(stored) => stored,
                None => {
                    if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        state.wakers.push(cx.waker().clone());
                    }
                    return std::task::Poll::Pending;
                }
            }
        };
        std::task::Poll::Ready(match self.cache.lookup(req) {
            Lookup::Miss(mut ticket) if !stored => {
                // No flight of our own after a failed one: every waiter tries at once, so a
                // failure is not waited out once per waiter.
                ticket.end_flight(false);
                Resumed::OwnTry(ticket)
            }
            lookup => Resumed::Lookup(lookup),
        })
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

impl RedirectCache {
    /// A cache of at most `capacity` entries (`0`: nothing is cached).
    pub fn new(capacity: usize) -> Self {
        RedirectCache {
            settings: Arc::new(Settings {
                margin: DEFAULT_EXPIRY_MARGIN,
                max_age: None,
                identity: Identify::Credentials,
                single_flight: false,
            }),
            store: Arc::new(Store {
                capacity,
                keys: (RandomState::new(), RandomState::new()),
                map: Mutex::default(),
                flights: Mutex::default(),
            }),
        }
    }

    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Stops using a URL this long before its signature expires (default 60 s), so that a
    /// download starts well before the deadline.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.settings_mut().margin = margin;
        self
    }

    /// Keeps no URL longer than `max_age`, and caches URLs whose expiry cannot be read for
    /// that long (by default they are not cached).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.settings_mut().max_age = Some(max_age);
        self
    }

    /// Sends one request to the registry for concurrent misses of one key (method, URI and
    /// identity) instead of one each (default: off).
    ///
    /// The first miss leads: it asks the registry as usual. Requests with the same key that
    /// arrive while it is under way wait, without sending anything, until the leader's
    /// redirect chain has reached storage's response head (its storage URL is then cached and
    /// they go straight to storage with it) or has ended without a URL to cache: the
    /// registry answered something else, storage refused, an error, or the leader's caller
    /// dropped its future. Then each waiter sends its own request, all at once. No timer is
    /// involved: a waiter waits as long as the leader's request takes, which the inner
    /// service's timeouts bound (compose a `tower::timeout` inside the layer).
    ///
    /// A waiter makes progress only while its leader's future is polled: one task that calls
    /// the service twice for the same key and awaits the second response first waits
    /// forever, and a hedging layer outside this one gains nothing. Requests that are never
    /// redirected (a manifest, a tag list) wait one round trip for nothing: give them no
    /// identity ([`identity`](Self::identity) returning `None`) to keep them out of the
    /// cache.
    pub fn single_flight(mut self, on: bool) -> Self {
        self.settings_mut().single_flight = on;
        self
    }

    /// Replaces the rule that says who a request is (default: the values of its
    /// `Authorization` and `Cookie` headers). `identity` sees the request's headers and
    /// extensions; `None` means the request is neither looked up nor stored.
    ///
    /// A proxy that logs in to the registry itself can give every client one identity, so
    /// that they share entries; one that passes clients' tokens through can key entries by
    /// the login behind a token rather than the token (which changes on every pull), and
    /// bound them by the token's lifetime with [`CacheIdentity::valid_until`]. The registry
    /// mirror in this repository (`mirror/`) does both.
    pub fn identity<F>(mut self, identity: F) -> Self
    where
        F: Fn(&HeaderMap, &Extensions) -> Option<CacheIdentity> + Send + Sync + 'static,
    {
        self.settings_mut().identity = Identify::With(Arc::new(identity));
        self
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

    /// Drops what is held for `req` (the same method, URI and identity), if anything: for a
    /// caller that found storage's answer wrong, a body whose digest did not match, say.
    pub fn remove<B>(&self, req: &Request<B>) {
        if let Some((key, _)) = self.key(req.method(), req.uri(), req.headers(), req.extensions()) {
            self.entries().by_key.remove(&key);
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.store.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the cache holds for `req`.
    pub(crate) fn lookup<B>(&self, req: &Request<B>) -> Lookup {
        let Some((key, valid_until)) =
            self.key(req.method(), req.uri(), req.headers(), req.extensions())
        else {
            return Lookup::Bypass;
        };
        let mut ticket = Ticket {
            cache: self.clone(),
            key,
            valid_until,
            flight: None,
        };
        if let Some(entry) = self.get(key) {
            return Lookup::Hit(entry, ticket);
        }
        if self.settings.single_flight && self.store.capacity > 0 {
            let mut flights = self.store.flights.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(flight) = flights.get(&key) {
                return Lookup::Wait(Waiting {
                    cache: self.clone(),
                    flight: flight.clone(),
                });
            }
            let flight = Arc::new(Flight::default());
            flights.insert(key, flight.clone());
            ticket.flight = Some(flight);
        }
        Lookup::Miss(ticket)
    }

    /// The key of a request: method, URI and identity; and the identity's own limit.
    fn key(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Option<(CacheKey, Option<SystemTime>)> {
        let identity = match &self.settings.identity {
            Identify::Credentials => None,
            Identify::With(f) => Some(f(headers, extensions)?),
        };
        let hash = |state: &RandomState| {
            let mut h = state.build_hasher();
            // Whole strings, each ending in a marker (`str`'s `Hash`): no two requests
            // write the same sequence. (`Uri`'s own `Hash` goes byte by byte.)
            method.as_str().hash(&mut h);
            uri.scheme_str().hash(&mut h);
            uri.authority().map(|a| a.as_str()).hash(&mut h);
            uri.path_and_query().map(|p| p.as_str()).hash(&mut h);
            match &identity {
                Some(identity) => {
                    0u8.hash(&mut h);
                    identity.key.as_ref().hash(&mut h);
                }
                None => {
                    1u8.hash(&mut h);
                    for name in [AUTHORIZATION, COOKIE] {
                        for value in headers.get_all(&name) {
                            value.as_bytes().hash(&mut h);
                        }
                        // Ends this header's values: an `Authorization` never reads as a
                        // `Cookie`.
                        0xffu8.hash(&mut h);
                    }
                }
            }
            h.finish()
        };
        let keys = &self.store.keys;
        let key = CacheKey(hash(&keys.0), hash(&keys.1));
        Some((key, identity.and_then(|i| i.valid_until)))
    }

    /// The entry for `key`, if it is still valid (an expired one is dropped).
    fn get(&self, key: CacheKey) -> Option<Entry> {
        let mut entries = self.entries();
        let entry = entries.by_key.get(&key)?;
        if entry.valid_until > SystemTime::now() {
            return Some(entry.clone());
        }
        entries.by_key.remove(&key);
        None
    }
}

impl Ticket {
    /// Remembers where the request ended, as `record` says, if its lifetime allows: the
    /// earliest signature expiry along the chain (`expires_at`: no hop may outlive the
    /// registry's own URL) less the margin, the maximum age, the identity's limit.
    pub(crate) fn store(&mut self, record: &FollowedRedirect, expires_at: Option<SystemTime>) {
        let RedirectCache { settings, store } = &self.cache;
        if store.capacity == 0 {
            return self.end_flight(false);
        }
        let now = SystemTime::now();
        let by_signature = expires_at.and_then(|expiry| expiry.checked_sub(settings.margin));
        let by_age = settings.max_age.and_then(|age| now.checked_add(age));
        let Some(mut valid_until) = by_signature.or(by_age) else {
            return self.end_flight(false);
        };
        for limit in [by_age, self.valid_until].into_iter().flatten() {
            valid_until = valid_until.min(limit);
        }
        if valid_until <= now {
            return self.end_flight(false);
        }
        let mut entries = self.cache.entries();
        entries.stores += 1;
        let number = entries.stores;
        let entry = Entry {
            storage: record.storage_uri().clone(),
            redirect_status: record.redirect_status(),
            hops: record.hops(),
            head_fallback: record.head_fallback(),
            valid_until,
            store: number,
        };
        let key = self.key;
        entries.by_key.insert(key, entry);
        entries.order.push_back((key, number));
        while entries.by_key.len() > store.capacity {
            let Some((oldest, number)) = entries.order.pop_front() else {
                break;
            };
            // A key stored again since is younger than this place in the order: keep it.
            if entries
                .by_key
                .get(&oldest)
                .is_some_and(|e| e.store == number)
            {
                entries.by_key.remove(&oldest);
            }
        }
        // Stale places (keys stored again, or dropped) are shed so the order stays bounded.
        if entries.order.len() > 2 * store.capacity.max(16) {
            let Entries { by_key, order, .. } = &mut *entries;
            order.retain(|(k, s)| by_key.get(k).is_some_and(|e| e.store == *s));
        }
        drop(entries);
        self.end_flight(true);
    }

    /// Ends the flight this request leads, if any: the waiters go on.
    fn end_flight(&mut self, stored: bool) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        {
            let mut flights = self
                .cache
                .store
                .flights
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if flights
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &flight))
            {
                flights.remove(&self.key);
            }
        }
        flight.finish(stored);
    }

    /// Forgets the request's entry: storage refused its URL.
    pub(crate) fn forget(&self) {
        self.cache.entries().by_key.remove(&self.key);
    }
}

impl fmt::Debug for RedirectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let identity = match &self.settings.identity {
            Identify::Credentials => "Authorization and Cookie",
            Identify::With(_) => "custom",
        };
        f.debug_struct("RedirectCache")
            .field("capacity", &self.store.capacity)
            .field("expiry_margin", &self.settings.margin)
            .field("max_age", &self.settings.max_age)
            .field("identity", &identity)
            .field("single_flight", &self.settings.single_flight)
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

    impl Ticket {
        /// Stores a one-hop chain to `storage`, as the future does.
        fn store_record(mut self, status: StatusCode, storage: &Uri) {
            let record = record(status, storage);
            self.store(&record, record.expires_at());
        }
    }

    fn request(method: Method, uri: &str, auth: Option<&'static str>) -> Request<()> {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        req.body(()).unwrap()
    }

    fn ticket(cache: &RedirectCache, req: &Request<()>) -> Ticket {
        match cache.lookup(req) {
            Lookup::Miss(t) | Lookup::Hit(_, t) => t,
            Lookup::Bypass | Lookup::Wait(_) => panic!("bypassed or waiting"),
        }
    }

    fn hit(cache: &RedirectCache, req: &Request<()>) -> bool {
        matches!(cache.lookup(req), Lookup::Hit(..))
    }

    const BLOB: &str = "https://r/v2/x/blobs/sha256:1";

    #[test]
    fn entries_live_until_the_margin_before_expiry() {
        let cache = RedirectCache::new(8);
        let req = request(Method::GET, BLOB, None);
        ticket(&cache, &req).store_record(StatusCode::TEMPORARY_REDIRECT, &signed(600, 0));
        assert!(hit(&cache, &req));
        // Expiring within the margin: not kept.
        let other = request(Method::GET, BLOB, Some("Bearer other"));
        ticket(&cache, &other).store_record(StatusCode::TEMPORARY_REDIRECT, &signed(30, 1));
        assert!(!hit(&cache, &other));
        // No readable expiry: not kept, unless a maximum age is set.
        let unsigned: Uri = "https://b.s3.amazonaws.com/x".parse().unwrap();
        ticket(&cache, &other).store_record(StatusCode::FOUND, &unsigned);
        assert!(!hit(&cache, &other));
        let aged = RedirectCache::new(8).max_age(Duration::from_secs(60));
        ticket(&aged, &req).store_record(StatusCode::FOUND, &unsigned);
        assert!(hit(&aged, &req));
    }

    #[test]
    fn no_hop_outlives_the_first_urls_expiry() {
        let cache = RedirectCache::new(8);
        let req = request(Method::GET, BLOB, None);
        let mut t = ticket(&cache, &req);
        // The last hop says 7 days; the registry's URL said 10 minutes.
        let record = record(StatusCode::FOUND, &signed(7 * 86_400, 1));
        let first = crate::SignedUrl::new(&signed(600, 0)).expires_at();
        t.store(&record, first);
        let kept = cache.entries().by_key[&t.key].valid_until;
        assert!(kept <= first.unwrap() - DEFAULT_EXPIRY_MARGIN);
        // And `remove` drops it, as for a body that did not match its digest.
        cache.remove(&req);
        assert!(!hit(&cache, &req));
    }

    #[test]
    fn settings_change_in_place_and_keep_the_entries() {
        let cache = RedirectCache::new(8);
        let req = request(Method::GET, BLOB, None);
        ticket(&cache, &req).store_record(StatusCode::FOUND, &signed(600, 0));
        let cache = cache
            .expiry_margin(Duration::from_secs(5))
            .max_age(Duration::from_secs(60));
        assert!(hit(&cache, &req), "the builder methods emptied the cache");
        assert_eq!(cache.settings.margin, Duration::from_secs(5));
    }

    #[test]
    fn an_identitys_limit_bounds_its_entries() {
        let soon = SystemTime::now() + Duration::from_secs(2);
        let cache = RedirectCache::new(8).identity(move |headers, _| {
            let auth = headers.get(AUTHORIZATION)?;
            Some(CacheIdentity::new(auth.as_bytes().to_vec()).valid_until(soon))
        });
        let req = request(Method::GET, BLOB, Some("Bearer short-lived"));
        let t = ticket(&cache, &req);
        let key = t.key;
        t.store_record(StatusCode::FOUND, &signed(600, 0));
        assert!(hit(&cache, &req));
        assert_eq!(cache.entries().by_key[&key].valid_until, soon);
        // No identity: neither looked up nor stored.
        assert!(matches!(
            cache.lookup(&request(Method::GET, BLOB, None)),
            Lookup::Bypass
        ));
    }

    #[test]
    fn one_identity_shares_entries_whatever_its_credentials() {
        let cache = RedirectCache::new(8).identity(|_, extensions| {
            extensions
                .get::<&'static str>()
                .map(|who| CacheIdentity::new(*who))
        });
        let as_ = |who: &'static str, auth| {
            let mut req = request(Method::GET, BLOB, Some(auth));
            req.extensions_mut().insert(who);
            req
        };
        ticket(&cache, &as_("anonymous", "Bearer t1"))
            .store_record(StatusCode::FOUND, &signed(600, 0));
        assert!(hit(&cache, &as_("anonymous", "Bearer t2")));
        assert!(!hit(&cache, &as_("alice", "Bearer t1")));
    }

    #[test]
    fn identities_and_methods_are_distinct_keys() {
        let cache = RedirectCache::new(8);
        let key = |req: Request<()>| match cache.lookup(&req) {
            Lookup::Miss(t) | Lookup::Hit(_, t) => t.key,
            Lookup::Bypass | Lookup::Wait(_) => unreachable!(),
        };
        let with = |name: http::HeaderName, values: &[&'static str]| {
            let mut req = request(Method::GET, BLOB, None);
            for v in values {
                req.headers_mut()
                    .append(name.clone(), http::HeaderValue::from_static(v));
            }
            req
        };
        let keys = [
            key(request(Method::GET, BLOB, None)),
            key(request(Method::HEAD, BLOB, None)),
            key(with(AUTHORIZATION, &["Bearer a"])),
            key(with(COOKIE, &["Bearer a"])),
            key(with(AUTHORIZATION, &["Bearer", " a"])),
            key(request(Method::GET, "http://r/v2/x/blobs/sha256:1", None)),
            key(request(Method::GET, "https://r2/v2/x/blobs/sha256:1", None)),
            key(request(Method::GET, "https://r/v2/x/blobs/sha256:2", None)),
            key(request(
                Method::GET,
                "https://r/v2/x/blobs/sha256:1?a=b",
                None,
            )),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(keys[2], key(with(AUTHORIZATION, &["Bearer a"])));
        // Another cache keys differently: keys say nothing outside their cache.
        let other = RedirectCache::new(8);
        match other.lookup(&with(AUTHORIZATION, &["Bearer a"])) {
            Lookup::Miss(t) => assert_ne!(t.key, keys[2]),
            _ => unreachable!(),
        }
    }

    #[test]
    fn capacity_holds_under_any_number_of_keys() {
        let cache = RedirectCache::new(4);
        let uri = signed(600, 0);
        let at = |i: u64| Ticket {
            cache: cache.clone(),
            key: CacheKey(i, i),
            valid_until: None,
            flight: None,
        };
        for i in 0..1000u64 {
            at(i).store_record(StatusCode::FOUND, &uri);
            // Some keys come back, so the order has stale places to shed.
            at(i % 3).store_record(StatusCode::FOUND, &uri);
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
