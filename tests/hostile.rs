//! Hostile upstreams over loopback: every case ends in a documented outcome within bounded
//! time and memory, never a panic or a hang.
//!
//! Documented outcomes: a registry redirect the layer will not follow (bad, foreign or
//! dangerous Location) reaches the caller unchanged; a header hyper cannot parse is the
//! inner client's error (`ErrorKind::Upstream`); chains end in `TooManyRedirects`; stalls
//! end in the caller's timeouts (the layer is runtime-agnostic and sets none itself: compose
//! `tower::timeout` for response heads and an idle timeout for bodies, as the examples do).

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::bounded;
use support::net::{self, http_client, layer_for, read_head, serve_raw};
use tokio::io::AsyncWriteExt;
use tower::{ServiceBuilder, ServiceExt};
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};
use tower_signed_redirect::{ErrorKind, SignedRedirectLayer};

fn get(addr: SocketAddr) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}/v2/x/blobs/sha256:00"))
        .header("authorization", "Bearer t")
        .body(Empty::new())
        .unwrap()
}

/// A registry that answers every request with `307` and this raw `Location` line.
async fn registry_with_location(location: Vec<u8>) -> SocketAddr {
    let location = Arc::new(location);
    serve_raw(move |mut s| {
        let location = location.clone();
        async move {
            read_head(&mut s).await;
            let mut res = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: ".to_vec();
            res.extend_from_slice(&location);
            res.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            let _ = s.write_all(&res).await;
        }
    })
    .await
}

#[tokio::test]
async fn hostile_locations_pass_through_or_fail_typed() {
    bounded(async {
        // Storage that must never be contacted by these cases.
        let contacted = Arc::new(AtomicUsize::new(0));
        let c = contacted.clone();
        let storage = serve_raw(move |_s| {
            c.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .await;
        let matcher = WellKnownStorage::new().or(HostPatterns::new([format!(
            "storage.invalid:{}",
            storage.port()
        )])
        .unwrap());
        let mut huge = b"https://a.r2.cloudflarestorage.com/".to_vec();
        huge.resize(64 * 1024, b'a');
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", b"".to_vec()),
            ("64 KiB", huge),
            (
                "non-UTF-8",
                b"https://a.r2.cloudflarestorage.com/\xff\xfe".to_vec(),
            ),
            (
                "spaces",
                b"https://a.r2.cloudflarestorage.com/a b c".to_vec(),
            ),
            (
                "control characters",
                b"https://a.r2.cloudflarestorage.com/\x01\x7f".to_vec(),
            ),
            ("javascript:", b"javascript:alert(1)".to_vec()),
            ("file:", b"file:///etc/passwd".to_vec()),
            ("ftp:", b"ftp://a.r2.cloudflarestorage.com/x".to_vec()),
            (
                "userinfo",
                b"https://a.r2.cloudflarestorage.com@169.254.169.254/latest/meta-data".to_vec(),
            ),
            (
                "metadata IP",
                b"http://169.254.169.254/latest/meta-data/iam/security-credentials/".to_vec(),
            ),
            (
                "IPv6 loopback",
                format!("http://[::1]:{}/x", storage.port()).into_bytes(),
            ),
            (
                "loopback IP",
                format!("http://127.0.0.1:{}/x", storage.port()).into_bytes(),
            ),
        ];
        for (name, location) in cases {
            let registry = registry_with_location(location.clone()).await;
            let svc = ServiceBuilder::new()
                .layer(SignedRedirectLayer::with_matcher(matcher.clone()))
                .service(http_client(&[]));
            match svc.oneshot(get(registry)).await {
                Ok(res) => {
                    assert_eq!(
                        res.status(),
                        StatusCode::TEMPORARY_REDIRECT,
                        "{name}: passed through"
                    );
                    if let Some(l) = res.headers().get("location") {
                        assert_eq!(
                            l.as_bytes(),
                            location.as_slice(),
                            "{name}: Location unchanged"
                        );
                    }
                }
                Err(e) => assert_eq!(e.kind(), ErrorKind::Upstream, "{name}: {e}"),
            }
        }
        assert_eq!(
            contacted.load(Ordering::SeqCst),
            0,
            "no hostile Location was followed"
        );
    })
    .await;
}

#[tokio::test]
async fn an_endless_redirect_chain_ends_at_the_limit() {
    bounded(async {
        let hops = Arc::new(AtomicUsize::new(0));
        let h = hops.clone();
        let storage = net::serve(move |req: Request<hyper::body::Incoming>| {
            let n: u64 = req
                .uri()
                .path()
                .trim_start_matches('/')
                .parse()
                .unwrap_or(0);
            h.fetch_add(1, Ordering::SeqCst);
            async move {
                http::Response::builder()
                    .status(302)
                    .header("location", format!("/{}", n + 1))
                    .body(net::empty())
                    .unwrap()
            }
        })
        .await;
        let registry = registry_with_location(format!("http://{storage}/0").into_bytes()).await;
        let svc = ServiceBuilder::new()
            .layer(layer_for(&[storage]))
            .service(http_client(&[]));
        let err = svc.oneshot(get(registry)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooManyRedirects);
        assert_eq!(
            hops.load(Ordering::SeqCst),
            5,
            "default limit: 5 redirects, so 5 storage requests"
        );
    })
    .await;
}

/// Storage behaviours that stall: the caller's timeouts end them.
#[tokio::test]
async fn stalled_storage_ends_in_the_callers_timeout() {
    bounded(async {
        // Sends its response head at 1 byte per 100 ms (a slow-loris), or never answers.
        let slow = serve_raw(|mut s| async move {
            read_head(&mut s).await;
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789" {
                if s.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let silent = serve_raw(|mut s| async move {
            read_head(&mut s).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
        .await;
        for storage in [slow, silent] {
            let registry =
                registry_with_location(format!("http://{storage}/blob").into_bytes()).await;
            let svc = ServiceBuilder::new()
                .layer(layer_for(&[storage]))
                .timeout(Duration::from_millis(500))
                .service(http_client(&[]));
            let started = Instant::now();
            let err = svc.oneshot(get(registry)).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Storage);
            assert!(err.inner().unwrap().is::<tower::timeout::error::Elapsed>());
            assert!(started.elapsed() < Duration::from_secs(3));
        }
    })
    .await;
}

#[tokio::test]
async fn storage_resetting_mid_body_is_a_body_error() {
    bounded(async {
        let storage = serve_raw(|mut s| async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                .await;
            let _ = s.write_all(&[1u8; 50_000]).await;
            #[allow(deprecated)] // blocking on drop is harmless here: nothing is left to send
            let _ = s.set_linger(Some(Duration::ZERO)); // RST instead of FIN
        })
        .await;
        let registry = registry_with_location(format!("http://{storage}/blob").into_bytes()).await;
        let svc = ServiceBuilder::new()
            .layer(layer_for(&[storage]))
            .service(http_client(&[]));
        let res = svc.oneshot(get(registry)).await.unwrap();
        assert!(res.into_body().collect().await.is_err());
    })
    .await;
}

/// A registry whose 307 carries a 1 GiB body: the layer reads at most 64 KiB of it, drops
/// the rest (closing that connection), and answers from storage at once.
#[tokio::test]
async fn a_redirect_with_a_1_gib_body_is_not_read() {
    bounded(async {
        let storage = net::serve(|_req: Request<hyper::body::Incoming>| async {
            http::Response::builder().body(net::full("blob")).unwrap()
        })
        .await;
        let sent = Arc::new(AtomicU64::new(0));
        let s2 = sent.clone();
        let registry = serve_raw(move |mut s| {
            let sent = s2.clone();
            async move {
                read_head(&mut s).await;
                let head = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{storage}/blob\r\nContent-Length: {}\r\n\r\n",
                    1u64 << 30
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![0u8; 64 * 1024];
                while sent.load(Ordering::SeqCst) < 1 << 30 {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            }
        })
        .await;
        let svc = ServiceBuilder::new()
            .layer(layer_for(&[storage]))
            .service(http_client(&[]));
        let started = Instant::now();
        let res = svc.oneshot(get(registry)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "blob");
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = sent.load(Ordering::SeqCst);
        assert!(sent < 64 << 20, "the registry got to send {sent} bytes of its 1 GiB body");
    })
    .await;
}
