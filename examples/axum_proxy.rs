//! A registry proxy with axum: every `/v2/` request goes to one upstream registry with the
//! client's `Authorization`, and when the registry redirects a blob to a pre-signed storage
//! URL, `SignedRedirectLayer` follows it with a fresh, credential-free `GET` and the proxy
//! streams storage's answer back. Auth challenges go back to the client as they are: it logs
//! in at the registry's own token service.
//!
//! ```text
//! cargo run --example axum_proxy -- 127.0.0.1:5000 https://registry-1.docker.io
//! skopeo copy --src-tls-verify=false docker://127.0.0.1:5000/library/alpine:latest dir:/tmp/alpine
//! ```
//!
//! Arguments: `LISTEN UPSTREAM [STORAGE_HOST...]`; storage hosts beyond the well-known ones
//! (`minio.internal:9000`, `*.example-cdn.net`) are exact hosts or `*.` wildcards. A redirect
//! to any other host goes back to the client as it is, and the client must reach that host. The
//! deployable mirror (`mirror/`) is this plus logins, caches, TLS, metrics and guards.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use http::header::{self, ACCEPT, AUTHORIZATION, CONNECTION, IF_RANGE, RANGE, USER_AGENT};
use http::{Method, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tower::timeout::{error::Elapsed, Timeout};
use tower::{ServiceBuilder, ServiceExt};
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

#[derive(Clone)]
struct App {
    /// `scheme://host[:port]`, no trailing `/`.
    upstream: Arc<str>,
    client: Upstream,
}

/// `GET` or `HEAD` of `/v2/...`, sent to the upstream; its answer, streamed back.
async fn proxy(State(app): State<App>, req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let allow = [(http::header::ALLOW, "GET, HEAD")];
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            allow,
            "this proxy is pull-only\n",
        )
            .into_response();
    }
    let path = req.uri().path_and_query().map_or("/v2/", |p| p.as_str());
    let Ok(uri) = format!("{}{path}", app.upstream).parse::<Uri>() else {
        return (StatusCode::BAD_REQUEST, "invalid path\n").into_response();
    };
    let mut upstream_req = http::Request::new(Empty::new());
    *upstream_req.method_mut() = req.method().clone();
    *upstream_req.uri_mut() = uri;
    for name in FORWARDED {
        for value in req.headers().get_all(&name) {
            upstream_req
                .headers_mut()
                .append(name.clone(), value.clone());
        }
    }
    match app.client.oneshot(upstream_req).await {
        Ok(res) => {
            let (mut head, body) = res.into_parts();
            strip_hop_by_hop(&mut head.headers);
            Response::from_parts(head, Body::new(body))
        }
        // The layer's errors print URLs with their signatures redacted; a hop's timeout is
        // found in the error's chain.
        Err(e) if e.find_cause::<Elapsed>().is_some() => {
            (StatusCode::GATEWAY_TIMEOUT, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response(),
    }
}

#[tokio::main]
async fn main() {
    let usage = "usage: axum_proxy LISTEN UPSTREAM [STORAGE_HOST...]";
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect(usage);
    let upstream: Uri = args
        .next()
        .expect(usage)
        .parse()
        .expect("UPSTREAM is a URL");
    // A `Uri` prints a `/` after its host: trimmed, so that `{upstream}{path}` has one.
    let upstream: Arc<str> = upstream.to_string().trim_end_matches('/').into();
    let app = App {
        upstream,
        client: upstream_client(args.collect()),
    };
    let router = Router::new()
        .route("/v2/", any(proxy))
        .route("/v2/{*rest}", any(proxy))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("LISTEN");
    println!("proxying {listen}");
    axum::serve(listener, router).await.expect("serving");
}
