//! How the mirror's requests go upstream with each registry's login: the client's own
//! credentials (pass-through), or the mirror's own login. With its own login the mirror
//! answers the registry's challenge itself: `Basic` with the credentials, `Bearer` with a
//! token from the challenge's realm, asked for with them (an identity token through OAuth2's
//! `refresh_token` grant) and for pull access to the repository being pulled only. Tokens
//! are cached per upstream and repository until they expire ([`Tokens`]), and fetched again
//! on the registry's own `401`.

use super::challenge::Challenge;
use super::credentials::{Login, Secret};
use super::identity::Identity;
use super::token_service::{TokenAnswer, TOKEN_BODY_LIMIT};
use super::tokens::Tokens;
use crate::api::path;
use crate::serve::body::UpstreamBody;
use crate::upstream::client::{TokenClient, UpstreamClient};
use crate::upstream::registry::Registry;
use crate::upstream::request::{refused_by_registry, upstream_request, RequestMarks};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use tower_signed_redirect::BoxError;

/// How long a Basic login is reused before the registry is asked again.
const BASIC_LOGIN_TTL: Duration = Duration::from_secs(3600);

/// How long before a token's end the mirror stops using it.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// Sends the mirror's requests upstream, each with its registry's login.
pub struct Logins {
    by_registry: HashMap<Arc<str>, Login>,
    /// Who the mirror is where it logs in itself ([`Login::identity`]).
    identities: HashMap<Arc<str>, Identity>,
    tokens: Arc<Tokens>,
    client: UpstreamClient,
    token_client: TokenClient,
}

impl Logins {
    /// Sends with `client`, logging in as `by_registry` says (registries not in it pass the
    /// clients' logins through) with tokens kept in `tokens`, asked for with `token_client`.
    pub fn new(
        by_registry: HashMap<Arc<str>, Login>,
        tokens: Arc<Tokens>,
        client: UpstreamClient,
        token_client: TokenClient,
    ) -> Logins {
        let identities = by_registry
            .iter()
            .filter_map(|(name, login)| Some((name.clone(), login.identity()?)))
            .collect();
        Logins {
            by_registry,
            identities,
            tokens,
            client,
            token_client,
        }
    }

    /// How the mirror logs in to `registry`.
    pub fn login(&self, registry: &Registry) -> &Login {
        self.by_registry
            .get(&registry.name)
            .unwrap_or(&Login::PassThrough)
    }

    /// Who the mirror is on `registry` where it logs in itself (`None`: the clients' own
    /// logins pass through).
    pub fn identity(&self, registry: &Registry) -> Option<&Identity> {
        self.identities.get(&registry.name)
    }

    /// Sends `method` (`GET` or `HEAD`) for the client's request to `uri` on `registry`, with
    /// the login the mirror uses there and `marks` on it.
    pub async fn send_as_login(
        &self,
        registry: &Registry,
        parts: &Parts,
        uri: &Uri,
        method: &Method,
        marks: RequestMarks,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        match self.login(registry) {
            Login::PassThrough => {
                // Who chose the destination: the operator (`--upstream`); the credentials
                // are the client's own, for the upstream that asked for them.
                let req = upstream_request(parts, method, uri.clone(), marks, true);
                self.client.send(req).await
            }
            login => {
                self.send_logged_in(registry, login, parts, method, uri, marks)
                    .await
            }
        }
    }

    /// The request sent with the mirror's own login: a cached token first; on the
    /// upstream's own `401`, a login as its challenge asks (for pull access to this
    /// repository only) and one more try. A `401` from storage is no challenge: it is
    /// answered with nothing.
    async fn send_logged_in(
        &self,
        registry: &Registry,
        login: &Login,
        parts: &Parts,
        method: &Method,
        uri: &Uri,
        marks: RequestMarks,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        let scope = scope_of(uri.path());
        let tokens = &self.tokens;
        // Who chose the destination: the operator (`--upstream`); the token is the
        // mirror's, for this upstream and this repository.
        let request = |auth: Option<&HeaderValue>| {
            let mut req = upstream_request(parts, method, uri.clone(), marks.clone(), false);
            if let Some(auth) = auth {
                req.headers_mut()
                    .insert(header::AUTHORIZATION, auth.clone());
            }
            req
        };
        let cached = tokens.get(&registry.name, &scope);
        let res = self.client.send(request(cached.as_ref())).await?;
        // A scope refused a moment ago is not logged in for again: clients asking for what
        // the mirror's account cannot read cost one upstream request each, not three.
        if !refused_by_registry(&res) || tokens.refused(&registry.name, &scope) {
            return Ok(res);
        }
        tokens.forget(&registry.name, &scope);
        let challenge = res
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(Challenge::parse);
        let Some(challenge) = challenge else {
            return Ok(res);
        };
        drop(res);
        let (auth, ttl) = self.log_in(registry, login, challenge, &scope).await?;
        tokens.put(&registry.name, &scope, auth.clone(), ttl);
        let res = self.client.send(request(Some(&auth))).await?;
        if refused_by_registry(&res) {
            // A fresh token, and still refused: the account cannot read this.
            tokens.forget(&registry.name, &scope);
            tokens.refuse(&registry.name, &scope);
        }
        Ok(res)
    }

    /// Answers the upstream's challenge with the mirror's login: the `Authorization` to
    /// send, and how long it may be reused. A token is asked for `scope` (pull access to
    /// the repository being pulled), whatever scope the challenge named.
    async fn log_in(
        &self,
        registry: &Registry,
        login: &Login,
        challenge: Challenge,
        scope: &str,
    ) -> Result<(HeaderValue, Duration), BoxError> {
        let secret = match login {
            Login::Secret(secret) => Some(secret),
            _ => None,
        };
        let (realm, service) = match challenge {
            Challenge::Basic => {
                // Who chose the destination: the operator (`--upstream`); the upstream asked
                // for the credentials itself.
                let basic = secret.and_then(Secret::basic).ok_or(
                    "the upstream asks for a user and password: give the mirror its own with \
                     --upstream-credentials or --upstream-user",
                )?;
                return Ok((basic, BASIC_LOGIN_TTL));
            }
            Challenge::Bearer { realm, service, .. } => (realm, service),
        };
        // Who chose the destination: the upstream, in its own challenge (never storage's);
        // refused when an https upstream names a plain-http token service.
        let realm_uri = registry.check_realm(&realm)?;
        if secret.is_some() {
            registry.announce_realm(&realm_uri);
        }
        let req = token_request(&realm, service.as_deref(), scope, secret)?;
        let res = self.token_client.clone().oneshot(req).await?;
        let status = res.status();
        let body = http_body_util::Limited::new(res.into_body(), TOKEN_BODY_LIMIT)
            .collect()
            .await?
            .to_bytes();
        if !status.is_success() {
            // A definite refusal is remembered for the scope; a failing token service (5xx,
            // 429, a timeout) is not: it says nothing about what the account may read.
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                self.tokens.refuse(&registry.name, scope);
            }
            return Err(format!("the token service answered {status}").into());
        }
        bearer(&body).ok_or_else(|| "the token service sent no token".into())
    }
}

/// The request for a token at `realm` for `service` and `scope`, with the mirror's
/// `secret` (an identity token in a form, OAuth2's `refresh_token` grant, as `docker login`
/// with one sends it; a user and password as Basic), or anonymous without one.
fn token_request(
    realm: &str,
    service: Option<&str>,
    scope: &str,
    secret: Option<&Secret>,
) -> Result<Request<Full<Bytes>>, BoxError> {
    let mut query = Vec::new();
    if let Some(service) = service {
        query.push(format!("service={}", encode(service)));
    }
    if !scope.is_empty() {
        query.push(format!("scope={}", encode(scope)));
    }
    if let Some(Secret::IdentityToken(token)) = secret {
        let mut form = query;
        form.extend([
            "grant_type=refresh_token".to_owned(),
            "client_id=registry-mirror".to_owned(),
            format!("refresh_token={}", encode(token)),
        ]);
        return Ok(Request::post(realm)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form.join("&"))))?);
    }
    let sep = if realm.contains('?') { '&' } else { '?' };
    let url = if query.is_empty() {
        realm.to_owned()
    } else {
        format!("{realm}{sep}{}", query.join("&"))
    };
    let mut req = Request::get(url).body(Full::new(Bytes::new()))?;
    if let Some(basic) = secret.and_then(Secret::basic) {
        req.headers_mut().insert(header::AUTHORIZATION, basic);
    }
    Ok(req)
}

/// The token service's answer as the `Authorization` to send, and how long to reuse it:
/// its lifetime less a margin.
fn bearer(body: &[u8]) -> Option<(HeaderValue, Duration)> {
    let answer = TokenAnswer::parse(body)?;
    let mut value = HeaderValue::from_str(&format!("Bearer {}", answer.token)).ok()?;
    value.set_sensitive(true);
    let ttl = answer
        .lifetime
        .saturating_sub(TOKEN_MARGIN)
        .max(Duration::from_secs(1));
    Some((value, ttl))
}

/// The pull scope of an upstream path: `repository:<name>:pull`, with the name as the
/// distribution grammar reads it (`foo/blobs/bar/manifests/x` is `foo/blobs/bar`), or `""`
/// for `/v2/` and anything else.
pub fn scope_of(path: &str) -> String {
    path.strip_prefix("/v2/")
        .and_then(|rest| path::parse(rest).ok())
        .map(|api| format!("repository:{}:pull", api.name))
        .unwrap_or_default()
}

/// Percent-encodes a query or form value: all but RFC 3986's unreserved characters.
fn encode(value: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token_service::MAX_TOKEN_LIFETIME;

    #[test]
    fn tokens_and_scopes() {
        let (value, ttl) = bearer(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(
            (value.to_str().unwrap(), ttl),
            ("Bearer abc", Duration::from_secs(290))
        );
        assert_eq!(
            bearer(br#"{"access_token":"x"}"#).unwrap().1,
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
            bearer(br#"{"token":"t","expires_in":18446744073709551615}"#)
                .unwrap()
                .1,
            MAX_TOKEN_LIFETIME - Duration::from_secs(10)
        );
        assert_eq!(scope_of("/v2/"), "");
    }
}
