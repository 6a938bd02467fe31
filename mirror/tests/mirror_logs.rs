//! The mirror's log lines, with its own upstream credentials and the redirect cache at
//! work: a refused cached URL is refreshed, and no password, token or signature reaches a
//! line. One test in its own binary: tracing's callsite filters are process-wide, and a
//! subscriber scoped to one test thread can miss events while other tests run beside it.

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "harness/mod.rs"]
mod harness;

use base64::Engine;
use harness::hub::{Hub, PASSWORD, USER};
use harness::start_mirror;
use http::{Request, StatusCode};
use http_body_util::Empty;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::logs::LogSink;
use support::net::http_client;
use support::registry::digest;
use support::{body_bytes, bounded};

/// Pulls the hub's blob with no client credentials and checks its digest.
async fn pull_ok(mirror: SocketAddr, hub: &Hub) {
    let req = Request::get(format!("http://{mirror}{}", hub.blob_path()))
        .body(Empty::new())
        .unwrap();
    let res = bounded(http_client(&[]).request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        digest(&body_bytes(res.into_body()).await.unwrap()),
        hub.digest
    );
}

#[tokio::test]
async fn a_refused_cached_url_is_refreshed_and_nothing_secret_is_logged() {
    let hub = Hub::start(Duration::from_secs(600)).await;
    // Capture every log line of the mirror, the crate's debug events included (not the
    // test store's own, which prints the URLs it receives). The test runtime is
    // single-threaded, so the servers' tasks log here too.
    let logs = LogSink::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug,s3s=off,s3s_fs=off")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mirror =
        start_mirror(&hub.flags(&["--upstream-user", USER, "--upstream-password", PASSWORD])).await;
    pull_ok(mirror, &hub).await;
    pull_ok(mirror, &hub).await;
    assert_eq!(hub.redirects.load(Ordering::SeqCst), 1);
    // The store's key is rotated: the cached URL is refused (SigV4 signatures change each
    // second, so the next one differs).
    hub.store.revoke_signatures_seen();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pull_ok(mirror, &hub).await;
    assert_eq!(
        hub.redirects.load(Ordering::SeqCst),
        2,
        "the registry was asked again"
    );
    let presigned = hub
        .store
        .requests()
        .iter()
        .filter(|r| r.presigned())
        .count();
    assert_eq!(presigned, 4, "first, cached, refused cached, fresh");

    // A request's line is written when its body is dropped, which can trail the client's
    // last byte: wait for the lines (bounded).
    let text = bounded(async {
        for _ in 0..200 {
            let text = logs.text();
            if text.contains("cache=\"hit\"") && text.contains("cache=\"refresh\"") {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        logs.text()
    })
    .await;
    assert!(text.contains("cache=\"hit\""), "no hit line:\n{text}");
    assert!(
        text.contains("cache=\"refresh\""),
        "no refresh line:\n{text}"
    );
    // The token service's host is logged the first time the mirror's credentials go there,
    // and only then.
    let announced = text
        .lines()
        .filter(|l| l.contains("sending credentials to the token service"))
        .collect::<Vec<_>>();
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert!(
        announced[0].contains("token_service=http://127.0.0.1:"),
        "{}",
        announced[0]
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let signatures: Vec<String> = hub
        .store
        .requests()
        .iter()
        .filter_map(|r| r.signature().map(str::to_owned))
        .collect();
    for secret in [PASSWORD.to_owned(), basic, "tok-0".to_owned()]
        .into_iter()
        .chain(signatures)
    {
        assert!(!text.contains(&secret), "{secret} logged:\n{text}");
    }
}
