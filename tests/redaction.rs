//! No signature or credential reaches a log line or an error message.

mod support;

use http::Method;
use support::logs::LogSink;
use support::mock::*;
use tower::ServiceExt;
use tower_signed_redirect::{RedirectCache, SignedRedirectLayer};

/// Every credential the scenarios carry: X-Amz-Signature, X-Amz-Credential,
/// X-Amz-Security-Token, CloudFront and SigV2 `Signature`, Azure `sig`, X-Goog-Signature,
/// Cloudflare `verify`, userinfo, and the client's Authorization, Proxy-Authorization and
/// Cookie values.
const SECRETS: &[&str] = &[
    "5ecre7sig",
    "AKIDSECRET",
    "T0KEN",
    "cfsig~sig",
    "v2sigvalue",
    "azsig",
    "googsig0123",
    "cfmac",
    "pa55",
    "registry-token",
    "cHJveHk6c2VjcmV0",
    "session=1",
];

/// Each scenario: what the registry redirects to, and what that storage hop does.
fn scenarios() -> Vec<(&'static str, MockClient)> {
    let r2 = "https://a.r2.cloudflarestorage.com/b?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDSECRET%2F20240101&X-Amz-Security-Token=T0KEN&X-Amz-Signature=5ecre7sig";
    let cf = "https://production.cloudflare.docker.com/b?verify=1700000000-cfmac";
    let az = "https://user:pa55@x.blob.core.windows.net/b?sv=1&sig=azsig";
    let plain = "http://a.r2.cloudflarestorage.com/b?X-Amz-Signature=5ecre7sig";
    let elsewhere = "https://evil.example/b?X-Amz-Signature=5ecre7sig";
    let cloudfront =
        "https://d1.cloudfront.net/b?Expires=1700000000&Signature=cfsig~sig&Key-Pair-Id=K2";
    let sigv2 = "https://bucket.s3.amazonaws.com/b?AWSAccessKeyId=AKIDSECRET&Expires=1700000000&Signature=v2sigvalue";
    let gcs = "https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=AKIDSECRET&X-Goog-Signature=googsig0123";
    let chain = "https://a.r2.cloudflarestorage.com/0?X-Amz-Signature=5ecre7sig";
    let hop =
        |to: &'static str,
         then: fn(&http::Request<String>) -> Result<http::Response<TestBody>, MockError>| {
            MockClient::new(move |req| match req.uri().host() {
                Some("registry.example") => Ok(redirect(307, to)),
                _ => then(req),
            })
        };
    vec![
        ("followed", hop(r2, |_| Ok(response(200, "blob")))),
        (
            "cloudfront storage error",
            hop(cloudfront, |req| {
                Err(MockError(format!("tls: {}", req.uri())))
            }),
        ),
        (
            "sigv2 storage error",
            hop(sigv2, |req| Err(MockError(format!("dns: {:?}", req.uri())))),
        ),
        (
            "gcs storage error",
            hop(gcs, |req| Err(MockError(format!("timeout {}", req.uri())))),
        ),
        (
            "too many redirects",
            hop(chain, |req| {
                let n: u32 = req
                    .uri()
                    .path()
                    .trim_start_matches('/')
                    .parse()
                    .unwrap_or(0);
                Ok(redirect(
                    302,
                    &format!("/{}?X-Amz-Signature=5ecre7sig", n + 1),
                ))
            }),
        ),
        (
            "upstream error",
            MockClient::new(|_| Err(MockError("connection refused".into()))),
        ),
        (
            "followed cloudflare",
            hop(cf, |_| Ok(response(200, "blob"))),
        ),
        ("followed azure", hop(az, |_| Ok(response(200, "blob")))),
        (
            "storage error",
            hop(r2, |req| Err(MockError(format!("reset: {}", req.uri())))),
        ),
        ("downgrade", hop(plain, |_| Ok(response(200, "blob")))),
        (
            "pass-through",
            hop(elsewhere, |_| Ok(response(200, "blob"))),
        ),
        (
            "loop",
            hop(r2, |req| Ok(redirect(302, &req.uri().to_string()))),
        ),
        (
            "bad location",
            hop(cf, |_| {
                Ok(redirect(302, "ftp://x.r2.cloudflarestorage.com/?sig=azsig"))
            }),
        ),
        (
            "head fallback",
            hop(az, |req| {
                Ok(if req.method() == Method::GET {
                    response(403, "")
                } else {
                    response(200, "")
                })
            }),
        ),
    ]
}

#[test]
fn tracing_events_and_errors_never_contain_secrets() {
    let out = LogSink::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let mut errors = String::new();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (name, client) in scenarios() {
            // With a redirect cache that keeps every URL, each request runs twice: the
            // second goes to storage from the cache.
            let cache = RedirectCache::new(16).max_age(std::time::Duration::from_secs(60));
            let layer = SignedRedirectLayer::new().redirect_cache(cache.clone());
            for method in [Method::GET, Method::HEAD, Method::GET, Method::HEAD] {
                let req = credentialed_blob_request(method);
                let result = rt.block_on(
                    tower::ServiceBuilder::new()
                        .layer(layer.clone())
                        .service(client.clone())
                        .oneshot(req),
                );
                errors.push_str(&format!("{name}: {cache:?}\n"));
                match result {
                    Ok(res) => {
                        if let Some(f) = res
                            .extensions()
                            .get::<tower_signed_redirect::FollowedRedirect>()
                        {
                            errors.push_str(&format!("{name}: {f:?}\n"));
                        }
                    }
                    Err(e) => {
                        errors.push_str(&format!(
                            "{name}: {e} / {e:?} / {}\n",
                            std::error::Error::source(&e)
                                .map(|s| s.to_string())
                                .unwrap_or_default()
                        ));
                    }
                }
            }
        }
    });
    let logs = out.text();
    // The scenarios did produce the events and errors this test is about.
    for expected in [
        "following redirect to storage",
        "passing redirect through",
        "storage answered",
        "range probe rejected",
        "going to storage with a cached URL",
    ] {
        assert!(logs.contains(expected), "no {expected:?} event in:\n{logs}");
    }
    for expected in [
        "storage request failed",
        "refused https to http",
        "storage redirect loop",
        "unusable Location",
        "X-Amz-Signature=REDACTED",
    ] {
        assert!(errors.contains(expected), "no {expected:?} in:\n{errors}");
    }
    for secret in SECRETS {
        assert!(!logs.contains(secret), "{secret} in logs:\n{logs}");
        assert!(!errors.contains(secret), "{secret} in errors:\n{errors}");
    }
}
