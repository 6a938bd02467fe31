//! What the store does for a fleet: replicas on one S3 store find what the others stored
//! since they listed it (a `HEAD` on a miss), take a lease before they download (one
//! download per digest across the fleet), and share the reads the registry granted clients'
//! logins (`shared_state.rs`). Each step degrades to what a replica knows alone.

use super::blobs::BlobStore;
use super::index::{Access, Stored};
use super::keys::{Kind, ObjectKey, Reader};
use super::leases::{Lease, LeaseGuard};
use crate::metrics::Joined;
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a request waiting for another replica's download asks whether it is stored.
const REPLICA_POLL: Duration = Duration::from_millis(200);

/// The longest a request waits for another replica's download (which ends by itself after
/// `--idle-timeout` without a byte): a safety bound, past which it downloads too.
pub const MAX_REPLICA_WAIT: Duration = Duration::from_secs(600);

/// What the fleet's lease says to a replica that would download a blob.
pub enum DownloadTurn {
    /// Download it (holding the lease, if there is a fleet to hold it against).
    Fetch(Option<LeaseGuard>),
    /// Another replica stored it meanwhile.
    Stored,
}

impl BlobStore {
    /// What another replica stored of `key` since this one listed the store (an S3 store's
    /// object, found with a `HEAD`; a manifest with a listing of its digest's folder, whose
    /// name holds its media type), now indexed here, with `reader`'s access if a shared
    /// identity's was recorded. `None` for a local store (one process's), or if it is not
    /// there.
    pub async fn discover(self: &Arc<Self>, key: &ObjectKey, reader: &Reader) -> Option<Stored> {
        if self.backend.local.is_some() || self.backend.down() {
            return None;
        }
        let (size, media_type) = match key.kind {
            Kind::Blob => {
                let path = self.backend.object_path(key, None);
                let size = match self.backend.objects.head(&path).await {
                    Ok(meta) => meta.size,
                    Err(object_store::Error::NotFound { .. }) => return None,
                    Err(e) => {
                        self.unavailable("look for a blob", &e);
                        return None;
                    }
                };
                // Nothing is no blob but the empty one's (its head alone would be complete).
                (size > 0 || key.digest.expected().is_of_nothing()).then_some(())?;
                (size, None)
            }
            Kind::Manifest => {
                let folder = self.backend.object_path(key, None);
                let mut listing = self.backend.objects.list(Some(&folder));
                let meta = match listing.next().await? {
                    Ok(meta) => meta,
                    Err(e) => {
                        self.unavailable("look for a manifest", &e);
                        return None;
                    }
                };
                match self.backend.read_listed(&meta.location)? {
                    super::backend::Listed::Object(_, media_type) => (meta.size, media_type),
                    super::backend::Listed::Access(..) => return None,
                }
            }
        };
        let mut scopes = Vec::new();
        if let Reader::Shared(scope) = reader {
            let access = self.backend.access_path(scope, key);
            if let Ok(meta) = self.backend.objects.head(&access).await {
                let checked = meta.last_modified.into();
                scopes.push(Access {
                    scope: scope.clone(),
                    checked,
                });
            }
        }
        let stored = Stored {
            size,
            media_type: media_type.map(Into::into),
            scopes,
        };
        self.lock_index().insert(key.clone(), stored.clone());
        Some(stored)
    }

    /// The fleet's lease on downloading `key`: this replica's to take (`Some`; `None`
    /// without a shared state, or when it cannot say), or, while another replica holds it, a
    /// wait until that one stored the blob or its lease lapsed (it died: then this replica
    /// takes it). The holder renews its lease only while its download runs, and a download
    /// ends after `--idle-timeout` without a byte, so the wait is as long as the holder's
    /// download takes, and at most [`MAX_REPLICA_WAIT`] (then this replica downloads too).
    ///
    /// A lease taken is followed by one more look at the store: the holder before released
    /// its lease only once the blob was committed, so a replica that takes a lease just
    /// released finds the blob and does not download it again.
    pub async fn download_turn(self: &Arc<Self>, key: &ObjectKey, reader: &Reader) -> DownloadTurn {
        let deadline = Instant::now() + MAX_REPLICA_WAIT;
        let mut joined = false;
        loop {
            match self.lease(key).await {
                Lease::Held(lease) => {
                    if self.discover(key, reader).await.is_some() {
                        drop(lease);
                        return DownloadTurn::Stored;
                    }
                    return DownloadTurn::Fetch(Some(lease));
                }
                Lease::Unknown => return DownloadTurn::Fetch(None),
                Lease::Taken => {}
            }
            if !joined {
                joined = true;
                self.metrics.joined(Joined::Replica);
            }
            loop {
                tokio::time::sleep(REPLICA_POLL).await;
                if self.discover(key, reader).await.is_some() {
                    return DownloadTurn::Stored;
                }
                if Instant::now() >= deadline {
                    return DownloadTurn::Fetch(None);
                }
                match self.leased(key).await {
                    Some(true) => continue,
                    // Released or lapsed (its replica died): this one takes it.
                    Some(false) => break,
                    None => return DownloadTurn::Fetch(None),
                }
            }
        }
    }

    /// A lease on downloading `key` across the fleet (without a shared state, this replica
    /// is alone: [`Lease::Unknown`]).
    pub async fn lease(&self, key: &ObjectKey) -> Lease {
        self.lease_on(&lease_name(key)).await
    }

    /// Whether another replica still holds the lease on downloading `key` (`None`: no
    /// shared state, or it cannot say).
    pub async fn leased(&self, key: &ObjectKey) -> Option<bool> {
        self.leased_on(&lease_name(key)).await
    }

    /// A lease across the fleet on fetching what `name` names.
    pub async fn lease_on(&self, name: &[Vec<u8>]) -> Lease {
        match &self.shared {
            Some(shared) => shared.lease(name).await,
            None => Lease::Unknown,
        }
    }

    /// Whether a replica holds the lease on what `name` names (`None`: it cannot say).
    pub async fn leased_on(&self, name: &[Vec<u8>]) -> Option<bool> {
        self.shared.as_ref()?.leased(name).await
    }

    /// Whether another replica recorded that the registry accepted `reader`'s login for
    /// `key` (remembered here too, then).
    pub async fn shared_allows(&self, key: &ObjectKey, reader: &Reader) -> bool {
        let (Some(shared), Reader::Login(grant)) = (&self.shared, reader) else {
            return false;
        };
        let allowed = shared.allows(grant, key).await;
        if allowed {
            self.grants.give(grant, key);
        }
        allowed
    }
}

/// What a lease on `key` is named by: its kind and digest.
fn lease_name(key: &ObjectKey) -> [Vec<u8>; 2] {
    [
        key.kind.folder().as_bytes().to_vec(),
        key.digest.to_string().into_bytes(),
    ]
}
