//! The Bearer token flow through the mirror: the upstream's `WWW-Authenticate` realm is
//! rewritten to the mirror's `/token/<upstream>`, and token requests there are proxied to
//! the upstream's token service with the client's own credentials. Clients never need to
//! reach the token service, and private repositories work with the user's login.

use super::body::MirrorBody;
use super::errors::registry_error;
use super::upstream::Upstream;
use super::Mirror;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use std::sync::Arc;

impl Mirror {
    /// `GET /token/<upstream>?service=..&scope=..`: the upstream's token service, asked with
    /// the client's credentials (if any).
    pub async fn token(&self, name: &str, parts: &Parts) -> Response<MirrorBody> {
        let Some(upstream) = self.upstreams.iter().find(|u| u.name == name).cloned() else {
            return registry_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such upstream");
        };
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
        match url.parse() {
            Ok(uri) => self.send(&upstream, parts, uri).await,
            Err(_) => registry_error(
                StatusCode::BAD_GATEWAY,
                "UNAVAILABLE",
                "upstream token service URL is invalid",
            ),
        }
    }

    /// Asks the upstream's `/v2/` for the token service its challenge names.
    async fn learn_realm(&self, upstream: &Upstream) -> Option<String> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = upstream.api_root();
        req.extensions_mut().insert(super::guard::Upstream);
        let res = self.client.send(req).await.ok()?;
        for challenge in res.headers().get_all(header::WWW_AUTHENTICATE) {
            if let Some(realm) = challenge.to_str().ok().and_then(bearer_realm) {
                upstream.set_realm(realm);
            }
        }
        upstream.realm()
    }

    /// Points the `Bearer` challenges of an upstream's answer at the mirror's token
    /// endpoint, remembering the upstream's realm. `Basic` challenges pass unchanged.
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

#[cfg(test)]
mod tests {
    use super::*;

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
