//! What a deployment needs from the mirror, over loopback: metrics and health, a public
//! URL and TLS, private storage over http behind an https registry, the guard on storage
//! hops that follow any signed URL, digest checks, and manifests redirected to storage.

use super::support::net::{self, http_client};
use super::support::registry::{blob_key, digest, MANIFEST, TOKEN};
use super::support::s3::{AuthRule, Store};
use super::support::{body_bytes, body_string, bounded};
use super::{flags, get, metrics_with, send, start_mirror, upstream};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A registry that answers every blob request with a `307` to `location(digest)`, and every
/// manifest with [`MANIFEST`] and Docker Hub's rate-limit headers.
async fn registry_redirecting<L>(location: L) -> SocketAddr
where
    L: Fn(&str) -> String + Send + Sync + 'static,
{
    net::serve(move |req: Request<Incoming>| {
        let path = req.uri().path().to_owned();
        let res = match path.rsplit_once("/blobs/") {
            Some((_, d)) => Response::builder()
                .status(307)
                .header("location", location(d))
                .body(net::empty()),
            None if path.contains("/manifests/") => Response::builder()
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .header("ratelimit-limit", "100;w=21600")
                .header("ratelimit-remaining", "76;w=21600")
                .body(net::full(MANIFEST)),
            None => Response::builder().body(net::full("{}")),
        };
        async move { res.unwrap() }
    })
    .await
}

/// Storage that answers `body` to anything, counting the connections it accepts.
async fn storage_answering(body: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    let addr = net::serve_raw(move |mut stream| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            use tokio::io::AsyncWriteExt;
            net::read_head(&mut stream).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        }
    })
    .await;
    (addr, connections)
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn metrics_and_health_are_scraped() {
    let up = upstream(AuthRule::R2).await;
    let mirror = start_mirror(&flags(&up, &[])).await;
    let res = send(get(mirror, Method::GET, "/healthz", false)).await;
    assert_eq!(
        (res.status(), body_string(res).await.as_str()),
        (StatusCode::OK, "ok\n")
    );
    let res = send(get(mirror, Method::GET, "/readyz", false)).await;
    assert_eq!(res.status(), StatusCode::OK);

    let path = format!("/v2/library/test/blobs/{}", up.digest);
    for _ in 0..2 {
        let res = send(get(mirror, Method::GET, &path, true)).await;
        assert_eq!(res.status(), StatusCode::OK);
        body_bytes(res.into_body()).await.unwrap();
    }
    let res = send(get(mirror, Method::HEAD, &path, true)).await;
    assert_eq!(res.status(), StatusCode::OK);

    let res = send(get(mirror, Method::GET, "/metrics", false)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let metrics = body_string(res).await;
    let bytes = 2 * up.blob.len();
    for line in [
        "registry_mirror_requests_total{route=\"blob\",status=\"200\",upstream=\"docker.io\"} 3"
            .to_owned(),
        format!("registry_mirror_response_bytes_total{{upstream=\"docker.io\"}} {bytes}"),
        "registry_mirror_redirects_total{decision=\"followed\"} 3".to_owned(),
        "registry_mirror_redirect_cache_total{event=\"miss\"} 2".to_owned(),
        "registry_mirror_redirect_cache_total{event=\"hit\"} 1".to_owned(),
        // Known label values are there before their first event.
        "registry_mirror_redirects_total{decision=\"refused\"} 0".to_owned(),
        "registry_mirror_redirect_cache_total{event=\"refresh\"} 0".to_owned(),
        // The store signs for the request's method: the HEAD fell back to a real HEAD.
        "registry_mirror_head_fallbacks_total 1".to_owned(),
        // What the mirror asked the registry, by the route it parsed from the client's
        // path (the readiness check's ping included); the cache hit asked nothing.
        "registry_mirror_upstream_requests_total{method=\"GET\",route=\"blob\"} 1".to_owned(),
        "registry_mirror_upstream_requests_total{method=\"HEAD\",route=\"blob\"} 1".to_owned(),
        "registry_mirror_upstream_requests_total{method=\"GET\",route=\"ping\"} 1".to_owned(),
    ] {
        assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains("registry_mirror_hop_seconds_count{hop=\"storage\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("registry_mirror_hop_seconds_bucket{le="),
        "{metrics}"
    );
    // Nothing secret: no signature, no token.
    assert!(!metrics.contains("X-Amz") && !metrics.contains(TOKEN));
}

#[tokio::test]
async fn rate_limits_and_passed_redirects_are_counted_and_readiness_needs_the_upstream() {
    let registry = registry_redirecting(|_| "https://elsewhere.example/blob".into()).await;
    let mirror = start_mirror(&args(&[
        "--upstream",
        &format!("docker.io=http://{registry}"),
    ]))
    .await;
    let res = send(get(
        mirror,
        Method::GET,
        "/v2/library/x/manifests/latest",
        true,
    ))
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(get(
        mirror,
        Method::GET,
        "/v2/library/x/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        true,
    ))
    .await;
    assert_eq!(
        res.status(),
        StatusCode::TEMPORARY_REDIRECT,
        "not a storage host: passed on"
    );
    metrics_with(
        mirror,
        &[
            "registry_mirror_upstream_ratelimit_remaining{upstream=\"docker.io\"} 76".to_owned(),
            "registry_mirror_redirects_total{decision=\"passed\"} 1".to_owned(),
            "registry_mirror_requests_total{route=\"manifest\",status=\"200\",upstream=\"docker.io\"} 1".to_owned(),
        ],
    )
    .await;

    // An upstream nobody answers for: not ready.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mirror = start_mirror(&args(&[
        "--upstream",
        &format!("docker.io=http://{closed}"),
    ]))
    .await;
    let res = send(get(mirror, Method::GET, "/readyz", false)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let res = send(get(mirror, Method::GET, "/healthz", false)).await;
    assert_eq!(res.status(), StatusCode::OK, "but up");
}

#[tokio::test]
async fn challenges_name_the_public_url_and_tls_is_served() {
    let up = upstream(AuthRule::S3).await;
    let mut f = flags(&up, &[]);
    f.extend(args(&["--public-url", "https://mirror.example.com/"]));
    let mirror = start_mirror(&f).await;
    let res = send(get(mirror, Method::GET, "/v2/", false)).await;
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"https://mirror.example.com/token/docker.io\",service=\"registry.test\""
    );

    // TLS served by the mirror itself.
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let mut f = flags(&up, &[]);
    f.extend(args(&[
        "--tls-cert",
        cert_pem.to_str().unwrap(),
        "--tls-key",
        key_pem.to_str().unwrap(),
    ]));
    let addr = start_mirror(&f).await;
    let client = http_client(&[cert.cert.der().clone()]);
    let https = |path: &str, bearer: bool| {
        let mut req = Request::get(format!("https://{addr}{path}"));
        if bearer {
            req = req.header("authorization", format!("Bearer {TOKEN}"));
        }
        req.body(http_body_util::Empty::new()).unwrap()
    };
    let res = bounded(client.request(https("/v2/", false))).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["www-authenticate"],
        format!("Bearer realm=\"https://{addr}/token/docker.io\",service=\"registry.test\"")
    );
    let path = format!("/v2/library/test/blobs/{}", up.digest);
    let res = bounded(client.request(https(&path, true))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        digest(&body_bytes(res.into_body()).await.unwrap()),
        up.digest
    );
    let options = <registry_mirror::options::Options as clap::Parser>::parse_from(
        std::iter::once("registry-mirror".to_owned()).chain(f),
    );
    assert!(registry_mirror::serve::tls::acceptor(&options)
        .unwrap()
        .is_some());
    assert!(
        registry_mirror::serve::tls::acceptor(&registry_mirror::options::Options {
            tls_cert: Some(dir.path().join("missing.pem")),
            ..options
        })
        .is_err()
    );
}

#[tokio::test]
async fn private_storage_over_http_behind_an_https_registry_needs_the_flag() {
    let store = Arc::new(Store::start(AuthRule::S3).await);
    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let d = store.put_blob(&data);
    let s = store.clone();
    let (registry, cert) = net::serve_tls(move |req: Request<Incoming>| {
        let digest = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let location = s.presign(&Method::GET, &blob_key(&digest));
        async move {
            Response::builder()
                .status(307)
                .header("location", location)
                .body(net::empty())
                .unwrap()
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem(&cert)).unwrap();
    let base = args(&[
        "--upstream",
        &format!("docker.io=https://{registry}"),
        "--upstream-ca",
        ca.to_str().unwrap(),
        "--storage-host",
        &store.addr.to_string(),
    ]);
    let path = format!("/v2/library/test/blobs/{d}");
    let mirror = start_mirror(&base).await;
    let res = send(get(mirror, Method::GET, &path, true)).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let body: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await.unwrap()).unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("refused https to http storage redirect: http://"),
        "{message}"
    );
    assert!(message.contains("X-Amz-Signature=REDACTED"), "{message}");
    assert!(
        message.ends_with("(start the mirror with --allow-http-storage to follow it)"),
        "{message}"
    );
    assert!(
        !message.contains(": (") && !message.ends_with(": "),
        "{message}"
    );
    assert!(store.requests().is_empty());

    let mut allowed = base.clone();
    allowed.push("--allow-http-storage".into());
    let mirror = start_mirror(&allowed).await;
    let res = send(get(mirror, Method::GET, &path, true)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(digest(&body_bytes(res.into_body()).await.unwrap()), d);
    store.assert_no_credentials_arrived();
}

pub(super) fn pem(cert: &rustls::pki_types::CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn any_signed_url_is_followed_but_never_to_a_private_address_unless_listed() {
    let (storage, connections) = storage_answering("blob").await;
    let port = storage.port();
    let signed = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab12";
    // A public-looking name that resolves to loopback (a test resolver: no packet leaves).
    let registry =
        registry_redirecting(move |_| format!("http://storage.example.com:{port}/blob{signed}"))
            .await;
    let literal =
        registry_redirecting(move |_| format!("http://127.0.0.1:{port}/blob{signed}")).await;
    let private =
        registry_redirecting(move |_| format!("http://internal.example.com:{port}/blob{signed}"))
            .await;
    let mirror_for = |registry: SocketAddr, extra: &[&str]| {
        let mut f = args(&[
            "--upstream",
            &format!("docker.io=http://{registry}"),
            "--follow-signed-urls",
            "--resolve",
            "storage.example.com=127.0.0.1",
            "--resolve",
            "internal.example.com=10.0.0.5",
        ]);
        f.extend(args(extra));
        async move { start_mirror(&f).await }
    };
    let blob = "/v2/library/x/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000";

    for registry in [registry, literal, private] {
        let mirror = mirror_for(registry, &[]).await;
        let res = send(get(mirror, Method::GET, blob, true)).await;
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        let text = body_string(res).await;
        assert!(
            text.contains("is not a public address") && text.contains("--storage-host"),
            "{text}"
        );
        assert!(!text.contains("ab12"), "{text}");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no storage hop connected"
    );

    // Listed explicitly, the same host is followed.
    let mirror = mirror_for(
        registry,
        &["--storage-host", &format!("storage.example.com:{port}")],
    )
    .await;
    let res = send(get(mirror, Method::GET, blob, true)).await;
    assert_eq!(
        (res.status(), body_string(res).await.as_str()),
        (StatusCode::OK, "blob")
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    // Without --follow-signed-urls the redirect is not to a storage host: passed on.
    let mirror = start_mirror(&args(&[
        "--upstream",
        &format!("docker.io=http://{registry}"),
    ]))
    .await;
    let res = send(get(mirror, Method::GET, blob, true)).await;
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_never_ends_cleanly() {
    let good = "the layer";
    let expected = digest(good.as_bytes());
    let large: &'static str = Box::leak("x".repeat(4 << 20).into_boxed_str());
    for (served, verify, clean) in [
        ("an error page", true, false),
        (large, true, false),
        (good, true, true),
        ("an error page", false, true),
    ] {
        let (storage, _) = storage_answering(served).await;
        let registry =
            registry_redirecting(move |_| format!("http://{storage}/blob?X-Amz-Signature=ab12"))
                .await;
        let mut f = args(&[
            "--upstream",
            &format!("docker.io=http://{registry}"),
            "--storage-host",
            &storage.to_string(),
        ]);
        if verify {
            f.push("--verify-digests".into());
        }
        let mirror = start_mirror(&f).await;
        let req = get(
            mirror,
            Method::GET,
            &format!("/v2/library/x/blobs/{expected}"),
            true,
        );
        // A small blob's mismatch is known before the head is sent: the response breaks
        // there; a large one's after its last byte but one. Either way, never a clean end.
        let pulled = bounded(async {
            let res = http_client(&[]).request(req).await?;
            assert_eq!(res.status(), StatusCode::OK);
            let body = body_bytes(res.into_body()).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(body)
        })
        .await;
        assert_eq!(pulled.is_ok(), clean, "served {served:?}, verify {verify}");
        if clean {
            assert_eq!(pulled.unwrap(), served);
        }
        if verify && !clean {
            let metrics =
                body_string(send(get(mirror, Method::GET, "/metrics", false)).await).await;
            assert!(
                metrics.contains("registry_mirror_digest_mismatches_total 1"),
                "{metrics}"
            );
        }
    }
}

#[tokio::test]
async fn manifests_redirected_to_storage_are_followed_too() {
    let store = Arc::new(Store::start(AuthRule::S3).await);
    let key = "docker/registry/v2/manifests/latest";
    store.put(key, MANIFEST.as_bytes());
    let s = store.clone();
    // Some registries (GitLab on S3) redirect manifests to storage, signed for the method.
    let registry = net::serve(move |req: Request<Incoming>| {
        let location = s.presign(req.method(), key);
        async move {
            Response::builder()
                .status(307)
                .header("location", location)
                .body(net::empty())
                .unwrap()
        }
    })
    .await;
    let mirror = start_mirror(&args(&[
        "--upstream",
        &format!("docker.io=http://{registry}"),
        "--storage-host",
        &store.addr.to_string(),
    ]))
    .await;
    let res = send(get(
        mirror,
        Method::GET,
        "/v2/library/x/manifests/latest",
        true,
    ))
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_bytes(res.into_body()).await.unwrap(), MANIFEST);
    let res = send(get(
        mirror,
        Method::HEAD,
        "/v2/library/x/manifests/latest",
        true,
    ))
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-length"], MANIFEST.len().to_string());
    assert!(body_bytes(res.into_body()).await.unwrap().is_empty());
    store.assert_no_credentials_arrived();
}
