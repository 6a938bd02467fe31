//! What a tower user embedding the layer relies on, tried from outside through the public
//! API: bounded reads, scrubbed errors with typed causes, `max_redirects(0)`, `Debug`
//! output, and building the extension in one's own tests.

mod support;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use support::mock::*;
use support::{body_string, bounded};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_signed_redirect::{ErrorKind, FollowedRedirect, SignedRedirectLayer};

const R2: &str = "https://a.r2.cloudflarestorage.com/b?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=5ecre7sig";

/// A body of `frames` 1 KiB frames (or endless), `Pending` before each frame, counting
/// what was read.
struct Trickle {
    frames: Option<usize>,
    ready: bool,
    read: Arc<AtomicUsize>,
}

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.frames == Some(0) {
            return Poll::Ready(None);
        }
        if !std::mem::take(&mut self.ready) {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(n) = &mut self.frames {
            *n -= 1;
        }
        self.read.fetch_add(1024, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0u8; 1024])))))
    }
}

/// Storage that answers the range probe with `206` and then a body of `frames` frames.
fn storage_answering_the_probe_with(frames: Option<usize>, read: Arc<AtomicUsize>) -> MockClient {
    MockClient::new(move |req| {
        Ok(match req.uri().host() {
            Some("registry.example") => redirect(307, R2),
            _ => Response::builder()
                .status(206)
                .header("content-range", "bytes 0-0/1048576")
                .body(
                    Trickle {
                        frames,
                        ready: false,
                        read: read.clone(),
                    }
                    .boxed(),
                )
                .unwrap(),
        })
    })
}

#[tokio::test]
async fn the_range_probes_body_is_read_at_most_a_few_kib_across_polls() {
    for frames in [Some(1024), None] {
        let read = Arc::new(AtomicUsize::new(0));
        let client = storage_answering_the_probe_with(frames, read.clone());
        let res = bounded(
            ServiceBuilder::new()
                .layer(SignedRedirectLayer::new())
                .service(client)
                .oneshot(credentialed_blob_request(Method::HEAD)),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-length"], "1048576");
        let read = read.load(Ordering::SeqCst);
        assert!(
            read <= 2048,
            "{frames:?}: read {read} bytes of the probe's body"
        );
    }
}

#[tokio::test]
async fn an_upstream_error_quoting_the_callers_signed_url_is_scrubbed() {
    // hyper-util and reqwest errors quote the URL: "error sending request for url (...)".
    let client = MockClient::new(|req| {
        Err(MockError(format!(
            "error sending request for url ({})",
            req.uri()
        )))
    });
    for method in [Method::GET, Method::POST] {
        let mut req = credentialed_blob_request(method.clone());
        *req.uri_mut() = "https://bucket.s3.amazonaws.com/b?X-Amz-Credential=AKIDSECRETX%2F20240101&X-Amz-Security-Token=T0KENVALUE&X-Amz-Signature=5ecre7sig"
            .parse()
            .unwrap();
        let err = ServiceBuilder::new()
            .layer(SignedRedirectLayer::new())
            .service(client.clone())
            .oneshot(req)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Upstream);
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("X-Amz-Signature=REDACTED"), "{source}");
        for text in [err.to_string(), format!("{err:?}"), source] {
            for secret in ["5ecre7sig", "AKIDSECRETX", "T0KENVALUE"] {
                assert!(!text.contains(secret), "{method}: {text}");
            }
        }
    }
}

#[tokio::test]
async fn max_redirects_zero_passes_every_redirect_through() {
    let client = MockClient::new(|req| {
        Ok(match req.uri().host() {
            Some("registry.example") => redirect(307, R2),
            _ => response(200, "blob"),
        })
    });
    let res = ServiceBuilder::new()
        .layer(SignedRedirectLayer::new().max_redirects(0))
        .service(client.clone())
        .oneshot(credentialed_blob_request(Method::GET))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(res.headers()["location"], R2);
    assert!(res.extensions().get::<FollowedRedirect>().is_none());
    assert_eq!(client.requests().len(), 1, "storage was not asked");
}

#[tokio::test]
async fn a_timeout_is_found_as_a_typed_cause() {
    let slow_storage = tower::service_fn(|req: Request<String>| async move {
        if req.uri().host() != Some("registry.example") {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        Ok::<_, MockError>(match req.uri().host() {
            Some("registry.example") => redirect(307, R2),
            _ => response(200, "blob"),
        })
    });
    let err = bounded(
        ServiceBuilder::new()
            .layer(SignedRedirectLayer::new())
            .timeout(Duration::from_millis(50))
            .service(slow_storage)
            .oneshot(credentialed_blob_request(Method::GET)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.find_cause::<tower::timeout::error::Elapsed>().is_some());
    assert!(err.find_cause::<MockError>().is_none());

    // A cause deeper in the chain is found too: a refusal wrapped by the client.
    let refusing = MockClient::new(|_| Err(MockError("connection refused".into())));
    let err = ServiceBuilder::new()
        .layer(SignedRedirectLayer::new())
        .map_err(|e: MockError| Wrapped(e))
        .service(refusing)
        .oneshot(credentialed_blob_request(Method::GET))
        .await
        .unwrap_err();
    assert_eq!(
        err.find_cause::<MockError>().unwrap().0,
        "connection refused"
    );
    assert!(err.find_cause::<tower::timeout::error::Elapsed>().is_none());
}

/// An error with a source, as hyper-util's client error has.
#[derive(Debug)]
struct Wrapped(MockError);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client error")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn debug_output_names_the_matcher_and_the_futures_state() {
    let layer = SignedRedirectLayer::new().max_redirects(2);
    let text = format!("{layer:?}");
    for expected in [
        "matcher: WellKnownStorage",
        "max_redirects: 2",
        "redirect_statuses: [301, 302, 303, 307, 308]",
        "head_strategy: RangeProbe",
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }

    let mut svc = tower::Layer::layer(&layer, MockClient::new(|_| Ok(response(200, ""))));
    let future = svc.call(credentialed_blob_request(Method::GET));
    assert_eq!(
        format!("{future:?}"),
        "ResponseFuture { state: \"upstream\", hops: 0 }"
    );
    let future = svc.call(credentialed_blob_request(Method::POST));
    assert_eq!(
        format!("{future:?}"),
        "ResponseFuture { state: \"pass-through\", hops: 0 }"
    );
}

/// What a user's own code might do with the extension: log the storage host.
fn storage_host<B>(res: &Response<B>) -> Option<String> {
    let followed = res.extensions().get::<FollowedRedirect>()?;
    let url: http::Uri = followed.storage_url().parse().ok()?;
    Some(format!("{} ({} hops)", url.host()?, followed.hops()))
}

#[tokio::test]
async fn users_can_build_the_extension_for_their_own_tests() {
    let mut res = Response::new(String::from("blob"));
    res.extensions_mut().insert(
        FollowedRedirect::new(StatusCode::TEMPORARY_REDIRECT, &R2.parse().unwrap()).with_hops(2),
    );
    assert_eq!(
        storage_host(&res).as_deref(),
        Some("a.r2.cloudflarestorage.com (2 hops)")
    );
    let followed = res.extensions().get::<FollowedRedirect>().unwrap();
    assert!(!followed.storage_url().contains("5ecre7sig"));
    assert_eq!(body_string(res).await, "blob");
}
