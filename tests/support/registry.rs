//! A registry on loopback: `test_util::FakeRegistry` served over HTTP/1.1, redirecting blob
//! `GET` and `HEAD` to wherever the test says (a URL pre-signed by the real S3 store, a CDN
//! hop...). It requires the Bearer [`TOKEN`].

use super::net::{self, ServerBody};
use http::Method;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use tower::ServiceExt;
use tower_signed_redirect::test_util::{FakeRegistry, Signing};

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

/// The manifest the registry serves for the repositories the tests pull.
pub const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":2},"layers":[]}"#;

/// Starts a registry that redirects a blob request to `locate(GET, digest)` (`None`: an
/// unknown blob).
pub async fn start<L>(locate: L) -> SocketAddr
where
    L: Fn(&Method, &str) -> Option<String> + Send + Sync + 'static,
{
    start_with("http://auth.invalid/token", Signing::GetOnly, locate)
        .await
        .0
}

/// A registry whose challenges name the token service `realm`, signing as `signing` says
/// (`locate` gets the method to sign for). Returns its address and the fake, whose records
/// say what it received.
pub async fn start_with<L>(realm: &str, signing: Signing, locate: L) -> (SocketAddr, FakeRegistry)
where
    L: Fn(&Method, &str) -> Option<String> + Send + Sync + 'static,
{
    let registry = FakeRegistry::redirecting_to(locate)
        .signing(signing)
        .require_token(TOKEN)
        .realm(realm);
    for repository in ["library/alpine", "user/app", "owner/app"] {
        for tag in ["latest", "v1"] {
            registry.put_manifest(
                repository,
                tag,
                "application/vnd.oci.image.manifest.v1+json",
                MANIFEST,
            );
        }
    }
    (serve(registry.clone()).await, registry)
}

/// Serves a fake over loopback.
pub async fn serve(registry: FakeRegistry) -> SocketAddr {
    net::serve(move |req: http::Request<hyper::body::Incoming>| {
        let answer = registry.clone().oneshot(req.map(|_| ()));
        async move {
            match answer.await {
                Ok(res) => res.map(|body| -> ServerBody { body.map_err(|e| match e {}).boxed() }),
                Err(e) => http::Response::builder()
                    .status(502)
                    .body(net::full(e.to_string()))
                    .unwrap(),
            }
        }
    })
    .await
}

/// A blob request to the loopback `registry` as a registry proxy sends it upstream: the
/// registry's token, a client's `User-Agent`, and a cookie that must never reach storage.
pub fn blob_request_to(
    registry: SocketAddr,
    method: Method,
    digest: &str,
) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://{registry}/v2/library/test/blobs/{digest}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("user-agent", "containerd/2.0 (test)")
        .header("accept", "*/*")
        .header("cookie", "session=should-never-leave")
        .body(http_body_util::Empty::new())
        .unwrap()
}
