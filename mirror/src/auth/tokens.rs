//! The tokens the mirror logged in for with its own credentials, per upstream and
//! repository, and the scopes its login was just refused for.

use super::token_service::MAX_TOKEN_LIFETIME;
use http::header::HeaderValue;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tokens (whole `Authorization` values) the mirror logged in for, per upstream and
/// repository, until they expire; and the logins that just failed, so that a client asking
/// again and again for what the mirror's account cannot read does not make it log in again
/// each time. Bounded (least recently used go first); shared by every worker.
pub struct Tokens {
    by_scope: Mutex<LruCache<(String, String), (HeaderValue, Instant)>>,
    refused: Mutex<LruCache<(String, String), Instant>>,
}

/// How many tokens (and refused scopes) are kept at most.
const MAX_TOKENS: usize = 4096;

/// How long a scope the upstream refused the mirror's login for is not asked again.
pub const REFUSED_FOR: Duration = Duration::from_secs(30);

impl Default for Tokens {
    fn default() -> Self {
        let cap = NonZeroUsize::new(MAX_TOKENS).expect("a non-zero bound");
        Tokens {
            by_scope: Mutex::new(LruCache::new(cap)),
            refused: Mutex::new(LruCache::new(cap)),
        }
    }
}

impl Tokens {
    /// The token for `upstream` and `scope`, unless there is none or it expired.
    pub fn get(&self, upstream: &str, scope: &str) -> Option<HeaderValue> {
        let mut map = self.by_scope.lock().unwrap_or_else(|e| e.into_inner());
        let (value, until) = map.get(&(upstream.to_owned(), scope.to_owned()))?;
        (*until > Instant::now()).then(|| value.clone())
    }

    /// Keeps `value` for `upstream` and `scope` for `ttl` (at most a day).
    pub fn put(&self, upstream: &str, scope: &str, value: HeaderValue, ttl: Duration) {
        let mut map = self.by_scope.lock().unwrap_or_else(|e| e.into_inner());
        map.put(
            (upstream.to_owned(), scope.to_owned()),
            (value, Instant::now() + ttl.min(MAX_TOKEN_LIFETIME)),
        );
    }

    /// Drops the token for `upstream` and `scope`.
    pub fn forget(&self, upstream: &str, scope: &str) {
        let mut map = self.by_scope.lock().unwrap_or_else(|e| e.into_inner());
        map.pop(&(upstream.to_owned(), scope.to_owned()));
    }

    /// The upstream refused the mirror's login for `scope`: not asked again for
    /// [`REFUSED_FOR`].
    pub fn refuse(&self, upstream: &str, scope: &str) {
        let mut map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        map.put(
            (upstream.to_owned(), scope.to_owned()),
            Instant::now() + REFUSED_FOR,
        );
    }

    /// Whether the mirror's login for `scope` was refused in the last [`REFUSED_FOR`].
    pub fn refused(&self, upstream: &str, scope: &str) -> bool {
        let mut map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(upstream.to_owned(), scope.to_owned()))
            .is_some_and(|until| *until > Instant::now())
    }
}
