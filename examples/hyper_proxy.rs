//! A registry proxy with plain hyper: every `/v2/` request goes to one upstream registry
//! with the client's `Authorization`, and when the registry redirects a blob to a pre-signed
//! storage URL, `SignedRedirectLayer` follows it with a fresh, credential-free `GET` and the
//! proxy streams storage's answer back. Auth challenges go back to the client as they are:
//! it logs in at the registry's own token service.
//!
//! ```text
//! cargo run --example hyper_proxy -- 127.0.0.1:5000 https://registry-1.docker.io
//! skopeo copy --src-tls-verify=false docker://127.0.0.1:5000/library/alpine:latest dir:/tmp/alpine
//! ```
//!
//! Arguments: `LISTEN UPSTREAM [STORAGE_HOST...]`, as `axum_proxy`'s.

use bytes::Bytes;
use http::header::{self, ACCEPT, AUTHORIZATION, CONNECTION, IF_RANGE, RANGE, USER_AGENT};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tower::timeout::{error::Elapsed, Timeout};
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};
use tower_signed_redirect::{SignedRedirect, SignedRedirectLayer};

type Https = hyper_rustls::HttpsConnector<HttpConnector>;
/// The upstream client: hyper-util's, a timeout on each hop's response head, and the layer
/// outside it, so storage hops are timed too and never see the client's credentials.
type Upstream = SignedRedirect<Timeout<Client<Https, Empty<Bytes>>>>;

fn upstream_client(storage_hosts: Vec<String>) -> Upstream {
    let storage =
        WellKnownStorage::new().or(HostPatterns::new(storage_hosts).expect("storage hosts"));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .expect("TLS roots")
        .https_or_http()
        .enable_http1()
        .build();
    ServiceBuilder::new()
        .layer(SignedRedirectLayer::with_matcher(storage))
        .timeout(Duration::from_secs(30))
        .service(Client::builder(TokioExecutor::new()).build(https))
}

/// Removes the headers that describe the upstream connection, not this one: the hop-by-hop
/// ones, and those the upstream's `Connection` names.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<http::HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| name.trim().parse().ok())
        .collect();
    let hop_by_hop = [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ];
    for name in named.iter().chain(&hop_by_hop) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The request headers a registry needs; everything else stays with the proxy.
const FORWARDED: [http::HeaderName; 5] = [AUTHORIZATION, ACCEPT, RANGE, IF_RANGE, USER_AGENT];

type ProxyBody = BoxBody<Bytes, BoxError>;

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut res = Response::new(Full::new(Bytes::from(body)).map_err(Into::into).boxed());
    *res.status_mut() = status;
    res
}

/// `GET` or `HEAD` of `/v2/...`, sent to the upstream; its answer, streamed back.
async fn proxy(upstream: &str, client: Upstream, req: Request<Incoming>) -> Response<ProxyBody> {
    if !req.uri().path().starts_with("/v2/") {
        return text(StatusCode::NOT_FOUND, "not a registry path\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "this proxy is pull-only\n".into(),
        );
    }
    let path = req.uri().path_and_query().map_or("/v2/", |p| p.as_str());
    let Ok(uri) = format!("{upstream}{path}").parse::<Uri>() else {
        return text(StatusCode::BAD_REQUEST, "invalid path\n".into());
    };
    let mut upstream_req = Request::new(Empty::new());
    *upstream_req.method_mut() = req.method().clone();
    *upstream_req.uri_mut() = uri;
    for name in FORWARDED {
        for value in req.headers().get_all(&name) {
            upstream_req
                .headers_mut()
                .append(name.clone(), value.clone());
        }
    }
    match client.oneshot(upstream_req).await {
        Ok(res) => {
            let (mut head, body) = res.into_parts();
            strip_hop_by_hop(&mut head.headers);
            Response::from_parts(head, body.map_err(Into::into).boxed())
        }
        // The layer's errors print URLs with their signatures redacted; a hop's timeout is
        // found in the error's chain.
        Err(e) if e.find_cause::<Elapsed>().is_some() => {
            text(StatusCode::GATEWAY_TIMEOUT, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::BAD_GATEWAY, format!("{e}\n")),
    }
}

#[tokio::main]
async fn main() {
    let usage = "usage: hyper_proxy LISTEN UPSTREAM [STORAGE_HOST...]";
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect(usage);
    let upstream: Uri = args
        .next()
        .expect(usage)
        .parse()
        .expect("UPSTREAM is a URL");
    let upstream: Arc<str> = upstream.to_string().trim_end_matches('/').into();
    let client = upstream_client(args.collect());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("LISTEN");
    println!("proxying {listen}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (upstream, client) = (upstream.clone(), client.clone());
        let service = hyper::service::service_fn(move |req| {
            let (upstream, client) = (upstream.clone(), client.clone());
            async move { Ok::<_, Infallible>(proxy(&upstream, client, req).await) }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new();
            if let Err(e) = conn.serve_connection(TokioIo::new(stream), service).await {
                eprintln!("connection: {e}");
            }
        });
    }
}
