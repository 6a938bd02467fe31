//! The `test-util` fakes hold storage's rules, each switchable, and play a registry that
//! redirects as real ones do: what a user's tests will lean on.

mod support;

use http::header::{AUTHORIZATION, CONTENT_RANGE, LOCATION, RANGE};
use http::{Method, Request, StatusCode, Uri};
use std::time::{Duration, SystemTime};
use support::body_string;
use tower::ServiceExt;
use tower_signed_redirect::test_util::{FakeRegistry, FakeStorage, Provider, Signing, StorageRule};
use tower_signed_redirect::{SignatureScheme, SignedRedirectLayer, SignedUrl};

const BLOB: &str = "0123456789";

fn store(storage: FakeStorage) -> FakeStorage {
    storage.put("/b/blob", BLOB);
    storage
}

fn request(method: Method, uri: &Uri) -> Request<String> {
    Request::builder()
        .method(method)
        .uri(uri.clone())
        .body(String::new())
        .unwrap()
}

async fn send(storage: &FakeStorage, req: Request<String>) -> (StatusCode, String) {
    let res = storage.clone().oneshot(req).await.unwrap();
    (res.status(), body_string(res).await)
}

fn a_day() -> Duration {
    Duration::from_secs(86_400)
}

#[tokio::test]
async fn a_signed_url_serves_the_object_and_reads_as_sigv4() {
    let storage = store(FakeStorage::new());
    let url = storage.sign(&Method::GET, "/b/blob", a_day());
    let signed = SignedUrl::new(&url);
    assert_eq!(signed.scheme(), SignatureScheme::AwsSigV4);
    let expires = signed.expires_at().unwrap();
    assert!(expires > SystemTime::now() + Duration::from_secs(86_000));
    assert_eq!(
        send(&storage, request(Method::GET, &url)).await,
        (StatusCode::OK, BLOB.into())
    );
    let unsigned: Uri = format!("{}/b/blob", storage.origin()).parse().unwrap();
    assert_eq!(
        send(&storage, request(Method::GET, &unsigned)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(storage.requests().len(), 2);
}

#[tokio::test]
async fn a_second_auth_mechanism_gets_the_providers_error_unless_switched_off() {
    for (provider, expected) in [
        (
            Provider::S3,
            "<Code>InvalidArgument</Code><Message>Only one auth mechanism allowed",
        ),
        (
            Provider::R2,
            "<Code>InvalidRequest</Code><Message>Missing x-amz-content-sha256",
        ),
    ] {
        let storage = store(FakeStorage::new().provider(provider));
        let url = storage.sign(&Method::GET, "/b/blob", a_day());
        let mut req = request(Method::GET, &url);
        req.headers_mut()
            .insert(AUTHORIZATION, "Bearer t".parse().unwrap());
        let (status, body) = send(&storage, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains(expected), "{body}");

        let lax = storage
            .clone()
            .enforce(StorageRule::OneAuthMechanism, false);
        let mut req = request(Method::GET, &url);
        req.headers_mut()
            .insert(AUTHORIZATION, "Bearer t".parse().unwrap());
        assert_eq!(send(&lax, req).await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn the_signed_method_and_the_exact_bytes_are_checked() {
    let storage = store(FakeStorage::new());
    let url = storage.sign(&Method::GET, "/b/blob", a_day());
    let (status, body) = send(&storage, request(Method::HEAD, &url)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");
    let lax = storage.clone().enforce(StorageRule::SignedMethod, false);
    assert_eq!(
        send(&lax, request(Method::HEAD, &url)).await.0,
        StatusCode::OK
    );

    // One byte different, `%2F` decoded: as a re-encoding proxy would send it.
    let reencoded: Uri = url.to_string().replace("%2F", "/").parse().unwrap();
    let (status, body) = send(&storage, request(Method::GET, &reencoded)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");
    let lax = storage.clone().enforce(StorageRule::SignedUrl, false);
    assert_eq!(
        send(&lax, request(Method::GET, &reencoded)).await.0,
        StatusCode::OK
    );

    // A signature the store never issued.
    let forged: Uri = url
        .to_string()
        .replace("X-Amz-Signature=", "X-Amz-Signature=0")
        .parse()
        .unwrap();
    assert_eq!(
        send(&storage, request(Method::GET, &forged)).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn an_expired_url_is_refused_unless_switched_off() {
    let storage = store(FakeStorage::new());
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let url = storage.sign_at(
        &Method::GET,
        "/b/blob",
        an_hour_ago,
        Duration::from_secs(60),
    );
    let (status, body) = send(&storage, request(Method::GET, &url)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("<Code>AccessDenied</Code><Message>Request has expired"),
        "{body}"
    );
    let lax = storage.enforce(StorageRule::Expiry, false);
    assert_eq!(
        send(&lax, request(Method::GET, &url)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unsigned_amz_headers_are_refused_unless_switched_off() {
    let storage = store(FakeStorage::new());
    let url = storage.sign(&Method::GET, "/b/blob", a_day());
    let mut req = request(Method::GET, &url);
    req.headers_mut()
        .insert("x-amz-content-sha256", "UNSIGNED-PAYLOAD".parse().unwrap());
    let (status, body) = send(&storage, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("not signed"), "{body}");
    let lax = storage.enforce(StorageRule::UnsignedHeaders, false);
    let mut req = request(Method::GET, &url);
    req.headers_mut()
        .insert("x-amz-content-sha256", "UNSIGNED-PAYLOAD".parse().unwrap());
    assert_eq!(send(&lax, req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn ranges_are_honoured() {
    let storage = store(FakeStorage::new());
    let url = storage.sign(&Method::GET, "/b/blob", a_day());
    let ranged = |range: &'static str| {
        let mut req = request(Method::GET, &url);
        req.headers_mut().insert(RANGE, range.parse().unwrap());
        storage.clone().oneshot(req)
    };
    let res = ranged("bytes=2-4").await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[CONTENT_RANGE], "bytes 2-4/10");
    assert_eq!(body_string(res).await, "234");
    let res = ranged("bytes=10-").await.unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers()[CONTENT_RANGE], "bytes */10");
    // HEAD: the headers of a GET, no body.
    let url = storage.sign(&Method::HEAD, "/b/blob", a_day());
    let res = storage
        .clone()
        .oneshot(request(Method::HEAD, &url))
        .await
        .unwrap();
    assert_eq!(res.headers()["content-length"], "10");
    assert_eq!(body_string(res).await, "");
}

#[tokio::test]
async fn the_registry_signs_for_get_or_for_the_requests_method() {
    for signing in [Signing::GetOnly, Signing::RequestMethod] {
        let storage = FakeStorage::new();
        let registry = FakeRegistry::new(storage.clone()).signing(signing);
        registry.put_blob("sha256:00", BLOB);
        let head = Request::head("https://registry.test/v2/x/blobs/sha256:00")
            .body(String::new())
            .unwrap();
        let res = registry.clone().oneshot(head).await.unwrap();
        assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
        let location: Uri = res.headers()[LOCATION].to_str().unwrap().parse().unwrap();
        // Following the HEAD's redirect with a HEAD works only if it was signed for HEAD.
        let status = registry
            .clone()
            .oneshot(request(Method::HEAD, &location))
            .await
            .unwrap()
            .status();
        let expected = match signing {
            Signing::GetOnly => StatusCode::FORBIDDEN,
            _ => StatusCode::OK,
        };
        assert_eq!(status, expected, "{signing:?}");
        assert_eq!(
            storage.requests().len(),
            1,
            "the registry handed storage's request on"
        );
    }
}

#[tokio::test]
async fn the_registry_asks_for_its_token_and_knows_only_its_blobs() {
    let registry = FakeRegistry::new(FakeStorage::new())
        .require_token("t0ken")
        .redirect_status(StatusCode::FOUND);
    registry.put_blob("sha256:00", BLOB);
    let get = |path: &str, token: Option<&str>| {
        let mut req = Request::get(format!("https://registry.test{path}"));
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        registry.clone().oneshot(req.body(String::new()).unwrap())
    };
    let res = get("/v2/", None).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"https://registry.test/token\",service=\"registry.test\""
    );
    assert_eq!(
        get("/v2/", Some("t0ken")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        get("/v2/x/blobs/sha256:00", Some("t0ken"))
            .await
            .unwrap()
            .status(),
        StatusCode::FOUND
    );
    assert_eq!(
        get("/v2/x/blobs/sha256:11", Some("t0ken"))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let err = registry
        .clone()
        .oneshot(
            Request::get("https://elsewhere.example/")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no fake service answers for host \"elsewhere.example\""
    );
    assert_eq!(registry.requests().len(), 5);
}

#[tokio::test]
async fn under_the_layer_a_cdn_chain_reaches_storage() {
    let storage = FakeStorage::new();
    let registry = FakeRegistry::new(storage.clone())
        .cdn("https://d111111abcdef8.cloudfront.net")
        .signing(Signing::RequestMethod);
    registry.put_blob("sha256:00", BLOB);
    let svc = tower::Layer::layer(&SignedRedirectLayer::new(), registry.clone());
    let res = svc
        .oneshot(
            Request::get("https://registry.test/v2/x/blobs/sha256:00")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_string(res).await, BLOB);
    assert_eq!(registry.requests().len(), 3, "registry, CDN, storage");
}
