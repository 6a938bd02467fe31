//! The layer over real HTTP on loopback: hyper-util's client, a registry that redirects
//! blob downloads to pre-signed URLs, and a real S3 store that verifies every signature.

mod support;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, RANGE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::net::{self, http_client, layer_for};
use support::registry::{self, blob_key, blob_request_to, digest};
use support::s3::{AuthRule, Store};
use support::setup::{test_blob, Loopback, Signing};
use support::{body_bytes, bounded};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_signed_redirect::matcher::HostPatterns;
use tower_signed_redirect::{ErrorKind, FollowedRedirect, SignedRedirectLayer};

#[tokio::test]
async fn replaying_the_request_fails_on_r2_and_s3_and_the_layer_fixes_it() {
    bounded(async {
        for rule in [AuthRule::R2, AuthRule::S3] {
            let s = Loopback::start(rule, Signing::GetOnly, 100_000).await;
            let client = http_client(&[]);

            // Without the layer: follow by replaying the request, as a naive proxy does.
            let res = client.request(s.blob_request(Method::GET)).await.unwrap();
            assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
            let location = res.headers()["location"].to_str().unwrap().to_owned();
            assert!(location.contains("X-Amz-Signature="));
            let mut replay = s.blob_request(Method::GET);
            *replay.uri_mut() = location.parse().unwrap();
            let res = client.request(replay).await.unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST);
            let body =
                String::from_utf8(body_bytes(res.into_body()).await.unwrap().to_vec()).unwrap();
            let expected = match rule {
                AuthRule::R2 => {
                    "<Code>InvalidRequest</Code><Message>Missing x-amz-content-sha256</Message>"
                }
                AuthRule::S3 => {
                    "<Code>InvalidArgument</Code><Message>Only one auth mechanism allowed"
                }
            };
            assert!(body.contains(expected), "{body}");

            // With the layer: the blob, byte for byte.
            let mut svc = ServiceBuilder::new()
                .layer(layer_for(&[s.store.addr]))
                .service(client);
            let res = svc
                .ready()
                .await
                .unwrap()
                .call(s.blob_request(Method::GET))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(
                res.extensions().get::<FollowedRedirect>().unwrap().hops(),
                1
            );
            let body = body_bytes(res.into_body()).await.unwrap();
            assert_eq!(digest(&body), s.digest);

            // The store did verify the signature: a tampered one is refused.
            let last = location.chars().last().unwrap();
            let tampered = format!(
                "{}{}",
                &location[..location.len() - 1],
                if last == '0' { '1' } else { '0' }
            );
            let res = http_client(&[])
                .request(Request::get(tampered).body(Empty::<Bytes>::new()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN);
            let stored: Vec<_> = s
                .store
                .requests()
                .into_iter()
                .filter(|r| r.presigned())
                .collect();
            assert!(
                stored[0].headers.contains_key(AUTHORIZATION),
                "the control really sent credentials"
            );
            for r in s.store.requests().iter().skip(1) {
                assert!(!r.headers.contains_key(AUTHORIZATION));
            }
        }
    })
    .await;
}

#[tokio::test]
async fn head_against_head_signed_and_get_signed_urls() {
    bounded(async {
        for signing in [Signing::RequestMethod, Signing::GetOnly] {
            let s = Loopback::start(AuthRule::S3, signing, 1_000_000).await;
            let svc = ServiceBuilder::new()
                .layer(layer_for(&[s.store.addr]))
                .service(http_client(&[]));
            let res = svc.oneshot(s.blob_request(Method::HEAD)).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(res.headers()[CONTENT_LENGTH], "1000000");
            let fallback = res
                .extensions()
                .get::<FollowedRedirect>()
                .unwrap()
                .head_fallback();
            assert_eq!(fallback, matches!(signing, Signing::RequestMethod));
            assert!(body_bytes(res.into_body()).await.unwrap().is_empty());
            assert!(
                s.store.served_bytes() <= 1,
                "the store served {} bytes",
                s.store.served_bytes()
            );
            s.store.assert_no_credentials_arrived();
        }
    })
    .await;
}

#[tokio::test]
async fn tower_http_follow_redirect_replays_head_and_fails_a_get_signed_url() {
    bounded(async {
        let s = Loopback::start(AuthRule::S3, Signing::GetOnly, 1000).await;
        let svc = ServiceBuilder::new()
            .layer(tower_http::follow_redirect::FollowRedirectLayer::new())
            .service(http_client(&[]));
        let res = svc.oneshot(s.blob_request(Method::HEAD)).await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "HEAD on a GET-signed URL"
        );
    })
    .await;
}

#[tokio::test]
async fn range_and_resume() {
    bounded(async {
        let s = Loopback::start(AuthRule::R2, Signing::GetOnly, 300_000).await;
        let svc = ServiceBuilder::new()
            .layer(layer_for(&[s.store.addr]))
            .service(http_client(&[]));

        let mut req = s.blob_request(Method::GET);
        req.headers_mut()
            .insert(RANGE, "bytes=1000-1999".parse().unwrap());
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(res.headers()["content-range"], "bytes 1000-1999/300000");
        assert_eq!(
            body_bytes(res.into_body()).await.unwrap(),
            s.data[1000..2000]
        );

        // A client reads part of the blob, loses the connection, and resumes with If-Range.
        let res = svc
            .clone()
            .oneshot(s.blob_request(Method::GET))
            .await
            .unwrap();
        let etag = res.headers()["etag"].clone();
        let mut body = res.into_body();
        let mut got = Vec::new();
        while got.len() < 100_000 {
            let frame = body.frame().await.unwrap().unwrap();
            got.extend_from_slice(frame.data_ref().unwrap());
        }
        drop(body);
        let mut req = s.blob_request(Method::GET);
        req.headers_mut()
            .insert(RANGE, format!("bytes={}-", got.len()).parse().unwrap());
        req.headers_mut().insert("if-range", etag.clone());
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        got.extend_from_slice(&body_bytes(res.into_body()).await.unwrap());
        assert_eq!(got.len(), s.data.len());
        assert_eq!(
            digest(&got),
            s.digest,
            "the resumed download is byte-identical"
        );
        let last = s.store.requests().into_iter().last().unwrap();
        assert_eq!(last.headers["if-range"], etag);
        s.store.assert_no_credentials_arrived();
    })
    .await;
}

#[tokio::test]
async fn a_cdn_hop_is_followed_and_a_loop_ends_in_a_typed_error() {
    bounded(async {
        let store = Arc::new(Store::start(AuthRule::S3).await);
        let d = store.put_blob(&test_blob(50_000));
        // The CDN 302s to the store, signing there for GET.
        let s = store.clone();
        let cdn = net::serve(move |req: Request<hyper::body::Incoming>| {
            let key = req.uri().path().trim_start_matches("/cdn/").to_owned();
            let location = s.presign(&Method::GET, &key);
            async move {
                http::Response::builder()
                    .status(302)
                    .header("location", location)
                    .body(net::empty())
                    .unwrap()
            }
        })
        .await;
        let registry = registry::start(move |_, digest| {
            Some(format!("http://{cdn}/cdn/{}", blob_key(digest)))
        })
        .await;
        let svc = ServiceBuilder::new()
            .layer(layer_for(&[cdn, store.addr]))
            .service(http_client(&[]));
        let res = svc
            .clone()
            .oneshot(blob_request_to(registry, Method::GET, &d))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let followed = res.extensions().get::<FollowedRedirect>().unwrap().clone();
        assert_eq!(
            (followed.hops(), followed.redirect_status()),
            (2, StatusCode::TEMPORARY_REDIRECT)
        );
        assert!(followed.storage_url().contains("X-Amz-Signature=REDACTED"));
        assert_eq!(digest(&body_bytes(res.into_body()).await.unwrap()), d);
        store.assert_no_credentials_arrived();

        // A → B → A
        let targets: Arc<std::sync::OnceLock<(String, String)>> = Arc::default();
        let bouncer = |to_b: bool| {
            let targets = targets.clone();
            move |_req: Request<hyper::body::Incoming>| {
                let (a, b) = targets.get().unwrap().clone();
                let to = if to_b { b } else { a };
                async move {
                    http::Response::builder()
                        .status(302)
                        .header("location", to)
                        .body(net::empty())
                        .unwrap()
                }
            }
        };
        let ping = net::serve(bouncer(true)).await;
        let pong = net::serve(bouncer(false)).await;
        let a = format!("http://{ping}/a");
        targets
            .set((a.clone(), format!("http://{pong}/b")))
            .unwrap();
        let registry = registry::start(move |_, _| Some(a.clone())).await;
        let svc = ServiceBuilder::new()
            .layer(layer_for(&[ping, pong]).max_redirects(20))
            .service(http_client(&[]));
        let started = std::time::Instant::now();
        let err = svc
            .oneshot(blob_request_to(registry, Method::GET, &d))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RedirectLoop, "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test]
async fn unmatched_hosts_pass_through_and_downgrades_are_refused() {
    bounded(async {
        let s = Loopback::start(AuthRule::S3, Signing::GetOnly, 1000).await;
        // The layer trusts some other host only: the 307 reaches the caller as it was sent.
        let svc = ServiceBuilder::new()
            .layer(SignedRedirectLayer::with_matcher(
                HostPatterns::new(["storage.example"]).unwrap(),
            ))
            .service(http_client(&[]));
        let res = svc.oneshot(s.blob_request(Method::GET)).await.unwrap();
        assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
        assert!(res.headers()["location"]
            .to_str()
            .unwrap()
            .contains("X-Amz-Signature="));
        assert!(s.store.requests().is_empty());

        // An https registry redirecting to http storage.
        let store = s.store.clone();
        let (tls_registry, cert) = net::serve_tls(move |req: Request<hyper::body::Incoming>| {
            let location = store.presign(
                &Method::GET,
                &blob_key(req.uri().path().rsplit('/').next().unwrap()),
            );
            async move {
                http::Response::builder()
                    .status(307)
                    .header("location", location)
                    .body(net::empty())
                    .unwrap()
            }
        })
        .await;
        let req = |method| {
            let mut r = blob_request_to(tls_registry, method, &s.digest);
            *r.uri_mut() = format!("https://{tls_registry}/v2/library/test/blobs/{}", s.digest)
                .parse()
                .unwrap();
            r
        };
        let svc = ServiceBuilder::new()
            .layer(layer_for(&[s.store.addr]))
            .service(http_client(std::slice::from_ref(&cert)));
        let err = svc.oneshot(req(Method::GET)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Downgrade);
        assert!(
            err.to_string().contains("X-Amz-Signature=REDACTED"),
            "{err}"
        );
        assert!(s.store.requests().is_empty());

        let svc = ServiceBuilder::new()
            .layer(layer_for(&[s.store.addr]).allow_https_downgrade(true))
            .service(http_client(&[cert]));
        let res = svc.oneshot(req(Method::GET)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            digest(&body_bytes(res.into_body()).await.unwrap()),
            s.digest
        );
        s.store.assert_no_credentials_arrived();
    })
    .await;
}

#[tokio::test]
async fn an_expired_url_returns_the_stores_403_unchanged() {
    bounded(async {
        let s = Loopback::expired(AuthRule::S3, 1000).await;
        let svc = ServiceBuilder::new()
            .layer(layer_for(&[s.store.addr]))
            .service(http_client(&[]));
        let res = svc.oneshot(s.blob_request(Method::GET)).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let followed = res.extensions().get::<FollowedRedirect>().unwrap().clone();
        assert!(followed.expires_at().unwrap() < SystemTime::now());
        let body = String::from_utf8(body_bytes(res.into_body()).await.unwrap().to_vec()).unwrap();
        assert!(
            body.contains("<Code>AccessDenied</Code>") && body.contains("Request has expired"),
            "{body}"
        );
    })
    .await;
}

#[tokio::test]
async fn storage_closing_mid_body_is_an_error_not_a_short_blob() {
    bounded(async {
        // Storage that promises 1 MB and closes after 100 KB.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let storage = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                    .await;
                let _ = sock.write_all(&[7u8; 100_000]).await;
                // dropped: the connection closes mid-body
            }
        });
        let registry =
            registry::start(move |_, _| Some(format!("http://{storage}/blob?X-Amz-Signature=x")))
                .await;
        let svc = ServiceBuilder::new()
            .layer(layer_for(&[storage]))
            .service(http_client(&[]));
        let res = svc
            .oneshot(blob_request_to(registry, Method::GET, "sha256:00"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut body = res.into_body();
        let mut received = 0;
        let outcome = loop {
            match body.frame().await {
                Some(Ok(frame)) => received += frame.data_ref().map_or(0, |d| d.len()),
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        };
        assert!(
            outcome.is_err(),
            "the body ended cleanly after {received} of 1000000 bytes"
        );
        assert!(received < 1_000_000);
    })
    .await;
}

#[tokio::test]
async fn hyper_util_client_is_the_inner_service_as_is() {
    // Type-level: the legacy client, with no adapter, in ServiceBuilder.
    fn assert_service<S: Service<Request<Empty<Bytes>>> + Clone>(_: &S) {}
    let svc = ServiceBuilder::new()
        .layer(SignedRedirectLayer::new())
        .service(http_client(&[]));
    assert_service(&svc);
    // And the response body streams: a blob arrives in several frames.
    bounded(async {
        let s = Loopback::start(AuthRule::S3, Signing::GetOnly, 2_000_000).await;
        let svc = ServiceBuilder::new()
            .layer(layer_for(&[s.store.addr]))
            .service(http_client(&[]));
        let res = svc.oneshot(s.blob_request(Method::GET)).await.unwrap();
        let mut body = res.into_body();
        let (mut frames, mut hasher) = (0, Sha256::new());
        while let Some(frame) = body.frame().await {
            hasher.update(frame.unwrap().data_ref().unwrap());
            frames += 1;
        }
        assert!(frames > 1);
        assert_eq!(
            format!("sha256:{}", hex::encode(hasher.finalize())),
            s.digest
        );
    })
    .await;
}
