//! The upstream client, and the point of this crate: hyper-util's client with rustls, a
//! timeout for each hop's response head, and `SignedRedirectLayer` following blob redirects
//! to storage with fresh, credential-free requests.

use super::body::{BoxError, ProxyBody};
use super::options::{Options, RedirectMode};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};
use tower_http::follow_redirect::{policy::Limited, FollowRedirectLayer};
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};
use tower_signed_redirect::SignedRedirectLayer;

/// Requests the mirror sends upstream: `GET` or `HEAD`, no body.
pub type UpstreamRequest = Request<Empty<Bytes>>;
/// The upstream client, whichever redirect handling it was built with.
pub type UpstreamClient = BoxCloneSyncService<UpstreamRequest, Response<ProxyBody>, BoxError>;

/// The client `options` ask for.
pub fn build_client(options: &Options) -> Result<UpstreamClient, String> {
    // A timeout per request the client sends: the registry's, then each storage hop's.
    let client = ServiceBuilder::new()
        .timeout(options.response_timeout)
        .service(hyper_client(options)?);
    let storage = WellKnownStorage::new()
        .or(HostPatterns::new(&options.storage_hosts).map_err(|e| e.to_string())?);
    Ok(match options.redirects {
        RedirectMode::Signed => boxed(
            ServiceBuilder::new()
                .layer(SignedRedirectLayer::with_matcher(storage))
                .service(client),
        ),
        // The controls: replaying the request as a plain redirect follower does, and handing
        // the redirect to the client.
        RedirectMode::Naive => boxed(
            ServiceBuilder::new()
                .layer(FollowRedirectLayer::with_policy(Limited::new(5)))
                .service(client),
        ),
        RedirectMode::Pass => boxed(client),
    })
}

/// hyper-util's client over HTTP and HTTPS: rustls with the webpki roots and
/// `--upstream-ca`, HTTP/2 where the server offers it, idle connections reaped.
fn hyper_client(
    options: &Options,
) -> Result<Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>, String> {
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
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(options.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        // The idle timeout is enforced only with a timer to run the pool's reaper.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(options.pool_idle_timeout)
        .pool_max_idle_per_host(256)
        .build(https))
}

/// Erases a client stack's types: errors and bodies boxed.
fn boxed<S, B>(client: S) -> UpstreamClient
where
    S: Service<UpstreamRequest, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .map_err(Into::into)
            .map_response(|res: Response<B>| res.map(|b| b.map_err(Into::into).boxed()))
            .service(client),
    )
}
