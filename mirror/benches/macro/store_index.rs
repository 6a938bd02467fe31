//! How long the blob store takes to read back what it holds at start, for 10,000 blobs (and
//! their 10,000 access records): a local directory, and an S3 store (s3s-fs on loopback,
//! every request signed). Prints the median of 5 opens of each.
//!
//! usage: cargo run --release -p registry-mirror --example bench_store_index [-- BLOBS]

use clap::Parser;
use registry_mirror::options::Options;
use registry_mirror::Shared;
use std::path::Path;
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "AKIDBENCHSTORE";
const SECRET_KEY: &str = "bench-store-secret";

/// Writes `n` blobs (and an access record each) where a store at `root` keeps them.
fn fill(root: &Path, n: usize) {
    for i in 0..n {
        let hex = format!("{:064x}", i as u128 * 0x9e37_79b9_7f4a_7c15);
        let dir = root.join("blobs/sha256").join(&hex[..2]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&hex), b"x").unwrap();
        let access = root.join("access/anonymous@docker.io/blobs/sha256");
        std::fs::create_dir_all(&access).unwrap();
        std::fs::write(access.join(&hex), b"").unwrap();
    }
}

/// The median of 5 opens of the store `flags` name, and what it found.
async fn time_opens(flags: &[String]) -> (Duration, u64) {
    let options = Options::parse_from(
        std::iter::once("registry-mirror".to_owned()).chain(flags.iter().cloned()),
    );
    let mut times = Vec::new();
    let mut objects = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let shared = Shared::open(&options).await.unwrap();
        times.push(started.elapsed());
        let scrape = shared.metrics.encode();
        objects = scrape
            .lines()
            .find_map(|l| l.strip_prefix("registry_mirror_blob_store_objects "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
    }
    times.sort();
    (times[2], objects)
}

/// s3s-fs on loopback over `root`, checking every signature; its address.
async fn s3s_fs(root: &Path) -> std::net::SocketAddr {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let s3 = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let s3 = s3.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let s3 = s3.clone();
                        async move { s3.call(req.map(s3s::Body::from)).await }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let local = tempfile::tempdir().unwrap();
    fill(local.path(), n);
    let flags = [
        "--blob-store".to_owned(),
        local.path().to_str().unwrap().to_owned(),
    ];
    let (took, objects) = time_opens(&flags).await;
    println!(
        "local directory: {objects} blobs read back in {} ms (median of 5)",
        took.as_millis()
    );

    let s3_root = tempfile::tempdir().unwrap();
    fill(&s3_root.path().join("bucket/mirror"), n);
    let addr = s3s_fs(s3_root.path()).await;
    let data = tempfile::tempdir().unwrap();
    let flags: Vec<String> = [
        "--blob-store",
        "s3://bucket/mirror",
        "--s3-endpoint",
        &format!("http://{addr}"),
        "--s3-access-key-id",
        ACCESS_KEY,
        "--s3-secret-access-key",
        SECRET_KEY,
        "--data-dir",
        data.path().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (took, objects) = time_opens(&flags).await;
    println!(
        "S3 (s3s-fs on loopback): {objects} blobs read back in {} ms (median of 5)",
        took.as_millis()
    );
}
