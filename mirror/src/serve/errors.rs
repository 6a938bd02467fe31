//! The answers the mirror writes itself: registry-style errors
//! (`{"errors":[{"code":..,"message":..}]}`), the mapping of an upstream failure to one
//! (504 for a timeout, 502 for everything else), and small plain answers.

use super::body::MirrorBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use tower::timeout::error::Elapsed;
use tower_signed_redirect::BoxError;

/// A registry-style error response.
pub fn registry_error(status: StatusCode, code: &str, message: &str) -> Response<MirrorBody> {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(MirrorBody::Local(Full::new(Bytes::from(body))))
        .expect("static response parts are valid")
}

/// A small answer the mirror writes itself: `body` as `content_type`.
pub fn plain_answer(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<MirrorBody> {
    let mut res = Response::new(MirrorBody::Local(Full::new(Bytes::from(body))));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// What the client is told when the upstream (or storage) could not answer, and the
/// message for the log. The message is the error and its sources on one line: this crate's
/// errors print URLs redacted and scrub the inner error's message.
pub fn upstream_failure(err: &BoxError) -> (Response<MirrorBody>, String) {
    let mut message = error_chain(&**err);
    let kind = err
        .downcast_ref::<tower_signed_redirect::Error>()
        .map(|e| e.kind());
    if kind == Some(tower_signed_redirect::ErrorKind::Downgrade) {
        message.push_str(" (start the mirror with --allow-http-storage to follow it)");
    }
    let timed_out = match err.downcast_ref::<tower_signed_redirect::Error>() {
        Some(e) => e.find_cause::<Elapsed>().is_some(),
        // Without the layer (the `naive` and `pass` controls), the timeout is the error.
        None => err.is::<Elapsed>(),
    };
    let res = if timed_out {
        registry_error(StatusCode::GATEWAY_TIMEOUT, "TIMEOUT", &message)
    } else {
        registry_error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", &message)
    };
    (res, message)
}

/// `error: source: source...`, skipping empty messages.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}
