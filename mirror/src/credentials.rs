//! The mirror's own credentials for upstreams, and the login it does with them.
//!
//! Credentials come from a Docker `config.json` (`--upstream-credentials`: `auths`, keyed
//! by registry host, each with `auth` = base64 `user:password`, `username`/`password`, or
//! `identitytoken`) and from `--upstream-user`/`--upstream-password` for the default
//! upstream. With them the mirror answers the registry's challenge itself: `Basic` with
//! the credentials, `Bearer` with a token from the challenge's realm, asked for with them
//! (an identity token through OAuth2's `refresh_token` grant). Tokens are cached per
//! upstream and repository until they expire, and fetched again on a `401`.

use super::options::Options;
use super::upstream::Upstream;
use base64::Engine;
use http::header::HeaderValue;
use lru::LruCache;
use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the mirror logs in to one upstream.
#[derive(Clone)]
pub enum Login {
    /// The client's own credentials go upstream, and its challenges are pointed at the
    /// mirror's token endpoint (the default).
    PassThrough,
    /// The mirror logs in, anonymously (clients' credentials are the mirror's own, with
    /// `--htpasswd`).
    Anonymous,
    /// The mirror logs in with these.
    Secret(Secret),
}

/// One upstream's credentials. `Debug` never prints them.
#[derive(Clone)]
pub enum Secret {
    /// A user name and password (or access token).
    Basic {
        /// The user name.
        user: String,
        /// The password or access token.
        password: String,
    },
    /// An identity token, exchanged for access tokens through OAuth2's `refresh_token`
    /// grant.
    IdentityToken(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Basic { user, .. } => {
                write!(f, "Basic {{ user: {user:?}, password: REDACTED }}")
            }
            Secret::IdentityToken(_) => f.write_str("IdentityToken(REDACTED)"),
        }
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Login::PassThrough => f.write_str("PassThrough"),
            Login::Anonymous => f.write_str("Anonymous"),
            Login::Secret(s) => write!(f, "Secret({s:?})"),
        }
    }
}

impl Secret {
    /// `Authorization: Basic ...` for these credentials (an identity token has no user).
    pub fn basic(&self) -> Option<HeaderValue> {
        let Secret::Basic { user, password } = self else {
            return None;
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// The login for each upstream `options` describe, by upstream name.
pub fn logins(
    options: &Options,
    upstreams: &[std::sync::Arc<Upstream>],
) -> Result<HashMap<String, Login>, String> {
    let file = match &options.upstream_credentials {
        Some(path) => parse_config(
            &std::fs::read_to_string(path)
                .map_err(|e| format!("--upstream-credentials {}: {e}", path.display()))?,
        )
        .map_err(|e| format!("--upstream-credentials {}: {e}", path.display()))?,
        None => HashMap::new(),
    };
    let mut logins = HashMap::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        let flag = match (i, &options.upstream_user, &options.upstream_password) {
            (0, Some(user), Some(password)) => Some(Secret::Basic {
                user: user.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        let from_file = upstream
            .hosts()
            .iter()
            .find_map(|host| file.get(host).cloned());
        let login = match (flag.or(from_file), options.htpasswd.is_some()) {
            (Some(secret), _) => Login::Secret(secret),
            (None, true) => Login::Anonymous,
            (None, false) => Login::PassThrough,
        };
        logins.insert(upstream.name.clone(), login);
    }
    Ok(logins)
}

/// `auths` of a Docker `config.json`, by registry host (`host[:port]`, lower case).
fn parse_config(text: &str) -> Result<HashMap<String, Secret>, String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let auths = json
        .get("auths")
        .and_then(|a| a.as_object())
        .ok_or("no \"auths\" object")?;
    let mut out = HashMap::new();
    for (key, entry) in auths {
        let host = registry_host(key);
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let secret = if let Some(token) = field("identitytoken") {
            Secret::IdentityToken(token.to_owned())
        } else if let (Some(user), Some(password)) = (field("username"), field("password")) {
            Secret::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            }
        } else if let Some(auth) = field("auth") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| format!("{key}: \"auth\" is not base64"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| format!("{key}: \"auth\" is not UTF-8"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| format!("{key}: \"auth\" is not user:password"))?;
            Secret::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            }
        } else {
            return Err(format!(
                "{key}: no auth, username/password or identitytoken"
            ));
        };
        out.insert(host, secret);
    }
    Ok(out)
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `ghcr.io` → `ghcr.io`.
fn registry_host(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

/// A `WWW-Authenticate` challenge the mirror can answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic`: answered with the credentials themselves.
    Basic,
    /// `Bearer`: a token is asked for at `realm`.
    Bearer {
        /// The token service's URL.
        realm: String,
        /// The `service` to ask the token for, if named.
        service: Option<String>,
        /// The `scope` the challenge names, if any.
        scope: Option<String>,
    },
}

impl Challenge {
    /// A `WWW-Authenticate` value's challenge: `None` for other schemes, or a `Bearer`
    /// without a realm.
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut realm = None;
        let (mut service, mut scope) = (None, None);
        for param in split_params(params) {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "service" => service = Some(value),
                "scope" => scope = Some(value),
                _ => {}
            }
        }
        Some(Challenge::Bearer {
            realm: realm?,
            service,
            scope,
        })
    }
}

/// Splits `a="x,y",b=z` on commas outside quotes.
pub fn split_params(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// Tokens (whole `Authorization` values) the mirror logged in for, per upstream and
/// repository, until they expire; and the logins that just failed, so that a client asking
/// again and again for what the mirror's account cannot read does not make it log in again
/// each time. Bounded (least recently used go first); shared by every worker.
pub struct Tokens {
    by_scope: Mutex<LruCache<(String, String), (HeaderValue, Instant)>>,
    refused: Mutex<LruCache<(String, String), Instant>>,
}

/// How many tokens (and refused scopes) are kept at most.
const MAX_TOKENS: usize = 4096;

/// How long a scope the upstream refused the mirror's login for is not asked again.
pub const REFUSED_FOR: Duration = Duration::from_secs(30);

/// The longest a token is reused, whatever its `expires_in` says.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl Default for Tokens {
    fn default() -> Self {
        let cap = NonZeroUsize::new(MAX_TOKENS).expect("a non-zero bound");
        Tokens {
            by_scope: Mutex::new(LruCache::new(cap)),
            refused: Mutex::new(LruCache::new(cap)),
        }
    }
}

impl Tokens {
    /// The token for `upstream` and `scope`, unless there is none or it expired.
    pub fn get(&self, upstream: &str, scope: &str) -> Option<HeaderValue> {
        let mut map = self.by_scope.lock().unwrap_or_else(|e| e.into_inner());
        let (value, until) = map.get(&(upstream.to_owned(), scope.to_owned()))?;
        (*until > Instant::now()).then(|| value.clone())
    }

    /// Keeps `value` for `upstream` and `scope` for `ttl` (at most a day).
    pub fn put(&self, upstream: &str, scope: &str, value: HeaderValue, ttl: Duration) {
        let mut map = self.by_scope.lock().unwrap_or_else(|e| e.into_inner());
        map.put(
            (upstream.to_owned(), scope.to_owned()),
            (value, Instant::now() + ttl.min(MAX_TOKEN_TTL)),
        );
    }

    /// Drops the token for `upstream` and `scope`.
    pub fn forget(&self, upstream: &str, scope: &str) {
        let mut map = self.by_scope.lock().unwrap_or_else(|e| e.into_inner());
        map.pop(&(upstream.to_owned(), scope.to_owned()));
    }

    /// The upstream refused the mirror's login for `scope`: not asked again for
    /// [`REFUSED_FOR`].
    pub fn refuse(&self, upstream: &str, scope: &str) {
        let mut map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        map.put(
            (upstream.to_owned(), scope.to_owned()),
            Instant::now() + REFUSED_FOR,
        );
    }

    /// Whether the mirror's login for `scope` was refused in the last [`REFUSED_FOR`].
    pub fn refused(&self, upstream: &str, scope: &str) -> bool {
        let mut map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(upstream.to_owned(), scope.to_owned()))
            .is_some_and(|until| *until > Instant::now())
    }
}

/// The token service's answer: the token, and how long it lives (60 s when it does not
/// say, as the token spec has it; at most a day), less a margin.
pub fn parse_token(body: &[u8]) -> Option<(HeaderValue, Duration)> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = json
        .get("token")
        .or_else(|| json.get("access_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())?;
    let expires_in = json
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .unwrap_or(60)
        .min(MAX_TOKEN_TTL.as_secs());
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    let ttl = Duration::from_secs(expires_in.saturating_sub(10).max(1));
    Some((value, ttl))
}

/// The pull scope of an upstream path: `repository:<name>:pull`, with the name as the
/// distribution grammar reads it (`foo/blobs/bar/manifests/x` is `foo/blobs/bar`), or `""`
/// for `/v2/` and anything else.
pub fn scope_of(path: &str) -> String {
    path.strip_prefix("/v2/")
        .and_then(|rest| super::api::parse(rest).ok())
        .map(|api| format!("repository:{}:pull", api.name))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_config_gives_credentials_per_host() {
        let config = r#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "ghcr.io": {"username": "me", "password": "ghp_x"},
            "http://127.0.0.1:5010": {"identitytoken": "idt"}
        }}"#;
        let auths = parse_config(config).unwrap();
        match &auths["index.docker.io"] {
            Secret::Basic { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("user", "pa:ss"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(auths["ghcr.io"], Secret::Basic { .. }));
        assert!(matches!(auths["127.0.0.1:5010"], Secret::IdentityToken(_)));
        assert!(!format!("{:?}", auths["index.docker.io"]).contains("pa:ss"));
        assert!(parse_config(r#"{"auths": {"x": {}}}"#).is_err());
        assert!(parse_config(r#"{"auths": {"x": {"auth": "%%%"}}}"#).is_err());
    }

    #[test]
    fn challenges_tokens_and_scopes() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="e2e""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        let (value, ttl) = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(
            (value.to_str().unwrap(), ttl),
            ("Bearer abc", Duration::from_secs(290))
        );
        assert_eq!(
            parse_token(br#"{"access_token":"x"}"#).unwrap().1,
            Duration::from_secs(50)
        );
        assert_eq!(
            scope_of("/v2/library/alpine/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000"),
            "repository:library/alpine:pull"
        );
        assert_eq!(scope_of("/v2/a/b/manifests/v1"), "repository:a/b:pull");
        assert_eq!(
            scope_of("/v2/foo/blobs/bar/manifests/v1"),
            "repository:foo/blobs/bar:pull"
        );
        assert_eq!(
            parse_token(br#"{"token":"t","expires_in":18446744073709551615}"#)
                .unwrap()
                .1,
            MAX_TOKEN_TTL - Duration::from_secs(10)
        );
        assert_eq!(scope_of("/v2/"), "");
    }
}
