//! The mirror's own upstream credentials (a token flow the client never sees, tokens
//! refreshed when they expire mid-pull), client logins to the mirror (htpasswd), and its
//! redirect cache (hits skip the registry, expiry is respected), against a loopback
//! registry with a token service and the real S3 store. `tests/mirror_logs.rs` checks a
//! refused cached URL being refreshed, and that no credential reaches a log line.

use super::harness::hub::{Hub, IDENTITY_TOKEN, PASSWORD, USER};
use super::start_mirror;
use super::support::net::http_client;
use super::support::registry::digest;
use super::support::{body_bytes, bounded};
use base64::Engine;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A client request with no credentials at all, or with these Basic ones.
pub async fn pull(mirror: SocketAddr, path: &str, basic: Option<&str>) -> Response<Incoming> {
    let mut req = Request::get(format!("http://{mirror}{path}"));
    if let Some(user_pass) = basic {
        let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
        req = req.header("authorization", format!("Basic {b64}"));
    }
    bounded(http_client(&[]).request(req.body(Empty::new()).unwrap()))
        .await
        .unwrap()
}

pub async fn pull_ok(mirror: SocketAddr, hub: &Hub) {
    let res = pull(mirror, &hub.blob_path(), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        digest(&body_bytes(res.into_body()).await.unwrap()),
        hub.digest
    );
}

#[tokio::test]
async fn the_mirror_logs_in_itself_and_clients_need_no_login() {
    let hub = Hub::start(Duration::from_secs(600)).await;
    let mirror =
        start_mirror(&hub.flags(&["--upstream-user", USER, "--upstream-password", PASSWORD])).await;
    // The API check and a pull, as a client with no credentials: never a 401.
    let res = pull(mirror, "/v2/", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    pull_ok(mirror, &hub).await;
    pull_ok(mirror, &hub).await;
    let tokens = hub.token_log.lock().unwrap().clone();
    assert_eq!(
        tokens.len(),
        2,
        "one token for /v2/, one for the repository: {tokens:?}"
    );
    assert!(tokens.iter().all(|(m, _, auth)| *m == Method::GET
        && auth.as_deref().is_some_and(|a| a.starts_with("Basic "))));
    assert!(
        tokens[1]
            .1
            .contains("scope=repository%3Alibrary%2Ftest%3Apull"),
        "{}",
        tokens[1].1
    );
    assert_eq!(hub.blob.len(), 200_000);
    hub.store.assert_no_credentials_arrived();
}

#[tokio::test]
async fn an_identity_token_from_a_docker_config_is_exchanged() {
    let hub = Hub::start(Duration::from_secs(600)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let key = format!("http://{}", hub.registry);
    std::fs::write(
        &config,
        format!(r#"{{"auths": {{"{key}": {{"identitytoken": "{IDENTITY_TOKEN}"}}}}}}"#),
    )
    .unwrap();
    let mirror =
        start_mirror(&hub.flags(&["--upstream-credentials", config.to_str().unwrap()])).await;
    pull_ok(mirror, &hub).await;
    let tokens = hub.token_log.lock().unwrap().clone();
    assert_eq!(tokens[0].0, Method::POST, "OAuth2's refresh_token grant");
    assert!(tokens[0]
        .1
        .contains("scope=repository%3Alibrary%2Ftest%3Apull"));
}

#[tokio::test]
async fn a_token_expiring_mid_pull_is_refreshed() {
    let hub = Hub::start(Duration::from_secs(600)).await;
    let mirror = start_mirror(&hub.flags(&[
        "--upstream-user",
        USER,
        "--upstream-password",
        PASSWORD,
        "--redirect-cache",
        "0",
    ]))
    .await;
    pull_ok(mirror, &hub).await;
    // The registry stops accepting every token issued so far.
    hub.valid.lock().unwrap().clear();
    pull_ok(mirror, &hub).await;
    assert_eq!(
        hub.token_log.lock().unwrap().len(),
        2,
        "logged in again once"
    );
    let auths = hub.registry_auth.lock().unwrap().clone();
    assert_eq!(
        auths
            .iter()
            .filter(|a| a.as_deref() == Some("Bearer tok-0"))
            .count(),
        2,
        "the first token was used until it was refused: {auths:?}"
    );
}

#[tokio::test]
async fn clients_log_in_to_the_mirror_with_htpasswd() {
    let hub = Hub::start(Duration::from_secs(600)).await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("alice-secret", 4).unwrap()),
    )
    .unwrap();
    let mirror = start_mirror(&hub.flags(&[
        "--upstream-user",
        USER,
        "--upstream-password",
        PASSWORD,
        "--htpasswd",
        htpasswd.to_str().unwrap(),
    ]))
    .await;
    for basic in [None, Some("alice:wrong"), Some("bob:alice-secret")] {
        let res = pull(mirror, &hub.blob_path(), basic).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{basic:?}");
        assert_eq!(
            res.headers()["www-authenticate"],
            "Basic realm=\"registry mirror\""
        );
    }
    let res = pull(mirror, &hub.blob_path(), Some("alice:alice-secret")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        digest(&body_bytes(res.into_body()).await.unwrap()),
        hub.digest
    );
    // Health and metrics need no login.
    assert_eq!(
        pull(mirror, "/healthz", None).await.status(),
        StatusCode::OK
    );
    // Alice's Basic credentials are the mirror's, never the registry's.
    let auths = hub.registry_auth.lock().unwrap().clone();
    assert!(
        auths.iter().flatten().all(|a| a.starts_with("Bearer ")),
        "{auths:?}"
    );
}

#[tokio::test]
async fn the_redirect_cache_skips_the_registry_until_the_url_expires() {
    // URLs valid for 3 s; the mirror stops using them 1 s before.
    let hub = Hub::start(Duration::from_secs(3)).await;
    let mirror = start_mirror(&hub.flags(&[
        "--upstream-user",
        USER,
        "--upstream-password",
        PASSWORD,
        "--redirect-cache-margin",
        "1s",
    ]))
    .await;
    pull_ok(mirror, &hub).await;
    pull_ok(mirror, &hub).await;
    assert_eq!(
        hub.redirects.load(Ordering::SeqCst),
        1,
        "the second pull went straight to storage"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    pull_ok(mirror, &hub).await;
    assert_eq!(
        hub.redirects.load(Ordering::SeqCst),
        2,
        "past the margin the registry is asked again"
    );
    let presigned = hub
        .store
        .requests()
        .iter()
        .filter(|r| r.presigned())
        .count();
    assert_eq!(
        presigned, 3,
        "three pre-signed requests, none with an expired URL"
    );
    super::metrics_with(
        mirror,
        &[
            "registry_mirror_redirect_cache_total{event=\"hit\"} 1".to_owned(),
            "registry_mirror_redirect_cache_total{event=\"miss\"} 2".to_owned(),
        ],
    )
    .await;
}
