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
pub struct IdleTimeout<B> {
    inner: Pin<Box<B>>,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner: Box::pin(inner),
            idle,
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
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + self.idle;
                self.sleep.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                ready!(self.sleep.as_mut().poll(cx));
                Poll::Ready(Some(Err(BodyIdle(self.idle).into())))
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

/// What is logged when a response's body ends (or is dropped).
#[derive(Debug, Default)]
pub struct RequestLog {
    pub method: String,
    pub path: String,
    pub upstream: String,
    pub status: u16,
    /// `followed` (hops, scheme and redacted storage URL below), `passed`, or `none`.
    pub redirect: &'static str,
    pub hops: usize,
    pub scheme: &'static str,
    pub storage: String,
}

/// Counts the bytes sent and logs one line per request when the body is done.
pub struct Metered<B> {
    inner: Pin<Box<B>>,
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
            inner: Box::pin(inner),
            log,
            started,
            bytes: 0,
            outcome,
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(self.inner.as_mut().poll_frame(cx));
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
        let (l, outcome) = (&self.log, self.outcome);
        tracing::info!(
            method = %l.method,
            path = %l.path,
            upstream = %l.upstream,
            status = l.status,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            body = outcome,
            redirect = l.redirect,
            hops = l.hops,
            scheme = l.scheme,
            storage = %l.storage,
            "request"
        );
    }
}
