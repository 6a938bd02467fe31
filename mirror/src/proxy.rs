//! One request upstream, and its answer back to the client: the request is built from an
//! allowlist of the client's headers (and the mirror's own login, if it has one), the
//! answer loses its hop-by-hop headers, gets its auth challenges pointed at the mirror,
//! and streams back with an idle timeout, an optional digest check, metrics and a log line
//! when it ends.

use super::body::{IdleTimeout, Metered, MirrorBody, RequestLog};
use super::client::{UpstreamBody, UpstreamRequest};
use super::credentials::{self, Challenge, Login, Secret};
use super::errors::{registry_error, upstream_failure};
use super::guard;
use super::metrics::{CacheEvent, Decision, Route};
use super::upstream::Upstream;
use super::verify::{self, Verified};
use super::BoxError;
use super::Mirror;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use tower_signed_redirect::{CacheIdentity, FollowedRedirect};

/// Request headers passed upstream (`Authorization` only when the client's own login goes
/// through).
const FORWARDED: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::ACCEPT,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MATCH,
    header::USER_AGENT,
];

/// Response headers that describe the upstream connection, not the response.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// How long a Basic login is reused before the registry is asked again.
const BASIC_LOGIN_TTL: Duration = Duration::from_secs(3600);

impl Mirror {
    /// Sends the client's `GET` or `HEAD` to `uri` on `upstream` and streams the answer back.
    pub(super) async fn send(
        &self,
        upstream: &Arc<Upstream>,
        parts: &Parts,
        uri: Uri,
    ) -> Response<MirrorBody> {
        let started = Instant::now();
        let route = Route::of(parts.uri.path());
        let login = self.login(upstream);
        // Who the request is for the redirect cache: every client of a mirror that logs in
        // itself shares its entries; with clients' own logins, see `IssuedTokens::identity`.
        // Only blobs are cached: other requests are rarely redirected, and would wait for
        // another's round trip for nothing (single-flight).
        let identity = match (route, login) {
            (Route::Blob, Login::PassThrough) => self.shared.issued.identity(&parts.headers),
            (Route::Blob, _) => Some(CacheIdentity::new("mirror")),
            _ => None,
        };
        let answer = match login {
            Login::PassThrough => {
                // Who chose the destination: the operator (`--upstream`); the credentials
                // are the client's own, for the upstream that asked for them.
                let mut req = upstream_request(parts, uri.clone(), true);
                if let Some(identity) = identity.clone() {
                    req.extensions_mut().insert(identity);
                }
                self.client.send(req).await
            }
            login => {
                self.send_logged_in(upstream, login, parts, &uri, identity.clone())
                    .await
            }
        };
        let res = match answer {
            Ok(res) => res,
            Err(err) => {
                let (res, message) = upstream_failure(&err);
                let metrics = &self.shared.metrics;
                if err
                    .downcast_ref::<tower_signed_redirect::Error>()
                    .is_some_and(|e| {
                        e.kind() != tower_signed_redirect::ErrorKind::Upstream
                            && e.kind() != tower_signed_redirect::ErrorKind::Storage
                    })
                {
                    metrics.redirect(Decision::Refused);
                }
                metrics.request(route, res.status().as_u16(), &upstream.name);
                tracing::warn!(
                    method = %parts.method,
                    path = parts.uri.path(),
                    upstream = %upstream.name,
                    status = res.status().as_u16(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    error = %message,
                    "upstream request failed"
                );
                return res;
            }
        };
        if !matches!(login, Login::PassThrough)
            && res.status() == StatusCode::UNAUTHORIZED
            && res.extensions().get::<FollowedRedirect>().is_none()
        {
            self.shared.metrics.request(route, 502, &upstream.name);
            tracing::warn!(upstream = %upstream.name, "the upstream refused the mirror's credentials");
            return registry_error(
                StatusCode::BAD_GATEWAY,
                "UNAVAILABLE",
                "the upstream refused the mirror's credentials",
            );
        }
        let sent = Sent {
            uri,
            identity,
            started,
            route,
        };
        self.answer(upstream, parts, sent, res)
    }

    /// The request sent with the mirror's own login: a cached token first; on the
    /// upstream's own `401`, a login as its challenge asks (for pull access to this
    /// repository only) and one more try. A `401` from storage is no challenge: it is
    /// answered with nothing.
    async fn send_logged_in(
        &self,
        upstream: &Upstream,
        login: &Login,
        parts: &Parts,
        uri: &Uri,
        identity: Option<CacheIdentity>,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        let scope = credentials::scope_of(uri.path());
        let tokens = &self.shared.tokens;
        // Who chose the destination: the operator (`--upstream`); the token is the
        // mirror's, for this upstream and this repository.
        let request = |auth: Option<&HeaderValue>| {
            let mut req = upstream_request(parts, uri.clone(), false);
            if let Some(auth) = auth {
                req.headers_mut()
                    .insert(header::AUTHORIZATION, auth.clone());
            }
            if let Some(identity) = identity.clone() {
                req.extensions_mut().insert(identity);
            }
            req
        };
        let refused_by_upstream = |res: &Response<UpstreamBody>| {
            res.status() == StatusCode::UNAUTHORIZED
                && res.extensions().get::<FollowedRedirect>().is_none()
        };
        let cached = tokens.get(&upstream.name, &scope);
        let res = self.client.send(request(cached.as_ref())).await?;
        // A scope refused a moment ago is not logged in for again: clients asking for what
        // the mirror's account cannot read cost one upstream request each, not three.
        if !refused_by_upstream(&res) || tokens.refused(&upstream.name, &scope) {
            return Ok(res);
        }
        tokens.forget(&upstream.name, &scope);
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
        let (auth, ttl) = self.log_in(upstream, login, challenge, &scope).await?;
        tokens.put(&upstream.name, &scope, auth.clone(), ttl);
        let res = self.client.send(request(Some(&auth))).await?;
        if refused_by_upstream(&res) {
            // A fresh token, and still refused: the account cannot read this.
            tokens.forget(&upstream.name, &scope);
            tokens.refuse(&upstream.name, &scope);
        }
        Ok(res)
    }

    /// Answers the upstream's challenge with the mirror's login: the `Authorization` to
    /// send, and how long it may be reused. A token is asked for `scope` (pull access to
    /// the repository being pulled), whatever scope the challenge named.
    async fn log_in(
        &self,
        upstream: &Upstream,
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
        let realm_uri = upstream.check_realm(&realm)?;
        let mut query = Vec::new();
        if let Some(service) = &service {
            query.push(format!("service={}", encode(service)));
        }
        if !scope.is_empty() {
            query.push(format!("scope={}", encode(scope)));
        }
        if secret.is_some() {
            upstream.announce_realm(&realm_uri);
        }
        let req = match secret {
            Some(Secret::IdentityToken(token)) => {
                // OAuth2's refresh_token grant, as `docker login` with an identity token.
                let mut form = query.clone();
                form.extend([
                    "grant_type=refresh_token".to_owned(),
                    "client_id=registry-mirror".to_owned(),
                    format!("refresh_token={}", encode(token)),
                ]);
                Request::post(&realm)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form.join("&"))))?
            }
            _ => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = if query.is_empty() {
                    realm.clone()
                } else {
                    format!("{realm}{sep}{}", query.join("&"))
                };
                let mut req = Request::get(url).body(Full::new(Bytes::new()))?;
                if let Some(basic) = secret.and_then(Secret::basic) {
                    req.headers_mut().insert(header::AUTHORIZATION, basic);
                }
                req
            }
        };
        let res = self.token_client.clone().oneshot(req).await?;
        let status = res.status();
        let body = http_body_util::Limited::new(res.into_body(), 64 * 1024)
            .collect()
            .await?
            .to_bytes();
        if !status.is_success() {
            // A definite refusal is remembered for the scope; a failing token service (5xx,
            // 429, a timeout) is not: it says nothing about what the account may read.
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                self.shared.tokens.refuse(&upstream.name, scope);
            }
            return Err(format!("the token service answered {status}").into());
        }
        credentials::parse_token(&body).ok_or_else(|| "the token service sent no token".into())
    }

    /// The upstream's answer, made the client's.
    fn answer(
        &self,
        upstream: &Arc<Upstream>,
        parts: &Parts,
        sent: Sent,
        res: Response<UpstreamBody>,
    ) -> Response<MirrorBody> {
        let Sent {
            uri,
            identity,
            started,
            route,
        } = sent;
        let (mut head, body) = res.into_parts();
        remove_hop_by_hop(&mut head.headers);
        if head.extensions.get::<FollowedRedirect>().is_some() {
            // Storage answered: its challenges are nobody's business (a client that
            // followed one would send its login wherever storage said).
            head.headers.remove(header::WWW_AUTHENTICATE);
            head.headers.remove(header::PROXY_AUTHENTICATE);
        } else if matches!(self.login(upstream), Login::PassThrough) {
            self.rewrite_challenges(&mut head.headers, parts, upstream);
        }
        let metrics = &self.shared.metrics;
        if let Some(remaining) = head
            .headers
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next()?.trim().parse().ok())
        {
            metrics.ratelimit_remaining(&upstream.name, remaining);
        }
        let followed = head.extensions.remove::<FollowedRedirect>();
        let cache = match &followed {
            Some(f) if f.from_cache() => Some(CacheEvent::Hit),
            Some(f) if f.refreshed() => Some(CacheEvent::Refresh),
            Some(_) if self.shared.cache.is_some() => Some(CacheEvent::Miss),
            _ => None,
        };
        if let Some(event) = cache {
            metrics.cache(event);
        }
        if followed
            .as_ref()
            .is_some_and(FollowedRedirect::head_fallback)
        {
            metrics.head_fallback();
        }
        let redirect = match (&followed, head.status.is_redirection()) {
            (Some(_), _) => Some(Decision::Followed),
            (None, true) => Some(Decision::Passed),
            (None, false) => None,
        };
        if let Some(decision) = redirect {
            metrics.redirect(decision);
        }
        // Any 2xx to a whole-blob GET is checked (storage's 203 or unasked-for 206 too); a
        // Range the client asked for cannot be.
        let expected = (self.verify_digests
            && parts.method == Method::GET
            && head.status.is_success()
            && !parts.headers.contains_key(header::RANGE))
        .then(|| verify::expected_digest(uri.path()))
        .flatten();
        // A body that does not match must not be served again from a cached URL.
        let forget = match (&expected, &followed, &self.shared.cache) {
            (Some(_), Some(_), Some(cache)) => {
                let mut req = Request::new(());
                *req.uri_mut() = uri.clone();
                if let Some(identity) = identity {
                    req.extensions_mut().insert(identity);
                }
                Some((cache.clone(), req))
            }
            _ => None,
        };
        let log = RequestLog {
            forget,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            upstream: upstream.clone(),
            route,
            status: head.status.as_u16(),
            redirect,
            cache,
            followed,
            metrics: metrics.clone(),
        };
        let body = Verified::new(IdleTimeout::new(body, self.idle_timeout), expected);
        Response::from_parts(head, MirrorBody::Upstream(Metered::new(body, log, started)))
    }
}

/// What was sent upstream for a client's request, for its answer.
struct Sent {
    uri: Uri,
    identity: Option<CacheIdentity>,
    started: Instant,
    route: Route,
}

/// The upstream request for a client's request: same method (`GET` or `HEAD`), the
/// allowlisted headers (one pass over the client's; its `Authorization` only with
/// `credentials`), no body, marked as the mirror's own (not a storage hop).
pub(super) fn upstream_request(parts: &Parts, uri: Uri, credentials: bool) -> UpstreamRequest {
    let mut req = Request::new(Empty::new());
    *req.method_mut() = if parts.method == Method::HEAD {
        Method::HEAD
    } else {
        Method::GET
    };
    *req.uri_mut() = uri;
    for (name, value) in &parts.headers {
        if FORWARDED.contains(name) && (credentials || name != header::AUTHORIZATION) {
            req.headers_mut().append(name.clone(), value.clone());
        }
    }
    req.extensions_mut().insert(guard::Upstream);
    req
}

/// Removes the headers that describe the upstream connection, hashing only those present.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut found = [false; 7];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            found[i] = true;
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(found).filter(|(_, found)| *found) {
        headers.remove(name);
    }
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
