//! The blob store: what http's pulls ask of it. It keeps blobs and manifests by digest
//! ([`Backend`]), knows what it holds ([`Index`]) and who may read it ([`Reader`]), and
//! fills itself while serving ([`Fill`]): one download per digest, verified before it is
//! committed, never a failed pull when the store itself fails.

use super::backend::Backend;
use super::downloads::{Downloads, FillTicket, InFlight, Starting};
use super::fill::{Fill, Resume};
use super::grants::Grants;
use super::hot::HotBlobs;
use super::index::{Access, Index, Stored};
use super::keys::{ObjectKey, Reader};
use super::leases::LeaseGuard;
use super::pieces::ReadBudget;
use super::shared_state::SharedState;
use super::tags::TagRecords;
use crate::metrics::{Metrics, StoreEvent};
use crate::options::Options;
use crate::serve::body::UpstreamBody;
use crate::serve::verify::CachedRedirect;
use bytes::Bytes;
use http::HeaderValue;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The low watermark: eviction takes the store down to this share of its maximum.
const LOW_WATERMARK: f64 = 0.9;

/// What reads of stored files may hold in memory beyond the hot blobs.
const READS_BEYOND_MEMORY: u64 = 64 * 1024 * 1024;

/// What the store says of an object.
pub enum Lookup {
    /// Stored, whole and verified: its size and (for a manifest) media type.
    Stored(Stored),
    /// Being downloaded.
    Filling(Arc<Fill>),
    /// Another request is asking the upstream for it, to download it: wait, then look again.
    Starting(Starting),
    /// Neither: with the ticket, this request may download it (the others wait for it while
    /// it is held), without, it goes upstream on its own.
    Absent(Option<FillTicket>),
}

/// The store, shared by every worker.
pub struct BlobStore {
    pub(super) backend: Arc<Backend>,
    pub(super) index: Mutex<Index>,
    /// The tag records it holds (`tags.rs`).
    pub(super) tag_records: TagRecords,
    pub(super) grants: Grants,
    /// Its hottest small blobs, in memory (`--blob-store-memory`).
    pub(super) hot: HotBlobs,
    /// What reads of its files may hold in memory at once (its hot blobs included).
    pub(super) reads: Arc<ReadBudget>,
    pub(super) downloads: Arc<Downloads>,
    max_size: u64,
    pub(super) idle_timeout: Duration,
    pub(super) metrics: Arc<Metrics>,
    /// What the replicas share, on Redis (`--shared-state`).
    pub(super) shared: Option<Arc<SharedState>>,
    /// How long a tag's record is kept, and a shared identity reads what the registry
    /// served it while the registry fails (`--serve-stale`).
    pub(super) serve_stale: Duration,
    /// How long a shared identity reads what the registry served it without asking again
    /// (`--blob-store-recheck`).
    pub(super) recheck: Duration,
    /// While the store's listing could not be read (the store unreachable at start): when
    /// it was last tried. Until it is read, the store serves nothing it holds.
    unlisted: Mutex<Option<Instant>>,
}

/// How often a store whose listing failed is listed again.
const RELIST_EVERY: Duration = Duration::from_secs(30);

impl BlobStore {
    /// The store `--blob-store` names (`None` with `none`), its leftovers of a crash
    /// removed and what it holds read back from it.
    pub async fn open(
        options: &Options,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<BlobStore>>, String> {
        let shared = SharedState::open(options, metrics.clone())?;
        let Some(backend) = Backend::open(options)? else {
            if shared.is_some() {
                return Err(
                    "--shared-state needs a blob store the replicas share (--blob-store s3://...)"
                        .into(),
                );
            }
            return Ok(None);
        };
        let removed = backend
            .clean_leftovers()
            .map_err(|e| format!("--blob-store {}: {e}", backend.name))?;
        let started = Instant::now();
        let (index, unlisted) = match Index::read(&backend).await {
            Ok(index) => (index, None),
            Err(e) => {
                // An unreachable store fails no pull, and no start either: the mirror serves
                // without it, and lists it again later.
                backend.failed(&metrics, "list what it holds", &e);
                tracing::error!(store = %backend.name, "blob store could not be listed: serving without it until it can");
                (Index::default(), Some(Instant::now()))
            }
        };
        let tag_records = TagRecords::read(&backend).await;
        tracing::info!(store = %backend.name, objects = index.len(), bytes = index.bytes(), tags = tag_records.len(), leftovers_removed = removed, took_ms = started.elapsed().as_millis() as u64, "blob store opened");
        metrics.store_holds(index.bytes(), index.len() as u64);
        let backend = Arc::new(backend);
        Ok(Some(Arc::new(BlobStore {
            downloads: Downloads::new(
                backend.clone(),
                (options.idle_timeout, options.blob_store_max_size),
                metrics.clone(),
            ),
            backend,
            index: Mutex::new(index),
            tag_records,
            grants: Grants::default(),
            hot: HotBlobs::new(options.blob_store_memory),
            reads: ReadBudget::new(
                options
                    .blob_store_memory
                    .saturating_add(READS_BEYOND_MEMORY),
            ),
            max_size: options.blob_store_max_size,
            idle_timeout: options.idle_timeout,
            metrics,
            shared,
            serve_stale: options.serve_stale,
            recheck: options.blob_store_recheck,
            unlisted: Mutex::new(unlisted),
        })))
    }

    /// What the store holds of `key`; with `claim`, the right to download it if it holds
    /// nothing and nobody is downloading it.
    /// While the store is down (it failed lately), nothing it holds is read and nothing
    /// is claimed: the pull goes upstream; downloads in flight are still joined (their
    /// spool is local).
    pub fn lookup(self: &Arc<Self>, key: &ObjectKey, claim: bool) -> Lookup {
        self.relist_if_due();
        let down = self.backend.down();
        if let (false, Some(stored)) = (down, self.lock_index().get(key)) {
            return Lookup::Stored(stored.summary());
        }
        match self.downloads.find(key, claim && !down) {
            InFlight::Running(fill) => Lookup::Filling(fill),
            InFlight::Starting(starting) => Lookup::Starting(starting),
            InFlight::Claimed(ticket) => Lookup::Absent(Some(ticket)),
            InFlight::Nothing => Lookup::Absent(None),
        }
    }

    /// Lists a store whose listing failed again, in the background, once [`RELIST_EVERY`]
    /// has passed since the last try.
    fn relist_if_due(self: &Arc<Self>) {
        {
            let mut unlisted = self.unlisted.lock().unwrap_or_else(|e| e.into_inner());
            match *unlisted {
                Some(tried) if tried.elapsed() >= RELIST_EVERY => *unlisted = Some(Instant::now()),
                _ => return,
            }
        }
        let store = self.clone();
        tokio::spawn(async move {
            let listed = match Index::read(&store.backend).await {
                Ok(listed) => listed,
                Err(e) => return store.unavailable("list what it holds", &e),
            };
            *store.unlisted.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let mut index = store.lock_index();
            for (key, stored) in listed.into_entries() {
                index.insert(key, stored);
            }
            store.metrics.store_holds(index.bytes(), index.len() as u64);
            tracing::info!(store = %store.backend.name, objects = index.len(), "blob store listed");
        });
    }

    /// A stored manifest's bytes, or `None` when the store cannot read it now (one gone
    /// from the store is forgotten).
    pub async fn read_manifest(&self, key: &ObjectKey, media_type: &str) -> Option<Bytes> {
        let path = self.backend.object_path(key, Some(media_type));
        let bytes = self.get_bytes(&path, "read a manifest").await;
        if let Ok(None) = bytes {
            self.forget(key);
        }
        bytes.ok().flatten()
    }

    /// The whole object at `path`: `Ok(None)` if the store does not hold it, `Err` (logged
    /// and counted) if the store failed while `doing` this.
    pub(super) async fn get_bytes(&self, path: &Path, doing: &str) -> Result<Option<Bytes>, ()> {
        if self.backend.down() {
            return Err(());
        }
        let got = match self.backend.objects.get(path).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        match got {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => {
                self.unavailable(doing, &e);
                Err(())
            }
        }
    }

    /// Keeps a manifest the upstream served to `reader` (its digest checked by the caller).
    pub async fn put_manifest(
        self: &Arc<Self>,
        key: ObjectKey,
        media_type: &str,
        bytes: Bytes,
        reader: &Reader,
    ) {
        if self.backend.down() {
            return;
        }
        if self.lock_index().get(&key).is_none() {
            let path = self.backend.object_path(&key, Some(media_type));
            let size = bytes.len() as u64;
            if let Err(e) = self
                .backend
                .objects
                .put(&path, PutPayload::from(bytes))
                .await
            {
                return self.unavailable("store a manifest", &e);
            }
            let stored = Stored {
                size,
                media_type: Some(media_type.into()),
                scopes: Vec::new(),
            };
            self.lock_index().insert(key.clone(), stored);
            self.evict();
        }
        self.allow(&key, reader);
    }

    /// Removes the least recently used objects while the store holds more than its
    /// maximum, down to its low watermark.
    fn evict(&self) {
        let (victims, bytes, objects) = {
            let mut index = self.lock_index();
            let victims = match index.bytes() > self.max_size {
                true => index.evict_to((self.max_size as f64 * LOW_WATERMARK) as u64),
                false => Vec::new(),
            };
            (victims, index.bytes(), index.len() as u64)
        };
        self.metrics.store_holds(bytes, objects);
        if victims.is_empty() {
            return;
        }
        let objects = self.backend.objects.clone();
        let paths: Vec<Path> = victims
            .iter()
            .flat_map(|(key, stored)| {
                let object = self.backend.object_path(key, stored.media_type.as_deref());
                let access = stored
                    .scopes
                    .iter()
                    .map(|access| self.backend.access_path(&access.scope, key));
                std::iter::once(object).chain(access).collect::<Vec<_>>()
            })
            .collect();
        for (key, _) in &victims {
            self.hot.remove(key);
            self.metrics.store(StoreEvent::Evicted);
        }
        tracing::info!(
            objects = victims.len(),
            "blob store full: least recently used objects evicted"
        );
        tokio::spawn(async move {
            for path in paths {
                if let Err(e) = objects.delete(&path).await {
                    tracing::warn!(error = %e, "an evicted object could not be deleted");
                }
            }
        });
    }

    /// Forgets an object the store no longer has.
    pub(super) fn forget(&self, key: &ObjectKey) {
        self.hot.remove(key);
        let mut index = self.lock_index();
        index.remove(key);
        self.metrics.store_holds(index.bytes(), index.len() as u64);
    }

    /// Logs and counts a failure of the store: the pull goes on without it.
    pub(super) fn unavailable(&self, doing: &str, error: &dyn std::fmt::Display) {
        self.backend.failed(&self.metrics, doing, error);
    }

    /// Starts the download `ticket` claimed, of `size` bytes of `media_type`, from `body`,
    /// resuming with `resume`, for `reader`, under the fleet's `lease` on it (released once it
    /// ends); a download that does not match its digest drops the storage URL `forget` names
    /// from the redirect cache. Hands `body` back when it
    /// cannot be stored (larger than the store, no room for its spool): the caller streams
    /// it as without a store.
    pub fn start_fill(
        self: &Arc<Self>,
        ticket: FillTicket,
        (size, media_type): (u64, HeaderValue),
        (body, resume): (UpstreamBody, Resume),
        reader: &Reader,
        (forget, lease): (Option<CachedRedirect>, Option<LeaseGuard>),
    ) -> Result<Arc<Fill>, UpstreamBody> {
        if size > self.max_size {
            return Err(body);
        }
        let scope = match reader {
            Reader::Shared(scope) => Some(scope),
            Reader::Login(_) => None,
        };
        let store = self.clone();
        let committed = Box::new(move |fill: &Fill| store.committed(fill));
        self.downloads.start(
            ticket,
            (size, media_type),
            (body, resume),
            (scope, forget),
            (committed, lease),
        )
    }

    /// Indexes a download that was committed to the store.
    fn committed(&self, fill: &Fill) {
        let stored = Stored {
            size: fill.size,
            media_type: None,
            scopes: fill
                .scopes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|scope| Access {
                    scope: scope.clone(),
                    checked: SystemTime::now(),
                })
                .collect(),
        };
        self.lock_index().insert(fill.key.clone(), stored);
        self.evict();
    }

    pub(super) fn lock_index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}
