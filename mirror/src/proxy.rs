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
use super::manifests::{self, Manifest, ManifestCache, ManifestKey, MAX_MANIFEST};
use super::metrics::{CacheEvent, Decision, Joined, ManifestEvent, Route};
use super::token::Who;
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
static HOP_BY_HOP: [HeaderName; 7] = [
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
    /// Sends the client's `GET` or `HEAD` to `uri` on `upstream` and streams the answer back;
    /// `route` is what the client's path asks for (parsed once, by the caller).
    pub(super) async fn send(
        &self,
        upstream: &Arc<Upstream>,
        parts: &Parts,
        uri: Uri,
        route: Route,
    ) -> Response<MirrorBody> {
        let started = Instant::now();
        // Who the request is, for the caches: every client of a mirror that logs in itself
        // is its login; with clients' own logins, see `IssuedTokens::identity`. Worked out
        // only for what a cache keeps (it hashes the client's credentials).
        let cacheable = match route {
            Route::Manifest => self.shared.manifests.is_some(),
            Route::Blob => self.shared.cache.is_some(),
            _ => false,
        };
        let who = match self.login(upstream) {
            _ if !cacheable => None,
            Login::PassThrough => self.shared.issued.identity(&parts.headers),
            _ => Some(Who::mirror()),
        };
        if let (Route::Manifest, Some(cache), Some(who)) = (route, &self.shared.manifests, &who) {
            return self
                .manifest(upstream, parts, uri, who, cache, started)
                .await;
        }
        // Only blobs are in the redirect cache: other requests are rarely redirected, and
        // would wait for another's round trip for nothing (single-flight).
        let identity = who
            .filter(|_| route == Route::Blob)
            .map(|who| who.cache_identity());
        let answer = self
            .fetch(
                upstream,
                parts,
                &uri,
                &parts.method,
                UpstreamExtensions {
                    route,
                    identity: identity.clone(),
                },
            )
            .await;
        let sent = Sent {
            uri,
            identity,
            started,
            route,
        };
        self.respond(upstream, parts, sent, answer)
    }

    /// Sends `method` (`GET` or `HEAD`) for the client's request to `uri` on `upstream`, with
    /// the login the mirror uses there and `extensions` on it.
    async fn fetch(
        &self,
        upstream: &Upstream,
        parts: &Parts,
        uri: &Uri,
        method: &Method,
        extensions: UpstreamExtensions,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        match self.login(upstream) {
            Login::PassThrough => {
                // Who chose the destination: the operator (`--upstream`); the credentials
                // are the client's own, for the upstream that asked for them.
                let req = upstream_request(parts, method, uri.clone(), extensions, true);
                self.client.send(req).await
            }
            login => {
                self.send_logged_in(upstream, login, parts, method, uri, extensions)
                    .await
            }
        }
    }

    /// The upstream's answer (or failure), made the client's.
    fn respond(
        &self,
        upstream: &Arc<Upstream>,
        parts: &Parts,
        sent: Sent,
        answer: Result<Response<UpstreamBody>, BoxError>,
    ) -> Response<MirrorBody> {
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
                metrics.request(sent.route, res.status().as_u16(), &upstream.name);
                tracing::warn!(
                    method = %parts.method,
                    path = parts.uri.path(),
                    upstream = %upstream.name,
                    status = res.status().as_u16(),
                    duration_ms = sent.started.elapsed().as_millis() as u64,
                    error = %message,
                    "upstream request failed"
                );
                return res;
            }
        };
        if !matches!(self.login(upstream), Login::PassThrough)
            && res.status() == StatusCode::UNAUTHORIZED
            && res.extensions().get::<FollowedRedirect>().is_none()
        {
            self.shared.metrics.request(sent.route, 502, &upstream.name);
            tracing::warn!(upstream = %upstream.name, "the upstream refused the mirror's credentials");
            return registry_error(
                StatusCode::BAD_GATEWAY,
                "UNAVAILABLE",
                "the upstream refused the mirror's credentials",
            );
        }
        self.answer(upstream, parts, sent, res)
    }

    /// A manifest, through the manifest cache (`manifests.rs`): by digest from the cache; by
    /// tag from the cache when an upstream `HEAD` says its digest is unchanged, or when the
    /// upstream fails and the entry is younger than `--serve-stale`; otherwise from the
    /// upstream, and kept.
    async fn manifest(
        &self,
        upstream: &Arc<Upstream>,
        parts: &Parts,
        uri: Uri,
        who: &Who,
        cache: &ManifestCache,
        started: Instant,
    ) -> Response<MirrorBody> {
        // The media types the client accepts, as a set: Docker sends them in an order that
        // changes from request to request (a Go map's).
        let mut types: Vec<&[u8]> = parts
            .headers
            .get_all(header::ACCEPT)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|t| t.trim_ascii())
            .filter(|t| !t.is_empty())
            .collect();
        types.sort_unstable();
        types.dedup();
        let accept = types.join(&b'\n');
        let key = ManifestKey {
            upstream: upstream.name.clone(),
            path: uri.path().to_owned(),
            accept,
            identity: who.key.clone(),
        };
        let reference = uri.path().rsplit('/').next().unwrap_or_default().to_owned();
        let by_digest = reference.contains(':');
        let metrics = &self.shared.metrics;
        let cached = cache.get(&key);
        let serve = |manifest: &Manifest, event: ManifestEvent| {
            metrics.manifest(event);
            self.serve_cached(upstream, parts, manifest, event, started)
        };
        if let Some(manifest) = &cached {
            if by_digest {
                return serve(manifest, ManifestEvent::Hit);
            }
            // The upstream's HEAD says whether the tag still names the cached manifest.
            match self
                .fetch(
                    upstream,
                    parts,
                    &uri,
                    &Method::HEAD,
                    UpstreamExtensions::manifest(),
                )
                .await
            {
                Ok(res)
                    if res.status() == StatusCode::OK
                        && res.headers().get(DOCKER_CONTENT_DIGEST) == Some(&manifest.digest) =>
                {
                    return serve(manifest, ManifestEvent::Revalidated);
                }
                Ok(res) if failing(res.status()) && self.stale_ok(manifest) => {
                    tracing::warn!(upstream = %upstream.name, path = parts.uri.path(), status = res.status().as_u16(), "upstream failing: serving a stale manifest");
                    return serve(manifest, ManifestEvent::Stale);
                }
                Err(e) if self.stale_ok(manifest) => {
                    tracing::warn!(upstream = %upstream.name, path = parts.uri.path(), error = %super::errors::upstream_failure(&e).1, "upstream unreachable: serving a stale manifest");
                    return serve(manifest, ManifestEvent::Stale);
                }
                Ok(res) if res.status() == StatusCode::NOT_FOUND => cache.remove(&key),
                _ => {}
            }
        }
        // One fetch per key at a time: concurrent pulls of a new or moved tag spend one
        // upstream GET. (Revalidations above run side by side: a HEAD is free.)
        let turn = cache.turn(&key).await;
        if turn.waited {
            metrics.joined(Joined::Manifest);
            // The request it waited for kept a newer manifest: that is this one's answer.
            let newer = cache
                .get(&key)
                .filter(|m| cached.as_ref().is_none_or(|old| !Arc::ptr_eq(old, m)));
            if let Some(manifest) = newer {
                return serve(&manifest, ManifestEvent::Hit);
            }
        }
        let answer = self
            .fetch(
                upstream,
                parts,
                &uri,
                &parts.method,
                UpstreamExtensions::manifest(),
            )
            .await;
        // The same failure on the GET itself.
        if let Some(manifest) = cached.as_ref().filter(|m| self.stale_ok(m)) {
            let failed = match &answer {
                Ok(res) => failing(res.status()),
                Err(_) => true,
            };
            if failed {
                tracing::warn!(upstream = %upstream.name, path = parts.uri.path(), "upstream failing: serving a stale manifest");
                return serve(manifest, ManifestEvent::Stale);
            }
        }
        let keep = parts.method == Method::GET
            && matches!(&answer, Ok(res) if res.status() == StatusCode::OK);
        let sent = Sent {
            uri,
            identity: None,
            started,
            route: Route::Manifest,
        };
        let res = self.respond(upstream, parts, sent, answer);
        if !keep {
            return res;
        }
        let (head, body) = res.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_MANIFEST)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return registry_error(
                    StatusCode::BAD_GATEWAY,
                    "UNAVAILABLE",
                    "the upstream's manifest could not be read (or is over 4 MiB)",
                )
            }
        };
        let digest = match head.headers.get(DOCKER_CONTENT_DIGEST) {
            Some(digest) => digest.clone(),
            None => sha256_digest(&body),
        };
        // By digest, what is kept must be what was asked for.
        if by_digest
            && reference.starts_with("sha256:")
            && sha256_digest(&body) != reference.as_str()
        {
            return registry_error(
                StatusCode::BAD_GATEWAY,
                "MANIFEST_INVALID",
                "the upstream's manifest does not match its digest",
            );
        }
        metrics.manifest(ManifestEvent::Miss);
        cache.put(
            key,
            Manifest {
                body: body.clone(),
                content_type: head.headers.get(header::CONTENT_TYPE).cloned(),
                digest,
                fetched: Instant::now(),
                valid_until: who.valid_until,
            },
        );
        let mut res = Response::from_parts(head, MirrorBody::Local(Full::new(body)));
        res.headers_mut().remove(header::TRANSFER_ENCODING);
        res
    }

    /// Whether a cached tag may be served while the upstream fails (`--serve-stale`).
    fn stale_ok(&self, manifest: &Manifest) -> bool {
        manifests::servable_stale(manifest.fetched, self.serve_stale)
    }

    /// A cached manifest as the upstream would have answered it.
    fn serve_cached(
        &self,
        upstream: &Upstream,
        parts: &Parts,
        manifest: &Manifest,
        event: ManifestEvent,
        started: Instant,
    ) -> Response<MirrorBody> {
        let body = if parts.method == Method::HEAD {
            Bytes::new()
        } else {
            manifest.body.clone()
        };
        let mut res = Response::new(MirrorBody::Local(Full::new(body)));
        let headers = res.headers_mut();
        if let Some(content_type) = &manifest.content_type {
            headers.insert(header::CONTENT_TYPE, content_type.clone());
        }
        headers.insert(DOCKER_CONTENT_DIGEST, manifest.digest.clone());
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(manifest.body.len()),
        );
        self.shared
            .metrics
            .request(Route::Manifest, 200, &upstream.name);
        tracing::info!(
            method = %parts.method,
            path = parts.uri.path(),
            upstream = %upstream.name,
            status = 200,
            bytes = manifest.body.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            manifest_cache = event.as_str(),
            "request"
        );
        res
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
        method: &Method,
        uri: &Uri,
        extensions: UpstreamExtensions,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        let scope = credentials::scope_of(uri.path());
        let tokens = &self.shared.tokens;
        // Who chose the destination: the operator (`--upstream`); the token is the
        // mirror's, for this upstream and this repository.
        let request = |auth: Option<&HeaderValue>| {
            let mut req = upstream_request(parts, method, uri.clone(), extensions.clone(), false);
            if let Some(auth) = auth {
                req.headers_mut()
                    .insert(header::AUTHORIZATION, auth.clone());
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
        if followed
            .as_ref()
            .is_some_and(FollowedRedirect::joined_flight)
        {
            metrics.joined(Joined::Blob);
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

/// The header registries name a manifest's digest with.
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// An upstream answer that a stale manifest may stand in for: rate limited, or failing.
fn failing(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `sha256:<hex>` of `body`.
fn sha256_digest(body: &[u8]) -> HeaderValue {
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(body));
    HeaderValue::from_str(&format!("sha256:{hex}")).expect("hex is a valid header value")
}

/// What was sent upstream for a client's request, for its answer.
struct Sent {
    uri: Uri,
    identity: Option<CacheIdentity>,
    started: Instant,
    route: Route,
}

/// The extensions the mirror puts on an upstream request for its own use: the route (the
/// upstream-request metric's label) and the request's identity in the redirect cache
/// (none: the answer is neither cached nor served from the cache).
#[derive(Clone)]
pub(super) struct UpstreamExtensions {
    pub route: Route,
    pub identity: Option<CacheIdentity>,
}

impl UpstreamExtensions {
    /// A manifest request's: manifests are not in the redirect cache.
    fn manifest() -> UpstreamExtensions {
        UpstreamExtensions {
            route: Route::Manifest,
            identity: None,
        }
    }
}

/// The upstream request for a client's request: same method (`GET` or `HEAD`), the
/// allowlisted headers (one pass over the client's; its `Authorization` only with
/// `credentials`), no body, marked as the mirror's own (not a storage hop), with `extensions`.
pub(super) fn upstream_request(
    parts: &Parts,
    method: &Method,
    uri: Uri,
    extensions: UpstreamExtensions,
    credentials: bool,
) -> UpstreamRequest {
    let mut req = Request::new(Empty::new());
    *req.method_mut() = if *method == Method::HEAD {
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
    req.extensions_mut().insert(extensions.route);
    if let Some(identity) = extensions.identity {
        req.extensions_mut().insert(identity);
    }
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
