//! The macro benchmark's baseline proxy (`benches/macro/run.sh`): a hyper server and a
//! hyper-util client that follow a registry's redirect with a clean `GET`, and nothing else.
//! No routing, no upstream selection, no timeouts, no logging, no header policy beyond
//! passing `Authorization` to the registry: what any Rust mirror costs at the least, so the
//! benchmark can say what `tower-signed-redirect` and the example mirror cost on top.
//!
//! It runs on the same runtime, socket and hyper settings as the mirror
//! (`registry_mirror::tuning`), so the ratio between the two isolates the layer and the
//! mirror's own work.
//!
//! usage: bench_bare_follower LISTEN_ADDR REGISTRY_BASE_URL

use registry_mirror::serve::tuning;

use bytes::Bytes;
use http::header::{AUTHORIZATION, LOCATION};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A plain connector without Nagle's delay, as the mirror's.
fn http_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

/// `GET <registry><path>` with the client's `Authorization`; on a redirect, a fresh `GET` of
/// the `Location` with no headers at all.
async fn follow(
    client: HttpClient,
    registry: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let uri: Uri = format!("{registry}{}", req.uri().path())
        .parse()
        .expect("a valid URI");
    let mut upstream = Request::get(uri)
        .body(Empty::new())
        .expect("a valid request");
    if let Some(auth) = req.headers().get(AUTHORIZATION) {
        upstream.headers_mut().insert(AUTHORIZATION, auth.clone());
    }
    let res = client.request(upstream).await?;
    if res.status() != StatusCode::TEMPORARY_REDIRECT {
        return Ok(res);
    }
    let location: Uri = res.headers()[LOCATION]
        .to_str()
        .expect("an ASCII Location")
        .parse()
        .expect("a valid Location");
    drop(res);
    client
        .request(
            Request::get(location)
                .body(Empty::new())
                .expect("a valid request"),
        )
        .await
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(registry)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_bare_follower LISTEN_ADDR REGISTRY_BASE_URL");
        std::process::exit(2);
    };
    let registry: Arc<str> = registry.trim_end_matches('/').into();
    let listen: std::net::SocketAddr = listen.parse().expect("a socket address");
    tuning::run_workers(tuning::default_workers(), move |_| {
        let registry = registry.clone();
        async move {
            let listener = tuning::listen(listen).expect("listen");
            let client: HttpClient =
                tuning::client_builder(TokioExecutor::new()).build(http_connector());
            let server = tuning::server_builder();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (client, registry) = (client.clone(), registry.clone());
                let svc = hyper::service::service_fn(move |req| {
                    follow(client.clone(), registry.clone(), req)
                });
                let conn = server
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned();
                tokio::spawn(conn);
            }
        }
    });
}
