//! Who a request is, for the caches: the identity the mirror sends it upstream with. Both
//! caches key what they keep by it, so that nothing fetched with one
//! identity is served to another.

use std::time::SystemTime;
use tower_signed_redirect::CacheIdentity;

/// bcrypt's cost for [`Identity::mirror`]'s digest, computed once per worker at start.
const ACCOUNT_COST: u32 = 8;

/// Who a request is, for the caches: a key naming the identity (never a credential in
/// clear: a digest), and when it ends (a client login's token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Names the identity: `mirror:` and a digest of its account, `anonymous`, or a kind and a SHA-256: `login:` (a login
    /// `/token/` fetched a token for), `token:` (any other Bearer token), `credential:` (any
    /// other `Authorization` header).
    pub key: Vec<u8>,
    /// The end of the identity's token, for a client's own login.
    pub valid_until: Option<SystemTime>,
}

impl Identity {
    /// The mirror's own login to one account with one credential, shared by all its
    /// clients: `mirror:` and a digest of `credential` (the user name and password, or
    /// the identity token), so that a store kept across restarts and replicas serves what
    /// one account fetched to no other account, nor to the same account with another
    /// token (a read-only one). The digest is bcrypt's, salted by the account: the store's
    /// listing, which holds it, gives no cheap way to guess a weak password.
    pub fn mirror(account: &str, credential: &str) -> Identity {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let salt: [u8; 32] =
            Sha256::digest([b"registry-mirror account\0", account.as_bytes()].concat()).into();
        // bcrypt reads 72 bytes at most: it hashes a digest of the whole credential.
        let input = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(
            [account.as_bytes(), b"\0", credential.as_bytes()].concat(),
        ));
        let salt: [u8; 16] = salt[..16].try_into().expect("16 of 32 bytes");
        let hashed = bcrypt::hash_with_salt(input, ACCOUNT_COST, salt)
            .map(|parts| parts.format_for_version(bcrypt::Version::TwoB))
            .unwrap_or_default();
        let digest = Sha256::digest(hashed.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Identity::shared(format!("mirror:{hex}").as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirrors_identity_names_its_account_and_credential_by_a_digest() {
        let alice = Identity::mirror("alice", "alice-pw");
        assert_eq!(alice, Identity::mirror("alice", "alice-pw"));
        assert_eq!(alice.valid_until, None);
        // Another account, or the same account with another token (a read-only one).
        assert_ne!(alice, Identity::mirror("bob", "alice-pw"));
        assert_ne!(alice, Identity::mirror("alice", "read-only-token"));
        // The boundary between account and credential is part of the digest.
        assert_ne!(Identity::mirror("ab", "c"), Identity::mirror("a", "bc"));
        assert_ne!(alice, Identity::anonymous());
        let key = String::from_utf8(alice.key).unwrap();
        let hex = key.strip_prefix("mirror:").unwrap();
        assert!(
            hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
    }
}
