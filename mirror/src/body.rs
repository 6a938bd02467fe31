//! Response bodies: an idle timeout between chunks, a log line when a response ends, and
//! the one body type the mirror answers with.

use super::client::UpstreamBody;
use super::metrics::{CacheEvent, Decision, Metrics, Route};
use super::verify::{DigestMismatch, Verified};
use super::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// What the mirror answers with: an upstream's body, streamed (with its idle timeout and log
/// line), or one the mirror wrote itself (an error).
// Not boxed: nearly every response is the large variant, and a box would be an allocation
// per response.
#[allow(clippy::large_enum_variant)]
pub enum MirrorBody {
    /// An upstream's (or storage's) body: idle-timed, verified with `--verify-digests`,
    /// counted and logged.
    Upstream(Metered<Verified<IdleTimeout<UpstreamBody>>>),
    /// A body the mirror wrote itself, whole.
    Local(http_body_util::Full<Bytes>),
}

impl Body for MirrorBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            MirrorBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            MirrorBody::Local(body) => Pin::new(body).poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MirrorBody::Upstream(body) => body.is_end_stream(),
            MirrorBody::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MirrorBody::Upstream(body) => body.size_hint(),
            MirrorBody::Local(body) => body.size_hint(),
        }
    }
}

/// Fails the body when no chunk arrives for `idle`. There is no total limit.
///
/// A pause starts when the body first has to wait after a chunk: only then is the clock
/// read (not for every chunk), and the timer is made the first time it is needed (a small
/// body that is ready when polled never needs one). The timer is not reset for every pause
/// either (a timer-wheel update per chunk is measurable on multi-GB downloads): when it
/// fires it checks when the current pause began and re-arms from there.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// When the current pause began; `None` while chunks keep coming.
    paused_since: Option<tokio::time::Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleTimeout<B> {
    /// `inner`, failed with [`BodyIdle`] after a pause of `idle` between chunks.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            paused_since: None,
            sleep: None,
        }
    }
}

/// The error of a body that stalled.
#[derive(Debug)]
pub struct BodyIdle(pub Duration);

impl std::fmt::Display for BodyIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no data from upstream for {:?}", self.0)
    }
}

impl std::error::Error for BodyIdle {}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.paused_since = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let since = *this
                    .paused_since
                    .get_or_insert_with(tokio::time::Instant::now);
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(since + idle)));
                loop {
                    ready!(sleep.as_mut().poll(cx));
                    let deadline = since + idle;
                    if deadline <= tokio::time::Instant::now() {
                        return Poll::Ready(Some(Err(BodyIdle(idle).into())));
                    }
                    sleep.as_mut().reset(deadline);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What is logged and counted when a response's body ends (or is dropped). Cheap to fill:
/// the fields are reference-counted or moved, and formatted only if the line is written.
pub struct RequestLog {
    /// With `--verify-digests`, where the storage URL this body came from is cached: dropped
    /// there if the body does not match.
    pub forget: Option<(tower_signed_redirect::RedirectCache, http::Request<()>)>,
    /// The client's request method.
    pub method: http::Method,
    /// The client's request URI (only its path is logged).
    pub uri: http::Uri,
    /// The upstream the request went to.
    pub upstream: std::sync::Arc<super::upstream::Upstream>,
    /// What the request was for.
    pub route: Route,
    /// The response's status code.
    pub status: u16,
    /// What happened to a redirect the upstream sent, if it sent one.
    pub redirect: Option<Decision>,
    /// What the redirect cache did, if a redirect was followed with one.
    pub cache: Option<CacheEvent>,
    /// Set when the layer followed a redirect to storage.
    pub followed: Option<tower_signed_redirect::FollowedRedirect>,
    /// Where the request and its bytes are counted.
    pub metrics: std::sync::Arc<Metrics>,
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
                    if let Some((cache, req)) = &self.log.forget {
                        cache.remove(req);
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
        let l = &self.log;
        l.metrics.request(l.route, l.status, &l.upstream.name);
        l.metrics.bytes(&l.upstream.name, self.bytes);
        if !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        let outcome = self.outcome;
        let followed = l.followed.as_ref();
        let redirect = match l.redirect {
            Some(Decision::Followed) => "followed",
            Some(Decision::Passed) => "passed",
            Some(Decision::Refused) => "refused",
            None => "none",
        };
        let cache = match l.cache {
            Some(CacheEvent::Hit) => "hit",
            Some(CacheEvent::Miss) => "miss",
            Some(CacheEvent::Refresh) => "refresh",
            None => "",
        };
        tracing::info!(
            method = %l.method,
            path = l.uri.path(),
            upstream = %l.upstream.name,
            status = l.status,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            body = outcome,
            redirect,
            cache,
            hops = followed.map_or(0, |f| f.hops()),
            scheme = followed.map_or("", |f| f.scheme().as_str()),
            storage = followed.map_or("", |f| f.storage_url()),
            "request"
        );
    }
}
