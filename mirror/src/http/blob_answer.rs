//! The head and body of a blob answer from the store: the part a client's `Range` asks for
//! (RFC 9110: one range, or the whole), and the headers a registry sends with a blob.

use super::exchange::Exchange;
use crate::api::DOCKER_CONTENT_DIGEST;
use crate::cache::store::keys::ContentDigest;
use crate::serve::body::{MirrorBody, UpstreamBody};
use crate::serve::log::{Metered, RequestLog};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use tower_signed_redirect::BoxError;

/// The head of a blob answer: `start..end` of `size` bytes.
pub fn blob_head(
    digest: &ContentDigest,
    (start, end, size): (u64, u64, u64),
    media_type: HeaderValue,
) -> http::response::Parts {
    let (mut head, ()) = Response::new(()).into_parts();
    if (start, end) != (0, size) {
        head.status = StatusCode::PARTIAL_CONTENT;
        let range = format!("bytes {start}-{}/{size}", end - 1);
        head.headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&range).expect("a valid header value"),
        );
    }
    head.headers.insert(header::CONTENT_TYPE, media_type);
    head.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    head.headers
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let digest =
        HeaderValue::from_str(&digest.to_string()).expect("a digest is a valid header value");
    head.headers.insert(DOCKER_CONTENT_DIGEST, digest);
    head
}

/// A blob answer: `head`, and `body` counted and logged with `log`.
pub fn blob_response(
    head: http::response::Parts,
    body: UnsyncBoxBody<Bytes, BoxError>,
    log: RequestLog,
    exchange: &Exchange<'_>,
) -> Response<MirrorBody> {
    Response::from_parts(
        head,
        MirrorBody::Stored(Metered::new(body, log, exchange.started)),
    )
}

/// An empty body.
pub fn empty() -> UnsyncBoxBody<Bytes, BoxError> {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A response's `Content-Length`.
pub fn content_length(res: &Response<UpstreamBody>) -> Option<u64> {
    res.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// What part of a `size`-byte blob a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Slice {
    /// All of it: no `Range`, one that cannot be read, several ranges, or an `If-Range`
    /// (which the store cannot compare, so it answers with the whole, as RFC 9110 allows).
    Whole,
    /// `start..end`.
    Part(u64, u64),
    /// A range that starts past the end.
    Unsatisfiable,
}

/// The `start..end` of a `size`-byte blob that `parts` ask for (all of it without a
/// usable `Range`); `None` for a range that starts past the end (`416`).
pub fn asked_part(parts: &Parts, size: u64) -> Option<(u64, u64)> {
    match slice(parts, size) {
        Slice::Whole => Some((0, size)),
        Slice::Part(start, end) => Some((start, end)),
        Slice::Unsatisfiable => None,
    }
}

/// What part of a `size`-byte blob `parts` asks for.
fn slice(parts: &Parts, size: u64) -> Slice {
    if parts.headers.contains_key(header::IF_RANGE) {
        return Slice::Whole;
    }
    let Some(spec) = parts
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .filter(|v| !v.contains(','))
    else {
        return Slice::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Slice::Whole;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        (true, _, Some(0)) => Slice::Unsatisfiable,
        (true, _, Some(suffix)) => Slice::Part(size.saturating_sub(suffix), size),
        (false, Some(start), _) if start >= size => Slice::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => Slice::Part(start, size),
        (false, Some(start), Some(last)) if last >= start => {
            Slice::Part(start, last.saturating_add(1).min(size))
        }
        _ => Slice::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(range: &str) -> Parts {
        let req = http::Request::get("/")
            .header("range", range)
            .body(())
            .unwrap();
        req.into_parts().0
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(slice(&with_range("bytes=0-99"), 1000), Slice::Part(0, 100));
        assert_eq!(
            slice(&with_range("bytes=900-"), 1000),
            Slice::Part(900, 1000)
        );
        assert_eq!(
            slice(&with_range("bytes=-100"), 1000),
            Slice::Part(900, 1000)
        );
        assert_eq!(
            slice(&with_range("bytes=-5000"), 1000),
            Slice::Part(0, 1000)
        );
        assert_eq!(
            slice(&with_range("bytes=990-2000"), 1000),
            Slice::Part(990, 1000)
        );
        assert_eq!(
            slice(&with_range("bytes=1000-"), 1000),
            Slice::Unsatisfiable
        );
        assert_eq!(slice(&with_range("bytes=-0"), 1000), Slice::Unsatisfiable);
        // The largest last byte there is: to the end, not past it (it once wrapped).
        let huge = format!("bytes=999-{}", u64::MAX);
        assert_eq!(slice(&with_range(&huge), 1000), Slice::Part(999, 1000));
        for whole in [
            "bytes=5-1",
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=x-1",
            "bytes=1",
        ] {
            assert_eq!(slice(&with_range(whole), 1000), Slice::Whole, "{whole}");
        }
        let (mut parts, ()) = http::Request::get("/")
            .header("range", "bytes=0-1")
            .body(())
            .unwrap()
            .into_parts();
        parts
            .headers
            .insert("if-range", HeaderValue::from_static("\"etag\""));
        assert_eq!(slice(&parts, 1000), Slice::Whole);
    }
}
