//! Response bodies: an idle timeout between chunks, and a log line when a response ends.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Fails the body when no chunk arrives for `idle`. There is no total limit.
///
/// The timer is not reset on every chunk (a timer-wheel update per chunk is measurable on
/// multi-GB downloads): chunks only record when they arrived, and when the timer fires early
/// it is re-armed from the last arrival.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    last: tokio::time::Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            last: tokio::time::Instant::now(),
            sleep: Box::pin(tokio::time::sleep(idle)),
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
                this.last = tokio::time::Instant::now();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => loop {
                ready!(this.sleep.as_mut().poll(cx));
                let deadline = this.last + this.idle;
                if deadline <= tokio::time::Instant::now() {
                    return Poll::Ready(Some(Err(BodyIdle(this.idle).into())));
                }
                this.sleep.as_mut().reset(deadline);
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What is logged when a response's body ends (or is dropped). Cheap to fill: the fields
/// are reference-counted or moved, and formatted only if the line is written.
#[derive(Debug)]
pub struct RequestLog {
    pub method: http::Method,
    pub uri: http::Uri,
    pub upstream: std::sync::Arc<super::upstream::Upstream>,
    pub status: u16,
    /// `followed` when the layer fetched the answer from storage, `passed` when a redirect
    /// reached the client, `none` when there was none.
    pub redirect: &'static str,
    /// Set when the layer followed a redirect to storage.
    pub followed: Option<tower_signed_redirect::FollowedRedirect>,
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
            Some(Err(_)) => self.outcome = "failed",
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
        if !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        let (l, outcome) = (&self.log, self.outcome);
        let followed = l.followed.as_ref();
        tracing::info!(
            method = %l.method,
            path = l.uri.path(),
            upstream = %l.upstream.name,
            status = l.status,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            body = outcome,
            redirect = l.redirect,
            hops = followed.map_or(0, |f| f.hops()),
            scheme = followed.map_or("", |f| f.scheme().as_str()),
            storage = followed.map_or("", |f| f.storage_url()),
            "request"
        );
    }
}
