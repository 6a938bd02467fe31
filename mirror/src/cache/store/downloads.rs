//! The store's downloads in flight: one per object, claimed by the first request that
//! misses it (the others wait for it to start, then read it as it arrives), written to the
//! spool, and committed once verified (`commit.rs`).

use super::backend::Backend;
use super::commit;
use super::fill::{self, Fill, FillError, Resume};
use super::keys::{ObjectKey, Scope};
use super::leases::LeaseGuard;
use super::spool::SpoolFile;
use super::spool::{self, FillState, Progress};
use crate::metrics::{Metrics, StoreEvent};
use crate::serve::body::UpstreamBody;
use crate::serve::verify::CachedRedirect;
use http::HeaderValue;
use object_store::{ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tower_signed_redirect::BoxError;

/// The most downloads in flight into the store at once (each holds a part of at most 8 MiB
/// in memory on its way to S3); a request beyond them is served as without a store.
pub const MAX_FILLS: usize = 64;

/// What the store does with a download once it is committed (indexes it).
pub type Committed = Box<dyn FnOnce(&Fill) + Send>;

/// A download being started, or running.
enum Slot {
    /// Its first request is asking the upstream: the receiver ends when it is done asking.
    /// Once the upstream said how large it is, the bytes it holds of the spool budget.
    Starting(watch::Receiver<()>, u64),
    Running(Arc<Fill>),
}

/// What is in flight for an object.
pub enum InFlight {
    /// A download, running.
    Running(Arc<Fill>),
    /// Another request is asking the upstream, to start one.
    Starting(Starting),
    /// Nothing: this request claimed the download.
    Claimed(FillTicket),
    /// Nothing, and nothing claimed.
    Nothing,
}

/// A request that waits for another to start a download.
pub struct Starting(watch::Receiver<()>);

impl Starting {
    /// Resolves once the other request started the download (or gave up), at most `bound`
    /// from now.
    pub async fn wait(mut self, bound: Duration) {
        let _ = tokio::time::timeout(bound, self.0.changed()).await;
    }
}

/// The right to download an object into the store: the requests for it that come meanwhile
/// wait for this one. Dropped without a download started, it lets them go.
pub struct FillTicket {
    downloads: Arc<Downloads>,
    key: ObjectKey,
    _starting: watch::Sender<()>,
}

impl Drop for FillTicket {
    fn drop(&mut self) {
        let mut slots = self.downloads.lock();
        if matches!(slots.get(&self.key), Some(Slot::Starting(..))) {
            slots.remove(&self.key);
        }
    }
}

/// The downloads in flight, shared by every worker.
pub struct Downloads {
    slots: Mutex<HashMap<ObjectKey, Slot>>,
    /// The most bytes the downloads in flight may spool at once (the store's maximum):
    /// clients that ask for a byte of many blobs do not make the mirror spool them all.
    spool_budget: u64,
    /// The bytes of the spool files alive now (a download's, until its last reader is done).
    spooled: Arc<AtomicU64>,
    backend: Arc<Backend>,
    idle_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Downloads {
    /// Downloads into `backend`, each failed after `idle_timeout` without a byte, spooling
    /// `spool_budget` bytes at most together.
    pub fn new(
        backend: Arc<Backend>,
        (idle_timeout, spool_budget): (Duration, u64),
        metrics: Arc<Metrics>,
    ) -> Arc<Downloads> {
        Arc::new(Downloads {
            slots: Mutex::default(),
            spool_budget,
            spooled: Arc::default(),
            backend,
            idle_timeout,
            metrics,
        })
    }

    /// What is in flight for `key`; with `claim`, the right to download it if nothing is
    /// (and the downloads in flight leave room for another: [`MAX_FILLS`], the budget).
    pub fn find(self: &Arc<Self>, key: &ObjectKey, claim: bool) -> InFlight {
        let mut slots = self.lock();
        match slots.get(key) {
            Some(Slot::Running(fill)) => InFlight::Running(fill.clone()),
            Some(Slot::Starting(starting, _)) => InFlight::Starting(Starting(starting.clone())),
            None if claim
                && slots.len() < MAX_FILLS
                && self.spooling(&slots) < self.spool_budget =>
            {
                let (tx, rx) = watch::channel(());
                slots.insert(key.clone(), Slot::Starting(rx, 0));
                InFlight::Claimed(FillTicket {
                    downloads: self.clone(),
                    key: key.clone(),
                    _starting: tx,
                })
            }
            None => InFlight::Nothing,
        }
    }

    /// The download of `key` under way, if there is one.
    pub fn running(&self, key: &ObjectKey) -> Option<Arc<Fill>> {
        match self.lock().get(key) {
            Some(Slot::Running(fill)) => Some(fill.clone()),
            _ => None,
        }
    }

    /// Starts the download `ticket` claimed, of `size` bytes of `media_type`, from `body`,
    /// resuming with `resume`, for the shared identity `scope` if it is one; `committed`
    /// runs once it is in the store, and the fleet's `lease` on it (if any) is released
    /// after that. A download that does not match its digest drops the
    /// storage URL `forget` names from the redirect cache. Hands `body` back when the spool
    /// has no room for it.
    pub fn start(
        self: &Arc<Self>,
        ticket: FillTicket,
        (size, media_type): (u64, HeaderValue),
        (body, resume): (UpstreamBody, Resume),
        (scope, forget): (Option<&Scope>, Option<CachedRedirect>),
        (committed, lease): (Committed, Option<LeaseGuard>),
    ) -> Result<Arc<Fill>, UpstreamBody> {
        let Some(spool) = self.spool_for(&ticket.key, size) else {
            return Err(body);
        };
        let (progress, watching) = watch::channel(Progress {
            written: 0,
            state: FillState::Writing,
        });
        let progress = Arc::new(progress);
        let key = ticket.key.clone();
        let fill = Arc::new(Fill::new(key.clone(), size, media_type, spool, watching));
        if let Some(scope) = scope {
            fill.add_scope(scope);
        }
        self.lock().insert(key, Slot::Running(fill.clone()));
        // The requests that waited for this one find the download now.
        drop(ticket);
        let upload = self.backend.local.is_none().then(|| {
            let (backend, fill) = (self.backend.clone(), fill.clone());
            tokio::spawn(async move { commit::upload(&backend, &fill).await })
        });
        let (downloads, filling) = (self.clone(), fill.clone());
        tokio::spawn(async move {
            let idle = downloads.idle_timeout;
            let outcome = fill::download(&filling, progress.clone(), body, resume, idle).await;
            progress.send_modify(|p| p.state = fill::finished(&outcome));
            if let (Err(FillError::DigestMismatch), Some(cached)) = (&outcome, forget) {
                downloads.metrics.digest_mismatch();
                cached.forget();
            }
            downloads.finish(&filling, outcome, upload, committed).await;
            if let Some(lease) = lease {
                lease.release().await;
            }
        });
        Ok(fill)
    }

    /// The spool file of a download of `size` bytes of `key` (its ticket's), its room taken
    /// from the spool budget and reserved on disk; `None` (logged) when there is no room.
    fn spool_for(&self, key: &ObjectKey, size: u64) -> Option<(std::path::PathBuf, SpoolFile)> {
        // The budget checked and taken at once: downloads starting together do not both
        // fit in what only one of them fits in.
        {
            let mut slots = self.lock();
            let spooling = self.spooling(&slots);
            if spooling + size > self.spool_budget {
                tracing::debug!(size, spooling, "no room in the spool budget: not stored");
                return None;
            }
            if let Some(Slot::Starting(_, reserved)) = slots.get_mut(key) {
                *reserved = size;
            }
        }
        // The disk must hold this download (the others reserved theirs already).
        let spool = spool::has_room(&self.backend.spool, size)
            .and_then(|()| spool::create(&self.backend.spool, key).map_err(|e| e.to_string()));
        // Its room reserved before any reader is served: a disk that fills up meanwhile
        // does not break the download half way.
        let spooled = self.spooled.clone();
        let spool = spool.and_then(|(path, file)| match spool::reserve(&file, size) {
            Ok(()) => Ok((path, SpoolFile::counted(file, size, spooled))),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(format!("reserve {size} bytes: {e}"))
            }
        });
        spool
            .map_err(|e| self.backend.spool_failed(&self.metrics, &e))
            .ok()
    }

    /// After a download: committed to the store if it was verified (a local spool renamed
    /// into place; an S3 upload completed), its spool removed either way.
    async fn finish(
        &self,
        fill: &Fill,
        outcome: Result<(), FillError>,
        upload: Option<tokio::task::JoinHandle<Result<(), BoxError>>>,
        committed: Committed,
    ) {
        if let Err(e) = &outcome {
            tracing::warn!(digest = %fill.key.digest, error = %e, "blob download not stored");
            self.metrics.store(StoreEvent::FillFailed);
        } else {
            // Who may read it is recorded before it is committed: a store that holds the
            // object holds its accesses too, even after a crash in between.
            self.record_accesses(fill).await;
        }
        let stored = match (outcome, upload) {
            (Err(_), upload) => {
                if let Some(upload) = upload {
                    let _ = upload.await;
                }
                Err("not verified".into())
            }
            (Ok(()), Some(upload)) => upload.await.unwrap_or_else(|e| Err(e.to_string().into())),
            (Ok(()), None) => commit::rename_into_place(&self.backend, fill).await,
        };
        match stored {
            Ok(()) => {
                // Accesses the upstream granted while the download was committed.
                self.record_accesses(fill).await;
                // In the index before the download leaves the slots: a request in between
                // finds one or the other.
                committed(fill);
            }
            Err(e) if fill.progress().state == FillState::Verified => {
                self.backend.failed(&self.metrics, "store a blob", &*e);
            }
            Err(_) => {}
        }
        self.lock().remove(&fill.key);
        let _ = std::fs::remove_file(&fill.path);
    }

    /// Records in the store the shared identities the download was served to (once each).
    async fn record_accesses(&self, fill: &Fill) {
        let scopes = fill
            .scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut recorded = fill.recorded.lock().await;
        let new: Vec<_> = scopes
            .into_iter()
            .filter(|s| !recorded.contains(s))
            .collect();
        for scope in &new {
            let path = self.backend.access_path(scope, &fill.key);
            match self.backend.objects.put(&path, PutPayload::default()).await {
                Ok(_) => recorded.push(scope.clone()),
                Err(e) => self.backend.failed(&self.metrics, "record an access", &e),
            }
        }
    }

    /// The bytes spooled now: the spool files alive (their downloads' whole size), and the
    /// room downloads about to start took.
    fn spooling(&self, slots: &HashMap<ObjectKey, Slot>) -> u64 {
        let starting: u64 = slots
            .values()
            .map(|slot| match slot {
                Slot::Starting(_, reserved) => *reserved,
                Slot::Running(_) => 0,
            })
            .sum();
        self.spooled.load(Ordering::Relaxed) + starting
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}
