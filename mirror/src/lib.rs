//! `registry-mirror`: a Docker Hub (and friends) pull-through mirror that follows blob
//! redirects to pre-signed storage URLs server-side, with `tower-signed-redirect`. The
//! binary is `src/main.rs`; this library is what it runs, and what the tests start on
//! loopback. The operator's guide is `README.md` beside this crate.
//!
//! [`Mirror::handle`] is framework-free: it takes a request's `http::request::Parts` and
//! returns an `http::Response`; `app.rs` makes it a hyper service.
//!
//! In the order a reader wants them:
//! - `client.rs`: the upstream client, hyper-util + rustls + timeouts +
//!   `SignedRedirectLayer` (what this crate is for); `guard.rs`: where storage hops may
//!   connect;
//! - `routes.rs`: what each path does, and which upstream a request is for; `api.rs`: the
//!   distribution API's paths, the only ones forwarded;
//! - `proxy.rs`: one request upstream and its answer back; `manifests.rs`: the manifest
//!   cache (bounded, per identity, one fetch per key at a time);
//! - `token.rs`: the Bearer token flow through the mirror (clients' own logins);
//!   `credentials.rs`: the mirror's own logins; `htpasswd.rs`: clients' logins to the mirror;
//! - `errors.rs`: registry-style errors, and upstream failures as 502/504;
//! - `metrics.rs`: Prometheus metrics; `verify.rs`: `--verify-digests`;
//! - `app.rs`: the mirror as a hyper service; `server.rs`: the workers, the accept loop
//!   (with `tls.rs`) and shutdown; `tuning.rs`: their runtime, socket and hyper settings;
//! - `body.rs` (idle timeout, per-request log line), `options.rs` (flags and environment),
//!   `upstream.rs` (upstream registries).

#![deny(missing_docs)]

pub mod api;
pub mod app;
pub mod body;
pub mod client;
pub mod credentials;
pub mod errors;
pub mod guard;
pub mod htpasswd;
pub mod manifests;
pub mod metrics;
pub mod options;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod tls;
pub mod token;
pub mod tuning;
pub mod upstream;
pub mod verify;

/// The error type of bodies and upstream calls, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

use client::{TokenClient, UpstreamClient};
use credentials::{Login, Tokens};
use htpasswd::Users;
use metrics::Metrics;
use options::Options;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower_signed_redirect::{CacheIdentity, RedirectCache};
use upstream::Upstream;

/// What every worker's mirror shares: the redirect cache, the manifest cache, the mirror's
/// upstream tokens, the tokens `/token/` handed out, metrics, and the client logins it
/// accepted.
#[derive(Clone)]
pub struct Shared {
    /// Where storage redirects led, for reuse while their URLs are valid; `None` with
    /// `--redirect-cache 0`.
    pub cache: Option<RedirectCache>,
    /// The Prometheus metrics served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The tokens the mirror logged in for with its own credentials.
    pub tokens: Arc<Tokens>,
    /// The manifest cache (`--manifest-cache`), if on.
    pub manifests: Option<Arc<manifests::ManifestCache>>,
    /// The tokens `/token/` handed out to clients: whom to, until when.
    pub issued: Arc<token::IssuedTokens>,
    /// The clients' logins to the mirror, with `--htpasswd`.
    pub users: Option<Arc<Users>>,
}

impl Shared {
    /// The shared state `options` ask for, empty to start; the `--htpasswd` file is read
    /// here.
    pub fn new(options: &Options) -> Result<Shared, String> {
        let users = match &options.htpasswd {
            Some(path) => Some(Arc::new(Users::load(path)?)),
            None => None,
        };
        Ok(Shared {
            cache: (options.redirect_cache > 0).then(|| {
                // The identity the mirror puts on each upstream request (proxy.rs): its own
                // login for all, the anonymous identity, or a client's login bounded by its
                // token's lifetime (token.rs). Requests without one are not cached.
                RedirectCache::new(options.redirect_cache)
                    .expiry_margin(options.redirect_cache_margin)
                    .max_age(options.redirect_cache_max_age)
                    // Concurrent pulls of one blob by one identity: one registry round trip.
                    .single_flight(true)
                    .identity(|_, extensions| extensions.get::<CacheIdentity>().cloned())
            }),
            metrics: Arc::new(Metrics::new()),
            tokens: Arc::default(),
            issued: Arc::default(),
            manifests: (options.manifest_cache > 0)
                .then(|| Arc::new(manifests::ManifestCache::new(options.manifest_cache))),
            users,
        })
    }
}

/// One worker's mirror: its upstreams, its logins to them and the clients it sends with,
/// and what it shares with the other workers. [`Mirror::handle`] answers a request.
pub struct Mirror {
    /// The first is the default.
    upstreams: Vec<Arc<Upstream>>,
    logins: HashMap<String, Login>,
    client: UpstreamClient,
    token_client: TokenClient,
    shared: Shared,
    idle_timeout: Duration,
    verify_digests: bool,
    serve_stale: Duration,
    /// How clients reach the mirror, for the challenges it sends: `--public-url`, else
    /// `http(s)://<Host>`.
    public_url: Option<String>,
    tls: bool,
    /// The last readiness check, and when it was made.
    ready: Mutex<Option<(Instant, bool)>>,
}

impl Mirror {
    /// A worker's mirror, sharing `shared` with the others.
    pub fn new(options: &Options, shared: Shared) -> Result<Mirror, String> {
        let upstreams = options
            .upstreams
            .iter()
            .map(|u| Upstream::parse(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        if upstreams.is_empty() {
            return Err("at least one --upstream is needed".into());
        }
        for (i, upstream) in upstreams.iter().enumerate() {
            if upstreams[..i].iter().any(|u| u.name == upstream.name) {
                return Err(format!("--upstream {:?} is given twice", upstream.name));
            }
        }
        if let Some(url) = &options.public_url {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| format!("--public-url {url:?}: {e}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return Err(format!("--public-url {url:?}: use http(s)://host[:port]"));
            }
        }
        let logins = credentials::logins(options, &upstreams)?;
        if options.redirects == options::RedirectMode::Naive
            && logins.values().any(|l| !matches!(l, Login::PassThrough))
        {
            // The control replays requests, credentials included, to wherever a redirect
            // points: never with the mirror's own.
            return Err(
                "--redirects naive replays credentials to storage: not with the mirror's own login"
                    .into(),
            );
        }
        Ok(Mirror {
            logins,
            upstreams,
            client: UpstreamClient::new(options, shared.cache.clone(), shared.metrics.clone())?,
            token_client: client::token_client(options)?,
            shared,
            idle_timeout: options.idle_timeout,
            verify_digests: options.verify_digests,
            serve_stale: options.serve_stale,
            public_url: options
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            tls: options.tls_cert.is_some(),
            ready: Mutex::new(None),
        })
    }

    /// How the mirror logs in to `upstream`.
    fn login(&self, upstream: &Upstream) -> &Login {
        self.logins
            .get(&upstream.name)
            .unwrap_or(&Login::PassThrough)
    }
}
