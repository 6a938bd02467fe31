//! The upstream client, and the point of this crate: hyper-util's client with rustls, a
//! timeout for each hop's response head, and `SignedRedirectLayer` following redirects to
//! storage with fresh, credential-free requests (and remembering where they led).
//!
//! Under the layer, the mirror's own requests (marked [`guard::OwnRequest`]) and the storage
//! hops the layer builds go through two hyper-util clients: storage hops connect only to
//! public addresses unless their host is a listed `--storage-host` (`guard.rs`).

use super::guard::{self, Resolver, StorageConnector};
use crate::api::Route;
use crate::metrics::Metrics;
use crate::options::{Options, RedirectMode};
use crate::serve::body::UpstreamBody;
use crate::serve::tuning;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::timeout::Timeout;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::{policy::Limited, FollowRedirect, FollowRedirectLayer};
use tower_signed_redirect::matcher::{HostPatterns, SignedQuery, StorageMatcher, WellKnownStorage};
use tower_signed_redirect::{
    BoxError, RedirectCache, ResponseBody, SignedRedirect, SignedRedirectLayer,
};

/// Requests the mirror sends upstream: `GET` or `HEAD`, no body.
pub type UpstreamRequest = Request<Empty<Bytes>>;

/// Marks an upstream request that must not follow a redirect: the layer passes it, and its
/// inner client sends it to the registry alone.
#[derive(Clone, Copy, Debug)]
pub struct RegistryOnly;

/// hyper-util's client of the mirror's own requests (registries, token services).
type RegistryHttpClient = Client<HttpsConnector<HttpConnector<Resolver>>, Empty<Bytes>>;
/// hyper-util's client of storage hops: its connector is the SSRF guard's.
type StorageHttpClient =
    Client<HttpsConnector<StorageConnector<HttpConnector<Resolver>>>, Empty<Bytes>>;

/// The upstream client, with the redirect handling `--redirects` asks for. An enum rather
/// than a boxed service: nothing is allocated to pick the variant on each request.
#[derive(Clone)]
pub enum UpstreamClient {
    /// This crate's layer: redirects to storage followed with fresh, credential-free
    /// requests. A timeout bounds each hop's response head.
    Signed(SignedRedirect<Timeout<HopClient>>),
    /// The control that breaks: tower-http's `FollowRedirect` replaying the request.
    Naive(FollowRedirect<Timeout<RegistryHttpClient>, Limited>),
    /// The other control: the redirect handed to the client.
    Pass(Timeout<RegistryHttpClient>),
}

impl UpstreamClient {
    /// The client `options` ask for, sharing `cache` and `metrics` with the other workers.
    pub fn new(
        options: &Options,
        cache: Option<RedirectCache>,
        metrics: Arc<Metrics>,
    ) -> Result<UpstreamClient, String> {
        let tls = tls_config(options)?;
        let overrides = guard::overrides(&options.resolve)?;
        let listed = HostPatterns::new(&options.storage_hosts).map_err(|e| e.to_string())?;
        let plain = |guarded| {
            let mut http = guard::http_connector(Resolver::new(overrides.clone(), guarded));
            http.set_connect_timeout(Some(options.connect_timeout));
            http
        };
        let upstream = client(options, https(tls.clone(), plain(false)));
        let storage = client(
            options,
            https(
                tls,
                StorageConnector::new(listed.clone(), plain(false), plain(true)),
            ),
        );
        let timeout = options.response_timeout;
        Ok(match options.redirects {
            RedirectMode::Signed => {
                let hops = HopClient(Arc::new(HopClients {
                    upstream,
                    storage,
                    metrics,
                }));
                UpstreamClient::Signed(
                    ServiceBuilder::new()
                        .layer(signed_layer(options, listed, cache))
                        .service(Timeout::new(hops, timeout)),
                )
            }
            RedirectMode::Naive => UpstreamClient::Naive(
                ServiceBuilder::new()
                    .layer(FollowRedirectLayer::with_policy(Limited::new(5)))
                    .service(Timeout::new(upstream, timeout)),
            ),
            RedirectMode::Pass => UpstreamClient::Pass(Timeout::new(upstream, timeout)),
        })
    }

    /// Sends `req` and returns the answer's head with its body to stream. A request marked
    /// [`RegistryOnly`] does not follow a redirect.
    pub async fn send(&self, req: UpstreamRequest) -> Result<Response<UpstreamBody>, BoxError> {
        match self.clone() {
            UpstreamClient::Signed(client) if req.extensions().get::<RegistryOnly>().is_some() => {
                let hops = client.into_inner();
                Ok(hops.oneshot(req).await?.map(ResponseBody::new))
            }
            UpstreamClient::Signed(client) => Ok(client.oneshot(req).await?),
            UpstreamClient::Naive(client) => Ok(client.oneshot(req).await?.map(ResponseBody::new)),
            UpstreamClient::Pass(client) => Ok(client.oneshot(req).await?.map(ResponseBody::new)),
        }
    }
}

/// `SignedRedirectLayer` as `options` configure it: it follows redirects to the well-known
/// storage hosts, the `--storage-host` patterns (`listed`) and, with
/// `--follow-signed-urls`, any signed URL; it remembers where they led in `cache`.
fn signed_layer(
    options: &Options,
    listed: HostPatterns,
    cache: Option<RedirectCache>,
) -> SignedRedirectLayer {
    let storage_hosts = WellKnownStorage::new().or(listed);
    let layer = if options.follow_signed_urls {
        SignedRedirectLayer::with_matcher(storage_hosts.or(SignedQuery::new()))
    } else {
        SignedRedirectLayer::with_matcher(storage_hosts)
    };
    let layer = layer.allow_https_downgrade(options.allow_http_storage);
    match cache {
        Some(cache) => layer.redirect_cache(cache),
        None => layer,
    }
}

/// The layer's inner service: the mirror's own requests through the registry client,
/// storage hops through the guarded one; each timed to its response head. Cloned for every
/// hop, so it is one `Arc`.
#[derive(Clone)]
pub struct HopClient(Arc<HopClients>);

pub(crate) struct HopClients {
    upstream: RegistryHttpClient,
    storage: StorageHttpClient,
    metrics: Arc<Metrics>,
}

impl Service<UpstreamRequest> for HopClient {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = Timed<hyper_util::client::legacy::ResponseFuture>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // hyper-util's client is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: UpstreamRequest) -> Self::Future {
        let clients = &self.0;
        let storage = req.extensions().get::<guard::OwnRequest>().is_none();
        let future = if storage {
            clients.storage.request(req)
        } else {
            // The route the mirror's request carries (it parsed the client's path once),
            // else the path's.
            let route = req.extensions().get::<Route>().copied();
            clients.metrics.upstream_request(
                req.method(),
                route.unwrap_or_else(|| Route::of(req.uri().path())),
            );
            clients.upstream.request(req)
        };
        Timed {
            future,
            started: Instant::now(),
            storage,
            metrics: clients.metrics.clone(),
        }
    }
}

pin_project! {
    /// A hop's future, observing how long its response head took.
    pub struct Timed<F> {
        #[pin]
        future: F,
        started: Instant,
        storage: bool,
        metrics: Arc<Metrics>,
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.future.poll(cx));
        this.metrics
            .observe_hop(*this.storage, this.started.elapsed());
        Poll::Ready(out)
    }
}

/// rustls with the webpki roots and `--upstream-ca`.
pub fn tls_config(options: &Options) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &options.upstream_ca {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let bad = |e: &dyn std::fmt::Display| format!("--upstream-ca {}: {e}", path.display());
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(tls_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// rustls on ring, offering AES-128-GCM before AES-256-GCM (as Go's and the browsers'
/// clients do): storage answers with the suite the client prefers (nginx and most servers
/// follow the client's order), and a blob decrypts with 10 AES rounds a block, not 14.
/// Both are safe; the blob's digest, not the cipher, is what vouches for its content.
pub fn tls_provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite::{
        TLS13_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    };
    let aes_128 = [
        TLS13_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: within each group, ring's own order.
    provider
        .cipher_suites
        .sort_by_key(|suite| !aes_128.contains(&suite.suite()));
    provider
}

/// HTTPS (HTTP/2 where the server offers it) or plain HTTP over `connector`.
fn https<C>(tls: rustls::ClientConfig, connector: C) -> HttpsConnector<C> {
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector)
}

/// hyper-util's client with the mirror's pool settings.
fn client<C>(options: &Options, connector: C) -> Client<C, Empty<Bytes>>
where
    C: Connect + Clone,
{
    tuning::client_builder(TokioExecutor::new())
        .pool_idle_timeout(options.pool_idle_timeout)
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// The client of the mirror's own logins to token services: it sends form bodies (OAuth2),
/// connects like the upstream client, and is bounded by the response timeout.
pub type TokenClient =
    Timeout<Client<HttpsConnector<HttpConnector<Resolver>>, http_body_util::Full<Bytes>>>;

/// The [`TokenClient`] `options` ask for.
pub fn token_client(options: &Options) -> Result<TokenClient, String> {
    let mut http = guard::http_connector(Resolver::new(guard::overrides(&options.resolve)?, false));
    http.set_connect_timeout(Some(options.connect_timeout));
    let client = tuning::client_builder(TokioExecutor::new())
        .pool_idle_timeout(options.pool_idle_timeout)
        .build(https(tls_config(options)?, http));
    Ok(Timeout::new(client, options.response_timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_is_offered_first_and_no_suite_is_lost() {
        let ours: Vec<_> = tls_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let ring: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let (mut a, mut b) = (ours.clone(), ring);
        a.sort_by_key(|s| u16::from(*s));
        b.sort_by_key(|s| u16::from(*s));
        assert_eq!(a, b, "the same suites, in another order");
    }
}
