//! The log line and the counters of a request, written when its response's body ends (or
//! is dropped): one line per request, with what the mirror did for it.

use super::verify::{CachedRedirect, DigestMismatch};
use crate::api::Route;
use crate::metrics::{Decision, ManifestEvent, Metrics, RedirectCacheEvent, StoreEvent};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tower_signed_redirect::BoxError;

/// What is logged and counted when a response's body ends (or is dropped). Cheap to fill:
/// the fields are reference-counted or moved, and formatted only if the line is written.
pub struct RequestLog {
    /// With `--verify-digests`, where the storage URL this body came from is cached: dropped
    /// there if the body does not match.
    pub forget: Option<CachedRedirect>,
    /// The client's request method.
    pub method: http::Method,
    /// The client's request URI (only its path is logged).
    pub uri: http::Uri,
    /// The name of the upstream the request went to.
    pub upstream: Arc<str>,
    /// What the request was for.
    pub route: Route,
    /// The response's status code.
    pub status: u16,
    /// What happened to a redirect the upstream sent, if it sent one.
    pub redirect: Option<Decision>,
    /// What the redirect cache did, if a redirect was followed with one.
    pub redirect_cache: Option<RedirectCacheEvent>,
    /// What the manifest cache did, if it answered.
    pub manifest_cache: Option<ManifestEvent>,
    /// What the blob store did, if it was asked.
    pub store: Option<StoreEvent>,
    /// Set when the layer followed a redirect to storage.
    pub followed: Option<tower_signed_redirect::FollowedRedirect>,
    /// Where the request and its bytes are counted.
    pub metrics: Arc<Metrics>,
}

impl RequestLog {
    /// A log of a request the mirror answered for `upstream` with `status`, and nothing
    /// else to say yet.
    pub fn new(
        parts: &http::request::Parts,
        upstream: Arc<str>,
        route: Route,
        status: u16,
        metrics: Arc<Metrics>,
    ) -> RequestLog {
        RequestLog {
            forget: None,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            upstream,
            route,
            status,
            redirect: None,
            redirect_cache: None,
            manifest_cache: None,
            store: None,
            followed: None,
            metrics,
        }
    }

    /// Counts the request and its `bytes`, and writes its line: the body ended as `outcome`
    /// (`complete`, `aborted`, `failed`, `digest mismatch`); `started` is when the request
    /// came in.
    pub fn finish(&self, bytes: u64, outcome: &'static str, started: Instant) {
        self.metrics
            .request(self.route, self.status, &self.upstream);
        self.metrics.bytes(&self.upstream, bytes);
        if !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        let followed = self.followed.as_ref();
        let redirect = self.redirect.map_or("none", Decision::as_str);
        let cache = self.redirect_cache.map_or("", RedirectCacheEvent::as_str);
        tracing::info!(
            method = %self.method,
            path = self.uri.path(),
            upstream = %self.upstream,
            status = self.status,
            bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            body = outcome,
            redirect,
            cache,
            manifest_cache = self.manifest_cache.map(ManifestEvent::as_str),
            store = self.store.map(StoreEvent::as_str),
            hops = followed.map_or(0, |f| f.hops()),
            scheme = followed.map_or("", |f| f.scheme().as_str()),
            storage = followed.map_or("", |f| f.storage_url()),
            "request"
        );
    }
}

/// Counts the bytes sent and logs one line per request when the body is done.
pub struct Metered<B> {
    inner: B,
    log: RequestLog,
    started: Instant,
    bytes: u64,
    outcome: &'static str,
}

impl<B: Body> Metered<B> {
    /// `inner`, logged with `log` when it ends; `started` is when the request came in.
    pub fn new(inner: B, log: RequestLog, started: Instant) -> Self {
        // A body with nothing to send (HEAD, 304) is complete as it is.
        let outcome = if inner.is_end_stream() {
            "complete"
        } else {
            "aborted"
        };
        Metered {
            inner,
            log,
            started,
            bytes: 0,
            outcome,
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                self.bytes += f.data_ref().map_or(0, |d| d.len() as u64);
                if self.inner.is_end_stream() {
                    self.outcome = "complete";
                }
            }
            Some(Err(e)) => {
                self.outcome = if e.is::<DigestMismatch>() {
                    self.log.metrics.digest_mismatch();
                    if let Some(cached) = &self.log.forget {
                        cached.forget();
                    }
                    "digest mismatch"
                } else {
                    "failed"
                };
            }
            None => self.outcome = "complete",
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        self.log.finish(self.bytes, self.outcome, self.started);
    }
}
