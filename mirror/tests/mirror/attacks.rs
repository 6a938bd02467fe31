//! The mirror attacked as an outsider would try it: a client, a storage host or a hostile
//! redirect target trying to get the mirror's credentials, another client's credentials,
//! or requests the mirror should never send. One test per attack; each failed on the
//! mirror before the defences it checks (see SECURITY.md, "The mirror's threat model").
//!
//! The parties are loopback servers: a docker_auth-style token service (anonymous requests
//! get a `Basic` challenge), a registry that wants its tokens, the real S3 store, a hostile
//! storage host, and a capture server standing for the attacker, which records whatever
//! reaches it.

use super::support::net::{self, http_client};
use super::support::registry::{blob_key, digest, MANIFEST};
use super::support::s3::{AuthRule, Store};
use super::support::{body_bytes, bounded};
use super::{json_error, start_mirror};
use base64::Engine;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const USER: &str = "mirror-account";
const PASSWORD: &str = "pa55-w0rd-of-the-mirror";
const ALICE: &str = "alice";
const ALICE_PASSWORD: &str = "alice-s3cret-pa55";

/// One request as a server received it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    target: String,
    auth: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn record(log: &Log, req: &Request<Incoming>) {
    log.lock().unwrap().push(Seen {
        method: req.method().clone(),
        target: req.uri().to_string(),
        auth: req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
    });
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// The attacker's server: records everything, and answers every request with a token.
async fn capture() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let addr = net::serve(move |req: Request<Incoming>| {
        record(&seen, &req);
        async move {
            Response::builder()
                .header("content-type", "application/json")
                .body(net::full(
                    r#"{"token":"from-the-attacker","expires_in":300}"#,
                ))
                .unwrap()
        }
    })
    .await;
    (addr, log)
}

/// A docker_auth-style token service: the mirror's account and Alice's get tokens (valid
/// for `expires_in` seconds, registered in `valid`), anything else a `Basic` challenge.
struct Tokens {
    addr: SocketAddr,
    log: Log,
    valid: Arc<Mutex<HashSet<String>>>,
}

async fn token_service(expires_in: u64) -> Tokens {
    let log: Log = Arc::default();
    let valid: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (seen, v) = (log.clone(), valid.clone());
    let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = net::serve(move |req: Request<Incoming>| {
        record(&seen, &req);
        let auth = req.headers().get("authorization").cloned();
        let known = [basic(USER, PASSWORD), basic(ALICE, ALICE_PASSWORD)];
        let res = if auth.is_some_and(|a| known.iter().any(|k| a == k.as_str())) {
            let n = issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let token = format!("tok-{n}");
            v.lock().unwrap().insert(token.clone());
            Response::builder()
                .header("content-type", "application/json")
                .body(net::full(format!(
                    r#"{{"token":"{token}","expires_in":{expires_in}}}"#
                )))
        } else {
            Response::builder()
                .status(401)
                .header("www-authenticate", "Basic realm=\"auth\"")
                .body(net::empty())
        };
        async move { res.unwrap() }
    })
    .await;
    Tokens { addr, log, valid }
}

/// A registry that wants a token from `valid`; without one, a `Bearer` challenge naming
/// `realm` and asking for `actions` on the repository. Blobs redirect to `storage(digest)`,
/// manifests answer [`MANIFEST`]. Over TLS when `tls` (its certificate is returned).
struct Registry {
    addr: SocketAddr,
    log: Log,
    cert: Option<rustls::pki_types::CertificateDer<'static>>,
}

async fn registry<L>(
    realm: String,
    actions: &'static str,
    valid: Arc<Mutex<HashSet<String>>>,
    tls: bool,
    storage: L,
) -> Registry
where
    L: Fn(&str) -> String + Send + Sync + 'static,
{
    let log: Log = Arc::default();
    let seen = log.clone();
    let handler = move |req: Request<Incoming>| {
        record(&seen, &req);
        let token = req
            .headers()
            .get("authorization")
            .and_then(|a| a.to_str().ok()?.strip_prefix("Bearer ").map(str::to_owned));
        let authorized = token.is_some_and(|t| valid.lock().unwrap().contains(&t));
        let path = req.uri().path().to_owned();
        let res = if !authorized {
            let name = path
                .trim_start_matches("/v2/")
                .split(['/'])
                .take_while(|s| !["blobs", "manifests"].contains(s))
                .collect::<Vec<_>>()
                .join("/");
            let scope = if name.is_empty() {
                String::new()
            } else {
                format!(",scope=\"repository:{name}:{actions}\"")
            };
            Response::builder()
                .status(401)
                .header(
                    "www-authenticate",
                    format!("Bearer realm=\"{realm}\",service=\"registry.test\"{scope}"),
                )
                .body(net::empty())
        } else if let Some((_, d)) = path.rsplit_once("/blobs/") {
            Response::builder()
                .status(307)
                .header("location", storage(d))
                .body(net::empty())
        } else if path.contains("/manifests/") {
            Response::builder()
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(net::full(MANIFEST))
        } else {
            Response::builder().body(net::full("{}"))
        };
        async move { res.unwrap() }
    };
    let (addr, cert) = if tls {
        let (addr, cert) = net::serve_tls(handler).await;
        (addr, Some(cert))
    } else {
        (net::serve(handler).await, None)
    };
    Registry { addr, log, cert }
}

/// Storage that answers everything with a `401` whose challenge names `realm`.
async fn storage_challenging(realm: String) -> SocketAddr {
    net::serve(move |_req: Request<Incoming>| {
        let realm = realm.clone();
        async move {
            Response::builder()
                .status(401)
                .header(
                    "www-authenticate",
                    format!("Bearer realm=\"{realm}\",service=\"steal\""),
                )
                .body(net::full("<Error>AccessDenied</Error>"))
                .unwrap()
        }
    })
    .await
}

/// Storage that answers `body` with `status` to anything.
async fn storage_serving_with(body: &'static str, status: u16) -> SocketAddr {
    net::serve(move |_req: Request<Incoming>| async move {
        Response::builder()
            .status(status)
            .body(net::full(body))
            .unwrap()
    })
    .await
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn request(
    mirror: SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> Response<hyper::body::Incoming> {
    let mut req = Request::get(format!("http://{mirror}{path}"));
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    bounded(http_client(&[]).request(req.body(Empty::new()).unwrap()))
        .await
        .unwrap()
}

/// The usual scene: a token service issuing tokens for `expires_in` seconds, the real S3
/// store holding `blob`, a registry behind the token service (its challenges asking for
/// `actions`) redirecting blobs to URLs pre-signed for ten minutes, and the mirror with
/// `flags` in front. Returns the token service, the mirror and the blob's digest.
struct Scene {
    tokens: Tokens,
    mirror: SocketAddr,
    digest: String,
}

async fn scene(expires_in: u64, actions: &'static str, blob: &[u8], flags: &[&str]) -> Scene {
    let tokens = token_service(expires_in).await;
    let store = Arc::new(Store::start(AuthRule::S3).await);
    let digest = store.put_blob(blob);
    let s = store.clone();
    let registry = registry(
        format!("http://{}/token", tokens.addr),
        actions,
        tokens.valid.clone(),
        false,
        move |d| s.presign(&Method::GET, &blob_key(d)),
    )
    .await;
    let mut all = args(&[
        "--upstream",
        &format!("docker.io=http://{}", registry.addr),
        "--storage-host",
        &store.addr.to_string(),
    ]);
    all.extend(args(flags));
    let mirror = start_mirror(&all).await;
    Scene {
        tokens,
        mirror,
        digest,
    }
}

/// Attack 1: an anonymous client asks the mirror's `/token/` for a push token; the mirror
/// must not answer the token service's challenge with its own account. And when the
/// registry's own challenge asks for push, the mirror still asks for pull only.
#[tokio::test]
async fn a_client_cannot_mint_tokens_with_the_mirrors_account() {
    let flags = ["--upstream-user", USER, "--upstream-password", PASSWORD];
    let Scene {
        tokens,
        mirror,
        digest: d,
        ..
    } = scene(300, "pull,push", b"a private layer", &flags).await;

    let res = request(
        mirror,
        "/token/docker.io?service=registry.test&scope=repository:private/app:push,pull",
        None,
    )
    .await;
    let status = res.status();
    let body = String::from_utf8(body_bytes(res.into_body()).await.unwrap().to_vec()).unwrap();
    assert_ne!(status, StatusCode::OK, "{body}");
    assert!(
        !body.contains("tok-"),
        "a token minted for a client: {body}"
    );
    assert!(
        tokens.log.lock().unwrap().is_empty(),
        "the token service was asked for the client: {:?}",
        tokens.log.lock().unwrap()
    );

    // A pull the mirror logs in for: pull scope only, whatever the challenge asked.
    let res = request(mirror, &format!("/v2/private/app/blobs/{d}"), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(digest(&body_bytes(res.into_body()).await.unwrap()), d);
    let asked = tokens.log.lock().unwrap().clone();
    assert!(!asked.is_empty());
    for seen in &asked {
        assert_eq!(seen.method, Method::GET);
        assert!(
            !seen.target.contains("push"),
            "the mirror asked for push: {}",
            seen.target
        );
    }
    assert!(asked
        .iter()
        .any(|s| s.target.contains("scope=repository%3Aprivate%2Fapp%3Apull")));
}

/// Attack 2, with the mirror's own login: storage answers `401` with a challenge naming
/// the attacker's realm; the mirror must not log in there.
#[tokio::test]
async fn storage_cannot_collect_the_mirrors_password() {
    let (attacker, stolen) = capture().await;
    let tokens = token_service(300).await;
    let evil = storage_challenging(format!("http://{attacker}/steal")).await;
    let registry = registry(
        format!("http://{}/token", tokens.addr),
        "pull",
        tokens.valid.clone(),
        false,
        move |_| format!("http://{evil}/blob?X-Amz-Signature=ab12"),
    )
    .await;
    let mirror = start_mirror(&args(&[
        "--upstream",
        &format!("docker.io=http://{}", registry.addr),
        "--storage-host",
        &evil.to_string(),
        "--upstream-user",
        USER,
        "--upstream-password",
        PASSWORD,
    ]))
    .await;
    let res = request(
        mirror,
        &format!("/v2/library/app/blobs/{}", digest(b"x")),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "storage's answer");
    assert!(
        res.headers().get("www-authenticate").is_none(),
        "storage's challenge reached the client: {:?}",
        res.headers()
    );
    assert!(
        stolen.lock().unwrap().is_empty(),
        "sent to the attacker: {:?}",
        stolen.lock().unwrap()
    );
}

/// Attack 2, pass-through: storage's challenge must not become the client's, nor replace
/// the realm the mirror remembered, so the next client's login goes to the registry's token
/// service and nowhere else.
#[tokio::test]
async fn storage_cannot_redirect_the_next_clients_login() {
    let (attacker, stolen) = capture().await;
    let tokens = token_service(300).await;
    let evil = storage_challenging(format!("http://{attacker}/steal")).await;
    let registry = registry(
        format!("http://{}/token", tokens.addr),
        "pull",
        tokens.valid.clone(),
        false,
        move |_| format!("http://{evil}/blob?X-Amz-Signature=ab12"),
    )
    .await;
    let mirror = start_mirror(&args(&[
        "--upstream",
        &format!("docker.io=http://{}", registry.addr),
        "--storage-host",
        &evil.to_string(),
    ]))
    .await;
    let alice = basic(ALICE, ALICE_PASSWORD);
    // As docker does: the API check, a login at the realm it was given, the pull.
    let res = request(mirror, "/v2/", None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let token_path = "/token/docker.io?service=registry.test&scope=repository:library/app:pull";
    let res = request(mirror, token_path, Some(&alice)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let token: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await.unwrap()).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let res = request(
        mirror,
        &format!("/v2/library/app/blobs/{}", digest(b"x")),
        Some(&bearer),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "storage's answer");
    assert!(
        res.headers().get("www-authenticate").is_none(),
        "storage's challenge reached the client: {:?}",
        res.headers()
    );
    // The next login.
    let res = request(mirror, token_path, Some(&alice)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        stolen.lock().unwrap().is_empty(),
        "sent to the attacker: {:?}",
        stolen.lock().unwrap()
    );
    assert_eq!(
        tokens.log.lock().unwrap().len(),
        2,
        "both logins reached the registry's service"
    );
}

/// Attack 3: paths outside the distribution grammar, which a normalising front or upstream
/// would turn into other APIs, are refused, and never reach the upstream.
#[tokio::test]
async fn paths_outside_the_distribution_grammar_are_never_forwarded() {
    let tokens = token_service(300).await;
    let registry = registry(
        format!("http://{}/token", tokens.addr),
        "pull",
        tokens.valid.clone(),
        false,
        |_| "http://127.0.0.1:9/never".to_owned(),
    )
    .await;
    let mirror = start_mirror(&args(&[
        "--upstream",
        &format!("docker.io=http://{}", registry.addr),
        "--upstream-user",
        USER,
        "--upstream-password",
        PASSWORD,
    ]))
    .await;
    let hex = "ab".repeat(32);
    for (path, code) in [
        ("/v2/a/b/blobs/../../../_catalog", "NAME_INVALID"),
        ("/v2/a/b/blobs/%2e%2e/%2e%2e/x", "NAME_INVALID"),
        ("/v2/a/b/manifests/../../../../v1/x", "NAME_INVALID"),
        ("/v2/a/b/blobs/sha256:abc/extra", "NOT_FOUND"),
        ("/v2/a/b/blobs/sha256:abc", "DIGEST_INVALID"),
        ("/v2/a/b/blobs/latest", "DIGEST_INVALID"),
        ("/v2/a/./b/manifests/latest", "NAME_INVALID"),
        ("/v2/a/%2e%2e/manifests/latest", "NAME_INVALID"),
        ("/v2/A/b/manifests/latest", "NAME_INVALID"),
        ("/v2/a//b/manifests/latest", "NAME_INVALID"),
        ("/v2/a/b/manifests/-bad", "NOT_FOUND"),
        ("/v2/a/b/manifests/la%74est", "NOT_FOUND"),
        ("/v2/_catalog", "NOT_FOUND"),
        ("/v2/a/b/tags/other", "NOT_FOUND"),
        ("/v2/a/b/referrers/latest", "DIGEST_INVALID"),
        ("/v2/a/b/blobs/uploads/", "NOT_FOUND"),
    ] {
        let res = request(mirror, path, None).await;
        let (status, got) = json_error(res).await;
        assert!(status.is_client_error(), "{path}: {status}");
        assert_eq!(got, code, "{path}");
    }
    // Two Authorization headers: which would the upstream read? Refused.
    let req = Request::get(format!("http://{mirror}/v2/a/b/manifests/latest"))
        .header("authorization", "Bearer anonymous-token")
        .header("authorization", "Basic cHJpdmF0ZTpjcmVk")
        .body(Empty::new())
        .unwrap();
    let res = bounded(http_client(&[]).request(req)).await.unwrap();
    assert_eq!(
        json_error(res).await,
        (StatusCode::BAD_REQUEST, "UNSUPPORTED".to_owned())
    );
    // Parameters the endpoint does not define never go upstream.
    request(mirror, "/v2/a/b/manifests/querytest?x=1&ns=docker.io", None).await;
    // What is in the grammar still goes through.
    for path in [
        format!("/v2/a/b/blobs/sha256:{hex}"),
        "/v2/a/b/manifests/v1.2_rc-3".to_owned(),
        format!("/v2/a/b/manifests/sha256:{hex}"),
        "/v2/a/b/tags/list?n=10".to_owned(),
        format!("/v2/a/b/referrers/sha256:{hex}"),
        "/v2/a.b/c__d/e-f/manifests/latest".to_owned(),
    ] {
        request(mirror, &path, None).await;
    }
    let upstream: Vec<String> = registry
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert!(
        upstream.iter().all(|t| !t.contains("..")
            && !t.contains("%2e")
            && !t.contains("_catalog")
            && !t.contains("extra")),
        "{upstream:?}"
    );
    assert!(upstream
        .iter()
        .any(|t| t.contains("/v2/a.b/c__d/e-f/manifests/latest")));
    assert!(upstream.iter().any(|t| t.ends_with("/tags/list?n=10")));
}

/// Attack 4: with `--verify-digests`, a `sha512:` blob that does not match is not served
/// as complete, and a digest of an algorithm the mirror cannot check is refused.
#[tokio::test]
async fn verify_digests_checks_sha512_and_refuses_what_it_cannot_check() {
    use sha2::Digest;
    let good = "the layer";
    let sha512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(good)));
    for (served, status, clean) in [
        ("an error page", 200, false),
        ("the la", 206, false),
        (good, 200, true),
    ] {
        let storage = storage_serving_with(served, status).await;
        let valid: Arc<Mutex<HashSet<String>>> = Arc::default();
        valid.lock().unwrap().insert("t".into());
        let registry = registry(
            "http://unused.invalid/".into(),
            "pull",
            valid,
            false,
            move |_| format!("http://{storage}/blob?X-Amz-Signature=ab12"),
        )
        .await;
        let mirror = start_mirror(&args(&[
            "--upstream",
            &format!("docker.io=http://{}", registry.addr),
            "--storage-host",
            &storage.to_string(),
            "--verify-digests",
        ]))
        .await;
        // A small body's mismatch is known before the head is sent: the response breaks
        // there; either way, never a clean end.
        let req = Request::get(format!("http://{mirror}/v2/library/x/blobs/{sha512}"))
            .header("authorization", "Bearer t")
            .body(Empty::new())
            .unwrap();
        let pulled = bounded(async {
            let res = http_client(&[]).request(req).await?;
            assert!(res.status().is_success());
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(body_bytes(res.into_body()).await?)
        })
        .await;
        assert_eq!(pulled.is_ok(), clean, "served {served:?} with {status}");

        let other = format!("/v2/library/x/blobs/blake3:{}", "ab".repeat(32));
        let (status, code) = json_error(request(mirror, &other, Some("Bearer t")).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
        );
        assert!(registry
            .log
            .lock()
            .unwrap()
            .iter()
            .all(|s| !s.target.contains("blake3")));
    }
}

/// Attack 5: guessing users and flooding logins. An unknown user costs a bcrypt like a
/// known one; bcrypt runs are bounded; an address that keeps failing is slowed down without
/// costing more bcrypt; and the remembered logins survive a flood of accepted ones.
#[tokio::test]
async fn htpasswd_logins_do_not_tell_users_apart_and_survive_floods() {
    use registry_mirror::auth::htpasswd::{Check, Users};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    let entries = [("alice", "alice-pw"), ("mallory", "mallory-pw")]
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .concat();
    std::fs::write(&path, entries).unwrap();
    let users = Arc::new(Users::load(&path).unwrap());
    let header = |value: &str| {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", value.parse().unwrap());
        h
    };
    let ip = |n: u8| std::net::IpAddr::from([127, 0, 0, n]);

    // Unknown and known users both cost one bcrypt.
    let runs = users.bcrypt_runs();
    assert_eq!(
        users.check(&header(&basic("nobody", "x")), ip(1)).await,
        Check::Refused
    );
    assert_eq!(
        users.bcrypt_runs(),
        runs + 1,
        "an unknown user ran no bcrypt"
    );
    assert_eq!(
        users.check(&header(&basic("alice", "x")), ip(2)).await,
        Check::Refused
    );
    assert_eq!(users.bcrypt_runs(), runs + 2);

    // Many failing at once: bcrypt runs at most `permits` at a time.
    let flood: Vec<_> = (0..40u8)
        .map(|n| {
            let users = users.clone();
            let h = header(&basic("alice", &format!("guess-{n}")));
            tokio::spawn(async move { users.check(&h, ip(100 + n)).await })
        })
        .collect();
    for f in flood {
        assert_eq!(f.await.unwrap(), Check::Refused);
    }
    assert!(
        users.peak_concurrent_bcrypt() <= users.bcrypt_permits(),
        "{} at once with {} permits",
        users.peak_concurrent_bcrypt(),
        users.bcrypt_permits()
    );

    // A burst from one address gets no more bcrypt checks than a sequence would.
    let runs = users.bcrypt_runs();
    let burst: Vec<_> = (0..40u8)
        .map(|n| {
            let users = users.clone();
            let h = header(&basic("alice", &format!("burst-{n}")));
            tokio::spawn(async move { users.check(&h, ip(7)).await })
        })
        .collect();
    for b in burst {
        assert_ne!(b.await.unwrap(), Check::Accepted);
    }
    assert!(
        users.bcrypt_runs() <= runs + u64::from(common_free_failures()),
        "a burst from one address ran {} bcrypt checks",
        users.bcrypt_runs() - runs
    );

    // One address that keeps failing is throttled, at no bcrypt cost; others are not.
    let mut throttled = None;
    for n in 0..20 {
        match users
            .check(&header(&basic("alice", &format!("g{n}"))), ip(3))
            .await
        {
            Check::Refused => {}
            Check::Throttled(wait) => {
                throttled = Some((n, wait));
                break;
            }
            Check::Accepted => panic!("a wrong password was accepted"),
        }
    }
    let (after, wait) = throttled.expect("20 failures from one address were never throttled");
    assert!(after <= 10 && wait > Duration::ZERO, "{after} {wait:?}");
    let runs = users.bcrypt_runs();
    assert!(matches!(
        users
            .check(&header(&basic("alice", "alice-pw")), ip(3))
            .await,
        Check::Throttled(_)
    ));
    assert_eq!(users.bcrypt_runs(), runs, "a throttled attempt ran bcrypt");
    assert_eq!(
        users
            .check(&header(&basic("alice", "alice-pw")), ip(4))
            .await,
        Check::Accepted
    );

    // Remembered: accepted again with no bcrypt, even after a flood of accepted spellings
    // of another user's login (every spelling of one login is one memo entry).
    let runs = users.bcrypt_runs();
    assert_eq!(
        users
            .check(&header(&basic("alice", "alice-pw")), ip(4))
            .await,
        Check::Accepted
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode("mallory:mallory-pw");
    for n in 0..1100 {
        let scheme: String = "basic"
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if n >> i & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        let spaces = " ".repeat(1 + n / 32);
        let value = format!("{scheme}{spaces}{b64}");
        assert_eq!(
            users.check(&header(&value), ip(5)).await,
            Check::Accepted,
            "{value}"
        );
    }
    assert!(
        users.bcrypt_runs() <= runs + 1,
        "mallory's spellings each ran bcrypt"
    );
    let runs = users.bcrypt_runs();
    assert_eq!(
        users
            .check(&header(&basic("alice", "alice-pw")), ip(4))
            .await,
        Check::Accepted
    );
    assert_eq!(
        users.bcrypt_runs(),
        runs,
        "alice's login was forgotten in the flood"
    );
}

fn common_free_failures() -> u32 {
    registry_mirror::auth::htpasswd::FREE_FAILURES
}

/// Attack 5 over HTTP: a throttled address is told to wait, with `Retry-After`.
#[tokio::test]
async fn a_login_flood_from_one_address_is_told_to_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(
        &path,
        format!("alice:{}\n", bcrypt::hash("alice-pw", 4).unwrap()),
    )
    .unwrap();
    let mirror = start_mirror(&args(&[
        "--upstream",
        "docker.io=http://127.0.0.1:9",
        "--htpasswd",
        path.to_str().unwrap(),
    ]))
    .await;
    let mut statuses = Vec::new();
    for n in 0..12 {
        let res = request(mirror, "/v2/", Some(&basic("alice", &format!("guess-{n}")))).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().contains_key("retry-after"));
        }
        statuses.push(res.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
}

/// Attack 6: a client's token is revoked; the redirect cache stops serving what it fetched
/// once the token's lifetime (`expires_in`) has passed, long before the storage URL expires.
#[tokio::test]
async fn a_revoked_login_loses_cached_blobs_after_its_token_lifetime() {
    // Tokens live 2 s; storage URLs ten minutes.
    let Scene {
        tokens,
        mirror,
        digest: d,
        ..
    } = scene(2, "pull", b"alice's private layer", &[]).await;
    let res = request(
        mirror,
        "/token/docker.io?service=registry.test&scope=repository:alice/app:pull",
        Some(&basic(ALICE, ALICE_PASSWORD)),
    )
    .await;
    let token: serde_json::Value =
        serde_json::from_slice(&body_bytes(res.into_body()).await.unwrap()).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let path = format!("/v2/alice/app/blobs/{d}");
    let res = request(mirror, &path, Some(&bearer)).await;
    assert_eq!(res.status(), StatusCode::OK);
    body_bytes(res.into_body()).await.unwrap();

    // The registry revokes Alice's token. Past the token's lifetime, the cached URL is no
    // longer hers: the registry is asked, and refuses.
    tokens.valid.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let res = request(mirror, &path, Some(&bearer)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

/// The same, from the other side: a token of Alice's that has expired, or that was issued
/// for another repository, unlocks nothing she cached.
#[tokio::test]
async fn an_old_or_narrow_token_unlocks_nothing_cached() {
    let Scene {
        tokens,
        mirror,
        digest: d,
        ..
    } = scene(2, "pull", b"alice's private layer", &[]).await;
    let alice = basic(ALICE, ALICE_PASSWORD);
    let token_for = |repo: &'static str| {
        let alice = alice.clone();
        async move {
            let path =
                format!("/token/docker.io?service=registry.test&scope=repository:{repo}:pull");
            let res = request(mirror, &path, Some(&alice)).await;
            let json: serde_json::Value =
                serde_json::from_slice(&body_bytes(res.into_body()).await.unwrap()).unwrap();
            format!("Bearer {}", json["token"].as_str().unwrap())
        }
    };
    let private = format!("/v2/alice/private/blobs/{d}");
    let old = token_for("alice/private").await;
    let other_repo = token_for("alice/public").await;
    // The registry stops accepting the token for the other repository; Alice's first
    // token fetches the blob, and its URL is cached for her login and that scope.
    tokens
        .valid
        .lock()
        .unwrap()
        .remove(other_repo.trim_start_matches("Bearer "));
    let res = request(mirror, &private, Some(&old)).await;
    assert_eq!(res.status(), StatusCode::OK);
    body_bytes(res.into_body()).await.unwrap();
    // A token for another repository: its own identity, so the registry is asked (and
    // refuses), even while the cached URL is valid.
    let res = request(mirror, &private, Some(&other_repo)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Alice keeps pulling with fresh tokens for the private repository; her old token
    // expires and the registry forgets it. It is served nothing.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let fresh = token_for("alice/private").await;
    let res = request(mirror, &private, Some(&fresh)).await;
    assert_eq!(res.status(), StatusCode::OK);
    body_bytes(res.into_body()).await.unwrap();
    tokens
        .valid
        .lock()
        .unwrap()
        .remove(old.trim_start_matches("Bearer "));
    let res = request(mirror, &private, Some(&old)).await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "an expired token was served"
    );
}

/// A client that asks again and again for what the mirror's account cannot read does not
/// make the mirror log in each time.
#[tokio::test]
async fn refused_logins_are_not_repeated_for_every_client_request() {
    let tokens = token_service(300).await;
    let registry = registry(
        format!("http://{}/token", tokens.addr),
        "pull",
        // Tokens are issued, but the registry accepts none: the account cannot read this.
        Arc::default(),
        false,
        |_| "http://127.0.0.1:9/never".to_owned(),
    )
    .await;
    let mirror = start_mirror(&args(&[
        "--upstream",
        &format!("docker.io=http://{}", registry.addr),
        "--upstream-user",
        USER,
        "--upstream-password",
        PASSWORD,
    ]))
    .await;
    for _ in 0..10 {
        let res = request(mirror, "/v2/someone/private/manifests/latest", None).await;
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    }
    assert_eq!(
        tokens.log.lock().unwrap().len(),
        1,
        "one login, then 30 s of rest"
    );
}

/// Attack 7: the guard on storage hops refuses every special-purpose range that is not
/// globally reachable, whatever the spelling. (A pure function: no packet is sent.)
#[test]
fn the_ssrf_guard_refuses_every_non_global_range() {
    use registry_mirror::upstream::guard::is_public;
    for ip in [
        "198.18.0.1",
        "198.19.255.254",
        "192.0.0.8",
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.9",
        "192.88.99.1",
        "::7f00:1",
        "::a00:1",
        "::c0a8:101",
        "64:ff9b:1::a00:1",
        "64:ff9b:1::808:808",
        "2002:7f00:1::",
        "2002:a00:1::1",
        "2002:c0a8:101::1",
        "2001:db8::1",
        "2001::1",
        "2001:2::1",
        "2001:10::1",
        "100::1",
        "3fff::1",
        "5f00::1",
        "fec0::1",
        "::ffff:0:a00:1",
        "100:0:0:1::1",
        "1000::1",
        "4000::1",
    ] {
        assert!(
            !is_public(ip.parse().unwrap()),
            "{ip} is not globally reachable"
        );
    }
    for ip in [
        "8.8.8.8",
        "2002:808:808::1",
        "64:ff9b::808:808",
        "2606:4700::1111",
        "198.20.0.1",
    ] {
        assert!(is_public(ip.parse().unwrap()), "{ip} is public");
    }
}

/// Attack 8: an https upstream names a plain-http realm; the mirror's password must not go
/// there. An https realm still works.
#[tokio::test]
async fn the_mirrors_password_never_goes_to_a_plain_http_realm_of_an_https_upstream() {
    let (attacker, stolen) = capture().await;
    let valid: Arc<Mutex<HashSet<String>>> = Arc::default();
    let registry = registry(
        format!("http://{attacker}/token"),
        "pull",
        valid.clone(),
        true,
        |_| "http://127.0.0.1:9/never".to_owned(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, super::production::pem(registry.cert.as_ref().unwrap())).unwrap();
    let mirror = start_mirror(&args(&[
        "--upstream",
        &format!("docker.io=https://{}", registry.addr),
        "--upstream-ca",
        ca.to_str().unwrap(),
        "--upstream-user",
        USER,
        "--upstream-password",
        PASSWORD,
    ]))
    .await;
    let res = request(mirror, "/v2/library/app/manifests/latest", None).await;
    let (status, _) = json_error(res).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        stolen.lock().unwrap().is_empty(),
        "sent to a plain-http realm: {:?}",
        stolen.lock().unwrap()
    );
    assert!(registry
        .log
        .lock()
        .unwrap()
        .iter()
        .all(|s| s.auth.is_none()));
}

/// The `naive` control replays requests, credentials included, wherever a redirect points:
/// the mirror refuses to start it with a login of its own.
#[test]
fn the_naive_control_never_carries_the_mirrors_login() {
    use clap::Parser;
    use registry_mirror::options::Options;
    let options = Options::parse_from([
        "registry-mirror",
        "--redirects",
        "naive",
        "--upstream-user",
        USER,
        "--upstream-password",
        PASSWORD,
        "--blob-store",
        "none",
    ]);
    let shared = registry_mirror::Shared::new(&options).unwrap();
    match registry_mirror::Mirror::new(&options, shared) {
        Ok(_) => panic!("the naive control started with the mirror's login"),
        Err(e) => assert!(e.contains("--redirects naive"), "{e}"),
    }
}
