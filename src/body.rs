use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The response body of [`SignedRedirect`](crate::SignedRedirect): the inner service's
    /// body, streamed unchanged, or empty (the answer to a `HEAD` that the layer answered
    /// from a ranged `GET`).
    ///
    /// ```
    /// use http_body::Body;
    /// use tower_signed_redirect::ResponseBody;
    ///
    /// let empty = ResponseBody::<String>::empty();
    /// assert!(empty.is_end_stream());
    /// let inner = ResponseBody::new(String::from("blob"));
    /// assert_eq!(inner.size_hint().exact(), Some(4));
    /// ```
    pub struct ResponseBody<B> {
        #[pin]
        inner: Option<B>,
    }
}

impl<B> ResponseBody<B> {
    /// Wraps a body to stream through unchanged.
    pub fn new(body: B) -> Self {
        ResponseBody { inner: Some(body) }
    }

    /// A body with no data.
    pub fn empty() -> Self {
        ResponseBody { inner: None }
    }

    /// The wrapped body, or `None` for an empty one.
    pub fn into_inner(self) -> Option<B> {
        self.inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().inner.as_pin_mut() {
            Some(body) => body.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(B::is_end_stream)
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), B::size_hint)
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("empty", &self.inner.is_none())
            .finish()
    }
}
