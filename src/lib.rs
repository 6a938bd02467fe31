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
//! With hyper-util's client (any `Service<Request<B>, Response = Response<R>> + Clone` works,
//! here a mock registry and storage):
//!
//! ```
//! # use std::convert::Infallible;
//! # use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_signed_redirect::{FollowedRedirect, SignatureScheme, SignedRedirectLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let client = tower::service_fn(|req: Request<String>| async move {
//! #     let res = match req.uri().host() {
//! #         Some("registry-1.docker.io") => Response::builder().status(307).header(
//! #             "location",
//! #             "https://docker-images-prod.abc.r2.cloudflarestorage.com/registry-v2/blob/data\
//! #              ?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00ff",
//! #         ),
//! #         _ if req.headers().contains_key("authorization") => Response::builder().status(400),
//! #         _ => Response::builder(),
//! #     };
//! #     Ok::<_, Infallible>(res.body(String::from("layer bytes")).unwrap())
//! # });
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
//! # Compared with tower-http's `FollowRedirect`
//!
//! `FollowRedirect` replays the request (method, headers, body) and leaves it to a policy
//! to remove sensitive headers on cross-origin hops; it follows any host. This layer only
//! follows to storage hosts, builds each storage request from scratch from an allowlist,
//! keeps the `Location` bytes exact, turns `HEAD` into something a `GET`-signed URL accepts,
//! and passes every other response through without cloning the request.

#![deny(missing_docs, unsafe_code, unreachable_pub)]
#![warn(rust_2018_idioms, missing_debug_implementations)]

mod body;
mod config;
mod error;
mod extension;
mod future;
mod layer;
mod location;
pub mod matcher;
mod service;
pub mod signed_url;

pub use body::ResponseBody;
pub use config::{HeadStrategy, DEFAULT_MAX_REDIRECTS, MAX_FORWARDED_HEADERS};
pub use error::{BoxError, Error, ErrorKind};
pub use extension::FollowedRedirect;
pub use future::ResponseFuture;
pub use layer::SignedRedirectLayer;
pub use service::SignedRedirect;
pub use signed_url::{SignatureScheme, SignedUrl};

/// Internals exposed for the fuzz targets in `fuzz/`. Not a public API: enabled only by the
/// `fuzzing` feature, and may change at any time.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use http::{HeaderValue, Uri};

    /// [`Location`](http::header::LOCATION) resolution as the layer does it.
    pub fn resolve_location(base: &Uri, location: &HeaderValue) -> Option<Uri> {
        crate::location::resolve(base, location)
    }
}
