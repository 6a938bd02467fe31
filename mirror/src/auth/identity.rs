//! Who a request is, for the caches: the identity the mirror sends it upstream with. Both
//! caches key what they keep by it, so that nothing fetched with one
//! identity is served to another.

use std::time::SystemTime;
use tower_signed_redirect::CacheIdentity;

/// Who a request is, for the caches: a key naming the identity (never a credential in
/// clear: a digest), and when it ends (a client login's token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Names the identity: `mirror`, `anonymous`, or a kind and a SHA-256: `login:` (a login
    /// `/token/` fetched a token for), `token:` (any other Bearer token), `credential:` (any
    /// other `Authorization` header).
    pub key: Vec<u8>,
    /// The end of the identity's token, for a client's own login.
    pub valid_until: Option<SystemTime>,
}

impl Identity {
    /// The mirror's own login, shared by all its clients.
    pub fn mirror() -> Identity {
        Identity::shared(b"mirror")
    }

    /// Clients without credentials (or with a token fetched without any): public content.
    pub fn anonymous() -> Identity {
        Identity::shared(b"anonymous")
    }

    fn shared(key: &[u8]) -> Identity {
        Identity {
            key: key.to_vec(),
            valid_until: None,
        }
    }

    /// The same identity for the redirect cache.
    pub fn cache_identity(&self) -> CacheIdentity {
        let identity = CacheIdentity::new(self.key.clone());
        match self.valid_until {
            Some(until) => identity.valid_until(until),
            None => identity,
        }
    }
}
