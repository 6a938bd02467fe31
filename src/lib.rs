//! Follow registry redirects to pre-signed object-storage URLs, safely.
//!
//! Registries answer a blob download (`GET /v2/<name>/blobs/<digest>`) with a redirect
//! (`307`, sometimes 301/302/303/308) to a pre-signed URL on object storage or a CDN:
//! Cloudflare R2 for Docker Hub, S3 for ECR and Quay, Azure Blob for ACR and GHCR,
//! Google Cloud Storage for GCR. The signature is in the query and covers the method and the
//! URL's exact bytes. A proxy that follows such a redirect by replaying the client's request
//! breaks it:
//!
//! - the client's `Authorization` reaches storage: S3 answers `400 InvalidArgument: Only one
//!   auth mechanism allowed`, R2 answers `400 InvalidRequest: Missing x-amz-content-sha256`;
//! - a `HEAD` on a `GET`-signed URL fails the signature (`403`);
//! - re-encoding the URL (`+` → `%20`, `%2F` → `/`, dropping `:443`) fails it too.
//!
//! [`SignedRedirectLayer`] wraps an HTTP client [`Service`](tower_service::Service)
//! (hyper-util's `Client`, or anything with the same shape). When a `GET` or `HEAD` gets a
//! redirect whose `Location` a [`StorageMatcher`](matcher::StorageMatcher) accepts, it sends
//! a fresh request through a clone of the inner service:
//!
//! - to the `Location`'s exact bytes (a relative one resolved against the request URI);
//! - with no body, no extensions and only allowlisted headers (`User-Agent`, `Range`,
//!   `If-Range`, `Accept` by default; credentials can never be allowlisted);
//! - as a `GET` for a `GET`; for a `HEAD`, by default a `GET` of one byte answered as a
//!   `HEAD` with the blob's real `Content-Length`, falling back to a `HEAD` when the URL is
//!   signed for `HEAD` (see [`HeadStrategy`]);
//! - refusing `https` → `http` downgrades, loops and long chains with a typed [`Error`].
//!
//! Storage's response streams back to the caller, with a [`FollowedRedirect`] extension
//! describing what happened. Everything else passes through untouched. URLs in logs,
//! errors and `Debug` output are redacted ([`SignedUrl`]).
//!
//! # Example
//!
//! With hyper-util's client (any `Service<Request<B>, Response = Response<R>> + Clone` works;
//! here the in-memory Docker Hub and R2 of [`test_util`](#testing-your-stack)):
//!
//! ```
//! # use http::{Request, StatusCode};
//! # use tower_signed_redirect::test_util::{FakeRegistry, FakeStorage, Provider};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_signed_redirect::{FollowedRedirect, SignatureScheme, SignedRedirectLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let r2 = FakeStorage::new().at("https://docker-images-prod.abc.r2.cloudflarestorage.com").provider(Provider::R2);
//! # let client = FakeRegistry::new(r2).at("https://registry-1.docker.io").require_token("registry-token");
//! # client.put_blob("sha256:00", "layer bytes");
//! // let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
//! let client = ServiceBuilder::new()
//!     .layer(SignedRedirectLayer::new())
//!     .service(client);
//!
//! let req = Request::get("https://registry-1.docker.io/v2/library/alpine/blobs/sha256:00")
//!     .header("authorization", "Bearer registry-token")
//!     .body(String::new())
//!     .unwrap();
//! let res = client.oneshot(req).await.unwrap();
//!
//! assert_eq!(res.status(), StatusCode::OK);
//! let followed = res.extensions().get::<FollowedRedirect>().unwrap();
//! assert_eq!(followed.scheme(), SignatureScheme::AwsSigV4);
//! assert!(followed.storage_url().ends_with("X-Amz-Signature=REDACTED"));
//! # }
//! ```
//!
//! # Where the layer goes in a stack
//!
//! Every layer *between* this one and the client also sees the storage requests. Put
//! anything that adds credentials (an `Authorization` for the registry, a cookie), or that
//! replays requests with their headers, **outside** it: listed before it in a
//! `ServiceBuilder`. Timeouts and retries that only look at responses can go on either side;
//! inside (after it), a timeout bounds each hop. See the example below: the wrong order
//! sends the token to storage, which refuses it.
//!
//! # Testing your stack
//!
//! With the `test-util` feature, `test_util` has a registry and an object store that behave
//! like the real ones, in memory: `FakeStorage` enforces storage's
//! rules (one auth mechanism, the signed method and exact URL, expiry) with the providers'
//! own errors, and `FakeRegistry` redirects blob requests to URLs
//! it signed. The registry also answers for its storage's host, so it stands in for the
//! HTTP client under your stack; both record what they receive. A stack that adds the
//! registry token inside the layer fails against them, and passes with the token added
//! outside:
//!
//! ```
//! use http::header::{HeaderValue, AUTHORIZATION};
//! use http::{Method, Request, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_signed_redirect::test_util::{FakeRegistry, FakeStorage};
//! use tower_signed_redirect::SignedRedirectLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let storage = FakeStorage::new(); // S3's rules and errors
//! let registry = FakeRegistry::new(storage.clone()).require_token("t0ken");
//! registry.put_blob("sha256:00", "layer bytes");
//!
//! // The stack under test adds the registry token to its requests.
//! let add_token = |mut req: Request<String>| {
//!     req.headers_mut().insert(AUTHORIZATION, HeaderValue::from_static("Bearer t0ken"));
//!     req
//! };
//! let blob = |method| {
//!     Request::builder()
//!         .method(method)
//!         .uri("https://registry.test/v2/library/alpine/blobs/sha256:00")
//!         .body(String::new())
//!         .unwrap()
//! };
//!
//! let wrong = ServiceBuilder::new()
//!     .layer(SignedRedirectLayer::new())
//!     .map_request(add_token)
//!     .service(registry.clone());
//! let res = wrong.oneshot(blob(Method::GET)).await.unwrap();
//! assert_eq!(res.status(), StatusCode::BAD_REQUEST); // "Only one auth mechanism allowed"
//!
//! let right = ServiceBuilder::new()
//!     .map_request(add_token)
//!     .layer(SignedRedirectLayer::new())
//!     .service(registry.clone());
//! let res = right.clone().oneshot(blob(Method::GET)).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! // A HEAD on a URL signed for GET works too, and reports the blob's size.
//! let res = right.oneshot(blob(Method::HEAD)).await.unwrap();
//! assert_eq!(res.headers()["content-length"], "11");
//!
//! // Storage's records, to assert on.
//! assert!(storage.requests().iter().skip(1).all(|r| r.headers.get(AUTHORIZATION).is_none()));
//! # }
//! ```
//!
//! # The request body
//!
//! The layer makes the (empty) body of a storage request with `ReqBody::default()`, so the
//! inner service's request body must implement [`Default`]. `Empty`, `Full`, `String` and
//! http-body-util's `BoxBody` do; hyper's `Incoming` does not. A proxy that forwards the
//! bodies it receives boxes them:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{combinators::BoxBody, BodyExt};
//! use hyper::body::Incoming;
//! use hyper_util::client::legacy::{connect::HttpConnector, Client};
//! use hyper_util::rt::TokioExecutor;
//! use tower::ServiceExt;
//! use tower_signed_redirect::{Error, ResponseBody, SignedRedirect};
//!
//! type ProxyBody = BoxBody<Bytes, hyper::Error>;
//! type Upstream = SignedRedirect<Client<HttpConnector, ProxyBody>>;
//!
//! async fn forward(
//!     upstream: Upstream,
//!     req: http::Request<Incoming>,
//! ) -> Result<http::Response<ResponseBody<Incoming>>, Error> {
//!     upstream.oneshot(req.map(BodyExt::boxed)).await
//! }
//!
//! let upstream: Upstream =
//!     SignedRedirect::new(Client::builder(TokioExecutor::new()).build_http());
//! # let _ = (upstream, forward);
//! ```
//!
//! # Where things are
//!
//! Each rule has one file: the exact `Location` bytes and relative resolution in
//! `location.rs`; which request headers reach storage in `forward.rs`; how a `HEAD` is
//! answered in `head.rs`; which redirects are followed (statuses, the storage matcher, the
//! `https` → `http` refusal, the hop limit, loops) in `redirect.rs`; redaction of signed
//! URLs in `signed_url.rs`, and of inner errors in `error.rs`; what the redirect cache keeps
//! and for how long in `cache.rs`. `future.rs` is the state machine that applies them,
//! `drain.rs` the bounded read of bodies the caller never sees, `config.rs` the settings and
//! builder methods, `matcher/` the storage matchers.
//!
//! # Compared with tower-http's `FollowRedirect`
//!
//! `FollowRedirect` replays the request (method, headers, body) and leaves it to a policy
//! to remove sensitive headers on cross-origin hops; it follows any host. This layer only
//! follows to storage hosts, builds each storage request from scratch from an allowlist,
//! keeps the `Location` bytes exact, turns `HEAD` into something a `GET`-signed URL accepts,
//! and passes every other response through without cloning the request.

#![deny(missing_docs, unsafe_code, unreachable_pub)]
#![warn(rust_2018_idioms, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod cache;
mod config;
mod drain;
mod error;
mod extension;
mod forward;
mod future;
mod head;
mod layer;
mod location;
pub mod matcher;
mod redirect;
mod service;
pub mod signed_url;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

pub use body::ResponseBody;
pub use cache::{CacheIdentity, RedirectCache, DEFAULT_EXPIRY_MARGIN};
pub use error::{BoxError, Error, ErrorKind};
pub use extension::FollowedRedirect;
pub use forward::MAX_FORWARDED_HEADERS;
pub use future::ResponseFuture;
pub use head::HeadStrategy;
pub use layer::SignedRedirectLayer;
pub use redirect::DEFAULT_MAX_REDIRECTS;
pub use service::SignedRedirect;
pub use signed_url::{SignatureScheme, SignedUrl};

/// Internals exposed for the fuzz targets in `fuzz/`. Not a public API: compiled only with
/// `--cfg fuzzing` (which `cargo fuzz` passes), and may change at any time.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use http::{HeaderValue, Uri};

    /// [`Location`](http::header::LOCATION) resolution as the layer does it.
    pub fn resolve_location(base: &Uri, location: &HeaderValue) -> Option<Uri> {
        crate::location::resolve(base, location)
    }
}

/// Lists written out in prose (README, SECURITY.md, rustdoc) name what the code's constants
/// hold: a name added to the code and not to the prose, or the other way round, fails here.
#[cfg(test)]
mod prose_agrees_with_code {
    const README: &str = include_str!("../README.md");
    const SECURITY: &str = include_str!("../SECURITY.md");
    const BUILDER_DOCS: &str = include_str!("config.rs");
    const SIGNED_URL_DOCS: &str = include_str!("signed_url.rs");
    const WELL_KNOWN_DOCS: &str = include_str!("matcher/well_known.rs");

    /// `name` appears in `text` as a word of its own, in any letter case.
    fn mentions(text: &str, name: &str) -> bool {
        let (text, name) = (text.to_ascii_lowercase(), name.to_ascii_lowercase());
        text.match_indices(&name).any(|(i, _)| {
            let word = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-');
            !word(i.checked_sub(1).and_then(|j| text.as_bytes().get(j)))
                && !word(text.as_bytes().get(i + name.len()))
        })
    }

    fn assert_all_mentioned(names: &[&str], docs: &[(&str, &str)]) {
        for name in names {
            for (doc, text) in docs {
                assert!(mentions(text, name), "{doc} does not mention {name}");
            }
        }
    }

    #[test]
    fn never_forwarded_headers() {
        let exact: Vec<&str> = crate::forward::NEVER_FORWARDED
            .iter()
            .map(|(n, _)| *n)
            .collect();
        let prefixes: Vec<String> = crate::forward::NEVER_FORWARDED_PREFIXES
            .iter()
            .map(|(p, _)| format!("{p}*"))
            .collect();
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let docs = [
            ("README.md", README),
            ("SECURITY.md", SECURITY),
            ("the forward_headers docs", BUILDER_DOCS),
        ];
        assert_all_mentioned(&exact, &docs);
        for prefix in prefixes {
            for (doc, text) in docs {
                assert!(
                    text.to_ascii_lowercase().contains(prefix),
                    "{doc} does not mention {prefix}"
                );
            }
        }
    }

    #[test]
    fn secret_query_parameters() {
        let docs = [
            ("SECURITY.md", SECURITY),
            ("SignedUrl's docs", SIGNED_URL_DOCS),
        ];
        assert_all_mentioned(crate::signed_url::SECRET_PARAMS, &docs);
    }

    #[test]
    fn well_known_storage_hosts() {
        let docs = [
            ("README.md", README),
            ("WellKnownStorage's docs", WELL_KNOWN_DOCS),
        ];
        assert_all_mentioned(crate::matcher::well_known::EXACT, &docs);
        let suffixes: Vec<String> = crate::matcher::well_known::SUBDOMAINS_OF
            .iter()
            .map(|s| format!("*.{s}"))
            .collect();
        for suffix in &suffixes {
            for (doc, text) in docs {
                assert!(
                    text.contains(suffix.as_str()),
                    "{doc} does not mention {suffix}"
                );
            }
        }
    }
}
