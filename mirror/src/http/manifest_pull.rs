//! A manifest pull through the manifest cache (`cache/manifests.rs`): by digest from the
//! cache; by tag from the cache when an upstream `HEAD` says its digest is unchanged, or when
//! the upstream fails and the entry is younger than `--serve-stale`; otherwise from the
//! upstream (one fetch per key at a time), and kept.

use super::answer::SentUpstream;
use super::exchange::Exchange;
use super::manifest_store::{FleetTurn, StoredManifests};
use crate::api::{Route, DOCKER_CONTENT_DIGEST};
use crate::auth::identity::Identity;
use crate::cache::manifests::{self, Manifest, ManifestCache, ManifestKey, MAX_MANIFEST};
use crate::cache::store::leases::LeaseGuard;
use crate::metrics::{Joined, ManifestEvent, Metrics, StoreEvent};
use crate::serve::body::MirrorBody;
use crate::serve::errors::{registry_error, upstream_failure};
use crate::serve::log::RequestLog;
use crate::serve::verify;
use crate::upstream::request::RequestMarks;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_signed_redirect::FollowedRedirect;

/// Manifest pulls through the cache.
pub struct ManifestPull {
    cache: Arc<ManifestCache>,
    /// The cache's copy in the blob store, if there is one.
    stored: Option<StoredManifests>,
    serve_stale: Duration,
    /// The longest a fetch waits for another replica's fetch of the same tag.
    wait: Duration,
    metrics: Arc<Metrics>,
}

impl ManifestPull {
    /// Pulls through `cache` (and what `stored` kept of it), serving cached tags up to
    /// `serve_stale` after they were fetched while the upstream fails; a fetch waits at most
    /// `wait` for another replica's fetch of the same tag.
    pub fn new(
        cache: Arc<ManifestCache>,
        stored: Option<StoredManifests>,
        (serve_stale, wait): (Duration, Duration),
        metrics: Arc<Metrics>,
    ) -> Self {
        ManifestPull {
            cache,
            stored,
            serve_stale,
            wait,
            metrics,
        }
    }

    /// The manifest at `uri`, for `who`, through the cache.
    pub async fn answer(
        &self,
        exchange: &Exchange<'_>,
        uri: Uri,
        who: &Identity,
    ) -> Response<MirrorBody> {
        let key = manifest_key(exchange, &uri, who);
        let reference = uri.path().rsplit('/').next().unwrap_or_default().to_owned();
        let by_digest = reference.contains(':');
        let (cached, store) = match self.cache.get(&key) {
            Some(manifest) => (Some(manifest), None),
            None => self.restore(exchange, &key, &uri, who).await,
        };
        if let Some(manifest) = &cached {
            if by_digest {
                return self.serve(exchange, manifest, (ManifestEvent::Hit, store));
            }
            match self
                .revalidate(exchange, &uri, &key, (manifest, store))
                .await
            {
                Ok(res) => return res,
                Err(Some(named)) => {
                    if let Some(res) = self
                        .restore_named(exchange, (&key, &uri), who, &named)
                        .await
                    {
                        return res;
                    }
                }
                Err(None) => {}
            }
        }
        // One fetch per key at a time: concurrent pulls of a new or moved tag spend one
        // upstream GET. (Revalidations above run side by side: a HEAD is free.)
        let turn = self.cache.turn(&key).await;
        if turn.waited {
            self.metrics.joined(Joined::Manifest);
        }
        // A request that had the turn before this one (waited for, or done while this one
        // read the store) kept a newer manifest: that is this one's answer.
        let newer = self
            .cache
            .get(&key)
            .filter(|m| cached.as_ref().is_none_or(|old| !Arc::ptr_eq(old, m)));
        if let Some(manifest) = newer {
            return self.serve(exchange, &manifest, (ManifestEvent::Hit, None));
        }
        self.fetch(exchange, (key, uri), who, (cached, store)).await
    }

    /// Fetches the manifest from the upstream (or, as it fails, serves `cached` stale), and
    /// keeps what a `GET` fetched.
    async fn fetch(
        &self,
        exchange: &Exchange<'_>,
        (key, uri): (ManifestKey, Uri),
        who: &Identity,
        (cached, store): (Option<Arc<Manifest>>, Option<StoreEvent>),
    ) -> Response<MirrorBody> {
        let method = &exchange.parts.method;
        let mut lease = None;
        if let (Some(stored), &Method::GET) = (&self.stored, method) {
            match stored
                .fleet_turn(exchange, (&key, &uri), who, self.wait)
                .await
            {
                FleetTurn::Fetch(held) => lease = held,
                FleetTurn::Restored(manifest) => {
                    self.metrics.joined(Joined::Replica);
                    return self.keep_restored(exchange, &key, manifest);
                }
            }
        }
        let marks = RequestMarks::uncached(Route::Manifest);
        let answer = exchange.send_upstream(&uri, method, marks).await;
        // The same failure on the GET itself.
        if let Some(manifest) = cached.as_ref().filter(|m| self.stale_ok(m)) {
            if answer.as_ref().map_or(true, |res| failing(res.status())) {
                tracing::warn!(upstream = %exchange.registry.name, path = exchange.parts.uri.path(), "upstream failing: serving a stale manifest");
                return self.serve(exchange, manifest, (ManifestEvent::Stale, store));
            }
        }
        // What is kept is what the registry itself answered: a storage host it redirected
        // to names no tag and fills no cache.
        let from_registry = matches!(&answer, Ok(res) if res.status() == StatusCode::OK
            && res.extensions().get::<FollowedRedirect>().is_none());
        let keep = *method == Method::GET && from_registry;
        if let (Some(stored), Ok(res), &Method::HEAD, true) =
            (&self.stored, &answer, method, from_registry)
        {
            stored.keep_tag(exchange, (&key, &uri), who, res.headers());
        }
        let sent = SentUpstream {
            uri: uri.clone(),
            identity: None,
            started: exchange.started,
            route: Route::Manifest,
            store: None,
        };
        let res = exchange.answer_client(sent, answer);
        match (keep, lease) {
            (true, lease) => self.keep(exchange, res, (key, &uri), who, lease).await,
            (false, Some(lease)) => {
                tokio::spawn(lease.release());
                res
            }
            (false, None) => res,
        }
    }

    /// Asks the upstream with a `HEAD` whether the tag still names `manifest`: the cached
    /// manifest if it does (or, while the upstream fails, if it may be served stale); else
    /// `Err` with the digest the tag names now, if the `HEAD` said.
    async fn revalidate(
        &self,
        exchange: &Exchange<'_>,
        uri: &Uri,
        key: &ManifestKey,
        (manifest, store): (&Arc<Manifest>, Option<StoreEvent>),
    ) -> Result<Response<MirrorBody>, Option<String>> {
        let marks = RequestMarks::uncached(Route::Manifest);
        let (registry, path) = (&exchange.registry.name, exchange.parts.uri.path());
        match exchange.send_upstream(uri, &Method::HEAD, marks).await {
            Ok(res)
                if res.status() == StatusCode::OK
                    && res.headers().get(DOCKER_CONTENT_DIGEST) == Some(&manifest.digest) =>
            {
                Ok(self.serve(exchange, manifest, (ManifestEvent::Revalidated, store)))
            }
            Ok(res) if failing(res.status()) && self.stale_ok(manifest) => {
                tracing::warn!(upstream = %registry, path, status = res.status().as_u16(), "upstream failing: serving a stale manifest");
                Ok(self.serve(exchange, manifest, (ManifestEvent::Stale, store)))
            }
            Err(e) if self.stale_ok(manifest) => {
                tracing::warn!(upstream = %registry, path, error = %upstream_failure(&e).1, "upstream unreachable: serving a stale manifest");
                Ok(self.serve(exchange, manifest, (ManifestEvent::Stale, store)))
            }
            Ok(res) if res.status() == StatusCode::NOT_FOUND => {
                self.cache.remove(key);
                Err(None)
            }
            Ok(res) if res.status() == StatusCode::OK => Err(res
                .headers()
                .get(DOCKER_CONTENT_DIGEST)
                .and_then(|d| d.to_str().ok())
                .map(str::to_owned)),
            _ => Err(None),
        }
    }

    /// The manifest a tag's `HEAD` just named (`named`), from the store (where another
    /// replica, or this one, kept it), as the cache's answer: a moved tag costs no `GET`.
    async fn restore_named(
        &self,
        exchange: &Exchange<'_>,
        (key, uri): (&ManifestKey, &Uri),
        who: &Identity,
        named: &str,
    ) -> Option<Response<MirrorBody>> {
        let manifest = self
            .stored
            .as_ref()?
            .restore_by_digest(exchange, uri, who, named)
            .await?;
        Some(self.keep_restored(exchange, key, manifest))
    }

    /// A manifest from the store, kept in the cache and served.
    fn keep_restored(
        &self,
        exchange: &Exchange<'_>,
        key: &ManifestKey,
        manifest: Manifest,
    ) -> Response<MirrorBody> {
        self.metrics.store(StoreEvent::Hit);
        let res = self.serve(
            exchange,
            &manifest,
            (ManifestEvent::Revalidated, Some(StoreEvent::Hit)),
        );
        self.cache.put(key.clone(), manifest);
        res
    }

    /// Reads the upstream's manifest in `res` whole, keeps it for `key`, and answers with it.
    async fn keep(
        &self,
        exchange: &Exchange<'_>,
        res: Response<MirrorBody>,
        (key, uri): (ManifestKey, &Uri),
        who: &Identity,
        lease: Option<LeaseGuard>,
    ) -> Response<MirrorBody> {
        let reference = uri.path().rsplit('/').next().unwrap_or_default();
        let (head, body) = res.into_parts();
        let Ok(body) = http_body_util::Limited::new(body, MAX_MANIFEST)
            .collect()
            .await
        else {
            return registry_error(
                StatusCode::BAD_GATEWAY,
                "UNAVAILABLE",
                "the upstream's manifest could not be read (or is over 4 MiB)",
            );
        };
        let body = body.to_bytes();
        let digest = match head.headers.get(DOCKER_CONTENT_DIGEST) {
            Some(digest) => digest.clone(),
            None => sha256_digest(&body),
        };
        // By digest (sha256 or sha512), what is kept must be what was asked for.
        if verify::expected(reference).is_some_and(|expected| {
            let mut hasher = verify::DigestHasher::new(&expected);
            hasher.update(&body);
            !hasher.matches(&expected)
        }) {
            return registry_error(
                StatusCode::BAD_GATEWAY,
                "MANIFEST_INVALID",
                "the upstream's manifest does not match its digest",
            );
        }
        self.metrics.manifest(ManifestEvent::Miss);
        let manifest = Manifest {
            body: body.clone(),
            content_type: head.headers.get(header::CONTENT_TYPE).cloned(),
            digest,
            fetched: Instant::now(),
            valid_until: who.valid_until,
        };
        if let Some(stored) = &self.stored {
            stored.store_fetched(exchange, (&key, uri), who, &manifest, lease);
        }
        self.cache.put(key, manifest);
        let mut res = Response::from_parts(head, MirrorBody::Local(Full::new(body)));
        res.headers_mut().remove(header::TRANSFER_ENCODING);
        res
    }

    /// Whether a cached tag may be served while the upstream fails (`--serve-stale`).
    fn stale_ok(&self, manifest: &Manifest) -> bool {
        manifests::servable_stale(manifest.fetched, self.serve_stale)
    }

    /// The manifest `key` names, from the store (and now in the cache too), with the store's
    /// event for the log.
    async fn restore(
        &self,
        exchange: &Exchange<'_>,
        key: &ManifestKey,
        uri: &Uri,
        who: &Identity,
    ) -> (Option<Arc<Manifest>>, Option<StoreEvent>) {
        let Some(stored) = &self.stored else {
            return (None, None);
        };
        let Some(manifest) = stored.restore(exchange, key, uri, who).await else {
            return (None, None);
        };
        self.metrics.store(StoreEvent::Hit);
        self.cache.put(key.clone(), manifest);
        (self.cache.get(key), Some(StoreEvent::Hit))
    }

    /// A cached manifest as the upstream would have answered it, counted and logged (with
    /// the blob store's part, if it had one).
    fn serve(
        &self,
        exchange: &Exchange<'_>,
        manifest: &Manifest,
        (event, store): (ManifestEvent, Option<StoreEvent>),
    ) -> Response<MirrorBody> {
        self.metrics.manifest(event);
        let parts = exchange.parts;
        let body = match parts.method {
            Method::HEAD => Bytes::new(),
            _ => manifest.body.clone(),
        };
        let mut res = Response::new(MirrorBody::Local(Full::new(body.clone())));
        let headers = res.headers_mut();
        if let Some(content_type) = &manifest.content_type {
            headers.insert(header::CONTENT_TYPE, content_type.clone());
        }
        headers.insert(DOCKER_CONTENT_DIGEST, manifest.digest.clone());
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(manifest.body.len()),
        );
        let registry = exchange.registry.name.clone();
        let mut log = RequestLog::new(parts, registry, Route::Manifest, 200, self.metrics.clone());
        log.manifest_cache = Some(event);
        log.store = store;
        log.finish(body.len() as u64, "complete", exchange.started);
        res
    }
}

/// Where the manifest `uri` asks for is kept for `who`: by the registry, the path, the
/// media types the client accepts (as a set: Docker sends them in an order that changes from
/// request to request, a Go map's) and the identity.
fn manifest_key(exchange: &Exchange<'_>, uri: &Uri, who: &Identity) -> ManifestKey {
    let mut types: Vec<&[u8]> = exchange
        .parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
        .collect();
    types.sort_unstable();
    types.dedup();
    ManifestKey {
        upstream: exchange.registry.name.to_string(),
        path: uri.path().to_owned(),
        accept: types.join(&b'\n'),
        identity: who.key.clone(),
    }
}

/// An upstream answer that a stale manifest may stand in for: rate limited, or failing.
fn failing(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `sha256:<hex>` of `body`.
fn sha256_digest(body: &[u8]) -> HeaderValue {
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(body));
    HeaderValue::from_str(&format!("sha256:{hex}")).expect("hex is a valid header value")
}
