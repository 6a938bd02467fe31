//! A mock inner HTTP client: answers from a routing function and records every request.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tower::Service;
use tower_signed_redirect::test_util::FakeRegistry;

pub use super::BoxError;

pub type TestBody = BoxBody<Bytes, BoxError>;

/// A request as the inner client received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: String,
    pub marked: bool,
}

/// A request extension the tests put on the original request; storage hops must not carry it.
#[derive(Clone, Debug)]
pub struct Marker;

/// An error from the mock client.
#[derive(Debug)]
pub struct MockError(pub String);

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MockError {}

type Route = dyn Fn(&Request<String>) -> Result<Response<TestBody>, MockError> + Send + Sync;

/// The mock client. Clones share the log and the route.
#[derive(Clone)]
pub struct MockClient {
    log: Arc<Mutex<Vec<Recorded>>>,
    route: Arc<Route>,
}

impl MockClient {
    pub fn new(
        route: impl Fn(&Request<String>) -> Result<Response<TestBody>, MockError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        MockClient {
            log: Arc::default(),
            route: Arc::new(route),
        }
    }

    /// Records every request (body and extensions included), and answers as `registry`
    /// (and its storage) does.
    pub fn over(registry: FakeRegistry) -> Self {
        MockClient::new(move |req| {
            let mut forwarded = Request::new(String::new());
            *forwarded.method_mut() = req.method().clone();
            *forwarded.uri_mut() = req.uri().clone();
            *forwarded.headers_mut() = req.headers().clone();
            match registry.clone().call(forwarded).into_inner() {
                Ok(res) => Ok(res.map(|b| b.map_err(|e| match e {}).boxed())),
                Err(e) => Err(MockError(e.to_string())),
            }
        })
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
}

impl Service<Request<String>> for MockClient {
    type Response = Response<TestBody>;
    type Error = MockError;
    type Future = Ready<Result<Response<TestBody>, MockError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), MockError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        self.log.lock().unwrap().push(Recorded {
            method: req.method().clone(),
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
            body: req.body().clone(),
            marked: req.extensions().get::<Marker>().is_some(),
        });
        ready((self.route)(&req))
    }
}

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

pub fn response(status: u16, body: &'static str) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-length", body.len())
        .body(full(body))
        .unwrap()
}

pub fn redirect(status: u16, location: &str) -> Response<TestBody> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("location", location)
        .body(full(""))
        .unwrap()
}

/// A blob request as a registry proxy sends it upstream to `registry.example`: absolute URI,
/// the client's credentials, cloud-provider, content and custom headers, a body, and a
/// request extension ([`Marker`]). None of that may reach storage but the allowlisted headers.
pub fn credentialed_blob_request(method: Method) -> Request<String> {
    let mut req = Request::builder()
        .method(method)
        .uri("https://registry.example/v2/library/alpine/blobs/sha256:abc")
        .header("authorization", "Bearer registry-token")
        .header("proxy-authorization", "Basic cHJveHk6c2VjcmV0")
        .header("cookie", "session=1")
        .header("user-agent", "docker/27.0")
        .header("accept", "*/*")
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .header("x-goog-user-project", "p")
        .header("content-type", "application/octet-stream")
        .header("x-request-id", "42")
        .body("client body".to_owned())
        .unwrap();
    req.extensions_mut().insert(Marker);
    req
}
