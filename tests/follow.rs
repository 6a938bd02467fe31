//! The layer's rules. Registry and storage are the in-memory fakes of `test_util` (storage
//! enforcing R2's and S3's rules), behind a client that records every request; where an
//! upstream must misbehave in a way the fakes never do, a mock answers instead.

mod support;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, RANGE, USER_AGENT};
use http::{Method, Request, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::body_string;
use support::mock::*;
use tower::{Service, ServiceExt};
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher};
use tower_signed_redirect::test_util::{FakeRegistry, FakeStorage, Provider, Signing};
use tower_signed_redirect::{
    ErrorKind, FollowedRedirect, HeadStrategy, RedirectCache, ResponseBody, SignatureScheme,
    SignedRedirect, SignedRedirectLayer,
};

const R2: &str = "https://docker-images-prod.abc.r2.cloudflarestorage.com/registry-v2/docker/registry/v2/blobs/sha256/ab/abc/data?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240101%2Fauto%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=1200&X-Amz-SignedHeaders=host&X-Amz-Signature=5ecre7";

const R2_ORIGIN: &str = "https://docker-images-prod.abc.r2.cloudflarestorage.com";

/// Docker Hub in memory: `registry.example` redirects (with `status`) blob requests to R2,
/// which holds `sha256:abc` ("blob") and refuses what R2 refuses. The client records every
/// request; storage's records are in the returned store too.
fn docker_hub(status: u16) -> (MockClient, FakeStorage) {
    let r2 = FakeStorage::new().at(R2_ORIGIN).provider(Provider::R2);
    let registry = FakeRegistry::new(r2.clone())
        .at("https://registry.example")
        .redirect_status(StatusCode::from_u16(status).unwrap());
    registry.put_blob("sha256:abc", "blob");
    (MockClient::over(registry), r2)
}

/// A registry signing storage URLs as `signing` says, and a 5000-byte blob.
fn registry_signing(signing: Signing) -> MockClient {
    let registry = FakeRegistry::new(FakeStorage::new())
        .at("https://registry.example")
        .signing(signing);
    registry.put_blob("sha256:abc", vec![7u8; 5000]);
    MockClient::over(registry)
}

/// A mock registry that answers every method `status` to `location`, which the fakes would
/// never send; any other host answers "blob".
fn redirecting_to(status: u16, location: &'static str) -> MockClient {
    MockClient::new(move |req| {
        Ok(match req.uri().host() {
            Some("registry.example") => redirect(status, location),
            _ => response(200, "blob"),
        })
    })
}

type Answer = http::Response<ResponseBody<TestBody>>;

/// The caller's blob request (to `registry.example`, credentials and all) through the
/// default layer over `client`.
async fn fetch(client: &MockClient, method: Method) -> Answer {
    fetch_with(client, SignedRedirectLayer::new(), method)
        .await
        .unwrap()
}

/// [`fetch`], through `layer`.
async fn fetch_with(
    client: &MockClient,
    layer: SignedRedirectLayer,
    method: Method,
) -> Result<Answer, tower_signed_redirect::Error> {
    send(client, layer, credentialed_blob_request(method)).await
}

/// `req` through `layer` over `client`.
async fn send(
    client: &MockClient,
    layer: SignedRedirectLayer,
    req: Request<String>,
) -> Result<Answer, tower_signed_redirect::Error> {
    tower::ServiceBuilder::new()
        .layer(layer)
        .service(client.clone())
        .oneshot(req)
        .await
}

#[tokio::test]
async fn follows_each_default_redirect_status_with_a_fresh_get() {
    for status in [301, 302, 303, 307, 308] {
        let (client, r2) = docker_hub(status);
        let res = fetch(&client, Method::GET).await;
        assert_eq!(res.status(), StatusCode::OK, "{status}");
        let followed = res.extensions().get::<FollowedRedirect>().unwrap().clone();
        assert_eq!(followed.redirect_status().as_u16(), status);
        assert_eq!(followed.hops(), 1);
        assert_eq!(followed.scheme(), SignatureScheme::AwsSigV4);
        assert!(followed.storage_url().contains("X-Amz-Credential=REDACTED"));
        assert!(followed.storage_url().ends_with("X-Amz-Signature=REDACTED"));
        assert!(followed.expires_at().is_some());
        assert_eq!(body_string(res).await, "blob");

        let reqs = client.requests();
        assert_eq!(reqs.len(), 2);
        let storage = &reqs[1];
        assert_eq!(storage.method, Method::GET);
        assert!(storage.uri.starts_with(R2_ORIGIN), "{}", storage.uri);
        assert_eq!(storage.body, "", "storage hop has no body");
        assert!(!storage.marked, "storage hop carries no request extensions");
        let mut names: Vec<_> = storage.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "user-agent"]);
        assert_eq!(storage.headers[USER_AGENT], "docker/27.0");
        assert_eq!(r2.requests().len(), 1);
    }
}

#[tokio::test]
async fn replaying_the_request_is_what_breaks_storage() {
    // The control: the same storage, sent the client's request as a naive follower would.
    let (client, _) = docker_hub(307);
    let res = client
        .clone()
        .oneshot(credentialed_blob_request(Method::GET))
        .await
        .unwrap();
    let mut replay = credentialed_blob_request(Method::GET);
    *replay.uri_mut() = res.headers()["location"].to_str().unwrap().parse().unwrap();
    let res = client.oneshot(replay).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(body_string(res)
        .await
        .contains("<Code>InvalidRequest</Code><Message>Missing x-amz-content-sha256"));
}

#[tokio::test]
async fn other_statuses_and_configured_statuses() {
    for status in [300, 304, 305, 306] {
        let (client, _) = docker_hub(status);
        let res = fetch(&client, Method::GET).await;
        assert_eq!(res.status().as_u16(), status);
        assert_eq!(client.requests().len(), 1);
    }
    let only_307 = SignedRedirectLayer::new()
        .redirect_statuses([StatusCode::TEMPORARY_REDIRECT, StatusCode::OK]);
    let (client, _) = docker_hub(302);
    let res = fetch_with(&client, only_307.clone(), Method::GET)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let (client, _) = docker_hub(307);
    let res = fetch_with(&client, only_307, Method::GET).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn only_get_and_head_are_followed() {
    for method in [
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        let client = redirecting_to(307, R2);
        let res = fetch(&client, method.clone()).await;
        assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT, "{method}");
        assert_eq!(res.headers()["location"], R2);
        assert!(res.extensions().get::<FollowedRedirect>().is_none());
        assert_eq!(client.requests().len(), 1);
    }
}

#[tokio::test]
async fn non_storage_redirects_pass_through_untouched() {
    for location in [
        "https://amazonaws.com.evil.net/x?X-Amz-Signature=1",
        "https://registry.example/v2/library/alpine/blobs/other",
        "/v2/relative/to/the/registry",
        "ftp://bucket.s3.amazonaws.com/x",
        "not a uri",
    ] {
        let client = redirecting_to(307, location);
        let res = fetch(&client, Method::GET).await;
        assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT, "{location}");
        assert_eq!(res.headers()["location"], location);
        assert_eq!(client.requests().len(), 1, "{location}");
    }
}

#[tokio::test]
async fn several_location_headers_pass_through() {
    let client = MockClient::new(|req| {
        Ok(match req.uri().host() {
            Some("registry.example") => {
                let mut res = redirect(307, R2);
                res.headers_mut().append(
                    "location",
                    HeaderValue::from_static("https://bucket.s3.amazonaws.com/other"),
                );
                res
            }
            _ => response(200, "blob"),
        })
    });
    let res = fetch(&client, Method::GET).await;
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(client.requests().len(), 1);
}

#[tokio::test]
async fn absolute_location_bytes_are_sent_unchanged() {
    const RAW: &str = "https://Bucket.S3.us-east-1.amazonaws.com:443/a/./b/../c%2Fd%2fe+f'g?response-content-disposition=attachment%3B+filename%3D%22x%22&X-Amz-Signature=ab+c%2F'";
    let client = redirecting_to(307, RAW);
    let res = fetch(&client, Method::GET).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(client.requests()[1].uri, RAW);
}

#[tokio::test]
async fn relative_location_is_resolved_against_the_request() {
    let layer = SignedRedirectLayer::with_matcher(HostPatterns::new(["registry.example"]).unwrap());
    let client = MockClient::new(|req| {
        Ok(match req.uri().path() {
            "/v2/library/alpine/blobs/sha256:abc" => {
                redirect(302, "../../storage/a%2Fb+c?sig=x%2B&sv=1")
            }
            _ => response(200, "blob"),
        })
    });
    let res = fetch_with(&client, layer, Method::GET).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        client.requests()[1].uri,
        "https://registry.example/v2/library/storage/a%2Fb+c?sig=x%2B&sv=1"
    );
}

#[test]
fn credentials_and_hop_by_hop_headers_can_never_be_allowlisted() {
    for name in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "proxy-authenticate",
        "trailers",
        "x-amz-content-sha256",
        "x-goog-user-project",
        "x-ms-version",
        "content-type",
    ] {
        let name = HeaderName::from_static(name);
        let refused =
            std::panic::catch_unwind(|| SignedRedirectLayer::new().forward_header(name.clone()));
        let message = *refused.expect_err("accepted").downcast::<String>().unwrap();
        assert!(
            message.contains(&format!("`{name}` can never be forwarded to storage")),
            "{message}"
        );
        assert!(std::panic::catch_unwind(|| {
            SignedRedirect::new(()).forward_headers([USER_AGENT, name.clone()])
        })
        .is_err());
    }
}

#[test]
fn an_allowlist_past_its_capacity_is_refused() {
    let names: Vec<_> = (0..=tower_signed_redirect::MAX_FORWARDED_HEADERS)
        .map(|i| HeaderName::try_from(format!("x-custom-{i}")).unwrap())
        .collect();
    let full = names[..tower_signed_redirect::MAX_FORWARDED_HEADERS].to_vec();
    let _ = SignedRedirectLayer::new().forward_headers(full);
    let refused = std::panic::catch_unwind(|| SignedRedirectLayer::new().forward_headers(names));
    let message = *refused.expect_err("accepted").downcast::<String>().unwrap();
    assert!(message.contains("at most 8 headers"), "{message}");
}

#[tokio::test]
async fn custom_allowlisted_headers_are_forwarded_with_every_value() {
    let layer = SignedRedirectLayer::new().forward_headers([
        HeaderName::from_static("x-request-id"),
        http::header::ACCEPT,
    ]);
    let (client, _) = docker_hub(307);
    let mut req = credentialed_blob_request(Method::GET);
    req.headers_mut().append(
        "accept",
        HeaderValue::from_static("application/octet-stream"),
    );
    send(&client, layer, req).await.unwrap();
    let storage = &client.requests()[1];
    let mut names: Vec<_> = storage.headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["accept", "x-request-id"]);
    let accepts: Vec<_> = storage.headers.get_all("accept").iter().collect();
    assert_eq!(accepts, ["*/*", "application/octet-stream"]);
}

#[tokio::test]
async fn configured_user_agent_replaces_the_clients() {
    let layer = SignedRedirectLayer::new().user_agent(HeaderValue::from_static("mirror/1.0"));
    let (client, _) = docker_hub(307);
    fetch_with(&client, layer, Method::GET).await.unwrap();
    let storage = &client.requests()[1];
    assert_eq!(
        storage
            .headers
            .get_all(USER_AGENT)
            .iter()
            .collect::<Vec<_>>(),
        ["mirror/1.0"]
    );
}

#[tokio::test]
async fn range_and_if_range_are_forwarded_for_get() {
    let (client, _) = docker_hub(307);
    let mut req = credentialed_blob_request(Method::GET);
    req.headers_mut()
        .insert(RANGE, HeaderValue::from_static("bytes=1-"));
    req.headers_mut()
        .insert("if-range", HeaderValue::from_static("\"stale-etag\""));
    let res = send(&client, SignedRedirectLayer::new(), req)
        .await
        .unwrap();
    // Storage saw both: the ETag did not match, so it sent the whole blob.
    assert_eq!(res.status(), StatusCode::OK);
    let storage = &client.requests()[1];
    assert_eq!(storage.headers[RANGE], "bytes=1-");
    assert_eq!(storage.headers["if-range"], "\"stale-etag\"");

    let mut req = credentialed_blob_request(Method::GET);
    req.headers_mut()
        .insert(RANGE, HeaderValue::from_static("bytes=1-"));
    let res = send(&client, SignedRedirectLayer::new(), req)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()["content-range"], "bytes 1-3/4");
    assert_eq!(body_string(res).await, "lob");
}

#[tokio::test]
async fn head_on_a_get_signed_url_is_a_one_byte_probe() {
    let client = registry_signing(Signing::GetOnly);
    let res = fetch(&client, Method::HEAD).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_LENGTH], "5000");
    assert!(res.headers().contains_key("etag"));
    assert!(res.headers().get("content-range").is_none());
    assert!(!res
        .extensions()
        .get::<FollowedRedirect>()
        .unwrap()
        .head_fallback());
    assert_eq!(body_string(res).await, "");
    let reqs = client.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].method, Method::GET);
    assert_eq!(reqs[1].headers[RANGE], "bytes=0-0");
}

#[tokio::test]
async fn head_on_a_head_signed_url_falls_back_to_head() {
    let client = registry_signing(Signing::RequestMethod);
    let res = fetch(&client, Method::HEAD).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_LENGTH], "5000");
    assert!(res
        .extensions()
        .get::<FollowedRedirect>()
        .unwrap()
        .head_fallback());
    assert_eq!(body_string(res).await, "");
    let methods: Vec<_> = client.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, [Method::HEAD, Method::GET, Method::HEAD]);
    assert!(client.requests()[2].headers.get(RANGE).is_none());
}

#[tokio::test]
async fn head_strategies_get_and_head() {
    let client = registry_signing(Signing::GetOnly);
    let res = fetch_with(
        &client,
        SignedRedirectLayer::new().head_strategy(HeadStrategy::Get),
        Method::HEAD,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_LENGTH], "5000");
    assert_eq!(
        body_string(res).await,
        "",
        "the GET's body is not returned to a HEAD"
    );
    assert_eq!(client.requests()[1].method, Method::GET);
    assert!(client.requests()[1].headers.get(RANGE).is_none());

    let client = registry_signing(Signing::RequestMethod);
    let res = fetch_with(
        &client,
        SignedRedirectLayer::new().head_strategy(HeadStrategy::Head),
        Method::HEAD,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(client.requests().len(), 2);
    assert_eq!(client.requests()[1].method, Method::HEAD);
}

#[tokio::test]
async fn head_probe_of_an_empty_blob() {
    // Storage answers a range of an empty object 416 with `Content-Range: bytes */0`.
    let registry = FakeRegistry::new(FakeStorage::new()).at("https://registry.example");
    registry.put_blob("sha256:abc", "");
    let client = MockClient::over(registry);
    let res = fetch(&client, Method::HEAD).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_LENGTH], "0");
}

#[tokio::test]
async fn head_probe_passes_storage_errors_on_with_an_empty_body() {
    let client = MockClient::new(|req| {
        Ok(match req.uri().host() {
            Some("registry.example") => redirect(307, R2),
            _ => response(404, "NoSuchKey"),
        })
    });
    let res = fetch(&client, Method::HEAD).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_string(res).await, "");
}

fn chain(hops: &'static [&'static str]) -> MockClient {
    MockClient::new(move |req| {
        let uri = req.uri().to_string();
        if req.uri().host() == Some("registry.example") {
            return Ok(redirect(307, hops[0]));
        }
        let i = hops
            .iter()
            .position(|h| *h == uri)
            .expect("request to an unknown host");
        Ok(match hops.get(i + 1) {
            Some(next) => redirect(302, next),
            None => response(200, "blob"),
        })
    })
}

#[tokio::test]
async fn storage_redirects_are_followed_within_the_limit() {
    // Registry → two CDN hops → R2.
    let r2 = FakeStorage::new().at(R2_ORIGIN).provider(Provider::R2);
    let registry = FakeRegistry::new(r2)
        .at("https://registry.example")
        .cdn("https://production.cloudflare.docker.com")
        .cdn("https://production.cloudfront.docker.com");
    registry.put_blob("sha256:abc", "blob");
    let client = MockClient::over(registry);
    let res = fetch(&client, Method::GET).await;
    assert_eq!(res.status(), StatusCode::OK);
    let followed = res.extensions().get::<FollowedRedirect>().unwrap();
    assert_eq!(followed.hops(), 3);
    assert_eq!(followed.redirect_status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(body_string(res).await, "blob");
    let hosts: Vec<_> = client
        .requests()
        .iter()
        .map(|r| r.uri.split('/').nth(2).unwrap().to_owned())
        .collect();
    assert_eq!(
        hosts,
        [
            "registry.example",
            "production.cloudflare.docker.com",
            "production.cloudfront.docker.com",
            "docker-images-prod.abc.r2.cloudflarestorage.com"
        ]
    );
    assert!(client.requests()[1..]
        .iter()
        .all(|r| r.headers.get(AUTHORIZATION).is_none()));
    // The same chain with a limit of 2 is too long.
    let err = fetch_with(
        &client,
        SignedRedirectLayer::new().max_redirects(2),
        Method::GET,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooManyRedirects);
}

#[tokio::test]
async fn a_relative_location_from_the_registry_is_followed_on_its_origin() {
    // As Artifact Registry does: `Location: /artifacts-downloads/...` on the registry's host.
    let storage = FakeStorage::new().at("https://registry.example");
    let registry = FakeRegistry::new(storage.clone())
        .at("https://registry.example")
        .relative_location(true);
    registry.put_blob("sha256:abc", "blob");
    let client = MockClient::over(registry);
    let layer = SignedRedirectLayer::with_matcher(HostPatterns::new(["registry.example"]).unwrap());
    let res = fetch_with(&client, layer, Method::GET).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_string(res).await, "blob");
    let storage_hop = &storage.requests()[0];
    assert!(storage_hop.headers.get(AUTHORIZATION).is_none());
    assert!(client.requests()[1]
        .uri
        .starts_with("https://registry.example/registry/docker/"));
}

#[tokio::test]
async fn too_many_redirects_is_an_error() {
    const HOPS: &[&str] = &[
        "https://a.r2.cloudflarestorage.com/1",
        "https://a.r2.cloudflarestorage.com/2",
        "https://a.r2.cloudflarestorage.com/3",
        "https://a.r2.cloudflarestorage.com/4?X-Amz-Signature=5ecre7",
    ];
    let client = chain(HOPS);
    let err = fetch_with(
        &client,
        SignedRedirectLayer::new().max_redirects(3),
        Method::GET,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooManyRedirects);
    assert_eq!(client.requests().len(), 4);
    assert!(!format!("{err} {err:?}").contains("5ecre7"));
    let client = chain(HOPS);
    let res = fetch_with(
        &client,
        SignedRedirectLayer::new().max_redirects(4),
        Method::GET,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_loop_is_an_error() {
    const A: &str = "https://a.r2.cloudflarestorage.com/a";
    const B: &str = "https://b.r2.cloudflarestorage.com/b";
    let client = MockClient::new(|req| {
        Ok(match req.uri().to_string().as_str() {
            A => redirect(302, B),
            B => redirect(302, A),
            _ => redirect(307, A),
        })
    });
    let err = fetch_with(
        &client,
        SignedRedirectLayer::new().max_redirects(50),
        Method::GET,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RedirectLoop);
    assert_eq!(err.redacted_url(), Some(A));
    assert_eq!(client.requests().len(), 3);
}

#[tokio::test]
async fn https_to_http_downgrade_is_refused_unless_allowed() {
    // An https registry, storage on plain http (private storage, MinIO-style).
    let plain = FakeStorage::new().at("http://a.r2.cloudflarestorage.com");
    let registry = FakeRegistry::new(plain).at("https://registry.example");
    registry.put_blob("sha256:abc", "blob");
    let client = MockClient::over(registry);
    let err = fetch_with(&client, SignedRedirectLayer::new(), Method::GET)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Downgrade);
    let url = err.redacted_url().unwrap();
    assert!(
        url.starts_with("http://a.r2.cloudflarestorage.com/"),
        "{url}"
    );
    assert!(url.ends_with("X-Amz-Signature=REDACTED"), "{url}");
    assert_eq!(client.requests().len(), 1);

    let res = fetch_with(
        &client,
        SignedRedirectLayer::new().allow_https_downgrade(true),
        Method::GET,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn unusable_location_from_storage_is_an_error() {
    for location in [
        None,
        Some("ftp://a.r2.cloudflarestorage.com/x"),
        Some("http://[::1"),
    ] {
        let client = MockClient::new(move |req| {
            Ok(match req.uri().host() {
                Some("registry.example") => redirect(307, R2),
                _ => {
                    let mut res = response(302, "");
                    if let Some(l) = location {
                        res.headers_mut()
                            .insert("location", HeaderValue::from_static(l));
                    }
                    res
                }
            })
        });
        let err = fetch_with(&client, SignedRedirectLayer::new(), Method::GET)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLocation, "{location:?}");
        assert!(!format!("{err} {err:?}").contains("5ecre7"));
    }
}

#[tokio::test]
async fn storage_redirect_to_a_non_storage_host_is_returned_as_storage_sent_it() {
    let client = chain(&[R2, "https://elsewhere.example/x"]);
    let client2 = client.clone();
    let res = fetch(&client2, Method::GET).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["location"], "https://elsewhere.example/x");
    assert_eq!(
        res.extensions().get::<FollowedRedirect>().unwrap().hops(),
        1
    );
}

#[tokio::test]
async fn storage_error_responses_are_responses() {
    // URLs that expire as they are signed.
    let registry = FakeRegistry::new(FakeStorage::new())
        .at("https://registry.example")
        .expires_in(std::time::Duration::ZERO);
    registry.put_blob("sha256:abc", "blob");
    let client = MockClient::over(registry);
    let res = fetch(&client, Method::GET).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(body_string(res).await.contains("Request has expired"));
}

#[tokio::test]
async fn inner_failures_are_typed_and_redacted() {
    let client = MockClient::new(|req| match req.uri().host() {
        Some("registry.example") => Ok(redirect(307, R2)),
        _ => Err(MockError(format!(
            "connection reset while fetching {}",
            req.uri()
        ))),
    });
    let err = fetch_with(&client, SignedRedirectLayer::new(), Method::GET)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.starts_with("connection reset while fetching https://docker-images-prod"));
    for text in [err.to_string(), format!("{err:?}"), source] {
        assert!(!text.contains("5ecre7"), "{text}");
        assert!(!text.contains("AKIDEXAMPLE"), "{text}");
    }
    assert!(err.inner().unwrap().downcast_ref::<MockError>().is_some());

    let client = MockClient::new(|_| Err(MockError("dns error".into())));
    let err = fetch_with(&client, SignedRedirectLayer::new(), Method::GET)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Upstream);
    assert_eq!(err.redacted_url(), None);
}

/// A body that records whether it was read to its end.
struct TrackedBody {
    chunks: Vec<&'static str>,
    finished: Arc<AtomicBool>,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        if self.chunks.is_empty() {
            self.finished.store(true, Ordering::SeqCst);
            return std::task::Poll::Ready(None);
        }
        let chunk = self.chunks.remove(0);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk.into()))))
    }
}

#[tokio::test]
async fn the_redirect_body_is_drained_for_connection_reuse() {
    use http_body_util::BodyExt;
    let finished = Arc::new(AtomicBool::new(false));
    let flag = finished.clone();
    let client = MockClient::new(move |req| {
        Ok(match req.uri().host() {
            Some("registry.example") => {
                let body = TrackedBody {
                    chunks: vec!["<a href=\"...\">Temporary", " Redirect</a>."],
                    finished: flag.clone(),
                };
                let (parts, _) = redirect(307, R2).into_parts();
                http::Response::from_parts(parts, body.boxed())
            }
            _ => response(200, "blob"),
        })
    });
    let res = fetch(&client, Method::GET).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(finished.load(Ordering::SeqCst));
}

/// A client whose clones start not ready, and which panics if called before `poll_ready`
/// said ready.
#[derive(Default)]
struct ReadinessChecked {
    inner: Option<MockClient>,
    polls: u8,
    ready: bool,
}

impl Clone for ReadinessChecked {
    fn clone(&self) -> Self {
        ReadinessChecked {
            inner: self.inner.clone(),
            polls: 0,
            ready: false,
        }
    }
}

impl Service<Request<String>> for ReadinessChecked {
    type Response = http::Response<TestBody>;
    type Error = MockError;
    type Future = std::future::Ready<Result<Self::Response, MockError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), MockError>> {
        self.polls += 1;
        if self.polls == 1 {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        self.ready = true;
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        assert!(
            std::mem::take(&mut self.ready),
            "called before poll_ready returned Ready"
        );
        self.inner.as_mut().unwrap().call(req)
    }
}

#[tokio::test]
async fn readiness_is_respected_for_the_storage_hop() {
    let (mock, _) = docker_hub(307);
    let client = ReadinessChecked {
        inner: Some(mock.clone()),
        ..Default::default()
    };
    let res = SignedRedirect::new(client)
        .oneshot(credentialed_blob_request(Method::GET))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(mock.requests().len(), 2);
}

/// After storage refuses a cached URL, the caller's request goes upstream again from the
/// response future (`Resend`): through a fresh clone of the service, made ready first.
#[tokio::test]
async fn readiness_is_respected_when_a_refused_cached_url_is_asked_again() {
    let (mock, r2) = docker_hub(307);
    let client = ReadinessChecked {
        inner: Some(mock.clone()),
        ..Default::default()
    };
    let svc = SignedRedirect::new(client).redirect_cache(RedirectCache::new(16));
    let first = svc
        .clone()
        .oneshot(credentialed_blob_request(Method::GET))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);

    r2.revoke_signed_urls();
    let res = svc
        .oneshot(credentialed_blob_request(Method::GET))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res
        .extensions()
        .get::<FollowedRedirect>()
        .unwrap()
        .refreshed());
    assert_eq!(body_string(res).await, "blob");
    // Registry, storage; cached URL (refused), registry, storage.
    assert_eq!(mock.requests().len(), 5);
}

#[tokio::test]
async fn custom_matchers_and_combinators() {
    let matcher = HostPatterns::new(["*.r2.cloudflarestorage.com"])
        .unwrap()
        .and(tower_signed_redirect::matcher::predicate(
            |uri: &http::Uri| uri.path().starts_with("/registry/docker/"),
        ));
    let (client, _) = docker_hub(307);
    let res = fetch_with(
        &client,
        SignedRedirectLayer::with_matcher(matcher),
        Method::GET,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let never = tower_signed_redirect::matcher::WellKnownStorage::new().not();
    let (client, _) = docker_hub(307);
    let res = fetch_with(
        &client,
        SignedRedirectLayer::with_matcher(never),
        Method::GET,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
}

#[test]
fn debug_output_names_the_configuration() {
    let layer = SignedRedirectLayer::new().max_redirects(2);
    let text = format!("{layer:?}");
    assert!(text.contains("max_redirects: 2"), "{text}");
    assert!(
        text.contains("redirect_statuses: [301, 302, 303, 307, 308]"),
        "{text}"
    );
}
