//! The registry mirror's request handling, against loopback fakes: a registry with
//! a Bearer token service, a real S3 store, and a plain HTTP client in the role of docker.
//! This file has the basics and the helpers; `production.rs` what a deployment needs (TLS,
//! metrics, health, private storage, the SSRF guard, digests); `logins.rs` the mirror's
//! own upstream credentials, client logins and the redirect cache; `manifests.rs` the
//! manifest cache and stale serving; `attacks.rs` the threat model's attacks; the blob
//! store in `store.rs` (fill, hit, ranges, eviction, outages, S3), `store_attacks.rs` (who
//! may read a stored blob), `store_shared.rs` (shared identities across restarts) and
//! `store_bounds.rs` (what a client can make the store spend).

#[path = "../../../tests/support/mod.rs"]
mod support;

#[path = "../harness/mod.rs"]
mod harness;

mod attacks;
mod logins;
mod manifests;
mod production;
mod store;
mod store_attacks;
mod store_bounds;
mod store_shared;

use bytes::Bytes;
use clap::Parser;
use harness::start_mirror;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::net::{self, http_client};
use support::registry::{self, digest, TOKEN};
use support::s3::{AuthRule, Store};
use support::setup::{Loopback, Signing};
use support::{body_bytes, bounded};

/// What the token service received: query and `Authorization`.
type TokenLog = Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// The fakes: a token service, a registry whose challenges point at it, and the store.
struct Upstream {
    registry: SocketAddr,
    registry_fake: tower_signed_redirect::test_util::FakeRegistry,
    token_log: TokenLog,
    store: Arc<Store>,
    blob: Vec<u8>,
    digest: String,
}

async fn upstream(rule: AuthRule) -> Upstream {
    let token_log: TokenLog = Arc::default();
    let seen = token_log.clone();
    let tokens = net::serve(move |req: Request<hyper::body::Incoming>| {
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        seen.lock()
            .unwrap()
            .push((req.uri().query().unwrap_or_default().to_owned(), auth));
        async move {
            http::Response::builder()
                .header("content-type", "application/json")
                .body(net::full(format!(
                    r#"{{"token":"{TOKEN}","access_token":"{TOKEN}","expires_in":300}}"#
                )))
                .unwrap()
        }
    })
    .await;
    let realm = format!("http://{tokens}/token");
    let up = Loopback::with_realm(rule, Signing::RequestMethod, 3_000_000, realm).await;
    Upstream {
        registry: up.registry,
        registry_fake: up.registry_fake,
        token_log,
        store: up.store,
        blob: up.data,
        digest: up.digest,
    }
}

fn flags(up: &Upstream, extra: &[&str]) -> Vec<String> {
    let mut f = vec![
        "--upstream".to_owned(),
        format!("docker.io=http://{}", up.registry),
        "--storage-host".to_owned(),
        up.store.addr.to_string(),
    ];
    f.extend(extra.iter().map(|s| s.to_string()));
    f
}

/// A request as docker sends it to a mirror.
fn get(mirror: SocketAddr, method: Method, path: &str, bearer: bool) -> Request<Empty<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{mirror}{path}"))
        .header("user-agent", "docker/27.0 (test)");
    if bearer {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    req.body(Empty::new()).unwrap()
}

async fn send(req: Request<Empty<Bytes>>) -> Response<hyper::body::Incoming> {
    bounded(http_client(&[]).request(req)).await.unwrap()
}

/// Scrapes `/metrics` until every line is in it (counters move when a response's body
/// ends, which can trail the client's last byte); returns the scrape.
async fn metrics_with(mirror: SocketAddr, lines: &[String]) -> String {
    bounded(async {
        loop {
            let scrape =
                support::body_string(send(get(mirror, Method::GET, "/metrics", false)).await).await;
            if lines.iter().all(|l| scrape.contains(l.as_str())) {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The registry-style error the mirror answers an authorized `method` on `path` with.
async fn error_for(mirror: SocketAddr, method: Method, path: &str) -> (StatusCode, String) {
    json_error(send(get(mirror, method, path, true)).await).await
}

async fn json_error(res: Response<hyper::body::Incoming>) -> (StatusCode, String) {
    let status = res.status();
    assert_eq!(res.headers()["content-type"], "application/json");
    let body: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await.unwrap()).unwrap();
    (
        status,
        body["errors"][0]["code"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn ping_and_the_token_flow_go_through_the_mirror() {
    let up = upstream(AuthRule::R2).await;
    for mirror in [start_mirror(&flags(&up, &[])).await] {
        for method in [Method::GET, Method::HEAD] {
            let res = send(get(mirror, method, "/v2/", false)).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
            let challenge = res.headers()["www-authenticate"].to_str().unwrap();
            assert_eq!(
                challenge,
                format!(
                    "Bearer realm=\"http://{mirror}/token/docker.io\",service=\"registry.test\""
                )
            );
        }
        // The client asks the mirror's token endpoint, with its own credentials.
        let mut req = get(
            mirror,
            Method::GET,
            "/token/docker.io?service=registry.test&scope=repository:library/alpine:pull",
            false,
        );
        req.headers_mut()
            .insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        let res = send(req).await;
        assert_eq!(res.status(), StatusCode::OK);
        let token: serde_json::Value =
            serde_json::from_slice(&body_bytes(res.into_body()).await.unwrap()).unwrap();
        assert_eq!(token["token"], TOKEN);
        let (query, auth) = up.token_log.lock().unwrap().last().unwrap().clone();
        assert_eq!(
            query,
            "service=registry.test&scope=repository:library/alpine:pull"
        );
        assert_eq!(auth.as_deref(), Some("Basic dXNlcjpwYXNz"));

        let res = send(get(mirror, Method::GET, "/v2/", true)).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn the_token_endpoint_learns_the_realm_when_no_challenge_was_seen() {
    let up = upstream(AuthRule::S3).await;
    let mirror = start_mirror(&flags(&up, &[])).await;
    let res = send(get(
        mirror,
        Method::GET,
        "/token/docker.io?service=registry.test",
        false,
    ))
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(get(mirror, Method::GET, "/token/quay.io", false)).await;
    assert_eq!(
        json_error(res).await,
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN".to_owned())
    );
}

#[tokio::test]
async fn manifests_with_library_rewrite_and_accept_forwarded() {
    let up = upstream(AuthRule::S3).await;
    let mirror = start_mirror(&flags(&up, &[])).await;
    for method in [Method::GET, Method::HEAD] {
        let mut req = get(mirror, method.clone(), "/v2/alpine/manifests/latest", true);
        for accept in [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ] {
            req.headers_mut().append("accept", accept.parse().unwrap());
        }
        let res = send(req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()["content-type"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            res.headers()["content-length"],
            registry::MANIFEST.len().to_string()
        );
        let body = body_bytes(res.into_body()).await.unwrap();
        if method == Method::HEAD {
            assert!(body.is_empty());
        } else {
            assert_eq!(body, registry::MANIFEST);
        }
        let last = up.registry_fake.requests().pop().unwrap();
        let (m, target, headers) = (last.method, last.uri.to_string(), last.headers);
        assert_eq!(
            (m, target.as_str()),
            (method, "/v2/library/alpine/manifests/latest")
        );
        let accepts: Vec<_> = headers
            .get_all("accept")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(accepts.len(), 2);
    }
    // Two-segment names are left alone.
    send(get(mirror, Method::GET, "/v2/user/app/manifests/v1", true)).await;
    assert_eq!(
        up.registry_fake.requests().pop().unwrap().uri,
        "/v2/user/app/manifests/v1"
    );
}

#[tokio::test]
async fn blobs_are_served_by_the_mirror_itself() {
    let up = upstream(AuthRule::R2).await;
    for mirror in [start_mirror(&flags(&up, &[])).await] {
        let path = format!("/v2/library/test/blobs/{}", up.digest);
        let res = send(get(mirror, Method::GET, &path, true)).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "the mirror answers 200 itself, not a redirect"
        );
        assert_eq!(res.headers()["content-length"], up.blob.len().to_string());
        assert_eq!(
            digest(&body_bytes(res.into_body()).await.unwrap()),
            up.digest
        );

        let res = send(get(mirror, Method::HEAD, &path, true)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-length"], up.blob.len().to_string());
        assert!(body_bytes(res.into_body()).await.unwrap().is_empty());

        let mut req = get(mirror, Method::GET, &path, true);
        req.headers_mut()
            .insert("range", "bytes=100-199".parse().unwrap());
        let res = send(req).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            body_bytes(res.into_body()).await.unwrap(),
            up.blob[100..200]
        );
    }
    up.store.assert_no_credentials_arrived();
}

#[tokio::test]
async fn upstreams_are_selected_by_path_prefix_and_ns() {
    let hub = upstream(AuthRule::S3).await;
    let other = upstream(AuthRule::S3).await;
    let mut f = flags(&hub, &[]);
    f.extend([
        "--upstream".to_owned(),
        format!("ghcr.io=http://{}", other.registry),
        "--storage-host".to_owned(),
        other.store.addr.to_string(),
    ]);
    let mirror = start_mirror(&f).await;
    let res = send(get(
        mirror,
        Method::GET,
        &format!("/v2/ghcr.io/owner/app/blobs/{}", other.digest),
        true,
    ))
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        digest(&body_bytes(res.into_body()).await.unwrap()),
        other.digest
    );
    assert_eq!(
        other.registry_fake.requests()[0].uri.to_string(),
        format!("/v2/owner/app/blobs/{}", other.digest)
    );

    let res = send(get(
        mirror,
        Method::GET,
        "/v2/owner/app/manifests/v1?ns=ghcr.io",
        true,
    ))
    .await;
    // The OCI spec's "Registry Proxying": a proxy that honours `ns` says so.
    assert_eq!(res.headers()["oci-namespace"], "ghcr.io");
    assert_eq!(
        other.registry_fake.requests().pop().unwrap().uri,
        "/v2/owner/app/manifests/v1"
    );
    assert!(hub.registry_fake.requests().is_empty());
    let res = send(get(
        mirror,
        Method::GET,
        "/v2/ghcr.io/owner/app/manifests/v1",
        true,
    ))
    .await;
    assert!(
        res.headers().get("oci-namespace").is_none(),
        "no ns, no header"
    );

    // containerd form-encodes the value: a `host:port` name arrives as `host%3Aport`.
    let third = upstream(AuthRule::S3).await;
    let name = third.registry.to_string();
    let mut f = flags(&hub, &[]);
    f.extend([
        "--upstream".to_owned(),
        format!("{name}=http://{}", third.registry),
        "--storage-host".to_owned(),
        third.store.addr.to_string(),
    ]);
    let mirror = start_mirror(&f).await;
    let ns = name.replace(':', "%3A");
    let res = send(get(
        mirror,
        Method::GET,
        &format!("/v2/owner/app/blobs/{}?ns={ns}", third.digest),
        true,
    ))
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        digest(&body_bytes(res.into_body()).await.unwrap()),
        third.digest
    );
    assert_eq!(
        third.registry_fake.requests()[0].uri.to_string(),
        format!("/v2/owner/app/blobs/{}", third.digest)
    );
    assert!(hub.registry_fake.requests().is_empty());
}

#[tokio::test]
async fn upstream_failures_are_registry_errors() {
    // Nothing listens there.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    // Accepts, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mirror = start_mirror(&["--upstream".into(), format!("docker.io=http://{closed}")]).await;
    assert_eq!(
        error_for(mirror, Method::GET, "/v2/alpine/manifests/latest").await,
        (StatusCode::BAD_GATEWAY, "UNAVAILABLE".to_owned())
    );

    let mirror = start_mirror(&[
        "--upstream".into(),
        format!("docker.io=http://{silent_addr}"),
        "--response-timeout".into(),
        "300ms".into(),
    ])
    .await;
    assert_eq!(
        error_for(mirror, Method::GET, "/v2/alpine/manifests/latest").await,
        (StatusCode::GATEWAY_TIMEOUT, "TIMEOUT".to_owned())
    );

    assert_eq!(
        error_for(mirror, Method::PUT, "/v2/alpine/manifests/latest").await,
        (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED".to_owned())
    );
}

#[tokio::test]
async fn naive_and_pass_modes_are_the_controls() {
    let up = upstream(AuthRule::R2).await;
    let path = format!("/v2/library/test/blobs/{}", up.digest);
    let naive = start_mirror(&flags(&up, &["--redirects", "naive"])).await;
    let res = send(get(naive, Method::GET, &path, true)).await;
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "replaying the request breaks on R2"
    );
    let body = String::from_utf8(body_bytes(res.into_body()).await.unwrap().to_vec()).unwrap();
    assert!(body.contains("Missing x-amz-content-sha256"), "{body}");

    let pass = start_mirror(&flags(&up, &["--redirects", "pass"])).await;
    let res = send(get(pass, Method::GET, &path, true)).await;
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
}

#[test]
fn flags_and_durations() {
    use registry_mirror::options::parse_duration;
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("soon").is_err());
    let defaults = registry_mirror::options::Options::parse_from(["registry-mirror"]);
    assert_eq!(defaults.listen, "127.0.0.1:5000".parse().unwrap());
    assert_eq!(defaults.upstreams, ["docker.io"]);
    assert!(registry_mirror::upstream::registry::Registry::parse("nope").is_err());
    assert!(registry_mirror::upstream::registry::Registry::parse("x=ftp://h").is_err());
}

#[tokio::test]
async fn a_slow_loris_storage_body_ends_in_the_idle_timeout() {
    // Storage sends its head, then one byte per second of a 100-byte body.
    let storage = net::serve_raw(|mut s| async move {
        use tokio::io::AsyncWriteExt;
        net::read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            .await;
        for _ in 0..100 {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let registry =
        registry::start(move |_, _| Some(format!("http://{storage}/blob?X-Amz-Signature=s"))).await;
    let mirror = start_mirror(&[
        "--upstream".into(),
        format!("docker.io=http://{registry}"),
        "--storage-host".into(),
        storage.to_string(),
        "--idle-timeout".into(),
        "300ms".into(),
    ])
    .await;
    let started = std::time::Instant::now();
    let res = send(get(
        mirror,
        Method::GET,
        "/v2/library/x/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        true,
    ))
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = bounded(body_bytes(res.into_body())).await;
    assert!(
        body.is_err(),
        "the client sees the transfer fail, not a short blob"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_readme_flag_table_lists_every_flag() {
    use clap::CommandFactory;
    let readme = include_str!("../../README.md");
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| flag | environment | default |"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(table.len() > 10, "no flag table in the README");
    for arg in registry_mirror::options::Options::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if ["help", "version"].contains(&long) {
            continue;
        }
        let row = table
            .iter()
            .find(|row| row.contains(&format!("`--{long}")))
            .unwrap_or_else(|| panic!("--{long} is not in the README's flag table"));
        if let Some(env) = arg.get_env() {
            let env = env.to_str().unwrap();
            assert!(
                row.contains(&format!("`{env}`")),
                "--{long}: {env} not in its row"
            );
        }
    }
}
