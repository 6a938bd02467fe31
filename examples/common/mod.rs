//! The registry mirror both examples serve. Framework-free: [`Mirror::handle`] takes a
//! request's `http::request::Parts` and returns an `http::Response`, so axum and plain hyper
//! serve the same code.
//!
//! In the order a reader wants them:
//! - `client.rs`: the upstream client, hyper-util + rustls + timeouts +
//!   `SignedRedirectLayer` (what this crate is for);
//! - `routes.rs`: what each path does, and which upstream a request is for;
//! - `proxy.rs`: one request upstream and its answer back;
//! - `token.rs`: the Bearer token flow through the mirror;
//! - `errors.rs`: registry-style errors, and upstream failures as 502/504;
//! - `server.rs`: the workers, the accept loop and shutdown; `tuning.rs`: their runtime,
//!   socket and hyper settings;
//! - `body.rs` (idle timeout, per-request log line), `options.rs` (flags and environment),
//!   `upstream.rs` (upstream registries).

pub mod body;
pub mod client;
pub mod errors;
pub mod options;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod token;
pub mod tuning;
pub mod upstream;

use client::UpstreamClient;
use options::Options;
use std::sync::Arc;
use std::time::Duration;
use upstream::Upstream;

pub struct Mirror {
    /// The first is the default.
    upstreams: Vec<Arc<Upstream>>,
    client: UpstreamClient,
    idle_timeout: Duration,
}

impl Mirror {
    pub fn from_options(options: &Options) -> Result<Mirror, String> {
        let upstreams = options
            .upstreams
            .iter()
            .map(|u| Upstream::parse(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        if upstreams.is_empty() {
            return Err("at least one --upstream is needed".into());
        }
        Ok(Mirror {
            upstreams,
            client: UpstreamClient::new(options)?,
            idle_timeout: options.idle_timeout,
        })
    }
}
