//! A pull-through registry mirror with plain hyper (`hyper::server::conn::http1` and
//! hyper-util's graceful shutdown), for one upstream: the smallest complete use of
//! `SignedRedirectLayer` in a proxy. It shares the mirror logic and flags with the axum
//! example (`registry_mirror`); the upstream client is composed with `ServiceBuilder` in
//! `common/client.rs`.
//!
//! ```text
//! cargo run --release --example hyper_mirror -- --listen 127.0.0.1:5001 --upstream docker.io
//! ```

#[path = "../common/mod.rs"]
mod common;

use clap::Parser;
use common::options::{init_logging, Options};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

#[tokio::main]
async fn main() {
    let mut options = Options::parse();
    init_logging(&options);
    // One upstream: the first given.
    options.upstreams.truncate(1);
    let (mirror, listener) = common::server::start(&options).await;
    tracing::info!(listen = %options.listen, upstream = %options.upstreams[0], "hyper registry mirror ready");

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let shutdown = common::server::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let mirror = mirror.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mirror = mirror.clone();
                    async move {
                        let (parts, _) = req.into_parts();
                        Ok::<_, Infallible>(mirror.handle(&parts).await)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 30s; exiting");
    }
    tracing::info!("stopped");
}
