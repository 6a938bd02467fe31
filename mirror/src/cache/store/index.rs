//! What the store holds, in memory: each object's size, a manifest's media type, the shared
//! identities that fetched it (and when the registry last said they may), and how recently
//! it was used. Rebuilt from the store's
//! listing at start; evicts the least recently used first.

use super::backend::{Backend, Listed};
use super::keys::{ObjectKey, Scope};
use lru::LruCache;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How much newer a check must be than the one recorded to be written to the store again.
const RECORD_AGAIN: Duration = Duration::from_secs(60);

/// A shared identity's access to an object: when the registry last said it serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// The shared identity in one repository (its [`Scope`]).
    pub scope: Scope,
    /// When the registry last served it (or answered its `HEAD`).
    pub checked: SystemTime,
}

/// One object the store holds.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Its size in bytes.
    pub size: u64,
    /// A manifest's media type.
    pub media_type: Option<Arc<str>>,
    /// The shared identities that fetched it, each in one repository, and when.
    pub scopes: Vec<Access>,
}

/// The most shared identities' accesses kept for one object (each a repository): past
/// it, the one checked longest ago goes (its next read costs a `HEAD`).
const MAX_SCOPES: usize = 64;

impl Stored {
    /// Its size and media type (what a lookup answers), without its accesses.
    pub fn summary(&self) -> Stored {
        Stored {
            size: self.size,
            media_type: self.media_type.clone(),
            scopes: Vec::new(),
        }
    }

    /// When the registry last said `scope` may read it.
    pub fn checked(&self, scope: &Scope) -> Option<SystemTime> {
        self.scopes
            .iter()
            .find(|a| &a.scope == scope)
            .map(|a| a.checked)
    }

    /// Records `access`; whether the store should record it too (new, or a newer check).
    fn add(&mut self, access: Access) -> bool {
        match self.scopes.iter_mut().find(|a| a.scope == access.scope) {
            Some(old) => {
                let record = old.checked + RECORD_AGAIN < access.checked;
                old.checked = old.checked.max(access.checked);
                record
            }
            None => {
                if self.scopes.len() >= MAX_SCOPES {
                    let oldest = (0..self.scopes.len()).min_by_key(|&i| self.scopes[i].checked);
                    if let Some(oldest) = oldest {
                        self.scopes.swap_remove(oldest);
                    }
                }
                self.scopes.push(access);
                true
            }
        }
    }
}

/// The objects the store holds, the least recently used first out.
pub struct Index {
    objects: LruCache<ObjectKey, Stored>,
    bytes: u64,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            objects: LruCache::unbounded(),
            bytes: 0,
        }
    }
}

impl Index {
    /// The object at `key`, now the most recently used.
    pub fn get(&mut self, key: &ObjectKey) -> Option<&Stored> {
        self.objects.get(key)
    }

    /// Adds `key` (or replaces it, keeping the scopes it had), as the most recently used.
    pub fn insert(&mut self, key: ObjectKey, mut stored: Stored) {
        if let Some(old) = self.objects.pop(&key) {
            self.bytes -= old.size;
            for access in old.scopes {
                stored.add(access);
            }
        }
        self.bytes += stored.size;
        self.objects.put(key, stored);
    }

    /// Records that the registry said `access.scope` may read `key`; whether the store
    /// should record it too (new, or a newer check).
    pub fn add_scope(&mut self, key: &ObjectKey, access: Access) -> bool {
        self.objects
            .peek_mut(key)
            .is_some_and(|stored| stored.add(access))
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Stored> {
        let stored = self.objects.pop(key)?;
        self.bytes -= stored.size;
        Some(stored)
    }

    /// Takes the least recently used objects out until at most `target` bytes are held,
    /// and returns them (to delete from the store).
    pub fn evict_to(&mut self, target: u64) -> Vec<(ObjectKey, Stored)> {
        let mut out = Vec::new();
        while self.bytes > target {
            let Some((key, stored)) = self.objects.pop_lru() else {
                break;
            };
            self.bytes -= stored.size;
            out.push((key, stored));
        }
        out
    }

    /// Every object, the least recently used first.
    pub fn into_entries(mut self) -> impl Iterator<Item = (ObjectKey, Stored)> {
        std::iter::from_fn(move || self.objects.pop_lru())
    }

    /// The bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The objects held.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

impl Index {
    /// What the store holds, from its listing: objects, oldest first (the first evicted),
    /// with the shared identities that may read them.
    pub async fn read(backend: &Backend) -> Result<Index, object_store::Error> {
        let mut objects = backend.list("blobs").await?;
        objects.extend(backend.list("manifests").await?);
        objects.sort_by_key(|meta| meta.last_modified);
        let mut index = Index::default();
        for meta in objects {
            if let Some(Listed::Object(key, media_type)) = backend.read_listed(&meta.location) {
                // Nothing is no blob but the empty one's (planted: its head alone would
                // answer it as complete).
                let empty = meta.size == 0 && !key.digest.expected().is_of_nothing();
                if empty && key.kind == super::keys::Kind::Blob {
                    continue;
                }
                let stored = Stored {
                    size: meta.size,
                    media_type: media_type.map(Into::into),
                    scopes: Vec::new(),
                };
                index.insert(key, stored);
            }
        }
        for meta in backend.list("access").await? {
            if let Some(Listed::Access(scope, key)) = backend.read_listed(&meta.location) {
                let checked = meta.last_modified.into();
                index.add_scope(&key, Access { scope, checked });
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::keys::ContentDigest;

    fn key(n: u8) -> ObjectKey {
        ObjectKey::blob(ContentDigest::sha256_of(&[n]))
    }

    fn access(scope: &str, secs: u64) -> Access {
        Access {
            scope: scope.into(),
            checked: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    fn stored(size: u64, scope: Option<&str>) -> Stored {
        Stored {
            size,
            media_type: None,
            scopes: scope.map(|s| vec![access(s, 1000)]).unwrap_or_default(),
        }
    }

    #[test]
    fn least_recently_used_go_first_and_scopes_add_up() {
        let mut index = Index::default();
        for n in 0..5 {
            index.insert(key(n), stored(100, None));
        }
        assert_eq!(index.bytes(), 500);
        index.get(&key(0));
        let evicted: Vec<_> = index.evict_to(300).into_iter().map(|(k, _)| k).collect();
        assert_eq!(evicted, [key(1), key(2)]);
        assert_eq!((index.bytes(), index.len()), (300, 3));
        index.insert(key(0), stored(100, Some("anonymous@docker.io")));
        assert!(index.add_scope(&key(0), access("mirror@docker.io", 1000)));
        assert!(!index.add_scope(&key(0), access("mirror@docker.io", 1000)));
        // A check a minute newer is recorded again; one within the minute is not, but
        // counts here; an older one changes nothing.
        let checked = |index: &mut Index| {
            let stored = index.get(&key(0)).unwrap();
            stored.checked(&"mirror@docker.io".into())
        };
        assert!(!index.add_scope(&key(0), access("mirror@docker.io", 1030)));
        assert_eq!(checked(&mut index), Some(access("", 1030).checked));
        assert!(index.add_scope(&key(0), access("mirror@docker.io", 1091)));
        assert!(!index.add_scope(&key(0), access("mirror@docker.io", 1000)));
        assert_eq!(checked(&mut index), Some(access("", 1091).checked));
        index.insert(key(0), stored(100, None));
        assert_eq!(
            index.get(&key(0)).unwrap().scopes.len(),
            2,
            "kept on replace"
        );
        assert_eq!(index.bytes(), 300);
        assert!(index.remove(&key(3)).is_some() && index.bytes() == 200);
    }

    #[test]
    fn an_object_keeps_the_most_recently_checked_scopes_only() {
        let mut index = Index::default();
        index.insert(key(9), stored(10, None));
        for n in 0..(MAX_SCOPES as u64 + 6) {
            index.add_scope(
                &key(9),
                access(&format!("anonymous@docker.io/{n}"), 1000 + n),
            );
        }
        let stored = index.get(&key(9)).unwrap();
        assert_eq!(stored.scopes.len(), MAX_SCOPES);
        assert!(
            stored.checked(&"anonymous@docker.io/0".into()).is_none(),
            "the oldest went"
        );
        assert!(stored
            .checked(&format!("anonymous@docker.io/{}", MAX_SCOPES + 5).into())
            .is_some());
        assert!(
            stored.summary().scopes.is_empty(),
            "a lookup copies no scopes"
        );
    }
}
