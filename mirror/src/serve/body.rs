//! Response bodies: the one body type the mirror answers with, and an idle timeout between
//! an upstream body's chunks.

use super::log::Metered;
use super::verify::Verified;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use tower_signed_redirect::BoxError;

/// What upstream answers stream back in: storage's body (or the registry's) as
/// `SignedRedirectLayer` hands it on over hyper-util's client.
pub type UpstreamBody = tower_signed_redirect::ResponseBody<hyper::body::Incoming>;

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
    /// A body from the blob store (stored, or a download as it arrives), counted and logged.
    Stored(Metered<http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>>),
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
            MirrorBody::Stored(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MirrorBody::Upstream(body) => body.is_end_stream(),
            MirrorBody::Local(body) => body.is_end_stream(),
            MirrorBody::Stored(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MirrorBody::Upstream(body) => body.size_hint(),
            MirrorBody::Local(body) => body.size_hint(),
            MirrorBody::Stored(body) => body.size_hint(),
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
