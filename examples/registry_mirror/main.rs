//! A Docker Hub pull-through mirror with axum: blob downloads are redirected to
//! pre-signed storage URLs, which the mirror follows itself with `SignedRedirectLayer`.
//!
//! ```text
//! cargo run --release --example registry_mirror
//! docker pull 127.0.0.1:5000/library/alpine     # with 127.0.0.1:5000 as an insecure registry
//! skopeo copy --src-tls-verify=false docker://127.0.0.1:5000/library/alpine dir:/tmp/alpine
//! ```
//!
//! `--help` lists the flags; each has an environment variable.

mod app;
#[path = "../common/mod.rs"]
mod common;

use clap::Parser;
use common::options::{init_logging, Options};

#[tokio::main]
async fn main() {
    let options = Options::parse();
    init_logging(&options);
    let (mirror, listener) = common::server::start(&options).await;
    tracing::info!(listen = %options.listen, upstreams = ?options.upstreams, redirects = ?options.redirects, "registry mirror ready");
    let served = axum::serve(listener, app::router(mirror))
        .with_graceful_shutdown(common::server::shutdown_signal())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "server failed");
        std::process::exit(1);
    }
    tracing::info!("stopped");
}
