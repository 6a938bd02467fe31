//! The upstream client, and the point of this crate: hyper-util's client with rustls, a
//! timeout for each hop's response head, and `SignedRedirectLayer` following blob redirects
//! to storage with fresh, credential-free requests.

use super::body::BoxError;
use super::options::{Options, RedirectMode};
use super::tuning;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use tower::timeout::Timeout;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::{policy::Limited, FollowRedirect, FollowRedirectLayer};
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};
use tower_signed_redirect::{ResponseBody, SignedRedirect, SignedRedirectLayer};

/// Requests the mirror sends upstream: `GET` or `HEAD`, no body.
pub type UpstreamRequest = Request<Empty<Bytes>>;
/// What upstream answers stream back in: storage's body (or the registry's) as the layer
/// hands it on.
pub type UpstreamBody = ResponseBody<Incoming>;

type HyperClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The upstream client, with the redirect handling `--redirects` asks for. An enum rather
/// than a boxed service: nothing is allocated to pick the variant on each request.
#[derive(Clone, Debug)]
pub enum UpstreamClient {
    /// This crate's layer: redirects to storage followed with fresh, credential-free
    /// requests. A timeout bounds each hop's response head.
    Signed(SignedRedirect<Timeout<HyperClient>>),
    /// The control that breaks: tower-http's `FollowRedirect` replaying the request.
    Naive(FollowRedirect<Timeout<HyperClient>, Limited>),
    /// The other control: the redirect handed to the client.
    Pass(Timeout<HyperClient>),
}

impl UpstreamClient {
    /// The client `options` ask for.
    pub fn new(options: &Options) -> Result<UpstreamClient, String> {
        let client = ServiceBuilder::new()
            .timeout(options.response_timeout)
            .service(hyper_client(options)?);
        let storage = WellKnownStorage::new()
            .or(HostPatterns::new(&options.storage_hosts).map_err(|e| e.to_string())?);
        Ok(match options.redirects {
            RedirectMode::Signed => UpstreamClient::Signed(
                ServiceBuilder::new()
                    .layer(SignedRedirectLayer::with_matcher(storage))
                    .service(client),
            ),
            RedirectMode::Naive => UpstreamClient::Naive(
                ServiceBuilder::new()
                    .layer(FollowRedirectLayer::with_policy(Limited::new(5)))
                    .service(client),
            ),
            RedirectMode::Pass => UpstreamClient::Pass(client),
        })
    }

    /// Sends `req` and returns the answer's head with its body to stream.
    pub async fn send(&self, req: UpstreamRequest) -> Result<Response<UpstreamBody>, BoxError> {
        match self.clone() {
            UpstreamClient::Signed(client) => Ok(client.oneshot(req).await?),
            UpstreamClient::Naive(client) => Ok(client.oneshot(req).await?.map(ResponseBody::new)),
            UpstreamClient::Pass(client) => Ok(client.oneshot(req).await?.map(ResponseBody::new)),
        }
    }
}

/// hyper-util's client over HTTP and HTTPS: rustls with the webpki roots and
/// `--upstream-ca`, HTTP/2 where the server offers it, idle connections reaped.
fn hyper_client(options: &Options) -> Result<HyperClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &options.upstream_ca {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let bad = |e: &dyn std::fmt::Display| format!("--upstream-ca {}: {e}", path.display());
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = tuning::http_connector();
    http.enforce_http(false);
    http.set_connect_timeout(Some(options.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(tuning::client_builder(TokioExecutor::new())
        .pool_idle_timeout(options.pool_idle_timeout)
        .pool_max_idle_per_host(256)
        .build(https))
}
