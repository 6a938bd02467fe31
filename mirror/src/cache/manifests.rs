//! The manifest cache (`--manifest-cache`): manifests the mirror fetched, kept in memory
//! (bounded in bytes, least recently used first out) so that pulls spend no upstream `GET`
//! on them. Docker Hub's pull limit counts manifest `GET`s, not `HEAD`s.
//!
//! - By digest, a manifest never changes: served from the cache.
//! - By tag, the cache is revalidated with an upstream `HEAD` (with the client's `Accept`
//!   and credentials, as for a `GET`): the cached manifest is served when the upstream's
//!   `Docker-Content-Digest` is the cached one; fetched with `GET` otherwise.
//! - When the upstream answers `429` or `5xx`, or cannot be reached, a cached tag younger
//!   than `--serve-stale` is served, logged and counted as stale.
//!
//! Entries are keyed by the upstream, the upstream path (repository and reference), the
//! `Accept` the client sent (an OCI index and a Docker manifest list are different answers)
//! and the identity the request went upstream with (`http/pull.rs`): the mirror's own login
//! (shared by all its clients), the anonymous identity (shared), or one client's login, whose
//! entries live no longer than its token. A manifest is never served to another identity.

use bytes::Bytes;
use http::HeaderValue;
use lru::LruCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The largest manifest the mirror keeps (the distribution spec's limit for a manifest).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// Where a manifest is kept.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ManifestKey {
    /// The upstream's name.
    pub upstream: String,
    /// The upstream path: `/v2/<name>/manifests/<reference>`.
    pub path: String,
    /// The client's `Accept` media types, as a set (sorted, one per line).
    pub accept: Vec<u8>,
    /// The identity the request went upstream with.
    pub identity: Vec<u8>,
}

/// One cached manifest: its bytes and the headers that describe them.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The manifest's bytes.
    pub body: Bytes,
    /// The upstream's `Content-Type`.
    pub content_type: Option<HeaderValue>,
    /// The upstream's `Docker-Content-Digest`.
    pub digest: HeaderValue,
    /// When it was fetched.
    pub fetched: Instant,
    /// The end of the identity's token, for a client's own login.
    pub valid_until: Option<SystemTime>,
}

/// The manifests the mirror keeps, shared by every worker.
pub struct ManifestCache {
    budget: usize,
    inner: Mutex<Inner>,
    /// One lock per key being fetched: concurrent misses of one key wait for the first
    /// (single-flight), then find its answer in the cache.
    fetching: Mutex<HashMap<ManifestKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// A key's turn to fetch; the next request with the key waits.
pub struct FetchTurn<'a> {
    cache: &'a ManifestCache,
    key: ManifestKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Another request had the key: this one waited for it.
    pub waited: bool,
}

impl Drop for FetchTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut fetching = self
            .cache
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Nobody else holds or waits for this key's lock: the entry goes.
        if fetching
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            fetching.remove(&self.key);
        }
    }
}

struct Inner {
    entries: LruCache<ManifestKey, std::sync::Arc<Manifest>>,
    bytes: usize,
}

impl ManifestCache {
    /// A cache of at most `budget` bytes of manifests.
    pub fn new(budget: usize) -> ManifestCache {
        ManifestCache {
            budget,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            fetching: Mutex::default(),
        }
    }

    /// Waits for `key`'s turn: while another request with the key fetches it, this one
    /// waits (and then finds the manifest the other kept). Whatever
    /// the other's outcome, the turn comes: a failed fetch leaves this one to try.
    pub async fn turn(&self, key: &ManifestKey) -> FetchTurn<'_> {
        let lock = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            fetching.entry(key.clone()).or_default().clone()
        };
        let (guard, waited) = match lock.clone().try_lock_owned() {
            Ok(guard) => (guard, false),
            Err(_) => (lock.lock_owned().await, true),
        };
        FetchTurn {
            cache: self,
            key: key.clone(),
            guard: Some(guard),
            waited,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The manifest kept for `key`, if its identity's token has not ended.
    pub fn get(&self, key: &ManifestKey) -> Option<std::sync::Arc<Manifest>> {
        let mut inner = self.lock();
        let manifest = inner.entries.get(key)?.clone();
        if manifest
            .valid_until
            .is_some_and(|until| until <= SystemTime::now())
        {
            inner.remove(key);
            return None;
        }
        Some(manifest)
    }

    /// Keeps `manifest` for `key`; the least recently used go while the budget is exceeded.
    pub fn put(&self, key: ManifestKey, manifest: Manifest) {
        let size = manifest.body.len() + key.path.len() + key.accept.len() + key.identity.len();
        if size > self.budget {
            return;
        }
        let mut inner = self.lock();
        inner.remove(&key);
        inner.bytes += size;
        inner.entries.put(key, std::sync::Arc::new(manifest));
        while inner.bytes > self.budget {
            let Some((key, manifest)) = inner.entries.pop_lru() else {
                break;
            };
            inner.bytes -= entry_size(&key, &manifest);
        }
    }

    /// Forgets `key` (the upstream says the tag is gone).
    pub fn remove(&self, key: &ManifestKey) {
        self.lock().remove(key);
    }

    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Inner {
    fn remove(&mut self, key: &ManifestKey) {
        if let Some(old) = self.entries.pop(key) {
            self.bytes -= entry_size(key, &old);
        }
    }
}

fn entry_size(key: &ManifestKey, manifest: &Manifest) -> usize {
    manifest.body.len() + key.path.len() + key.accept.len() + key.identity.len()
}

/// Whether a cached tag fetched at `fetched` may still be served when the upstream fails.
pub fn servable_stale(fetched: Instant, serve_stale: Duration) -> bool {
    !serve_stale.is_zero() && fetched.elapsed() < serve_stale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str, identity: &str) -> ManifestKey {
        ManifestKey {
            upstream: "docker.io".into(),
            path: path.into(),
            accept: b"application/vnd.oci.image.index.v1+json".to_vec(),
            identity: identity.as_bytes().to_vec(),
        }
    }

    fn manifest(len: usize, valid_until: Option<SystemTime>) -> Manifest {
        Manifest {
            body: Bytes::from(vec![b'x'; len]),
            content_type: None,
            digest: HeaderValue::from_static("sha256:00"),
            fetched: Instant::now(),
            valid_until,
        }
    }

    #[test]
    fn bounded_in_bytes_least_recently_used_out_and_per_identity() {
        let cache = ManifestCache::new(10_000);
        for i in 0..10 {
            cache.put(
                key(&format!("/v2/a/manifests/{i}"), "anonymous"),
                manifest(2_000, None),
            );
        }
        assert!(cache.bytes() <= 10_000);
        assert!(cache.get(&key("/v2/a/manifests/9", "anonymous")).is_some());
        assert!(cache.get(&key("/v2/a/manifests/0", "anonymous")).is_none());
        assert!(
            cache.get(&key("/v2/a/manifests/9", "alice")).is_none(),
            "another identity"
        );
        // Too big for the budget: not kept, nothing evicted for it.
        cache.put(
            key("/v2/big/manifests/x", "anonymous"),
            manifest(20_000, None),
        );
        assert!(cache.get(&key("/v2/a/manifests/9", "anonymous")).is_some());
        // A login's entry ends with its token.
        let ended = SystemTime::now() - Duration::from_secs(1);
        cache.put(key("/v2/b/manifests/x", "alice"), manifest(10, Some(ended)));
        assert!(cache.get(&key("/v2/b/manifests/x", "alice")).is_none());
        assert!(servable_stale(Instant::now(), Duration::from_secs(60)));
        assert!(!servable_stale(Instant::now(), Duration::ZERO));
    }
}
