//! Who may read what the store holds, as the store knows it: a client's login the registry
//! accepted for that repository and digest, until its token ends (`grants.rs`); a shared
//! identity (the mirror's own login to one account, or clients without one) the registry
//! served the object to, within `--blob-store-recheck` (or, while the registry fails,
//! `--serve-stale`). Shared identities' accesses are kept in the store (`access/`), so that
//! they outlive a restart and reach the other replicas. The rest of the rule, asking the
//! registry, is `http/store_access.rs`.

use super::blobs::BlobStore;
use super::index::Access;
use super::keys::{ObjectKey, Reader};
use object_store::{ObjectStoreExt, PutPayload};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

impl BlobStore {
    /// Whether `reader` may read `key`, stored or being downloaded, without asking the
    /// upstream: a shared identity the registry served it to within `--blob-store-recheck`,
    /// or a login the upstream accepted for it in that repository.
    pub fn allows_without_asking(&self, key: &ObjectKey, reader: &Reader) -> bool {
        self.served_within(key, reader, self.recheck)
    }

    /// Whether `reader` may read `key` while the registry cannot say (it fails): a shared
    /// identity the registry served it to within `--serve-stale`.
    pub fn allows_while_failing(&self, key: &ObjectKey, reader: &Reader) -> bool {
        matches!(reader, Reader::Shared(_)) && self.served_within(key, reader, self.serve_stale)
    }

    fn served_within(&self, key: &ObjectKey, reader: &Reader, within: Duration) -> bool {
        let scope = match reader {
            Reader::Login(grant) => return self.grants.allows(grant, key),
            Reader::Shared(scope) => scope,
        };
        if let Some(stored) = self.lock_index().get(key) {
            return stored
                .checked(scope)
                .is_some_and(|checked| checked.elapsed().unwrap_or_default() < within);
        }
        // A download's readers were all just served by the registry.
        self.downloads.running(key).is_some_and(|fill| {
            fill.scopes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(scope)
        })
    }

    /// Records that the upstream served `key` to `reader` (it answered the reader's own
    /// request for it): a login's grant until its token ends, or a shared identity's
    /// access, kept in the store.
    pub fn allow(self: &Arc<Self>, key: &ObjectKey, reader: &Reader) {
        let scope = match reader {
            Reader::Login(grant) => {
                self.grants.give(grant, key);
                if let Some(shared) = self.shared.clone() {
                    let (grant, key) = (grant.clone(), key.clone());
                    tokio::spawn(async move { shared.give(&grant, &key).await });
                }
                return;
            }
            Reader::Shared(scope) => scope,
        };
        if let Some(fill) = self.downloads.running(key) {
            fill.add_scope(scope);
        }
        let access = Access {
            scope: scope.clone(),
            checked: SystemTime::now(),
        };
        if self.lock_index().add_scope(key, access) {
            let path = self.backend.access_path(scope, key);
            let store = self.clone();
            tokio::spawn(async move {
                if let Err(e) = store
                    .backend
                    .objects
                    .put(&path, PutPayload::default())
                    .await
                {
                    store.unavailable("record an access", &e);
                }
            });
        }
    }
}
