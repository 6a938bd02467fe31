//! The upstream's answer (or failure), made the client's: hop-by-hop headers out, auth
//! challenges pointed at the mirror (or, from storage, dropped), what happened counted, and
//! the body streamed back with an idle timeout, an optional digest check and a log line
//! when it ends.

use crate::api::Route;
use crate::auth::credentials::Login;
use crate::auth::token_endpoint::ChallengeRewriter;
use crate::metrics::{Decision, Joined, Metrics, RedirectCacheEvent, StoreEvent};
use crate::serve::body::{IdleTimeout, MirrorBody, UpstreamBody};
use crate::serve::errors::{registry_error, upstream_failure};
use crate::serve::log::{Metered, RequestLog};
use crate::serve::verify::{self, CachedRedirect, Verified};
use crate::upstream::registry::Registry;
use crate::upstream::request::{refused_by_registry, remove_hop_by_hop};
use http::header;
use http::request::Parts;
use http::response;
use http::{Method, Response, StatusCode, Uri};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_signed_redirect::{BoxError, CacheIdentity, FollowedRedirect, RedirectCache};

/// What was sent upstream for a client's request, for its answer.
pub struct SentUpstream {
    /// The upstream URI.
    pub uri: Uri,
    /// Who the request was in the redirect cache, if its answer may be cached.
    pub identity: Option<CacheIdentity>,
    /// When the client's request came in.
    pub started: Instant,
    /// What the client's request was for.
    pub route: Route,
    /// What the blob store did for the request, if it was asked.
    pub store: Option<StoreEvent>,
}

/// Makes upstream answers the client's.
pub struct Answers {
    metrics: Arc<Metrics>,
    redirects: Option<RedirectCache>,
    challenges: ChallengeRewriter,
    verify_digests: bool,
    idle_timeout: Duration,
}

impl Answers {
    /// Answers counted in `metrics`; `redirects` is the redirect cache (a body that fails
    /// its digest check drops its entry); the registries' challenges are pointed at the
    /// mirror by `challenges`; blobs are checked with `verify_digests`, and bodies fail after
    /// `idle_timeout` without a chunk.
    pub fn new(
        metrics: Arc<Metrics>,
        redirects: Option<RedirectCache>,
        challenges: ChallengeRewriter,
        verify_digests: bool,
        idle_timeout: Duration,
    ) -> Answers {
        Answers {
            metrics,
            redirects,
            challenges,
            verify_digests,
            idle_timeout,
        }
    }

    /// The upstream's answer (or failure) to a request sent to `registry` with `login`, made
    /// the client's.
    pub fn client_answer(
        &self,
        registry: &Arc<Registry>,
        login: &Login,
        parts: &Parts,
        sent: SentUpstream,
        answer: Result<Response<UpstreamBody>, BoxError>,
    ) -> Response<MirrorBody> {
        let res = match answer {
            Ok(res) => res,
            Err(err) => return self.failure(registry, parts, &sent, &err),
        };
        if !matches!(login, Login::PassThrough) && refused_by_registry(&res) {
            self.metrics.request(sent.route, 502, &registry.name);
            tracing::warn!(upstream = %registry.name, "the upstream refused the mirror's credentials");
            return registry_error(
                StatusCode::BAD_GATEWAY,
                "UNAVAILABLE",
                "the upstream refused the mirror's credentials",
            );
        }
        self.stream_back(registry, login, parts, sent, res)
    }

    /// A request that got no answer: a registry-style `502` or `504`, counted and logged.
    fn failure(
        &self,
        registry: &Registry,
        parts: &Parts,
        sent: &SentUpstream,
        err: &BoxError,
    ) -> Response<MirrorBody> {
        let (res, message) = upstream_failure(err);
        if err
            .downcast_ref::<tower_signed_redirect::Error>()
            .is_some_and(|e| {
                e.kind() != tower_signed_redirect::ErrorKind::Upstream
                    && e.kind() != tower_signed_redirect::ErrorKind::Storage
            })
        {
            self.metrics.redirect(Decision::Refused);
        }
        self.metrics
            .request(sent.route, res.status().as_u16(), &registry.name);
        tracing::warn!(
            method = %parts.method,
            path = parts.uri.path(),
            upstream = %registry.name,
            status = res.status().as_u16(),
            duration_ms = sent.started.elapsed().as_millis() as u64,
            error = %message,
            "upstream request failed"
        );
        res
    }

    /// The upstream's answer, made the client's.
    fn stream_back(
        &self,
        registry: &Arc<Registry>,
        login: &Login,
        parts: &Parts,
        sent: SentUpstream,
        res: Response<UpstreamBody>,
    ) -> Response<MirrorBody> {
        let (mut head, body) = res.into_parts();
        remove_hop_by_hop(&mut head.headers);
        if head.extensions.get::<FollowedRedirect>().is_some() {
            // Storage answered: its challenges are nobody's business (a client that
            // followed one would send its login wherever storage said).
            head.headers.remove(header::WWW_AUTHENTICATE);
            head.headers.remove(header::PROXY_AUTHENTICATE);
        } else if matches!(login, Login::PassThrough) {
            self.challenges
                .rewrite_challenges(&mut head.headers, parts, registry);
        }
        let mut log = self.log_upstream(registry, parts, sent.route, &mut head);
        log.store = sent.store;
        // Any 2xx to a whole-blob GET is checked (storage's 203 or unasked-for 206 too); a
        // Range the client asked for cannot be. (Its digest read only when it is needed.)
        let empty = http_body::Body::size_hint(&body).exact() == Some(0);
        let whole_blob = (parts.method == Method::GET
            && head.status.is_success()
            && !parts.headers.contains_key(header::RANGE)
            && (empty || self.verify_digests))
            .then(|| verify::expected_digest(sent.uri.path()))
            .flatten();
        // An empty body for a digest of something, refused whatever `--verify-digests`
        // says: it costs nothing to see, and has no last byte to hold back.
        if empty && whole_blob.as_ref().is_some_and(|e| !e.is_of_nothing()) {
            if log.followed.is_some() {
                log.forget = self.cached_redirect(&sent.uri, sent.identity);
            }
            return self.empty_blob(log, sent.started);
        }
        let expected = whole_blob.filter(|_| self.verify_digests);
        // A body that does not match must not be served again from a cached URL.
        if let (Some(_), Some(_)) = (&expected, &log.followed) {
            log.forget = self.cached_redirect(&sent.uri, sent.identity);
        }
        let body = Verified::new(IdleTimeout::new(body, self.idle_timeout), expected);
        Response::from_parts(
            head,
            MirrorBody::Upstream(Metered::new(body, log, sent.started)),
        )
    }

    /// A `200` without a byte for a digest of something: refused with a `502` (counted as
    /// a mismatch, its cached redirect forgotten), since an empty body ends cleanly.
    fn empty_blob(&self, mut log: RequestLog, started: Instant) -> Response<MirrorBody> {
        self.metrics.digest_mismatch();
        if let Some(cached) = log.forget.take() {
            cached.forget();
        }
        log.status = 502;
        log.finish(0, "digest mismatch", started);
        registry_error(
            StatusCode::BAD_GATEWAY,
            "BLOB_UNKNOWN",
            "the upstream answered an empty body for a digest of content",
        )
    }

    /// Where answers are counted.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The log of a request whose upstream answer has the head `head`: what the answer says
    /// is counted, and noted in the log.
    pub fn log_upstream(
        &self,
        registry: &Registry,
        parts: &Parts,
        route: Route,
        head: &mut response::Parts,
    ) -> RequestLog {
        let mut log = RequestLog::new(
            parts,
            registry.name.clone(),
            route,
            head.status.as_u16(),
            self.metrics.clone(),
        );
        self.count(head, &registry.name, &mut log);
        log
    }

    /// Where the redirect cache keeps the storage URL of a request for `uri` by `identity`:
    /// to drop it when the content it led to did not match its digest.
    pub fn cached_redirect(
        &self,
        uri: &Uri,
        identity: Option<CacheIdentity>,
    ) -> Option<CachedRedirect> {
        let cache = self.redirects.clone()?;
        Some(CachedRedirect::new(cache, uri, identity))
    }

    /// Counts what the answer says (the registry's rate limit, what happened to its
    /// redirect, the redirect cache's part), and notes it in `log`.
    fn count(&self, head: &mut response::Parts, registry: &str, log: &mut RequestLog) {
        let metrics = &self.metrics;
        if let Some(remaining) = head
            .headers
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next()?.trim().parse().ok())
        {
            metrics.ratelimit_remaining(registry, remaining);
        }
        let followed = head.extensions.remove::<FollowedRedirect>();
        log.redirect_cache = match &followed {
            Some(f) if f.from_cache() => Some(RedirectCacheEvent::Hit),
            Some(f) if f.refreshed() => Some(RedirectCacheEvent::Refresh),
            Some(_) if self.redirects.is_some() => Some(RedirectCacheEvent::Miss),
            _ => None,
        };
        if let Some(event) = log.redirect_cache {
            metrics.redirect_cache(event);
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
        log.redirect = match (&followed, head.status.is_redirection()) {
            (Some(_), _) => Some(Decision::Followed),
            (None, true) => Some(Decision::Passed),
            (None, false) => None,
        };
        if let Some(decision) = log.redirect {
            metrics.redirect(decision);
        }
        log.followed = followed;
    }
}
