//! A registry-like upstream on loopback: requires a Bearer token and answers blob `GET` and
//! `HEAD` with a `307` to wherever the test says (a pre-signed store URL, a CDN hop...).

use super::net::{self, ServerBody};
use http::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

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

/// Starts the registry. `locate(method, digest)` gives the redirect target of a blob, or
/// `None` for an unknown blob.
pub async fn start<L>(locate: L) -> SocketAddr
where
    L: Fn(&Method, &str) -> Option<String> + Send + Sync + 'static,
{
    let locate = std::sync::Arc::new(locate);
    net::serve(move |req: Request<hyper::body::Incoming>| {
        let answer = answer(&req, &*locate);
        async move { answer }
    })
    .await
}

fn answer(
    req: &Request<hyper::body::Incoming>,
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
                "Bearer realm=\"http://auth.invalid/token\",service=\"registry\"",
            )
            .body(net::full(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            ))
            .unwrap();
    }
    let path = req.uri().path();
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

/// A blob request as a registry proxy sends it upstream.
pub fn blob_request(
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
