//! How a `HEAD` is answered when its redirect is followed: the public [`HeadStrategy`], and
//! the plan one request follows ([`HeadPlan`]), decided once when its first redirect is
//! followed.

use http::header::{CONTENT_LENGTH, CONTENT_RANGE};
use http::response::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// How a `HEAD` request is answered when its redirect is followed.
///
/// Registries sign the storage URL either for `GET` only (Docker Hub, GHCR, ECR...) or for
/// the client's own method (CNCF distribution, Harbor, GitLab on S3). A `HEAD` on a
/// `GET`-signed URL fails the signature, and so does a `GET` on a `HEAD`-signed one.
///
/// ```
/// use tower_signed_redirect::{HeadStrategy, SignedRedirectLayer};
///
/// // Storage that always signs for the client's method: skip the probe.
/// let layer = SignedRedirectLayer::new().head_strategy(HeadStrategy::Head);
/// assert_eq!(HeadStrategy::default(), HeadStrategy::RangeProbe);
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeadStrategy {
    /// Sends `GET` with `Range: bytes=0-0` and answers `200` with the blob's real
    /// `Content-Length` (from `Content-Range`) and an empty body: one byte is transferred
    /// (the probe's body is read, at most 1 KiB of it, so the connection can be reused).
    /// If storage rejects that request (`400`, `401`, `403` or `405`: a URL signed for
    /// `HEAD`), sends a `HEAD` to the same URL instead and returns its answer. Works with
    /// both kinds of signing. The default.
    #[default]
    RangeProbe,
    /// Sends `GET` and answers with its status and headers and an empty body. The storage
    /// connection is closed to stop the download. For storage that ignores `Range` and
    /// rejects `HEAD`.
    Get,
    /// Sends `HEAD`. For storage whose URLs are always signed for the client's method.
    Head,
}

/// How much of a range probe's body is read before its connection is given up.
pub(crate) const PROBE_BODY_LIMIT: usize = 1024;

/// What one followed request sends to storage and how it answers the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadPlan {
    /// A `GET`: storage's answer is the answer.
    Get,
    /// A `HEAD` sent as `HEAD` ([`HeadStrategy::Head`], or after a rejected range probe).
    Head { after_probe: bool },
    /// A `HEAD` answered from a `GET` whose body is dropped ([`HeadStrategy::Get`]).
    GetWithoutBody,
    /// A `HEAD` answered from a `GET` of `Range: bytes=0-0` ([`HeadStrategy::RangeProbe`]).
    RangeProbe,
}

/// What to do with storage's final answer.
#[derive(Debug)]
pub(crate) enum HeadAnswer<R> {
    /// Answer with these parts and this body (`None`: an empty body).
    Respond(Parts, Option<R>),
    /// Answer with these parts once the probe's body has been read (bounded).
    AfterProbeBody(Parts, R),
    /// The probe was rejected: send the hop again, now as `HEAD`; this body is drained.
    RetryAsHead(R),
}

impl HeadPlan {
    pub(crate) fn new(method: &Method, strategy: HeadStrategy) -> Self {
        match (*method == Method::HEAD, strategy) {
            (false, _) => HeadPlan::Get,
            (true, HeadStrategy::RangeProbe) => HeadPlan::RangeProbe,
            (true, HeadStrategy::Get) => HeadPlan::GetWithoutBody,
            (true, HeadStrategy::Head) => HeadPlan::Head { after_probe: false },
        }
    }

    /// The method of the storage request.
    pub(crate) fn method(self) -> Method {
        match self {
            HeadPlan::Head { .. } => Method::HEAD,
            HeadPlan::Get | HeadPlan::GetWithoutBody | HeadPlan::RangeProbe => Method::GET,
        }
    }

    /// `true` when the storage request is a range probe (`Range: bytes=0-0`).
    pub(crate) fn range_probe(self) -> bool {
        self == HeadPlan::RangeProbe
    }

    /// `true` when the range probe was rejected and a real `HEAD` was sent.
    pub(crate) fn fell_back(self) -> bool {
        self == HeadPlan::Head { after_probe: true }
    }

    /// Storage's final answer (not a redirect to follow), turned into the caller's.
    pub(crate) fn answer<R>(&mut self, mut parts: Parts, body: R) -> HeadAnswer<R> {
        match *self {
            HeadPlan::Get | HeadPlan::Head { .. } => HeadAnswer::Respond(parts, Some(body)),
            // Dropping the body stops the download (and closes that connection).
            HeadPlan::GetWithoutBody => HeadAnswer::Respond(parts, None),
            HeadPlan::RangeProbe => match parts.status {
                StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
                    match content_range_total(&parts.headers) {
                        Some(total) => {
                            parts.status = StatusCode::OK;
                            parts.headers.remove(CONTENT_RANGE);
                            parts
                                .headers
                                .insert(CONTENT_LENGTH, HeaderValue::from(total));
                            HeadAnswer::AfterProbeBody(parts, body)
                        }
                        // A partial answer that does not say the size: ask with HEAD.
                        None => self.retry_as_head(parts.status, body),
                    }
                }
                // Storage ignored the range: its Content-Length is the blob's.
                StatusCode::OK => HeadAnswer::Respond(parts, None),
                // A URL signed for HEAD rejects the GET.
                status if crate::signed_url::refused(status) => {
                    self.retry_as_head(parts.status, body)
                }
                // Any other error: storage's answer, without its body.
                _ => HeadAnswer::Respond(parts, None),
            },
        }
    }

    fn retry_as_head<R>(&mut self, status: StatusCode, body: R) -> HeadAnswer<R> {
        tracing::debug!(
            status = status.as_u16(),
            "range probe rejected; retrying the storage hop with HEAD"
        );
        *self = HeadPlan::Head { after_probe: true };
        HeadAnswer::RetryAsHead(body)
    }
}

/// The complete length from `Content-Range: bytes 0-0/1234` or `bytes */1234`.
fn content_range_total(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let (unit, rest) = value.trim().split_once(' ')?;
    let (_, total) = rest.rsplit_once('/')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    total.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(status: u16, content_range: Option<&'static str>) -> Parts {
        let mut res = http::Response::new(());
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(v) = content_range {
            res.headers_mut()
                .insert(CONTENT_RANGE, HeaderValue::from_static(v));
        }
        res.into_parts().0
    }

    #[test]
    fn a_plan_is_chosen_once_from_method_and_strategy() {
        assert_eq!(
            HeadPlan::new(&Method::GET, HeadStrategy::Head),
            HeadPlan::Get
        );
        let probe = HeadPlan::new(&Method::HEAD, HeadStrategy::RangeProbe);
        assert_eq!((probe.method(), probe.range_probe()), (Method::GET, true));
        let get = HeadPlan::new(&Method::HEAD, HeadStrategy::Get);
        assert_eq!((get.method(), get.range_probe()), (Method::GET, false));
        let head = HeadPlan::new(&Method::HEAD, HeadStrategy::Head);
        assert_eq!((head.method(), head.fell_back()), (Method::HEAD, false));
    }

    #[test]
    fn the_probe_answers_from_content_range_or_falls_back_once() {
        let mut plan = HeadPlan::RangeProbe;
        match plan.answer(parts(206, Some("bytes 0-0/5000")), ()) {
            HeadAnswer::AfterProbeBody(p, ()) => {
                assert_eq!(p.status, StatusCode::OK);
                assert_eq!(p.headers[CONTENT_LENGTH], "5000");
                assert!(p.headers.get(CONTENT_RANGE).is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan.answer(parts(416, Some("bytes */0")), ()),
            HeadAnswer::AfterProbeBody(..)
        ));
        assert!(matches!(
            plan.answer(parts(404, None), ()),
            HeadAnswer::Respond(_, None)
        ));
        assert!(matches!(
            plan.answer(parts(403, None), ()),
            HeadAnswer::RetryAsHead(())
        ));
        assert!(plan.fell_back());
        assert_eq!(plan.method(), Method::HEAD);
        // After the fallback, storage's answer to the HEAD is the answer.
        assert!(matches!(
            plan.answer(parts(403, None), ()),
            HeadAnswer::Respond(_, Some(()))
        ));
    }
}
