//! Reading a body the caller will never see (a redirect's, a range probe's) so its connection
//! can be reused, up to a limit that holds across polls.

use bytes::Buf;
use http_body::Body;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// A body read and discarded until it ends, fails, or passes its byte limit; then it is
    /// dropped (past the limit, that closes its connection).
    pub(crate) struct Drain<B> {
        #[pin]
        body: Option<B>,
        // Bytes still allowed before the body is dropped.
        left: usize,
    }
}

impl<B> Drain<B> {
    /// Drains `body`, reading at most `limit` bytes (plus the rest of the frame that passes
    /// it).
    pub(crate) fn new(body: B, limit: usize) -> Self {
        Drain {
            body: Some(body),
            left: limit,
        }
    }

    /// Nothing to drain.
    pub(crate) fn none() -> Self {
        Drain {
            body: None,
            left: 0,
        }
    }
}

impl<B: Body> Drain<B> {
    /// Reads what has arrived. `Ready` once the body is gone: ended, failed, or dropped at the
    /// limit.
    pub(crate) fn poll_drain(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        while let Some(body) = this.body.as_mut().as_pin_mut() {
            match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let len = frame.data_ref().map_or(0, Buf::remaining);
                    match this.left.checked_sub(len) {
                        Some(left) => *this.left = left,
                        None => this.body.set(None),
                    }
                }
                Poll::Ready(Some(Err(_)) | None) => this.body.set(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body::Frame;
    use std::task::Waker;

    /// `frames` frames of `size` bytes, `Pending` before each.
    struct Slow {
        frames: usize,
        size: usize,
        ready: bool,
        read: usize,
    }

    impl Body for Slow {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.frames == 0 {
                return Poll::Ready(None);
            }
            if !std::mem::take(&mut self.ready) {
                self.ready = true;
                return Poll::Pending;
            }
            self.frames -= 1;
            self.read += self.size;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0; self.size])))))
        }
    }

    #[test]
    fn the_limit_holds_across_polls() {
        let mut cx = Context::from_waker(Waker::noop());
        let body = Slow {
            frames: 1000,
            size: 100,
            ready: false,
            read: 0,
        };
        let mut drain = std::pin::pin!(Drain::new(body, 1000));
        let mut polls = 0;
        while drain.as_mut().poll_drain(&mut cx).is_pending() {
            polls += 1;
            assert!(polls < 100, "still draining after {polls} polls");
        }
        assert_eq!(polls, 11, "10 frames within the limit, the 11th passes it");
        assert!(drain.body.is_none());
    }
}
