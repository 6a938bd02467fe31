//! Loopback HTTP(S) servers and the hyper-util client the layer wraps, as users compose it.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

pub use super::BoxError;

pub type ServerBody = BoxBody<Bytes, BoxError>;

/// The client a registry proxy uses upstream: hyper-util's legacy client, HTTP and HTTPS.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

pub fn full(body: impl Into<Bytes>) -> ServerBody {
    Full::new(body.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

pub fn empty() -> ServerBody {
    full(Bytes::new())
}

/// Serves `handler` over plain HTTP/1.1 on 127.0.0.1, on a port of the OS's choosing.
pub async fn serve<H, F>(handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ServerBody>> + Send + 'static,
{
    serve_inner(handler, None).await
}

/// Serves `handler` over HTTPS (a self-signed certificate for 127.0.0.1); returns the
/// address and the certificate for the client to trust.
pub async fn serve_tls<H, F>(handler: H) -> (SocketAddr, rustls::pki_types::CertificateDer<'static>)
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ServerBody>> + Send + 'static,
{
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der.clone()], key)
    .unwrap();
    let addr = serve_inner(
        handler,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    )
    .await;
    (addr, der)
}

async fn serve_inner<H, F>(handler: H, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ServerBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    Some(tls) => match tls.accept(stream).await {
                        Ok(s) => conn.serve_connection(TokioIo::new(s), svc).await,
                        Err(_) => return,
                    },
                    None => conn.serve_connection(TokioIo::new(stream), svc).await,
                };
            });
        }
    });
    addr
}

/// hyper-util's legacy client over HTTP and HTTPS, trusting `roots` for HTTPS.
pub fn http_client(roots: &[rustls::pki_types::CertificateDer<'static>]) -> HttpClient {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

/// Serves raw TCP on 127.0.0.1: `handler` gets each accepted connection, for upstreams that
/// misbehave below HTTP (bad headers, stalls, resets).
pub async fn serve_raw<H, F>(handler: H) -> SocketAddr
where
    H: Fn(tokio::net::TcpStream) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// Reads one request head (up to the blank line) from a raw connection.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

/// The layer under test, following redirects to these loopback hosts (and nothing else).
pub fn layer_for(hosts: &[SocketAddr]) -> tower_signed_redirect::SignedRedirectLayer {
    tower_signed_redirect::SignedRedirectLayer::with_matcher(
        tower_signed_redirect::matcher::HostPatterns::new(hosts.iter().map(|a| a.to_string()))
            .unwrap(),
    )
}
