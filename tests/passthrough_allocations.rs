//! The pass-through path allocates nothing beyond what the inner service does.
//!
//! A counting global allocator (per thread) measures one call through the bare inner
//! service and one through the layer, for a response the layer does not follow. Header
//! values are reference-counted as hyper parses them (or `from_static`); a value built from
//! a runtime `String` is promoted to a shared buffer by `bytes` on its first clone.

use http::{HeaderValue, Method, Request, Response, StatusCode};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use tower::{service_fn, Service, ServiceExt};
use tower_signed_redirect::SignedRedirectLayer;

#[path = "support/alloc.rs"]
mod alloc;

use alloc::{allocations_in, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn poll_once<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("mock futures are ready at once"),
    }
}

/// A request built in code: static header values (reference-counted clones).
fn request(method: Method) -> Request<String> {
    Request::builder()
        .method(method)
        .uri("https://registry.example/v2/library/alpine/manifests/latest")
        .header("authorization", HeaderValue::from_static("Bearer t"))
        .header("user-agent", HeaderValue::from_static("docker/27.0"))
        .header(
            "accept",
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        )
        .header("range", HeaderValue::from_static("bytes=0-"))
        .body(String::new())
        .unwrap()
}

#[test]
fn pass_through_allocates_no_more_than_the_bare_service() {
    let inner = service_fn(|_: Request<String>| {
        std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(
            String::new(),
        )))
    });
    let redirecting = service_fn(|_: Request<String>| {
        let mut res = Response::new(String::new());
        *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        res.headers_mut().insert(
            "location",
            http::HeaderValue::from_static("https://elsewhere.example/"),
        );
        std::future::ready(Ok::<_, std::convert::Infallible>(res))
    });
    let mut bare = inner;
    let mut layered = tower::ServiceBuilder::new()
        .layer(SignedRedirectLayer::new())
        .service(inner);
    let mut layered_redirect = tower::ServiceBuilder::new()
        .layer(SignedRedirectLayer::new())
        .service(redirecting);
    let mut bare_redirect = redirecting;

    for method in [Method::GET, Method::HEAD, Method::POST] {
        let (a, b) = (request(method.clone()), request(method.clone()));
        let bare_allocs = allocations_in(|| {
            poll_once(bare.ready()).unwrap();
            drop(poll_once(bare.call(a)));
        });
        let layered_allocs = allocations_in(|| {
            poll_once(layered.ready()).unwrap();
            drop(poll_once(layered.call(b)));
        });
        assert_eq!(layered_allocs, bare_allocs, "{method}: 200 pass-through");

        // A redirect to a non-storage host passes through too.
        let (a, b) = (request(method.clone()), request(method.clone()));
        let bare_allocs = allocations_in(|| {
            poll_once(bare_redirect.ready()).unwrap();
            drop(poll_once(bare_redirect.call(a)));
        });
        let layered_allocs = allocations_in(|| {
            poll_once(layered_redirect.ready()).unwrap();
            drop(poll_once(layered_redirect.call(b)));
        });
        // GET and HEAD redirects are looked at: parsing the Location into a `Uri` for the
        // matcher copies it (at most two small allocations). Other methods are not looked at.
        let parse_cost = if method == Method::POST { 0 } else { 2 };
        assert!(
            layered_allocs <= bare_allocs + parse_cost,
            "{method}: non-storage redirect: layered {layered_allocs}, bare {bare_allocs}"
        );
    }
    // The counter works: a followed redirect does allocate (the chain record).
    assert!(allocations_in(|| drop(Vec::<u8>::with_capacity(1))) == 1);
}

/// The same, for requests as a proxy receives them: parsed by hyper's server.
#[test]
fn pass_through_of_hyper_parsed_requests_allocates_no_more_than_the_bare_service() {
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let measured = rt.block_on(async {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let inner = service_fn(|_: Request<String>| {
            std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(String::new())))
        });
        let results = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let sink = results.clone();
        let handler = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let req = req.map(|_| String::new());
            let via_layer = req.uri().path() == "/layered";
            let mut bare = inner;
            let mut layered = tower::ServiceBuilder::new().layer(SignedRedirectLayer::new()).service(inner);
            let n = allocations_in(|| {
                if via_layer {
                    poll_once(layered.ready()).unwrap();
                    drop(poll_once(layered.call(req)));
                } else {
                    poll_once(bare.ready()).unwrap();
                    drop(poll_once(bare.call(req)));
                }
            });
            sink.borrow_mut().push((via_layer, n));
            std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(String::new())))
        });
        let server = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server_io), handler);
        let client = async move {
            let (mut rd, mut wr) = tokio::io::split(client_io);
            let mut buf = vec![0u8; 4096];
            for path in ["/bare", "/layered", "/bare", "/layered"] {
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: registry.example\r\nAuthorization: Bearer t\r\n\
                     User-Agent: docker/27.0.3 go/go1.21.13 os/linux arch/amd64\r\nAccept: */*\r\nRange: bytes=0-\r\n\r\n"
                );
                wr.write_all(req.as_bytes()).await.unwrap();
                let n = rd.read(&mut buf).await.unwrap();
                assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            }
        };
        tokio::select! {
            _ = server => panic!("server ended first"),
            () = client => {}
        }
        let measured = results.borrow().clone();
        measured
    });
    assert_eq!(measured.len(), 4);
    let bare: Vec<_> = measured
        .iter()
        .filter(|(l, _)| !l)
        .map(|(_, n)| *n)
        .collect();
    let layered: Vec<_> = measured
        .iter()
        .filter(|(l, _)| *l)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(
        layered, bare,
        "allocations per request: layered {layered:?}, bare {bare:?}"
    );
}
