//! The blob store's shared identities (the mirror's own login, clients without one) as an
//! attacker would try them: a store kept across restarts and replicas serves what one
//! account fetched to no other account; what the registry stops serving (a repository gone
//! private) stops being served once `--blob-store-recheck` passes; and a request cannot
//! be one identity to the store and another to the registry.

use crate::harness::start_mirror;
use crate::harness::store_hub::StoreHub;
use crate::support::net::http_client;
use crate::support::setup::test_blob;
use crate::support::{body_bytes, bounded};
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// `GET` of `path` with these `Authorization` values (each its own header line): the
/// status, and the body if it ended cleanly.
async fn get(mirror: SocketAddr, path: &str, auths: &[&str]) -> (StatusCode, Option<Bytes>) {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{mirror}{path}"));
    for auth in auths {
        req = req.header("authorization", *auth);
    }
    let res = bounded(http_client(&[]).request(req.body(Empty::<Bytes>::new()).unwrap()))
        .await
        .unwrap();
    let status = res.status();
    (status, body_bytes(res.into_body()).await.ok())
}

async fn until_stored(dir: &Path) {
    bounded(async {
        while super::store::count_stored(dir) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Its access recorded too (written just after the blob).
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A hub whose registry hands out tokens itself (a login's password is its token), with
/// alice's private layer, bob's, and a public one.
fn accounts_hub(hub: &StoreHub) -> (Vec<u8>, String) {
    hub.state.token_service.store(true, Ordering::SeqCst);
    hub.repo("alice/private", false, &["alice-pw"]);
    hub.repo("bob/private", false, &["bob-pw"]);
    hub.repo("library/public", true, &[]);
    hub.blob("bob/private", b"bob's layer");
    hub.blob("library/public", b"a public layer");
    let layer = test_blob(100_000);
    let digest = hub.blob("alice/private", &layer);
    (layer, digest)
}

/// A mirror that logged in as alice stored her private layer. The same store, opened by a
/// mirror that logs in as bob (an account rotated to, or another replica on the bucket), or
/// anonymously (`--htpasswd` alone), serves it from no repository: each asks the registry,
/// which refuses.
#[tokio::test]
async fn a_store_serves_what_one_account_fetched_to_no_other_account() {
    let hub = StoreHub::start().await;
    let (layer, digest) = accounts_hub(&hub);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    let login = |user: &str, password: &str| {
        let flags = [
            "--blob-store",
            store,
            "--upstream-user",
            user,
            "--upstream-password",
            password,
        ];
        hub.flags(&flags)
    };
    let as_alice = start_mirror(&login("alice", "alice-pw")).await;
    let path = format!("/v2/alice/private/blobs/{digest}");
    let (status, body) = get(as_alice, &path, &[]).await;
    assert!(
        status == StatusCode::OK && body.as_deref() == Some(&layer[..]),
        "{status}"
    );
    until_stored(dir.path()).await;
    // Alice's mirror, restarted on its store, serves it without the registry's blob GET.
    let gets = hub.count(&hub.state.blob_gets);
    let again = start_mirror(&login("alice", "alice-pw")).await;
    assert_eq!(get(again, &path, &[]).await.1.as_deref(), Some(&layer[..]));
    assert_eq!(hub.count(&hub.state.blob_gets), gets, "a store hit");

    let as_bob = start_mirror(&login("bob", "bob-pw")).await;
    // Alice's account with a token the registry refuses (a read-only one, say).
    let as_alice_otherwise = start_mirror(&login("alice", "another-token")).await;
    let htpasswd = dir.path().join("htpasswd");
    let carol = bcrypt::hash("carol-pw", 4).unwrap();
    std::fs::write(&htpasswd, format!("carol:{carol}\n")).unwrap();
    let flags = [
        "--blob-store",
        store,
        "--htpasswd",
        htpasswd.to_str().unwrap(),
    ];
    let as_anonymous = start_mirror(&hub.flags(&flags)).await;
    let carol = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("carol:carol-pw")
    );
    let mut served = Vec::new();
    for (who, mirror, auth) in [
        ("bob", as_bob, None),
        ("alice, another token", as_alice_otherwise, None),
        ("anonymous", as_anonymous, Some(carol.as_str())),
    ] {
        for repo in [
            "alice/private",
            "bob/private",
            "library/public",
            "no/such-repo",
        ] {
            let path = format!("/v2/{repo}/blobs/{digest}");
            let (status, body) = get(mirror, &path, auth.as_slice()).await;
            if body.as_deref() == Some(&layer[..]) {
                served.push(format!("{who} from {repo} ({status})"));
            }
        }
    }
    assert!(
        served.is_empty(),
        "alice's private layer served to {served:?}"
    );
}

/// A layer anonymous fetched while its repository was public is served from the store,
/// without asking the registry, for `--blob-store-recheck`; then the registry is asked
/// again: once the repository went private, nobody without a login gets the layer, from
/// any repository name. While the registry fails, what it served is still served.
#[tokio::test]
async fn a_repository_gone_private_is_not_served_past_the_recheck() {
    let hub = StoreHub::start().await;
    hub.repo("acme/app", true, &[]);
    let layer = test_blob(50_000);
    let digest = hub.blob("acme/app", &layer);
    let dir = tempfile::tempdir().unwrap();
    // Without the redirect cache, whose storage URLs have their own bound
    // (`--redirect-cache-max-age`).
    let flags = [
        "--blob-store",
        dir.path().to_str().unwrap(),
        "--blob-store-recheck",
        "1s",
        "--redirect-cache",
        "0",
    ];
    let mirror = start_mirror(&hub.flags(&flags)).await;
    let path = format!("/v2/acme/app/blobs/{digest}");
    assert_eq!(get(mirror, &path, &[]).await.0, StatusCode::OK);
    until_stored(dir.path()).await;
    let heads = hub.count(&hub.state.blob_heads);
    assert_eq!(get(mirror, &path, &[]).await.1.as_deref(), Some(&layer[..]));
    assert_eq!(
        hub.count(&hub.state.blob_heads),
        heads,
        "within the recheck: no HEAD"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Past it, the registry says whether it still serves the layer: it does.
    assert_eq!(get(mirror, &path, &[]).await.1.as_deref(), Some(&layer[..]));
    assert_eq!(hub.count(&hub.state.blob_heads), heads + 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The registry fails: what it served anonymous is served (`--serve-stale`).
    hub.state.registry_down.store(true, Ordering::SeqCst);
    assert_eq!(get(mirror, &path, &[]).await.1.as_deref(), Some(&layer[..]));
    hub.state.registry_down.store(false, Ordering::SeqCst);

    hub.repo("acme/app", false, &["owner"]);
    let mut served = Vec::new();
    for path in [path.clone(), format!("/v2/nobody/nothing/blobs/{digest}")] {
        let (status, body) = get(mirror, &path, &[]).await;
        if body.as_deref() == Some(&layer[..]) {
            served.push(format!("{path} ({status})"));
        }
    }
    assert!(
        served.is_empty(),
        "served after it went private: {served:?}"
    );
    let gets = hub.count(&hub.state.storage_gets);
    assert_eq!(
        get(mirror, &path, &["Bearer owner"]).await.1.as_deref(),
        Some(&layer[..])
    );
    assert_eq!(
        hub.count(&hub.state.storage_gets),
        gets,
        "the owner's read is a store hit"
    );
}

/// Two `Authorization` headers: the store would key the request by one (an anonymous
/// token the mirror's `/token/` handed out) while a registry that reads the last serves
/// alice's private layer. The mirror refuses the request: nothing is fetched, nothing is
/// stored as anonymous's.
#[tokio::test]
async fn two_authorization_headers_are_refused_and_store_nothing() {
    let hub = StoreHub::start().await;
    hub.state.token_service.store(true, Ordering::SeqCst);
    hub.state.auth_last.store(true, Ordering::SeqCst);
    hub.repo("alice/private", false, &["alice-pw"]);
    hub.repo("library/public", true, &[]);
    let layer = test_blob(100_000);
    let digest = hub.blob("alice/private", &layer);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = format!("/v2/alice/private/blobs/{digest}");
    // The mirror learns the token service from the registry's challenge.
    assert_eq!(get(mirror, &path, &[]).await.0, StatusCode::UNAUTHORIZED);
    let token_path = "/token/docker.io?service=hub&scope=repository:alice/private:pull";
    let (status, body) = get(mirror, token_path, &[]).await;
    let body = String::from_utf8(body.unwrap().to_vec()).unwrap();
    assert!(
        status == StatusCode::OK && body.contains("anonymous-token"),
        "{status} {body}"
    );
    let both = ["Bearer anonymous-token", "Bearer alice-pw"];
    assert_eq!(get(mirror, &path, &both).await.0, StatusCode::BAD_REQUEST);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(super::store::count_stored(dir.path()), 0);
    assert_eq!(
        hub.count(&hub.state.blob_gets),
        0,
        "nothing the registry served"
    );
    for repo in ["alice/private", "library/public"] {
        let path = format!("/v2/{repo}/blobs/{digest}");
        assert_ne!(get(mirror, &path, &[]).await.1.as_deref(), Some(&layer[..]));
    }
}
