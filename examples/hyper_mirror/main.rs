//! A pull-through registry mirror with plain hyper: the smallest complete use of
//! `SignedRedirectLayer` in a proxy. It shares the mirror logic, flags and server
//! (`common/server.rs`: hyper-util's connection builder, one worker per core, graceful
//! shutdown) with the axum example (`registry_mirror`), and serves the mirror with a
//! `hyper::service::service_fn` instead of an axum router. The upstream client is composed
//! with `ServiceBuilder` in `common/client.rs`.
//!
//! ```text
//! cargo run --release --example hyper_mirror -- --listen 127.0.0.1:5001 --upstream docker.io
//! ```

#[path = "../common/mod.rs"]
mod common;

use clap::Parser;
use common::options::{init_logging, Options};
use std::convert::Infallible;

fn main() {
    let options = Options::parse();
    init_logging(&options);
    common::server::run(options, |mirror| {
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mirror = mirror.clone();
            async move {
                let (parts, _) = req.into_parts();
                Ok::<_, Infallible>(mirror.handle(&parts).await)
            }
        })
    });
}
