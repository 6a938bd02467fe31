//! The mirror's own credentials for upstreams, and how it logs in to each registry.
//!
//! Credentials come from a Docker `config.json` (`--upstream-credentials`: `auths`, keyed
//! by registry host, each with `auth` = base64 `user:password`, `username`/`password`, or
//! `identitytoken`) and from `--upstream-user`/`--upstream-password` for the default
//! upstream. What the mirror does with them is `logins.rs`.

use super::identity::Identity;
use crate::options::Options;
use crate::upstream::registry::Registry;
use base64::Engine;
use http::header::HeaderValue;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

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

impl Login {
    /// Who the mirror is upstream with this login, for the caches and the store: every
    /// client with it. `None` for [`Login::PassThrough`] (each client is its own login).
    pub fn identity(&self) -> Option<Identity> {
        match self {
            Login::PassThrough => None,
            Login::Anonymous => Some(Identity::anonymous()),
            Login::Secret(Secret::Basic { user, password }) => {
                Some(Identity::mirror(user, password))
            }
            Login::Secret(Secret::IdentityToken(token)) => Some(Identity::mirror("", token)),
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

/// The login for each registry `options` describe, by registry name.
pub fn logins(
    options: &Options,
    upstreams: &[Arc<Registry>],
) -> Result<HashMap<Arc<str>, Login>, String> {
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
}
