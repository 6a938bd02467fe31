//! `registry-mirror`: a Docker Hub (and friends) pull-through mirror that follows blob
//! redirects to pre-signed storage URLs server-side, with `tower-signed-redirect`. The
//! binary is `src/main.rs`; this library is what it runs, and what the tests start on
//! loopback. The operator's guide is `README.md` beside this crate.
//!
//! A request's way, top to bottom, each step a room of its own ([`Mirror::handle`]):
//!
//! ```text
//! serve::server        accept, TLS, one worker per core
//!  └ http::service     the hyper service
//!     └ http::mirror   Mirror::handle:
//!        1 parse       http::paths          what the path asks for, which registry
//!        2 route       http::health         /healthz, /readyz, /metrics need no login
//!        3 who         auth::htpasswd       a login to the mirror (--htpasswd)
//!        4 caches      http::pull           the identity the caches key by (auth::issued),
//!                      http::manifest_pull  the manifest cache (cache::manifests),
//!                      http::blob_pull      the blob store (cache::store), which asks
//!                      http::store_access   who may read what it holds
//!        5 upstream    http::exchange       the registry's login (auth::logins), then
//!                      upstream::client     the layer, which consults the redirect cache
//!        6 response    http::answer         serve::body, serve::verify, serve::log
//! ```
//!
//! (`http` here is this crate's module; the `http` crate is what it is named for.)
//!
//! The rooms: [`api`] (the distribution API's grammar, the ground floor), [`options`],
//! [`metrics`], [`serve`] (what reaches the client: server, TLS, bodies, the log line,
//! registry errors), [`upstream`] (registries, the client with the layer, the SSRF guard),
//! [`auth`] (logins of every kind), [`cache`] (what the mirror keeps), [`http`] (the way a
//! request takes). Each imports only rooms listed before it.
//!
//! **Who chose the destination.** Every place that sends a credential says, in a comment
//! starting "Who chose the destination", who picked where it goes: the operator (flags),
//! a registry in its own challenge, never storage or a client.

#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod cache;
pub mod http;
pub mod metrics;
pub mod options;
pub mod serve;
pub mod upstream;

pub use http::{Mirror, MirrorService, Shared};
