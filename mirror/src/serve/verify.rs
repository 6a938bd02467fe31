//! `--verify-digests`: a blob is hashed as it streams, and a body whose sha256 or sha512 is
//! not its digest ends with an error rather than a clean end, so a client never stores a
//! CDN's error page, or a truncated or corrupted blob, as a layer. Digests of other
//! algorithms are refused before anything is sent upstream (`DIGEST_INVALID`).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256, Sha512};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tower_signed_redirect::BoxError;

/// The redirect cache's entry for one blob request: dropped when the body its storage URL
/// gave does not match its digest, so that the next request asks the registry again.
pub struct CachedRedirect {
    cache: tower_signed_redirect::RedirectCache,
    request: http::Request<()>,
}

impl CachedRedirect {
    /// The entry of `cache` for a request of `uri` by `identity`.
    pub fn new(
        cache: tower_signed_redirect::RedirectCache,
        uri: &http::Uri,
        identity: Option<tower_signed_redirect::CacheIdentity>,
    ) -> CachedRedirect {
        let mut request = http::Request::new(());
        *request.uri_mut() = uri.clone();
        if let Some(identity) = identity {
            request.extensions_mut().insert(identity);
        }
        CachedRedirect { cache, request }
    }

    /// Drops the entry.
    pub fn forget(&self) {
        self.cache.remove(&self.request);
    }
}

/// Whether `--verify-digests` can check digests of `algorithm`.
pub fn can_verify(algorithm: &str) -> bool {
    matches!(algorithm, "sha256" | "sha512")
}

/// What a blob must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// A sha256 digest.
    Sha256([u8; 32]),
    /// A sha512 digest.
    Sha512([u8; 64]),
}

/// The expected digest of a `blobs/sha256:<64 hex>` or `blobs/sha512:<128 hex>` path.
pub fn expected_digest(path: &str) -> Option<Expected> {
    let (_, digest) = path.rsplit_once("/blobs/")?;
    expected(digest)
}

/// What `sha256:<64 hex>` or `sha512:<128 hex>` says content must hash to.
pub fn expected(digest: &str) -> Option<Expected> {
    let (algorithm, hex) = digest.split_once(':')?;
    match algorithm {
        "sha256" => {
            let mut out = [0u8; 32];
            hex::decode_to_slice(hex, &mut out).ok()?;
            Some(Expected::Sha256(out))
        }
        "sha512" => {
            let mut out = [0u8; 64];
            hex::decode_to_slice(hex, &mut out).ok()?;
            Some(Expected::Sha512(out))
        }
        _ => None,
    }
}

impl Expected {
    /// Whether this is the digest of no bytes at all. Any other digest's body of
    /// `Content-Length: 0` must be refused before its head is sent: it has no last byte
    /// to hold back, and its head alone is a complete answer.
    pub fn is_of_nothing(&self) -> bool {
        static NOTHING: std::sync::LazyLock<([u8; 32], [u8; 64])> =
            std::sync::LazyLock::new(|| (Sha256::digest(b"").into(), Sha512::digest(b"").into()));
        match self {
            Expected::Sha256(e) => *e == NOTHING.0,
            Expected::Sha512(e) => *e == NOTHING.1,
        }
    }
}

/// A running hash of the algorithm a digest names.
pub enum DigestHasher {
    /// Hashing with SHA-256.
    Sha256(Sha256),
    /// Hashing with SHA-512.
    Sha512(Sha512),
}

impl DigestHasher {
    /// A hash of the algorithm `expected` is of.
    pub fn new(expected: &Expected) -> DigestHasher {
        match expected {
            Expected::Sha256(_) => DigestHasher::Sha256(Sha256::new()),
            Expected::Sha512(_) => DigestHasher::Sha512(Sha512::new()),
        }
    }

    /// Hashes `data` too.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(data),
            DigestHasher::Sha512(h) => h.update(data),
        }
    }

    /// Whether what was hashed is `expected`.
    pub fn matches(self, expected: &Expected) -> bool {
        match (self, expected) {
            (DigestHasher::Sha256(h), Expected::Sha256(e)) => h.finalize().as_slice() == e,
            (DigestHasher::Sha512(h), Expected::Sha512(e)) => h.finalize().as_slice() == e,
            _ => false,
        }
    }
}

/// The error a mismatching body ends with.
#[derive(Debug)]
pub struct DigestMismatch;

impl std::fmt::Display for DigestMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the blob's content does not match its digest")
    }
}

impl std::error::Error for DigestMismatch {}

/// A body checked against an expected sha256 or sha512 digest (or passed through when
/// there is none).
///
/// One frame is always held back, and the last one is sent only once the digest matched:
/// with `Content-Length` framing, an error after the last byte would reach the client as a
/// complete download.
pub struct Verified<B> {
    inner: B,
    check: Option<Check>,
}

struct Check {
    hasher: Option<DigestHasher>,
    expected: Expected,
    held: Option<Frame<Bytes>>,
    /// The inner body has ended (and the digest matched): only `held` is left to send.
    ended: bool,
}

impl<B> Verified<B> {
    /// `inner`, checked against `expected` if there is one.
    pub fn new(inner: B, expected: Option<Expected>) -> Self {
        Verified {
            inner,
            check: expected.map(|expected| Check {
                hasher: Some(DigestHasher::new(&expected)),
                expected,
                held: None,
                ended: false,
            }),
        }
    }
}

impl<B> Body for Verified<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(check) = &mut this.check else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        if check.ended {
            return Poll::Ready(check.held.take().map(Ok));
        }
        loop {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let (Some(data), Some(hasher)) = (frame.data_ref(), &mut check.hasher) {
                        hasher.update(data);
                    }
                    if let Some(previous) = check.held.replace(frame) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    check.ended = true;
                    let matched = check
                        .hasher
                        .take()
                        .is_some_and(|hasher| hasher.matches(&check.expected));
                    if !matched {
                        check.held = None;
                        return Poll::Ready(Some(Err(DigestMismatch.into())));
                    }
                    return Poll::Ready(check.held.take().map(Ok));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.check {
            None => self.inner.is_end_stream(),
            Some(check) => check.ended && check.held.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn frames(chunks: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_matching_blob_streams_whole_and_a_mismatch_never_ends_cleanly() {
        let digest = Expected::Sha256(Sha256::digest(b"hello world").into());
        let ok = Verified::new(frames(&[b"hello", b" ", b"world"]), Some(digest.clone()));
        assert_eq!(ok.collect().await.unwrap().to_bytes(), "hello world");

        let mut bad = Verified::new(frames(&[b"hello", b" ", b"w0rld"]), Some(digest));
        let mut sent = Vec::new();
        let outcome = loop {
            match bad.frame().await {
                Some(Ok(f)) => sent.extend_from_slice(f.data_ref().unwrap()),
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        };
        assert!(outcome.unwrap_err().is::<DigestMismatch>());
        assert_eq!(sent, b"hello ", "the last frame is withheld");
        assert_eq!(expected_digest("/v2/x/blobs/sha256:00"), None);
        assert!(expected_digest(&format!("/v2/x/blobs/sha256:{}", "ab".repeat(32))).is_some());
        let sha512 = Sha512::digest(b"hello world");
        let path = format!("/v2/x/blobs/sha512:{}", hex::encode(sha512));
        assert_eq!(
            expected_digest(&path),
            Some(Expected::Sha512(sha512.into()))
        );
        let ok = Verified::new(frames(&[b"hello world"]), expected_digest(&path));
        assert_eq!(ok.collect().await.unwrap().to_bytes(), "hello world");
        let bad = Verified::new(frames(&[b"hello w0rld"]), expected_digest(&path));
        assert!(bad.collect().await.is_err());
    }

    #[test]
    fn only_the_digest_of_nothing_admits_an_empty_body() {
        let nothing = format!("sha256:{}", hex::encode(Sha256::digest(b"")));
        assert!(expected(&nothing).unwrap().is_of_nothing());
        let nothing = format!("sha512:{}", hex::encode(Sha512::digest(b"")));
        assert!(expected(&nothing).unwrap().is_of_nothing());
        let something = format!("sha256:{}", hex::encode(Sha256::digest(b"x")));
        assert!(!expected(&something).unwrap().is_of_nothing());
    }
}
