//! The blob store as an attacker would try it (DESIGN.md §7, §8): a digest is no secret
//! (it is in manifests anyone can read), so a stored blob must be served only to whom the
//! registry served it: an anonymous client, another login, another repository, or a digest
//! learnt elsewhere get nothing the registry would not give them.

use crate::harness::start_mirror;
use crate::harness::store_hub::{ask, StoreHub};
use crate::support::bounded;
use crate::support::setup::test_blob;
use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// A JWT-shaped token that expires `secs` from now (the mirror reads `exp`; the hub does
/// not check it).
fn token(name: &str, secs: u64) -> String {
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!(r#"{{"sub":"{name}","exp":{exp}}}"#));
    format!("eyJhbGciOiJub25lIn0.{payload}.sig")
}

struct Private {
    hub: StoreHub,
    mirror: SocketAddr,
    alice: String,
    bob: String,
    /// Alice's private layer, in `alice/private` and `alice/other` (not `alice/empty`).
    layer: Vec<u8>,
    digest: String,
    _dir: tempfile::TempDir,
}

/// Alice's private layer, stored by her own pull through the mirror.
async fn alice_stored_her_layer() -> Private {
    let hub = StoreHub::start().await;
    let (alice, bob) = (token("alice", 300), token("bob", 300));
    hub.repo("alice/private", false, &[&alice]);
    hub.repo("alice/other", false, &[&alice]);
    hub.repo("alice/empty", false, &[&alice]);
    hub.repo("bob/private", false, &[&bob]);
    hub.repo("library/public", true, &[]);
    hub.blob("library/public", b"a public layer");
    hub.blob("bob/private", b"bob's layer");
    let layer = test_blob(120_000);
    let digest = hub.blob("alice/private", &layer);
    hub.blob("alice/other", &layer);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let (status, body) = ask(
        mirror,
        Method::GET,
        &format!("/v2/alice/private/blobs/{digest}"),
        Some(&alice),
    )
    .await;
    assert!(
        status == StatusCode::OK && body.as_deref() == Some(&layer[..]),
        "{status}"
    );
    bounded(async {
        while super::store::count_stored(dir.path()) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    Private {
        hub,
        mirror,
        alice,
        bob,
        layer,
        digest,
        _dir: dir,
    }
}

impl Private {
    fn served_layer(&self, body: &Option<Bytes>) -> bool {
        body.as_deref() == Some(&self.layer[..])
    }

    fn storage_gets(&self) -> usize {
        self.hub.state.storage_gets.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn an_anonymous_client_gets_no_private_layer_from_the_store_by_its_digest() {
    let p = alice_stored_her_layer().await;
    for method in [Method::GET, Method::HEAD] {
        // Where it is, without a login: the registry's challenge, not the layer.
        let (status, body) = ask(
            p.mirror,
            method.clone(),
            &format!("/v2/alice/private/blobs/{}", p.digest),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method}");
        assert!(!p.served_layer(&body));
        // Its digest, stolen, asked of a public repository that does not hold it.
        let (status, body) = ask(
            p.mirror,
            method.clone(),
            &format!("/v2/library/public/blobs/{}", p.digest),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
        assert!(!p.served_layer(&body));
    }
    assert_eq!(p.storage_gets(), 1, "only alice's own download");
}

#[tokio::test]
async fn another_login_gets_nothing_that_one_login_stored() {
    let p = alice_stored_her_layer().await;
    let (status, body) = ask(
        p.mirror,
        Method::GET,
        &format!("/v2/alice/private/blobs/{}", p.digest),
        Some(&p.bob),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!p.served_layer(&body));
    // Bob's own repository, which the registry would serve him, but which lacks the layer.
    let (status, body) = ask(
        p.mirror,
        Method::GET,
        &format!("/v2/bob/private/blobs/{}", p.digest),
        Some(&p.bob),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!p.served_layer(&body));
}

#[tokio::test]
async fn a_layer_is_served_for_another_repository_only_once_the_registry_says_it_holds_it() {
    let p = alice_stored_her_layer().await;
    let heads = p.hub.state.blob_heads.load(Ordering::SeqCst);
    let (status, body) = ask(
        p.mirror,
        Method::GET,
        &format!("/v2/alice/other/blobs/{}", p.digest),
        Some(&p.alice),
    )
    .await;
    assert!(
        status == StatusCode::OK && p.served_layer(&body),
        "{status}"
    );
    assert_eq!(
        p.hub.state.blob_heads.load(Ordering::SeqCst),
        heads + 1,
        "the registry was asked"
    );
    assert_eq!(p.storage_gets(), 1, "and the store served it");
    let (status, body) = ask(
        p.mirror,
        Method::GET,
        &format!("/v2/alice/empty/blobs/{}", p.digest),
        Some(&p.alice),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the registry says alice/empty lacks it"
    );
    assert!(!p.served_layer(&body));
}

#[tokio::test]
async fn a_login_reads_from_the_store_no_longer_than_its_token() {
    let hub = StoreHub::start().await;
    let alice = token("alice", 2);
    hub.repo("alice/private", false, &[&alice]);
    let layer = test_blob(50_000);
    let digest = hub.blob("alice/private", &layer);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = format!("/v2/alice/private/blobs/{digest}");
    assert_eq!(
        ask(mirror, Method::GET, &path, Some(&alice)).await.0,
        StatusCode::OK
    );
    bounded(async {
        while super::store::count_stored(dir.path()) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        ask(mirror, Method::GET, &path, Some(&alice)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        hub.state.blob_heads.load(Ordering::SeqCst),
        0,
        "remembered while the token lives"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The token's end has passed: the registry is asked again (and, this fake not checking
    // `exp`, says yes).
    let (status, body) = ask(mirror, Method::GET, &path, Some(&alice)).await;
    assert!(status == StatusCode::OK && body.as_deref() == Some(&layer[..]));
    assert_eq!(hub.state.blob_heads.load(Ordering::SeqCst), 1);
    assert_eq!(hub.state.storage_gets.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_download_in_flight_is_joined_only_by_those_the_registry_accepts() {
    let hub = StoreHub::start().await;
    let (alice, bob) = (token("alice", 300), token("bob", 300));
    hub.repo("alice/private", false, &[&alice]);
    hub.repo("bob/private", false, &[&bob]);
    let layer = test_blob(600_000);
    let digest = hub.blob("alice/private", &layer);
    hub.state.storage_delay_ms.store(5, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = format!("/v2/alice/private/blobs/{digest}");
    let alices = tokio::spawn({
        let (path, alice) = (path.clone(), alice.clone());
        async move { ask(mirror, Method::GET, &path, Some(&alice)).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let bobs = ask(mirror, Method::GET, &path, Some(&bob)).await;
    let anonymous = ask(mirror, Method::GET, &path, None).await;
    let stolen = ask(
        mirror,
        Method::GET,
        &format!("/v2/bob/private/blobs/{digest}"),
        Some(&bob),
    )
    .await;
    let (status, body) = alices.await.unwrap();
    assert!(status == StatusCode::OK && body.as_deref() == Some(&layer[..]));
    for (status, body) in [bobs, anonymous, stolen] {
        assert!(
            matches!(status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND),
            "{status}"
        );
        assert_ne!(body.as_deref(), Some(&layer[..]));
    }
}

/// The same rule for a shared identity (spegel#1432: digest hits global across
/// repositories were a leak): a layer anonymous fetched through one public repository is
/// served through another only once the registry said that one holds it (a `HEAD`), and
/// never through a repository the registry says lacks it, public or not.
#[tokio::test]
async fn a_shared_identity_reads_a_layer_through_another_repository_only_once_the_registry_says_it_holds_it(
) {
    let hub = StoreHub::start().await;
    hub.repo("acme/app", true, &[]);
    hub.repo("acme/base", true, &[]);
    hub.repo("acme/empty", true, &[]);
    let layer = test_blob(60_000);
    let digest = hub.blob("acme/app", &layer);
    hub.blob("acme/base", &layer);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = |repo: &str| format!("/v2/{repo}/blobs/{digest}");
    let (status, body) = ask(mirror, Method::GET, &path("acme/app"), None).await;
    assert!(status == StatusCode::OK && body.as_deref() == Some(&layer[..]));
    bounded(async {
        while super::store::count_stored(dir.path()) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (gets, heads) = (
        hub.count(&hub.state.storage_gets),
        hub.count(&hub.state.blob_heads),
    );

    // Through a repository the registry says lacks it: its 404, nothing from the store.
    let (status, body) = ask(mirror, Method::GET, &path("acme/empty"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_ne!(body.as_deref(), Some(&layer[..]));
    assert_eq!(
        hub.count(&hub.state.blob_heads),
        heads + 1,
        "the registry was asked"
    );

    // Through one that holds it: one HEAD, then the store serves it (no storage GET), and
    // the next read there asks nothing.
    let (status, body) = ask(mirror, Method::GET, &path("acme/base"), None).await;
    assert!(
        status == StatusCode::OK && body.as_deref() == Some(&layer[..]),
        "{status}"
    );
    assert_eq!(hub.count(&hub.state.blob_heads), heads + 2);
    let (status, _) = ask(mirror, Method::GET, &path("acme/base"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hub.count(&hub.state.blob_heads), heads + 2, "remembered");
    assert_eq!(
        hub.count(&hub.state.storage_gets),
        gets,
        "both from the store"
    );
}
