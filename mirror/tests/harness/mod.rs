//! What the mirror's test binaries share besides the library's loopback servers
//! (`../../tests/support`): one way to start the mirror, and a Docker-Hub-like hub.
#![allow(dead_code)]

pub mod binary;
pub mod fleet;
pub mod hub;
pub mod redis;
pub mod store_hub;

use clap::Parser;
use registry_mirror::options::Options;
use registry_mirror::serve::{server, tls};
use registry_mirror::{Mirror, MirrorService, Shared};
use std::net::SocketAddr;

/// The mirror with these flags (`--tls-cert`/`--tls-key` included), served as the binary
/// serves it (its hyper service through the server loop) on 127.0.0.1, on a port of the OS's
/// choosing, on the test's runtime. Panics on a configuration the mirror refuses. Without a
/// `--blob-store` among the flags it keeps no blobs (`--blob-store none`): the tests of the
/// store say where theirs is.
pub async fn start_mirror(flags: &[String]) -> SocketAddr {
    let no_store = ["--blob-store".to_owned(), "none".to_owned()];
    let store = match flags.iter().any(|f| f == "--blob-store") {
        true => &[][..],
        false => &no_store[..],
    };
    let options = Options::parse_from(
        std::iter::once("registry-mirror".to_owned())
            .chain(flags.iter().cloned())
            .chain(store.iter().cloned()),
    );
    let mirror = Mirror::new(&options, Shared::open(&options).await.unwrap()).unwrap();
    let acceptor = tls::acceptor(&options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = MirrorService::new(mirror);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _running = stop;
        server::serve(listener, service, acceptor, stopped).await
    });
    addr
}
