//! A Docker Hub pull-through mirror with axum: blob downloads are redirected to
//! pre-signed storage URLs, which the mirror follows itself with `SignedRedirectLayer`.
//!
//! ```text
//! cargo run --release --example registry_mirror
//! docker pull 127.0.0.1:5000/library/alpine     # with 127.0.0.1:5000 as an insecure registry
//! skopeo copy --src-tls-verify=false docker://127.0.0.1:5000/library/alpine dir:/tmp/alpine
//! ```
//!
//! `--help` lists the flags; each has an environment variable. The axum router is served
//! with hyper-util's server (as axum's `serve-with-hyper` example does) on one worker per
//! core: `common/server.rs`.

mod app;
#[path = "../common/mod.rs"]
mod common;

use clap::Parser;
use common::options::{init_logging, Options};
use hyper_util::service::TowerToHyperService;

fn main() {
    let options = Options::parse();
    init_logging(&options);
    common::server::run(options, |mirror| {
        TowerToHyperService::new(app::router(mirror))
    });
}
