//! The redirect cache: repeated requests go straight to storage while the URL is valid, a
//! refused URL is refreshed from the registry, identities never share URLs, and memory is
//! bounded. Registry and storage are the `test_util` fakes.

mod support;

use http::header::AUTHORIZATION;
use http::{Method, Request, StatusCode};
use std::time::Duration;
use support::{body_string, bounded};
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};
use tower_signed_redirect::test_util::{FakeBody, FakeRegistry, FakeStorage, Signing, UnknownHost};
use tower_signed_redirect::{FollowedRedirect, RedirectCache, SignedRedirect, SignedRedirectLayer};

const BLOB: &str = "layer bytes";

fn registry(storage: &FakeStorage) -> FakeRegistry {
    let registry = FakeRegistry::new(storage.clone());
    for d in [
        "sha256:00",
        "sha256:01",
        "sha256:02",
        "sha256:03",
        "sha256:04",
    ] {
        registry.put_blob(d, BLOB);
    }
    registry
}

fn client(registry: &FakeRegistry, cache: &RedirectCache) -> SignedRedirect<FakeRegistry> {
    tower::Layer::layer(
        &SignedRedirectLayer::new().redirect_cache(cache.clone()),
        registry.clone(),
    )
}

fn blob(method: Method, digest: &str, token: &str) -> Request<String> {
    Request::builder()
        .method(method)
        .uri(format!(
            "https://registry.test/v2/library/alpine/blobs/{digest}"
        ))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(String::new())
        .unwrap()
}

/// How many requests the registry itself (not its storage) answered.
fn registry_calls(registry: &FakeRegistry) -> usize {
    registry
        .requests()
        .iter()
        .filter(|r| r.uri.host() == Some("registry.test"))
        .count()
}

async fn get(
    svc: &SignedRedirect<FakeRegistry>,
    method: Method,
    digest: &str,
    token: &str,
) -> (StatusCode, FollowedRedirect, String) {
    let res = svc
        .clone()
        .oneshot(blob(method, digest, token))
        .await
        .unwrap();
    let followed = res.extensions().get::<FollowedRedirect>().unwrap().clone();
    (res.status(), followed, body_string(res).await)
}

#[tokio::test]
async fn a_second_request_goes_straight_to_storage() {
    let storage = FakeStorage::new();
    let registry = registry(&storage);
    let cache = RedirectCache::new(16);
    let svc = client(&registry, &cache);

    let (status, first, body) = get(&svc, Method::GET, "sha256:00", "t").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, BLOB));
    assert!(!first.from_cache());
    assert_eq!(cache.len(), 1);

    let (status, second, body) = get(&svc, Method::GET, "sha256:00", "t").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, BLOB));
    assert!(second.from_cache() && !second.refreshed());
    assert_eq!(second.storage_url(), first.storage_url());
    assert_eq!(second.redirect_status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(registry_calls(&registry), 1, "the registry was asked once");
    // The cached hop is built like any storage request: no credentials.
    let last = storage.requests().pop().unwrap();
    assert!(last.headers.get(AUTHORIZATION).is_none());
    assert_eq!(storage.requests().len(), 2);
}

#[tokio::test]
async fn head_requests_are_cached_with_their_fallback() {
    // Distribution signs for the request's method: a HEAD needs the fallback to HEAD.
    let storage = FakeStorage::new();
    let registry = registry(&storage).signing(Signing::RequestMethod);
    let cache = RedirectCache::new(16);
    let svc = client(&registry, &cache);
    let (status, first, _) = get(&svc, Method::HEAD, "sha256:00", "t").await;
    assert_eq!(status, StatusCode::OK);
    assert!(first.head_fallback());
    let before = storage.requests().len();
    let (status, second, _) = get(&svc, Method::HEAD, "sha256:00", "t").await;
    assert_eq!(status, StatusCode::OK);
    assert!(second.from_cache() && second.head_fallback());
    let sent: Vec<_> = storage.requests()[before..]
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(sent, [Method::HEAD], "straight to HEAD, no probe first");
    // GET and HEAD are different entries.
    let (_, get_first, _) = get(&svc, Method::GET, "sha256:00", "t").await;
    assert!(!get_first.from_cache());
}

#[tokio::test]
async fn urls_within_the_margin_of_their_expiry_are_not_used() {
    let storage = FakeStorage::new();
    // URLs valid for 90 s, a margin of 120 s: never worth caching.
    let registry = registry(&storage).expires_in(Duration::from_secs(90));
    let cache = RedirectCache::new(16).expiry_margin(Duration::from_secs(120));
    let svc = client(&registry, &cache);
    for _ in 0..2 {
        let (status, followed, _) = get(&svc, Method::GET, "sha256:00", "t").await;
        assert_eq!(status, StatusCode::OK);
        assert!(!followed.from_cache());
    }
    assert!(cache.is_empty());
    assert_eq!(registry_calls(&registry), 2);

    // With a 30 s margin the same URLs are cached.
    let cache = RedirectCache::new(16).expiry_margin(Duration::from_secs(30));
    let svc = client(&registry, &cache);
    get(&svc, Method::GET, "sha256:00", "t").await;
    let (_, followed, _) = get(&svc, Method::GET, "sha256:00", "t").await;
    assert!(followed.from_cache());
}

#[tokio::test]
async fn a_refused_cached_url_is_refreshed_from_the_registry() {
    let storage = FakeStorage::new();
    let registry = registry(&storage);
    let cache = RedirectCache::new(16);
    let svc = client(&registry, &cache);
    let (_, first, _) = get(&svc, Method::GET, "sha256:00", "t").await;

    // Storage's key is rotated: the cached URL is refused (403) although not expired.
    storage.revoke_signed_urls();
    let (status, second, body) = get(&svc, Method::GET, "sha256:00", "t").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, BLOB),
        "the caller sees only the fresh answer"
    );
    assert!(second.refreshed() && !second.from_cache());
    assert_eq!(registry_calls(&registry), 2);
    let sent: Vec<_> = storage.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(sent.len(), 3, "first URL, refused cached URL, fresh URL");
    assert_eq!(sent[1], sent[0], "the cached URL was tried");
    assert_ne!(sent[2], sent[0], "then a freshly signed one");
    assert!(!first.from_cache());

    // The fresh URL is what is cached now.
    let (_, third, _) = get(&svc, Method::GET, "sha256:00", "t").await;
    assert!(third.from_cache());
    assert_eq!(storage.requests().pop().unwrap().uri, sent[2]);
}

#[tokio::test]
async fn a_url_is_never_served_to_another_identity() {
    let storage = FakeStorage::new();
    let registry = registry(&storage);
    let cache = RedirectCache::new(16);
    let svc = client(&registry, &cache);
    get(&svc, Method::GET, "sha256:00", "alice").await;
    let (_, bob, _) = get(&svc, Method::GET, "sha256:00", "bob").await;
    assert!(!bob.from_cache(), "bob's token is another identity");
    // Anonymous is an identity of its own too.
    let anonymous = Request::get("https://registry.test/v2/library/alpine/blobs/sha256:00")
        .body(String::new())
        .unwrap();
    let res = svc.clone().oneshot(anonymous).await.unwrap();
    assert!(!res
        .extensions()
        .get::<FollowedRedirect>()
        .unwrap()
        .from_cache());
    assert_eq!(registry_calls(&registry), 3);
    let (_, alice, _) = get(&svc, Method::GET, "sha256:00", "alice").await;
    assert!(alice.from_cache());
}

#[tokio::test]
async fn capacity_bounds_the_cache() {
    let storage = FakeStorage::new();
    let registry = registry(&storage);
    let cache = RedirectCache::new(2);
    let svc = client(&registry, &cache);
    for token in ["a", "b", "c", "d", "e", "f"] {
        for d in [
            "sha256:00",
            "sha256:01",
            "sha256:02",
            "sha256:03",
            "sha256:04",
        ] {
            get(&svc, Method::GET, d, token).await;
            assert!(cache.len() <= 2);
        }
    }
    // The newest is still there.
    let (_, last, _) = get(&svc, Method::GET, "sha256:04", "f").await;
    assert!(last.from_cache());
}

#[tokio::test]
async fn concurrent_requests_for_one_key_all_succeed() {
    let storage = FakeStorage::new();
    let registry = registry(&storage);
    let cache = RedirectCache::new(16);
    let svc = client(&registry, &cache);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { get(&svc, Method::GET, "sha256:00", "t").await })
        })
        .collect();
    for task in tasks {
        let (status, _, body) = bounded(task).await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, BLOB));
    }
    assert_eq!(cache.len(), 1);
    let (_, after, _) = get(&svc, Method::GET, "sha256:00", "t").await;
    assert!(after.from_cache());
}

#[tokio::test]
async fn clones_and_layers_given_one_cache_share_it() {
    let storage = FakeStorage::new();
    let registry = registry(&storage);
    let cache = RedirectCache::new(16);
    // Two services from two layers (two worker threads' stacks, say), one cache.
    let mut one = client(&registry, &cache);
    let two = client(&registry, &cache);
    ServiceExt::<Request<String>>::ready(&mut one)
        .await
        .unwrap();
    let res = one.call(blob(Method::GET, "sha256:00", "t")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (_, followed, _) = get(&two, Method::GET, "sha256:00", "t").await;
    assert!(followed.from_cache());
    // And a layer without a cache asks every time.
    let plain = tower::Layer::layer(&SignedRedirectLayer::new(), registry.clone());
    let res = plain
        .oneshot(blob(Method::GET, "sha256:00", "t"))
        .await
        .unwrap();
    assert!(!res
        .extensions()
        .get::<FollowedRedirect>()
        .unwrap()
        .from_cache());
}

/// A registry that takes `delay` to answer (its storage answers at once), answering the
/// first request it gets with `503` when `first_fails`.
fn slow_registry(registry: &FakeRegistry, delay: Duration, first_fails: bool) -> SlowRegistry {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let registry = registry.clone();
    BoxCloneService::new(tower::service_fn(move |req: Request<String>| {
        let (registry, calls) = (registry.clone(), calls.clone());
        async move {
            if req.uri().host() == Some("registry.test") {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                if first_fails && n == 0 {
                    let mut res = http::Response::new(Default::default());
                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    return Ok(res);
                }
            }
            registry.oneshot(req).await
        }
    }))
}

type SlowRegistry = BoxCloneService<Request<String>, http::Response<FakeBody>, UnknownHost>;

/// The layer with a single-flight redirect cache over `slow_registry(registry, ..)`.
fn single_flight_client(
    registry: &FakeRegistry,
    delay: Duration,
    first_fails: bool,
) -> SignedRedirect<SlowRegistry> {
    let cache = RedirectCache::new(16).single_flight(true);
    SignedRedirect::new(slow_registry(registry, delay, first_fails)).redirect_cache(cache)
}

#[tokio::test]
async fn with_single_flight_concurrent_misses_ask_the_registry_once() {
    let storage = FakeStorage::new();
    let registry = registry(&storage);
    let svc = single_flight_client(&registry, Duration::from_millis(100), false);
    let pulls: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc
                    .oneshot(blob(Method::GET, "sha256:00", "t"))
                    .await
                    .unwrap();
                let joined = res
                    .extensions()
                    .get::<FollowedRedirect>()
                    .unwrap()
                    .joined_flight();
                (res.status(), body_string(res).await, joined)
            })
        })
        .collect();
    let mut joined = 0;
    for pull in pulls {
        let (status, body, waited) = bounded(pull).await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, BLOB));
        joined += usize::from(waited);
    }
    assert_eq!(joined, 49, "every request but the leader joined its flight");
    assert_eq!(
        registry_calls(&registry),
        1,
        "50 concurrent misses, one registry request"
    );
    assert_eq!(storage.requests().len(), 50, "each went to storage itself");
}

#[tokio::test]
async fn when_the_leader_fails_every_waiter_still_gets_an_answer() {
    let storage = FakeStorage::new();
    let registry = registry(&storage);
    let svc = single_flight_client(&registry, Duration::from_millis(100), true);
    let leader = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.oneshot(blob(Method::GET, "sha256:00", "t")).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(blob(Method::GET, "sha256:00", "t")).await })
        })
        .collect();
    let leader = bounded(leader).await.unwrap().unwrap();
    assert_eq!(
        leader.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the leader's own answer"
    );
    for waiter in waiters {
        let res = bounded(waiter).await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::OK, "a waiter made its own try");
        assert_eq!(body_string(res).await, BLOB);
    }
    // A dropped leader (its caller gave up) ends its flight too.
    let svc = single_flight_client(&registry, Duration::from_millis(200), false);
    let gone = tokio::spawn({
        let svc = svc.clone();
        async move { svc.oneshot(blob(Method::GET, "sha256:01", "t")).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiter = tokio::spawn({
        let svc = svc.clone();
        async move { svc.oneshot(blob(Method::GET, "sha256:01", "t")).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    gone.abort();
    let res = bounded(waiter).await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
