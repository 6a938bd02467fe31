//! The Bearer token flow through the mirror, for clients' own logins (pass-through): the
//! upstream's `WWW-Authenticate` realm is rewritten to the mirror's `/token/<upstream>`, and
//! token requests there are proxied to the upstream's token service with the client's own
//! credentials. Clients never need to reach the token service, and private repositories
//! work with the user's login.
//!
//! With a login of the mirror's own (`--upstream-user`, `--upstream-credentials`, or
//! `--htpasswd` alone), `/token/` is not served: a client gets no token minted with the
//! mirror's account.
//!
//! The tokens `/token/` hands out are remembered ([`IssuedTokens`]): who they were issued
//! to (no credentials: the shared anonymous identity; a login: that login) and until when,
//! so that the caches key what a token fetches by the login behind it, and keep it no
//! longer than the token lives.

use super::body::MirrorBody;
use super::credentials::{split_params, Login};
use super::errors::{registry_error, upstream_failure};
use super::metrics::Route;
use super::proxy::{remove_hop_by_hop, upstream_request, UpstreamExtensions};
use super::upstream::Upstream;
use super::Mirror;
use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tower_signed_redirect::{CacheIdentity, FollowedRedirect};

/// The largest token response the mirror reads.
const TOKEN_BODY_LIMIT: usize = 64 * 1024;

/// How long a token lives when its service does not say (the token spec's default).
const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// How long cached content stays with a client credential whose lifetime the mirror does not
/// know (a token from elsewhere that is not a JWT, a Basic login sent to the registry):
/// Docker Hub's token lifetime.
pub const UNKNOWN_LOGIN_LIFETIME: Duration = Duration::from_secs(300);

/// The longest lifetime a token service's `expires_in` is believed for.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How many issued tokens are remembered.
const MAX_ISSUED: usize = 65_536;

impl Mirror {
    /// `GET /token/<upstream>?service=..&scope=..`: the upstream's token service, asked with
    /// the client's credentials (if any). Not served when the mirror logs in itself.
    pub async fn token(&self, name: &str, parts: &Parts) -> Response<MirrorBody> {
        let Some(upstream) = self.upstreams.iter().find(|u| u.name == name).cloned() else {
            return registry_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such upstream");
        };
        if !matches!(self.login(&upstream), Login::PassThrough) {
            return registry_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "this mirror logs in to the upstream itself and hands out no tokens",
            );
        }
        let realm = match upstream.realm() {
            Some(realm) => realm,
            None => match self.learn_realm(&upstream).await {
                Some(realm) => realm,
                None => {
                    return registry_error(
                        StatusCode::BAD_GATEWAY,
                        "UNAVAILABLE",
                        "upstream offers no token service",
                    )
                }
            },
        };
        let url = match parts.uri.query() {
            Some(q) if realm.contains('?') => format!("{realm}&{q}"),
            Some(q) => format!("{realm}?{q}"),
            None => realm,
        };
        let uri = match upstream.check_realm(&url) {
            Ok(uri) => uri,
            Err(e) => return registry_error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", &e),
        };
        // Who chose this destination: the upstream, in its own challenge (a realm is never
        // learned from storage's answers); the credentials are the client's own.
        upstream.announce_realm(&uri);
        let extensions = UpstreamExtensions {
            route: Route::of(uri.path()),
            identity: None,
        };
        let answer = self
            .client
            .send(upstream_request(
                parts,
                &parts.method,
                uri,
                extensions,
                true,
            ))
            .await;
        let metrics = &self.shared.metrics;
        let res = match answer {
            Ok(res) if res.extensions().get::<FollowedRedirect>().is_some() => {
                // A token service that redirects to storage: storage chooses no tokens.
                metrics.request(Route::Token, 502, &upstream.name);
                return registry_error(
                    StatusCode::BAD_GATEWAY,
                    "UNAVAILABLE",
                    "the token service redirected to storage",
                );
            }
            Ok(res) => res,
            Err(err) => {
                let (res, message) = upstream_failure(&err);
                metrics.request(Route::Token, res.status().as_u16(), &upstream.name);
                tracing::warn!(upstream = %upstream.name, error = %message, "token request failed");
                return res;
            }
        };
        let (mut head, body) = res.into_parts();
        remove_hop_by_hop(&mut head.headers);
        let body = match Limited::new(body, TOKEN_BODY_LIMIT).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                metrics.request(Route::Token, 502, &upstream.name);
                return registry_error(
                    StatusCode::BAD_GATEWAY,
                    "UNAVAILABLE",
                    "the token service's answer could not be read",
                );
            }
        };
        if head.status.is_success() {
            if let Some((token, lifetime)) = token_and_lifetime(&body) {
                self.shared
                    .issued
                    .remember(token, IssuedTo::of(parts), lifetime);
            }
        }
        metrics.request(Route::Token, head.status.as_u16(), &upstream.name);
        tracing::info!(upstream = %upstream.name, status = head.status.as_u16(), "token");
        head.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(head, MirrorBody::Local(Full::new(body)))
    }

    /// Asks the upstream's `/v2/` for the token service its challenge names.
    async fn learn_realm(&self, upstream: &Upstream) -> Option<String> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = upstream.api_root();
        req.extensions_mut().insert(super::guard::Upstream);
        let res = self.client.send(req).await.ok()?;
        if res.extensions().get::<FollowedRedirect>().is_some() {
            // Storage answered, not the upstream: nothing it says names a token service.
            return None;
        }
        for challenge in res.headers().get_all(header::WWW_AUTHENTICATE) {
            if let Some(realm) = challenge.to_str().ok().and_then(bearer_realm) {
                upstream.set_realm(realm);
            }
        }
        upstream.realm()
    }

    /// Points the `Bearer` challenges of **the upstream's own** answer at the mirror's
    /// token endpoint, remembering the upstream's realm. `Basic` challenges pass unchanged.
    pub fn rewrite_challenges(
        &self,
        headers: &mut HeaderMap,
        parts: &Parts,
        upstream: &Arc<Upstream>,
    ) {
        if !headers.contains_key(header::WWW_AUTHENTICATE) {
            return;
        }
        let endpoint = format!("{}/token/{}", self.public_url(parts), upstream.name);
        let challenges: Vec<HeaderValue> = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|challenge| {
                if let Some(realm) = bearer_realm(challenge) {
                    upstream.set_realm(realm);
                }
                HeaderValue::from_str(&with_realm(challenge, &endpoint)).ok()
            })
            .collect();
        headers.remove(header::WWW_AUTHENTICATE);
        for challenge in challenges {
            headers.append(header::WWW_AUTHENTICATE, challenge);
        }
    }

    /// How the client reaches the mirror: `--public-url`, else its `Host` with the scheme
    /// the mirror serves (behind a TLS front, give `--public-url`).
    pub fn public_url(&self, parts: &Parts) -> String {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}")
    }
}

/// Who a request is, for the caches: a key naming the identity (never a credential in
/// clear: a digest), and when it ends (a client login's token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    /// Names the identity: `mirror`, `anonymous`, or a kind and a SHA-256: `login:` (a login
    /// `/token/` fetched a token for), `token:` (any other Bearer token), `credential:` (any
    /// other `Authorization` header).
    pub key: Vec<u8>,
    /// The end of the identity's token, for a client's own login.
    pub valid_until: Option<SystemTime>,
}

impl Who {
    /// The mirror's own login, shared by all its clients.
    pub fn mirror() -> Who {
        Who::shared(b"mirror")
    }

    /// Clients without credentials (or with a token fetched without any): public content.
    pub fn anonymous() -> Who {
        Who::shared(b"anonymous")
    }

    fn shared(key: &[u8]) -> Who {
        Who {
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
    fn of(parts: &Parts) -> IssuedTo {
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
    fn remember(&self, token: &str, to: IssuedTo, lifetime: Duration) {
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
    pub fn identity(&self, headers: &HeaderMap) -> Option<Who> {
        let Some(auth) = headers.get(header::AUTHORIZATION) else {
            return Some(Who::anonymous());
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
                IssuedTo::Anonymous => Who::anonymous(),
                IssuedTo::Login(login) => Who {
                    key: [b"login:".as_slice(), &login].concat(),
                    valid_until: Some(until),
                },
            });
        }
        let until = token
            .and_then(jwt_expiry)
            .unwrap_or_else(|| SystemTime::now() + UNKNOWN_LOGIN_LIFETIME);
        Some(Who {
            key: [kind, &digest].concat(),
            valid_until: Some(until),
        })
    }
}

/// The token in a token service's answer, and how long it lives.
fn token_and_lifetime(body: &Bytes) -> Option<(&str, Duration)> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let lifetime = json
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .map_or(TOKEN_DEFAULT_LIFETIME, Duration::from_secs);
    // The token borrows from the body: find its bytes there rather than cloning.
    let token = json
        .get("token")
        .or_else(|| json.get("access_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())?;
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find(token)?;
    Some((&text[at..at + token.len()], lifetime))
}

/// The `exp` of a JWT, if `token` is one.
fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = json.get("exp")?.as_u64()?;
    let exp = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))?;
    Some(exp.min(SystemTime::now() + MAX_TOKEN_LIFETIME))
}

/// The `realm` of a `Bearer` challenge.
fn bearer_realm(challenge: &str) -> Option<&str> {
    let params = strip_prefix_ignore_case(challenge.trim_start(), "bearer ")?;
    split_params(params).into_iter().find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("realm")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// A `Bearer` challenge with its realm replaced by `realm`; others unchanged.
fn with_realm(challenge: &str, realm: &str) -> String {
    let Some(params) = strip_prefix_ignore_case(challenge.trim_start(), "bearer ") else {
        return challenge.to_owned();
    };
    let params: Vec<String> = split_params(params)
        .into_iter()
        .map(|param| match param.split_once('=') {
            Some((key, _)) if key.trim().eq_ignore_ascii_case("realm") => {
                format!("realm=\"{realm}\"")
            }
            _ => param.trim().to_owned(),
        })
        .collect();
    format!("Bearer {}", params.join(","))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_with_their_lifetime_and_jwts_with_their_expiry() {
        let body = Bytes::from_static(br#"{"token":"abc","expires_in":120}"#);
        assert_eq!(
            token_and_lifetime(&body),
            Some(("abc", Duration::from_secs(120)))
        );
        let body = Bytes::from_static(br#"{"access_token":"xyz"}"#);
        assert_eq!(
            token_and_lifetime(&body),
            Some(("xyz", TOKEN_DEFAULT_LIFETIME))
        );
        let jwt = |exp: u64| {
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!(r#"{{"exp":{exp}}}"#));
            format!("eyJhbGciOiJub25lIn0.{payload}.sig")
        };
        let soon = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        assert_eq!(
            jwt_expiry(&jwt(soon)),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(soon))
        );
        // Believed for a day at most.
        assert!(jwt_expiry(&jwt(u64::MAX / 4)).unwrap() <= SystemTime::now() + MAX_TOKEN_LIFETIME);
        assert_eq!(jwt_expiry("not-a-jwt"), None);

        let issued = IssuedTokens::default();
        issued.remember("anon", IssuedTo::Anonymous, Duration::from_secs(60));
        issued.remember("alices", IssuedTo::Login([7; 32]), Duration::from_secs(60));
        let bearer = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
            h
        };
        let anonymous = Some(Who::anonymous());
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

    #[test]
    fn bearer_challenges_are_pointed_at_the_mirror() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#;
        assert_eq!(bearer_realm(hub), Some("https://auth.docker.io/token"));
        assert_eq!(
            with_realm(hub, "http://127.0.0.1:5000/token/docker.io"),
            r#"Bearer realm="http://127.0.0.1:5000/token/docker.io",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
        );
        assert_eq!(with_realm("Basic realm=\"r\"", "x"), "Basic realm=\"r\"");
        assert_eq!(bearer_realm("Basic realm=\"r\""), None);
    }
}
