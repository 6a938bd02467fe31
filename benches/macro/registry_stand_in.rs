//! A registry stand-in for the macro benchmark (`benches/macro/run.sh`): answers
//! `GET|HEAD /v2/<name>/blobs/sha256:<hex>` carrying `Authorization: Bearer benchtoken` with
//! an empty `307` (as Docker Hub's is) to a pre-signed-looking URL on the storage stand-in.
//!
//! usage: bench_registry_stand_in LISTEN_ADDR STORAGE_BASE_URL

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;

const TOKEN: &[u8] = b"Bearer benchtoken";

fn answer(req: &Request<hyper::body::Incoming>, storage: &str) -> Response<Empty<Bytes>> {
    let status = |s| {
        Response::builder()
            .status(s)
            .header("content-length", "0")
            .body(Empty::new())
            .unwrap()
    };
    if req.headers().get("authorization").map(|v| v.as_bytes()) != Some(TOKEN) {
        return status(StatusCode::UNAUTHORIZED);
    }
    let hex = req
        .uri()
        .path()
        .rsplit_once("/blobs/sha256:")
        .map(|(_, h)| h);
    match (req.method(), hex) {
        (&Method::GET | &Method::HEAD, Some(hex)) if !hex.is_empty() => Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(
                "location",
                format!(
                    "{storage}/blobs/{hex}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDBENCH%2F20240101%2Fauto%2Fs3%2Faws4_request\
                     &X-Amz-Date=20240101T000000Z&X-Amz-Expires=1200&X-Amz-SignedHeaders=host\
                     &X-Amz-Signature=8f1c0d9e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e"
                ),
            )
            .header("content-length", "0")
            .body(Empty::new())
            .unwrap(),
        _ => status(StatusCode::NOT_FOUND),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(storage)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_registry_stand_in LISTEN_ADDR STORAGE_BASE_URL");
        std::process::exit(2);
    };
    let storage: Arc<str> = storage.trim_end_matches('/').into();
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let storage = storage.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let res = answer(&req, &storage);
                async move { Ok::<_, Infallible>(res) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
