//! The reads of stored objects that the upstream accepted clients' own logins for: a login,
//! in one repository of one registry, for one digest, until the login's token ends. Bounded
//! (the least recently used go first); kept in memory, so a restart forgets them (and the
//! upstream is asked again, with a `HEAD`).

use super::keys::{Grant, ObjectKey};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// How many grants are kept at most.
const MAX_GRANTS: usize = 65_536;

/// A login's read of one object in one repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Read {
    identity: Vec<u8>,
    registry: Arc<str>,
    repository: String,
    key: ObjectKey,
}

impl Read {
    fn of(grant: &Grant, key: &ObjectKey) -> Read {
        Read {
            identity: grant.identity.clone(),
            registry: grant.registry.clone(),
            repository: grant.repository.clone(),
            key: key.clone(),
        }
    }
}

/// The grants the upstream gave clients' logins, each until its token ends.
pub struct Grants {
    until: Mutex<LruCache<Read, SystemTime>>,
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            until: Mutex::new(LruCache::new(
                NonZeroUsize::new(MAX_GRANTS).expect("a non-zero bound"),
            )),
        }
    }
}

impl Grants {
    /// Records that the upstream accepted `grant`'s login for `key` in its repository.
    pub fn give(&self, grant: &Grant, key: &ObjectKey) {
        self.lock().put(Read::of(grant, key), grant.until);
    }

    /// Whether `grant`'s login may read `key` in its repository now.
    pub fn allows(&self, grant: &Grant, key: &ObjectKey) -> bool {
        let now = SystemTime::now();
        self.lock()
            .get(&Read::of(grant, key))
            .is_some_and(|until| *until > now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Read, SystemTime>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::keys::ContentDigest;
    use std::time::Duration;

    #[test]
    fn a_grant_is_one_login_one_repository_one_digest_until_its_token_ends() {
        let grants = Grants::default();
        let soon = SystemTime::now() + Duration::from_secs(60);
        let alice = Grant {
            identity: b"login:alice".to_vec(),
            registry: "docker.io".into(),
            repository: "alice/private".into(),
            until: soon,
        };
        let blob = ObjectKey::blob(ContentDigest::sha256_of(b"layer"));
        let other = ObjectKey::blob(ContentDigest::sha256_of(b"other"));
        grants.give(&alice, &blob);
        assert!(grants.allows(&alice, &blob));
        assert!(!grants.allows(&alice, &other), "another digest");
        let elsewhere = Grant {
            repository: "alice/other".into(),
            ..alice.clone()
        };
        assert!(!grants.allows(&elsewhere, &blob), "another repository");
        let bob = Grant {
            identity: b"login:bob".to_vec(),
            ..alice.clone()
        };
        assert!(!grants.allows(&bob, &blob), "another login");
        let ended = Grant {
            until: SystemTime::now() - Duration::from_secs(1),
            ..alice.clone()
        };
        grants.give(&ended, &other);
        assert!(!grants.allows(&alice, &other), "ended with the token");
    }
}
