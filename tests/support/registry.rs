//! A registry-like upstream on loopback: requires a Bearer token and answers blob `GET` and
//! `HEAD` with a `307` to wherever the test says (a pre-signed store URL, a CDN hop...).

use super::net::{self, ServerBody};
use http::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub const TOKEN: &str = "registry-test-token";

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Where the store keeps a blob, as CNCF distribution lays it out.
pub fn blob_key(digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2])
}

/// A manifest the registry serves for every tag.
pub const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":2},"layers":[]}"#;

/// Requests the registry received: method, path and query, headers.
pub type RegistryLog = Arc<Mutex<Vec<(Method, String, http::HeaderMap)>>>;

/// Starts the registry. `locate(method, digest)` gives the redirect target of a blob, or
/// `None` for an unknown blob.
pub async fn start<L>(locate: L) -> SocketAddr
where
    L: Fn(&Method, &str) -> Option<String> + Send + Sync + 'static,
{
    start_with_realm("http://auth.invalid/token".into(), locate)
        .await
        .0
}

/// [`start`], with the token service its challenges name, and a log of what it received.
pub async fn start_with_realm<L>(realm: String, locate: L) -> (SocketAddr, RegistryLog)
where
    L: Fn(&Method, &str) -> Option<String> + Send + Sync + 'static,
{
    let locate = Arc::new(locate);
    let log: RegistryLog = Arc::default();
    let seen = log.clone();
    let addr = net::serve(move |req: Request<hyper::body::Incoming>| {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        seen.lock()
            .unwrap()
            .push((req.method().clone(), target, req.headers().clone()));
        let answer = answer(&req, &realm, &*locate);
        async move { answer }
    })
    .await;
    (addr, log)
}

fn answer(
    req: &Request<hyper::body::Incoming>,
    realm: &str,
    locate: &dyn Fn(&Method, &str) -> Option<String>,
) -> Response<ServerBody> {
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
    if !authorized {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(
                "www-authenticate",
                format!("Bearer realm=\"{realm}\",service=\"registry.test\""),
            )
            .body(net::full(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            ))
            .unwrap();
    }
    let path = req.uri().path();
    if path == "/v2/" {
        return Response::builder()
            .header("content-type", "application/json")
            .body(net::full("{}"))
            .unwrap();
    }
    if let Some(name) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.split_once("/manifests/"))
        .map(|(n, _)| n)
    {
        let body = if req.method() == Method::HEAD {
            net::empty()
        } else {
            net::full(MANIFEST)
        };
        return Response::builder()
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .header("content-length", MANIFEST.len())
            .header("docker-content-digest", digest(MANIFEST.as_bytes()))
            .header("x-repository", name)
            .body(body)
            .unwrap();
    }
    let digest = path
        .strip_prefix("/v2/")
        .and_then(|p| p.rsplit_once("/blobs/"))
        .map(|(_, d)| d.to_owned());
    match (
        req.method(),
        digest.and_then(|d| locate(req.method(), &d).map(|l| (d, l))),
    ) {
        (&Method::GET | &Method::HEAD, Some((digest, location))) => {
            // CNCF distribution's redirect: a small HTML body for GET.
            let body = if req.method() == Method::GET {
                net::full(format!(
                    "<a href=\"{}\">Temporary Redirect</a>.\n\n",
                    location.replace('&', "&amp;")
                ))
            } else {
                net::empty()
            };
            Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", location)
                .header("docker-content-digest", digest)
                .body(body)
                .unwrap()
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(net::full(
                r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
            ))
            .unwrap(),
    }
}

/// A blob request to the loopback `registry` as a registry proxy sends it upstream: the
/// registry's token, a client's `User-Agent`, and a cookie that must never reach storage.
pub fn blob_request_to(
    registry: SocketAddr,
    method: Method,
    digest: &str,
) -> Request<http_body_util::Empty<bytes::Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://{registry}/v2/library/test/blobs/{digest}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("user-agent", "containerd/2.0 (test)")
        .header("accept", "*/*")
        .header("cookie", "session=should-never-leave")
        .body(http_body_util::Empty::new())
        .unwrap()
}
