//! The manifest cache's copy in the blob store: manifests the mirror fetched, kept by digest
//! (so that a restarted mirror, or another replica, serves them), and what each tag named
//! when it was fetched with a shared identity (so that `--serve-stale` serves it after a
//! restart). A manifest read from the store is served under the blob store's rules
//! (`blob_pull.rs`): its shared identity, or a login the registry accepted for it.

use super::exchange::Exchange;
use super::store_access::may_read;
use crate::api::{path, Route, DOCKER_CONTENT_DIGEST};
use crate::auth::identity::Identity;
use crate::cache::manifests::{Manifest, ManifestKey};
use crate::cache::store::blobs::{BlobStore, Lookup};
use crate::cache::store::keys::{ContentDigest, ObjectKey, Reader};
use crate::cache::store::leases::{Lease, LeaseGuard};
use crate::cache::store::tags::{self, TagRecord};
use crate::upstream::request::RequestMarks;
use http::{HeaderValue, Uri};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often a replica waiting for another's manifest fetch looks for it.
const FLEET_POLL: Duration = Duration::from_millis(100);

/// What the fleet says to a replica that would fetch a tag's manifest.
pub enum FleetTurn {
    /// Fetch it (holding the lease, if there is a fleet to hold it against).
    Fetch(Option<LeaseGuard>),
    /// Another replica fetched it meanwhile: here it is.
    Restored(Manifest),
}

/// The manifests kept in the blob store.
pub struct StoredManifests {
    store: Arc<BlobStore>,
}

impl StoredManifests {
    /// Manifests kept in `store`.
    pub fn new(store: Arc<BlobStore>) -> StoredManifests {
        StoredManifests { store }
    }

    /// The manifest `key` names at `uri`, from the store: by digest, if `who` may read it
    /// there; by tag, what it named for a shared identity when it was last fetched.
    pub async fn restore(
        &self,
        exchange: &Exchange<'_>,
        key: &ManifestKey,
        uri: &Uri,
        who: &Identity,
    ) -> Option<Manifest> {
        let reference = uri.path().rsplit('/').next().unwrap_or_default();
        let reader = reader(exchange, uri, who)?;
        let (digest, fetched) = match ContentDigest::parse(reference) {
            Some(digest) => (digest, SystemTime::now()),
            None => {
                let Reader::Shared(scope) = &reader else {
                    return None;
                };
                let record = self.store.tag(scope, &tag_name(key)).await?;
                (ContentDigest::parse(&record.digest)?, record.fetched)
            }
        };
        self.by_digest(exchange, uri, who, &reader, (digest, fetched))
            .await
    }

    /// The stored manifest with `digest`, fetched at `fetched`, if `reader` may read it.
    async fn by_digest(
        &self,
        exchange: &Exchange<'_>,
        uri: &Uri,
        who: &Identity,
        reader: &Reader,
        (digest, fetched): (ContentDigest, SystemTime),
    ) -> Option<Manifest> {
        let object = ObjectKey::manifest(digest.clone());
        let stored = match self.store.lookup(&object, false) {
            Lookup::Stored(stored) => stored,
            // Another replica may have stored it since this one listed the store.
            _ => self.store.discover(&object, reader).await?,
        };
        let media_type = stored.media_type?;
        if !may_read(&self.store, exchange, uri, &object, reader).await {
            return None;
        }
        let body = self.store.read_manifest(&object, &media_type).await?;
        // What the store holds is what it verified; checked again, it costs a hash of a few
        // KiB, and a tampered store serves no manifest.
        if ContentDigest::sha256_of(&body) != digest {
            return None;
        }
        let age = SystemTime::now()
            .duration_since(fetched)
            .unwrap_or_default();
        Some(Manifest {
            body,
            content_type: HeaderValue::from_str(&media_type).ok(),
            digest: HeaderValue::from_str(&digest.to_string()).ok()?,
            fetched: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            valid_until: who.valid_until,
        })
    }

    /// Keeps a manifest fetched from `uri` for `who`: by its digest, and for a tag fetched
    /// with a shared identity, what the tag named; then releases the fleet's `lease` on
    /// fetching it. In the background: the client is answered meanwhile.
    pub fn store_fetched(
        &self,
        exchange: &Exchange<'_>,
        (key, uri): (&ManifestKey, &Uri),
        who: &Identity,
        manifest: &Manifest,
        lease: Option<LeaseGuard>,
    ) {
        let (Some(reader), Some(media_type)) = (
            reader(exchange, uri, who),
            manifest.content_type.as_ref().and_then(|t| t.to_str().ok()),
        ) else {
            return;
        };
        let digest = ContentDigest::sha256_of(&manifest.body);
        let by_tag = !uri
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .contains(':');
        let (store, body, media_type) = (
            self.store.clone(),
            manifest.body.clone(),
            media_type.to_owned(),
        );
        let tag = match (&reader, by_tag) {
            (Reader::Shared(scope), true) => Some((scope.clone(), tag_name(key))),
            _ => None,
        };
        let kept = tokio::spawn(async move {
            let object = ObjectKey::manifest(digest.clone());
            store.put_manifest(object, &media_type, body, &reader).await;
            if let Some((scope, name)) = tag {
                let record = TagRecord {
                    digest: digest.to_string(),
                    fetched: SystemTime::now(),
                };
                store.put_tag(&scope, &name, &record).await;
            }
        });
        if let Some(lease) = lease {
            // Released once the tag's record is written: a replica that waited finds it.
            tokio::spawn(async move {
                let _ = kept.await;
                lease.release().await;
            });
        }
    }

    /// The fleet's turn to fetch the manifest at `uri` for a shared identity (by tag, or by
    /// digest: the platform manifests of an index are fetched by digest): this replica's
    /// (holding the lease; `None` without a shared state, or for a client's own login), or
    /// what another replica fetched meanwhile, once it kept it (waited for at most `wait`;
    /// then this replica fetches too).
    ///
    /// A tag counts as fetched meanwhile when its record changed since this replica looked
    /// (no clocks compared across replicas); a lease taken is followed by one more look, as
    /// its last holder released it only once it had kept what it fetched.
    pub async fn fleet_turn(
        &self,
        exchange: &Exchange<'_>,
        (key, uri): (&ManifestKey, &Uri),
        who: &Identity,
        wait: Duration,
    ) -> FleetTurn {
        let Some(Reader::Shared(scope)) = reader(exchange, uri, who) else {
            return FleetTurn::Fetch(None);
        };
        let digest = by_digest(uri);
        let kind = if digest {
            "manifest-digest"
        } else {
            "manifest"
        };
        let name = [kind, &scope, &tag_name(key)].map(|part| part.as_bytes().to_vec());
        let tag = || async { self.store.tag(&scope, &tag_name(key)).await };
        let before = if digest { None } else { tag().await };
        // By tag: once the tag's record changed, and the registry's `HEAD` (free) names
        // the same digest, or cannot answer (a record replayed by whoever can write to Redis
        // names an older one). By digest: once the store has it.
        let fetched_meanwhile = || async {
            let changed = digest || tag().await.is_some_and(|now| Some(now) != before);
            changed.then_some(())?;
            let manifest = self.restore(exchange, key, uri, who).await?;
            (digest || !contradicted(exchange, uri, &manifest).await).then_some(manifest)
        };
        let deadline = Instant::now() + wait;
        loop {
            match self.store.lease_on(&name).await {
                Lease::Held(lease) => {
                    if let Some(manifest) = fetched_meanwhile().await {
                        drop(lease);
                        return FleetTurn::Restored(manifest);
                    }
                    return FleetTurn::Fetch(Some(lease));
                }
                Lease::Unknown => return FleetTurn::Fetch(None),
                Lease::Taken => {}
            }
            loop {
                tokio::time::sleep(FLEET_POLL).await;
                if let Some(manifest) = fetched_meanwhile().await {
                    return FleetTurn::Restored(manifest);
                }
                if Instant::now() >= deadline {
                    return FleetTurn::Fetch(None);
                }
                match self.store.leased_on(&name).await {
                    Some(true) => continue,
                    Some(false) => break,
                    None => return FleetTurn::Fetch(None),
                }
            }
        }
    }

    /// The manifest with `digest` (what a tag's `HEAD` just named), from the store, for `who`
    /// asking at `uri`: a moved tag that another replica (or this one, earlier) fetched
    /// costs no `GET`.
    pub async fn restore_by_digest(
        &self,
        exchange: &Exchange<'_>,
        uri: &Uri,
        who: &Identity,
        digest: &str,
    ) -> Option<Manifest> {
        let reader = reader(exchange, uri, who)?;
        self.by_digest(
            exchange,
            uri,
            who,
            &reader,
            (ContentDigest::parse(digest)?, SystemTime::now()),
        )
        .await
    }

    /// Keeps what the tag `key` names at `uri` for a shared identity, as the registry's
    /// answer to a `HEAD` (its `headers`) said. Docker asks `HEAD` by tag, then `GET` by
    /// digest: kept, the tag answers the same `HEAD` while the upstream fails.
    pub fn keep_tag(
        &self,
        exchange: &Exchange<'_>,
        (key, uri): (&ManifestKey, &Uri),
        who: &Identity,
        headers: &http::HeaderMap,
    ) {
        let digest = headers
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|d| ContentDigest::parse(d.to_str().ok()?));
        let (Some(Reader::Shared(scope)), Some(digest), false) =
            (reader(exchange, uri, who), digest, by_digest(uri))
        else {
            return;
        };
        let (store, name) = (self.store.clone(), tag_name(key));
        tokio::spawn(async move {
            let record = TagRecord {
                digest: digest.to_string(),
                fetched: SystemTime::now(),
            };
            store.put_tag(&scope, &name, &record).await;
        });
    }
}

/// Whether the registry's answer to a `HEAD` of the tag at `uri` contradicts `manifest`:
/// it names another digest, or refuses the tag (`404`, `401`...). A registry that fails
/// (no answer, `429`, `5xx`) contradicts nothing.
async fn contradicted(exchange: &Exchange<'_>, uri: &Uri, manifest: &Manifest) -> bool {
    let marks = RequestMarks::uncached(Route::Manifest);
    let answer = exchange
        .send_upstream(uri, &http::Method::HEAD, marks)
        .await;
    match answer {
        Ok(res) if res.status() == http::StatusCode::OK => {
            res.headers().get(DOCKER_CONTENT_DIGEST) != Some(&manifest.digest)
        }
        Ok(res) => {
            let status = res.status();
            status != http::StatusCode::TOO_MANY_REQUESTS && !status.is_server_error()
        }
        Err(_) => false,
    }
}

/// Whether `uri` asks for a manifest by digest.
fn by_digest(uri: &Uri) -> bool {
    uri.path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .contains(':')
}

/// Who `who` is to the store, asking for the manifest at `uri`.
fn reader(exchange: &Exchange<'_>, uri: &Uri, who: &Identity) -> Option<Reader> {
    let api = path::parse(uri.path().strip_prefix("/v2/")?).ok()?;
    Some(Reader::of(who, &exchange.registry.name, api.name))
}

/// The store's name for the tag `key` names and the manifest types its client accepts.
fn tag_name(key: &ManifestKey) -> String {
    tags::record_name(&key.path, &key.accept)
}
