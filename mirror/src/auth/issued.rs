//! The tokens the mirror's `/token/` endpoint handed out, remembered: who they were issued
//! to (no credentials: the shared anonymous identity; a login: that login) and until when,
//! so that the caches key what a token fetches by the login behind it, and keep it no
//! longer than the token lives.

use super::challenge::strip_prefix_ignore_case;
use super::identity::Identity;
use super::token_service::{jwt_expiry, MAX_TOKEN_LIFETIME};
use http::header::{self, HeaderMap};
use http::request::Parts;
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How long cached content stays with a client credential whose lifetime the mirror does not
/// know (a token from elsewhere that is not a JWT, a Basic login sent to the registry):
/// Docker Hub's token lifetime.
pub const UNKNOWN_LOGIN_LIFETIME: Duration = Duration::from_secs(300);

/// How many issued tokens are remembered.
const MAX_ISSUED: usize = 65_536;

/// Who a token `/token/` handed out was issued to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuedTo {
    /// A client that sent no credentials (no `Authorization`, no `Cookie`, nothing in the
    /// query but `service`, `scope`, `client_id`, `offline_token`): the token grants what
    /// anyone may pull.
    Anonymous,
    /// A client's login for one scope: the SHA-256 of its credentials and its whole query
    /// (the scope included), so that a token for one repository shares nothing with the
    /// same login's tokens for another.
    Login([u8; 32]),
}

impl IssuedTo {
    /// Whom a `/token/` request is for.
    pub fn of(parts: &Parts) -> IssuedTo {
        const PLAIN: [&str; 4] = ["service", "scope", "client_id", "offline_token"];
        let query = parts.uri.query().unwrap_or_default();
        let credentials = [header::AUTHORIZATION, header::COOKIE]
            .iter()
            .any(|name| parts.headers.contains_key(name))
            || query
                .split('&')
                .filter(|p| !p.is_empty())
                .any(|p| !PLAIN.contains(&p.split('=').next().unwrap_or_default()));
        if !credentials {
            return IssuedTo::Anonymous;
        }
        let mut login = Sha256::new();
        for name in [header::AUTHORIZATION, header::COOKIE] {
            for value in parts.headers.get_all(&name) {
                login.update((value.len() as u64).to_le_bytes());
                login.update(value.as_bytes());
            }
            login.update([0xff]);
        }
        login.update(query.as_bytes());
        IssuedTo::Login(login.finalize().into())
    }
}

/// The tokens `/token/` handed out, by the SHA-256 of the token: whom to and until when.
/// Bounded (least recently used go first); shared by every worker.
pub struct IssuedTokens {
    by_token: Mutex<LruCache<[u8; 32], (IssuedTo, SystemTime)>>,
}

impl Default for IssuedTokens {
    fn default() -> Self {
        IssuedTokens {
            by_token: Mutex::new(LruCache::new(
                NonZeroUsize::new(MAX_ISSUED).expect("a non-zero bound"),
            )),
        }
    }
}

impl IssuedTokens {
    /// Remembers that `token` was issued `to` someone, for `lifetime` (at most a day).
    pub fn remember(&self, token: &str, to: IssuedTo, lifetime: Duration) {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let until = SystemTime::now() + lifetime.min(MAX_TOKEN_LIFETIME);
        let mut map = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        // A token service that hands one token to two parties: it is nobody's in particular,
        // only its own identity.
        let to = match map.peek(&digest) {
            Some((before, _)) if *before != to => IssuedTo::Login(digest),
            _ => to,
        };
        map.put(digest, (to, until));
    }

    /// Whom a `Bearer` token was issued to and until when, if `/token/` handed it out and it
    /// has not expired.
    pub fn lookup(&self, token: &str) -> Option<(IssuedTo, SystemTime)> {
        self.peek(token)
            .filter(|(_, until)| *until > SystemTime::now())
    }

    /// Whom `/token/` handed `token` out to and until when, expired or not.
    fn peek(&self, token: &str) -> Option<(IssuedTo, SystemTime)> {
        self.peek_digest(&Sha256::digest(token.as_bytes()).into())
    }

    /// The same, by the token's SHA-256.
    fn peek_digest(&self, digest: &[u8; 32]) -> Option<(IssuedTo, SystemTime)> {
        let map = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        map.peek(digest).copied()
    }

    /// The cache identity of a client request sent upstream with the client's own
    /// credentials: requests without any are the shared anonymous identity, and so are
    /// tokens `/token/` fetched without credentials; a token it fetched for a login is that
    /// login and scope until the token expires; any other credential is itself, for the
    /// lifetime a JWT says or [`UNKNOWN_LOGIN_LIFETIME`]. `None` (not cached) for a token
    /// `/token/` handed out that has expired.
    pub fn identity(&self, headers: &HeaderMap) -> Option<Identity> {
        let Some(auth) = headers.get(header::AUTHORIZATION) else {
            return Some(Identity::anonymous());
        };
        let token = auth
            .to_str()
            .ok()
            .and_then(|a| strip_prefix_ignore_case(a, "bearer "))
            .map(str::trim);
        // One SHA-256 per request: a token's is how `/token/` remembers what it handed out;
        // any other credential's is of the whole header. Their keys differ in their prefix,
        // so a token is never the same identity as a header that spells it.
        let (kind, digest): (&[u8], [u8; 32]) = match token {
            Some(token) => (b"token:", Sha256::digest(token.as_bytes()).into()),
            None => (b"credential:", Sha256::digest(auth.as_bytes()).into()),
        };
        if let Some((to, until)) = token.and_then(|_| self.peek_digest(&digest)) {
            if until <= SystemTime::now() {
                // Expired: nobody, so nothing cached is served for it.
                return None;
            }
            return Some(match to {
                IssuedTo::Anonymous => Identity::anonymous(),
                IssuedTo::Login(login) => Identity {
                    key: [b"login:".as_slice(), &login].concat(),
                    valid_until: Some(until),
                },
            });
        }
        let until = token
            .and_then(jwt_expiry)
            .unwrap_or_else(|| SystemTime::now() + UNKNOWN_LOGIN_LIFETIME);
        Some(Identity {
            key: [kind, &digest].concat(),
            valid_until: Some(until),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    }

    #[test]
    fn a_token_is_the_identity_it_was_issued_to() {
        let issued = IssuedTokens::default();
        issued.remember("anon", IssuedTo::Anonymous, Duration::from_secs(60));
        issued.remember("alices", IssuedTo::Login([7; 32]), Duration::from_secs(60));
        let anonymous = Some(Identity::anonymous());
        assert_eq!(issued.identity(&HeaderMap::new()), anonymous);
        assert_eq!(issued.identity(&bearer("anon")), anonymous);
        assert_ne!(issued.identity(&bearer("alices")), anonymous);
        assert_ne!(
            issued.identity(&bearer("alices")),
            issued.identity(&bearer("other"))
        );
        // A token that spells another client's whole header (its Basic login) is not that
        // client; one token is one identity however its header spells `Bearer`.
        let key = |h: &HeaderMap| issued.identity(h).unwrap().key;
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWxpY2U6cHc="),
        );
        assert_ne!(key(&basic), key(&bearer("Basic YWxpY2U6cHc=")));
        let mut lower = HeaderMap::new();
        lower.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer t"));
        assert_eq!(key(&lower), key(&bearer("t")));
    }

    #[test]
    fn expired_shared_and_long_lived_tokens() {
        let issued = IssuedTokens::default();
        // An expired token is nobody: nothing cached is served for it.
        issued.remember("old", IssuedTo::Login([7; 32]), Duration::ZERO);
        assert_eq!(issued.identity(&bearer("old")), None);
        // One token handed to two parties is only itself.
        issued.remember("shared", IssuedTo::Anonymous, Duration::from_secs(60));
        issued.remember("shared", IssuedTo::Login([8; 32]), Duration::from_secs(60));
        let (to, _) = issued.lookup("shared").unwrap();
        assert!(to != IssuedTo::Anonymous && to != IssuedTo::Login([8; 32]));
        // A huge expires_in is clamped, not an overflow.
        issued.remember("long", IssuedTo::Anonymous, Duration::from_secs(u64::MAX));
        assert!(issued.lookup("long").is_some());
    }
}
