//! The manifest cache against a Docker-Hub-like registry on loopback: a token service that
//! hands every anonymous request a fresh token (as Docker Hub's clients get one per pull),
//! a private repository only Alice's login reads, tags that move, a switch that makes the
//! registry answer `429`, and counters of what a pull limit counts (manifest `GET`s).

use super::support::net::{self, http_client};
use super::support::s3::{AuthRule, Store};
use super::support::{body_bytes, bounded};
use super::{metrics_with, start_mirror};
use base64::Engine;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const ALICE: (&str, &str) = ("alice", "alice-pw");
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// What the registry counted.
#[derive(Default)]
struct Counts {
    manifest_gets: AtomicUsize,
    manifest_heads: AtomicUsize,
    blob_requests: AtomicUsize,
}

struct Hub {
    registry: SocketAddr,
    store: Arc<Store>,
    counts: Arc<Counts>,
    /// `repository:tag` → manifest bytes.
    tags: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// Non-zero: the registry answers everything with this status.
    failing: Arc<AtomicU16>,
    blob: String,
}

impl Hub {
    async fn start() -> Hub {
        let store = Arc::new(Store::start(AuthRule::S3).await);
        let blob = store.put_blob(b"a layer anyone may pull");
        let tokens: Arc<Mutex<HashMap<String, &'static str>>> = Arc::default();
        let issued = Arc::new(AtomicUsize::new(0));
        let t = tokens.clone();
        let token_service = net::serve(move |req: Request<Incoming>| {
            let alice = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", ALICE.0, ALICE.1))
            );
            let who = match req.headers().get("authorization") {
                None => Some("anonymous"),
                Some(a) if a.as_bytes() == alice.as_bytes() => Some("alice"),
                Some(_) => None,
            };
            let res = match who {
                Some(who) => {
                    let token = format!("{who}-{}", issued.fetch_add(1, Ordering::SeqCst));
                    t.lock().unwrap().insert(token.clone(), who);
                    Response::builder().body(net::full(format!(
                        r#"{{"token":"{token}","expires_in":300}}"#
                    )))
                }
                None => Response::builder().status(401).body(net::empty()),
            };
            async move { res.unwrap() }
        })
        .await;
        let counts = Arc::new(Counts::default());
        let tags: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let failing = Arc::new(AtomicU16::new(0));
        let (c, tg, f, s) = (counts.clone(), tags.clone(), failing.clone(), store.clone());
        let registry = net::serve(move |req: Request<Incoming>| {
            let path = req.uri().path().to_owned();
            let method = req.method().clone();
            let who = req
                .headers()
                .get("authorization")
                .and_then(|a| a.to_str().ok()?.strip_prefix("Bearer ").map(str::to_owned))
                .and_then(|t| tokens.lock().unwrap().get(&t).copied());
            let rest = path.trim_start_matches("/v2/");
            let repository = rest
                .split("/manifests/")
                .next()
                .unwrap_or_default()
                .split("/blobs/")
                .next()
                .unwrap_or_default()
                .to_owned();
            let res = (|| {
                let failing = f.load(Ordering::SeqCst);
                if failing != 0 {
                    return Response::builder().status(failing).body(net::empty());
                }
                let allowed = match (repository.starts_with("private/"), who) {
                    (_, None) => false,
                    (true, Some(who)) => who == "alice",
                    (false, Some(_)) => true,
                };
                if !allowed {
                    let scope = format!("repository:{repository}:pull");
                    return Response::builder().status(401).header(
                        "www-authenticate",
                        format!("Bearer realm=\"http://{token_service}/token\",service=\"hub\",scope=\"{scope}\""),
                    ).body(net::empty());
                }
                if let Some((_, digest)) = path.rsplit_once("/blobs/") {
                    c.blob_requests.fetch_add(1, Ordering::SeqCst);
                    let key = super::support::registry::blob_key(digest);
                    return Response::builder()
                        .status(307)
                        .header("location", s.presign(&Method::GET, &key))
                        .body(net::empty());
                }
                let Some((_, reference)) = path.rsplit_once("/manifests/") else {
                    return Response::builder().body(net::full("{}"));
                };
                if method == Method::HEAD {
                    c.manifest_heads.fetch_add(1, Ordering::SeqCst);
                } else {
                    c.manifest_gets.fetch_add(1, Ordering::SeqCst);
                }
                let tags = tg.lock().unwrap();
                let found = tags.iter().find_map(|(k, body)| {
                    let (repo, tag) = k.split_once(':')?;
                    (repo == repository && (tag == reference || sha256(body) == reference))
                        .then(|| body.clone())
                });
                let Some(body) = found else {
                    return Response::builder().status(404).body(net::empty());
                };
                let len = body.len();
                let builder = Response::builder()
                    .header("content-type", OCI_INDEX)
                    .header("docker-content-digest", sha256(&body))
                    .header("content-length", len);
                if method == Method::HEAD {
                    builder.body(net::empty())
                } else {
                    builder.body(net::full(body))
                }
            })();
            async move { res.unwrap() }
        })
        .await;
        Hub {
            registry,
            store,
            counts,
            tags,
            failing,
            blob,
        }
    }

    fn tag(&self, repository_tag: &str, manifest: &str) {
        self.tags
            .lock()
            .unwrap()
            .insert(repository_tag.to_owned(), manifest.as_bytes().to_vec());
    }

    async fn mirror(&self) -> SocketAddr {
        start_mirror(&[
            "--upstream".to_owned(),
            format!("docker.io=http://{}", self.registry),
            "--storage-host".to_owned(),
            self.store.addr.to_string(),
        ])
        .await
    }

    fn gets(&self) -> usize {
        self.counts.manifest_gets.load(Ordering::SeqCst)
    }
}

async fn send(
    mirror: SocketAddr,
    method: Method,
    path: &str,
    auth: Option<&str>,
) -> Response<Incoming> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{mirror}{path}"))
        .header("accept", OCI_INDEX);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    bounded(http_client(&[]).request(req.body(Empty::new()).unwrap()))
        .await
        .unwrap()
}

/// A token from the mirror's `/token/`: anonymous, or with Basic credentials.
async fn token(mirror: SocketAddr, repository: &str, basic: Option<(&str, &str)>) -> String {
    let path = format!("/token/docker.io?service=hub&scope=repository:{repository}:pull");
    let auth = basic.map(|(u, p)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    });
    let res = send(mirror, Method::GET, &path, auth.as_deref()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let json: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await.unwrap()).unwrap();
    format!("Bearer {}", json["token"].as_str().unwrap())
}

/// One pull as Docker does it: a fresh anonymous token, the manifest by tag, a blob.
async fn pull(mirror: SocketAddr, hub: &Hub, repository: &str, tag: &str) -> (StatusCode, String) {
    let bearer = token(mirror, repository, None).await;
    let res = send(
        mirror,
        Method::GET,
        &format!("/v2/{repository}/manifests/{tag}"),
        Some(&bearer),
    )
    .await;
    let status = res.status();
    let manifest = String::from_utf8(body_bytes(res.into_body()).await.unwrap().to_vec()).unwrap();
    let res = send(
        mirror,
        Method::GET,
        &format!("/v2/{repository}/blobs/{}", hub.blob),
        Some(&bearer),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "the blob");
    body_bytes(res.into_body()).await.unwrap();
    (status, manifest)
}

#[tokio::test]
async fn twenty_anonymous_pulls_spend_one_manifest_get_and_share_the_blob_url() {
    let hub = Hub::start().await;
    hub.tag("library/app:v1", r#"{"v":1}"#);
    let mirror = hub.mirror().await;
    // 20 pulls by 4 clients at once, each with a fresh anonymous token.
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let hub = &hub;
            async move {
                for _ in 0..5 {
                    assert_eq!(
                        pull(mirror, hub, "library/app", "v1").await.0,
                        StatusCode::OK
                    );
                }
            }
        })
        .collect();
    futures_util::future::join_all(pulls).await;
    assert_eq!(hub.gets(), 1, "one manifest GET upstream");
    assert!(hub.counts.manifest_heads.load(Ordering::SeqCst) <= 19);
    assert!(
        hub.counts.blob_requests.load(Ordering::SeqCst) <= 2,
        "blob registry requests: {}",
        hub.counts.blob_requests.load(Ordering::SeqCst)
    );
    metrics_with(
        mirror,
        &[
            "registry_mirror_manifest_cache_total{event=\"miss\"} 1".to_owned(),
            "registry_mirror_upstream_requests_total{method=\"GET\",route=\"manifest\"} 1"
                .to_owned(),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_moved_tag_is_seen_at_the_next_pull() {
    let hub = Hub::start().await;
    hub.tag("library/app:v1", r#"{"v":1}"#);
    let mirror = hub.mirror().await;
    assert_eq!(
        pull(mirror, &hub, "library/app", "v1").await.1,
        r#"{"v":1}"#
    );
    assert_eq!(
        pull(mirror, &hub, "library/app", "v1").await.1,
        r#"{"v":1}"#
    );
    assert_eq!(hub.gets(), 1);
    hub.tag("library/app:v1", r#"{"v":2}"#);
    assert_eq!(
        pull(mirror, &hub, "library/app", "v1").await.1,
        r#"{"v":2}"#
    );
    assert_eq!(hub.gets(), 2, "the changed digest was fetched");
    // By digest, from the cache: no upstream request at all.
    let digest = sha256(br#"{"v":2}"#);
    let bearer = token(mirror, "library/app", None).await;
    let (gets, heads) = (hub.gets(), hub.counts.manifest_heads.load(Ordering::SeqCst));
    let res = send(
        mirror,
        Method::GET,
        &format!("/v2/library/app/manifests/{digest}"),
        Some(&bearer),
    )
    .await;
    assert_eq!(res.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(body_bytes(res.into_body()).await.unwrap(), r#"{"v":2}"#);
    let res = send(
        mirror,
        Method::HEAD,
        &format!("/v2/library/app/manifests/{digest}"),
        Some(&bearer),
    )
    .await;
    assert_eq!(res.headers()["content-length"], "7");
    assert_eq!(hub.gets(), gets + 1, "the first digest request is a fetch");
    let res = send(
        mirror,
        Method::GET,
        &format!("/v2/library/app/manifests/{digest}"),
        Some(&bearer),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        (hub.gets(), hub.counts.manifest_heads.load(Ordering::SeqCst)),
        (gets + 1, heads),
        "then served from the cache"
    );
}

#[tokio::test]
async fn when_the_registry_answers_429_a_pulled_image_still_pulls() {
    let hub = Hub::start().await;
    hub.tag("library/app:v1", r#"{"v":1}"#);
    let mirror = hub.mirror().await;
    assert_eq!(
        pull(mirror, &hub, "library/app", "v1").await.0,
        StatusCode::OK
    );
    hub.failing.store(429, Ordering::SeqCst);
    // A fresh anonymous token; the manifest stale, the blob from the redirect cache.
    let (status, manifest) = pull(mirror, &hub, "library/app", "v1").await;
    assert_eq!((status, manifest.as_str()), (StatusCode::OK, r#"{"v":1}"#));
    metrics_with(
        mirror,
        &["registry_mirror_manifest_cache_total{event=\"stale\"} 1".to_owned()],
    )
    .await;
    // Never pulled before: the registry's 429 is the answer.
    hub.tag("library/other:v1", r#"{"v":1}"#);
    let bearer = token(mirror, "library/other", None).await;
    let res = send(
        mirror,
        Method::GET,
        "/v2/library/other/manifests/v1",
        Some(&bearer),
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_client_without_access_never_gets_anothers_cached_private_manifest() {
    let hub = Hub::start().await;
    let secret = r#"{"private":true}"#;
    hub.tag("private/app:v1", secret);
    let mirror = hub.mirror().await;
    let alice = token(mirror, "private/app", Some(ALICE)).await;
    let res = send(
        mirror,
        Method::GET,
        "/v2/private/app/manifests/v1",
        Some(&alice),
    )
    .await;
    assert_eq!(body_bytes(res.into_body()).await.unwrap(), secret);
    let digest = sha256(secret.as_bytes());
    let by_digest = format!("/v2/private/app/manifests/{digest}");
    let res = send(mirror, Method::GET, &by_digest, Some(&alice)).await;
    assert_eq!(body_bytes(res.into_body()).await.unwrap(), secret);
    // Anonymous, and with someone else's token: by tag and by digest, GET and HEAD.
    let anonymous = token(mirror, "private/app", None).await;
    for auth in [None, Some(anonymous.as_str()), Some("Bearer forged")] {
        for path in ["/v2/private/app/manifests/v1", by_digest.as_str()] {
            for method in [Method::GET, Method::HEAD] {
                let res = send(mirror, method.clone(), path, auth).await;
                assert_eq!(
                    res.status(),
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} {auth:?}"
                );
                let body = body_bytes(res.into_body()).await.unwrap();
                assert!(
                    !String::from_utf8_lossy(&body).contains("private"),
                    "{path}"
                );
            }
        }
    }
}

/// `n` GETs of `path` at once with `bearer`, each on its own task: their statuses.
fn concurrent_gets(
    mirror: SocketAddr,
    path: &str,
    bearer: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<StatusCode>> {
    (0..n)
        .map(|_| {
            let (path, bearer) = (path.to_owned(), bearer.to_owned());
            tokio::spawn(async move {
                send(mirror, Method::GET, &path, Some(&bearer))
                    .await
                    .status()
            })
        })
        .collect()
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch_and_survive_a_failing_first() {
    let hub = Hub::start().await;
    hub.tag("library/app:v1", r#"{"v":1}"#);
    let mirror = hub.mirror().await;
    let digest = sha256(br#"{"v":1}"#);
    let bearer = token(mirror, "library/app", None).await;
    let path = format!("/v2/library/app/manifests/{digest}");
    let all = concurrent_gets(mirror, &path, &bearer, 50);
    for one in all {
        assert_eq!(one.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        hub.gets(),
        1,
        "50 concurrent identical misses, one upstream GET"
    );

    // The first fetch of another fails; the others each get an answer (their own try).
    hub.tag("library/app:v2", r#"{"v":2}"#);
    hub.failing.store(503, Ordering::SeqCst);
    let path = "/v2/library/app/manifests/v2".to_owned();
    let all = concurrent_gets(mirror, &path, &bearer, 10);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    hub.failing.store(0, Ordering::SeqCst);
    let statuses: HashSet<u16> = futures_util::future::join_all(all)
        .await
        .into_iter()
        .map(|s| s.unwrap().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
}

/// Docker's own order: `HEAD` by tag, `GET` by digest. Pulled again, the `GET` is the
/// cache's.
#[tokio::test]
async fn dockers_order_spends_one_get() {
    let hub = Hub::start().await;
    hub.tag("library/app:v1", r#"{"v":1}"#);
    let mirror = hub.mirror().await;
    let digest = sha256(br#"{"v":1}"#);
    for accept in [
        "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.index.v1+json",
    ] {
        let bearer = token(mirror, "library/app", None).await;
        let res = send(mirror, Method::HEAD, "/v2/library/app/manifests/v1", Some(&bearer)).await;
        assert_eq!(res.headers()["docker-content-digest"], digest.as_str());
        // The same media types, in another order (Docker's come from a Go map).
        let req = Request::get(format!("http://{mirror}/v2/library/app/manifests/{digest}"))
            .header("accept", accept)
            .header("authorization", &bearer)
            .body(Empty::new())
            .unwrap();
        let res = bounded(http_client(&[]).request(req)).await.unwrap();
        assert_eq!(body_bytes(res.into_body()).await.unwrap(), r#"{"v":1}"#);
    }
    assert_eq!(
        hub.gets(),
        1,
        "one GET, whatever the order of the Accept values"
    );
}
