//! `registry-mirror`: a Docker Hub pull-through mirror. Blob downloads are redirected to
//! pre-signed storage URLs, which the mirror follows itself with `SignedRedirectLayer`.
//!
//! ```text
//! cargo run --release -p registry-mirror
//! docker pull 127.0.0.1:5000/library/alpine     # with 127.0.0.1:5000 as an insecure registry
//! skopeo copy --src-tls-verify=false docker://127.0.0.1:5000/library/alpine dir:/tmp/alpine
//! ```
//!
//! `--help` lists the flags; each has an environment variable. The mirror is served with
//! hyper-util's server on one worker per core (`serve/server.rs`). The operator's guide is
//! `mirror/README.md`.

use clap::Parser;
use registry_mirror::options::{init_logging, Options};
use registry_mirror::serve::server;
use registry_mirror::{Mirror, MirrorService, Shared};

fn main() {
    let options = Options::parse();
    init_logging(&options);
    let shared = match Shared::new(&options) {
        Ok(shared) => shared,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let worker_options = options.clone();
    server::run(&options, move || {
        Mirror::new(&worker_options, shared.clone()).map(MirrorService::new)
    });
}
