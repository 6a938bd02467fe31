//! The distribution API's vocabulary, the ground floor every other room stands on: the pull
//! paths the mirror forwards, checked against the OCI grammar ([`path`]), and what a request
//! is for ([`Route`]), and the header content's digest travels in
//! ([`DOCKER_CONTENT_DIGEST`]).

pub mod path;
mod route;

pub use route::Route;

/// The header registries name a manifest's or a blob's digest with.
pub const DOCKER_CONTENT_DIGEST: http::HeaderName =
    http::HeaderName::from_static("docker-content-digest");
