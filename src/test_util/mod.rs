//! A registry and an object store that behave like the real ones, in memory, for testing a
//! stack that uses the layer without a network. Enabled by the `test-util` feature.
//!
//! Mocks that merely answer `200` prove little: the failures this crate exists for come
//! from storage's rules. [`FakeStorage`] enforces them (a second auth mechanism, the
//! signed method, the signed URL's exact bytes, expiry, unsigned `x-amz-*` headers;
//! [`StorageRule`]) with the providers' own statuses and error bodies, and honours `Range`.
//! [`FakeRegistry`] answers blob requests with redirects to URLs its storage signed, for
//! `GET` only or for the request's method ([`Signing`]), absolute or relative, directly or
//! through CDN hops. Both record every request, and both are plain
//! [`Service`](tower_service::Service)s: call them with `ServiceExt::oneshot`, put them in a
//! `ServiceBuilder`, or use the registry as the client under
//! [`SignedRedirectLayer`](crate::SignedRedirectLayer), since it also answers for its
//! storage's host.
//!
//! The signatures are this crate's own (a keyed hash over the method and the URL's exact
//! bytes, in URLs shaped like SigV4's): the fakes are about the rules, not SigV4 fidelity.
//! This crate's own tests check SigV4 against a real S3 server (`s3s`).
//!
//! The [crate documentation](crate#testing-your-stack) shows them testing where a stack
//! puts the layer.

mod registry;
mod storage;

pub use self::registry::{FakeRegistry, Signing};
pub use self::storage::{FakeStorage, Provider, StorageRule};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri};
use std::fmt;

/// The response body of the fakes.
pub type FakeBody = http_body_util::Full<Bytes>;

type TestBody = FakeBody;

/// A request as a fake received it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Recorded {
    /// Its method.
    pub method: Method,
    /// Its URI, as sent.
    pub uri: Uri,
    /// Its headers.
    pub headers: HeaderMap,
}

impl Recorded {
    fn of<B>(req: &Request<B>) -> Self {
        Recorded {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        }
    }
}

/// The error of a fake asked for a host it does not play.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownHost {
    host: String,
}

impl UnknownHost {
    fn of(uri: &Uri) -> Self {
        UnknownHost {
            host: uri.authority().map_or_else(String::new, |a| a.to_string()),
        }
    }
}

impl fmt::Display for UnknownHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no fake service answers for host {:?}", self.host)
    }
}

impl std::error::Error for UnknownHost {}

/// An S3-style error: `<Error><Code>..</Code><Message>..</Message></Error>`.
fn xml_error(status: StatusCode, code: &str, message: &str) -> Response<TestBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml")
        .header(header::CONTENT_LENGTH, body.len())
        .body(TestBody::from(body))
        .expect("a valid error response")
}

/// A registry-style error: `{"errors":[{"code":..,"message":..}]}`.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response<TestBody> {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#);
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(TestBody::from(body))
        .expect("a valid error response")
}

/// `scheme://host[:port]`, checked.
///
/// # Panics
///
/// When `origin` is not an absolute URI with a scheme and an authority.
fn parse_origin(origin: &str) -> Uri {
    let uri: Uri = origin.parse().expect("a valid origin URI");
    assert!(
        uri.scheme().is_some() && uri.authority().is_some(),
        "the origin needs a scheme and a host: {uri}"
    );
    uri
}

/// `scheme://host[:port]` of `origin`, without a path.
fn origin_string(origin: &Uri) -> String {
    format!(
        "{}://{}",
        origin.scheme_str().unwrap_or("https"),
        origin.authority().map_or("", |a| a.as_str())
    )
}
