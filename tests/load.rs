//! Load: the axum example serves 10,000 blob requests at concurrency 256 against loopback
//! fakes (a registry redirecting every blob to a storage fake that rejects credentials).
//! Zero failures, every body's digest right, open file descriptors back to their baseline
//! (taken after a warm-up round of 2,000 requests) once idle connections time out, and the
//! bytes in use (a counting allocator) flat from 10,000 to 20,000 requests: a leak shows as
//! growth with the request count. RSS is printed too, but glibc keeps freed memory for reuse
//! and it moves by ~10 MiB from round to round, too much to find a small leak with.
//!
//! Ignored by default (it wants a release build); `.ci/run` runs it:
//! `cargo test --release --test load -- --ignored --nocapture`.

mod support;

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

#[path = "../examples/registry_mirror/app.rs"]
mod app;
// The tests use part of the mirror; the examples use all of it.
#[allow(dead_code)]
#[path = "../examples/common/mod.rs"]
mod common;

use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::Empty;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves the axum example's router through the examples' server loop, as `main` does.
fn serve_axum(listener: tokio::net::TcpListener, mirror: Arc<common::Mirror>) {
    let service = hyper_util::service::TowerToHyperService::new(app::router(mirror));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _running = stop;
        common::server::serve(listener, service, None, stopped).await
    });
}

use support::body_bytes;
use support::net::{self, http_client};
use support::registry::{digest, TOKEN};
use tokio::sync::Semaphore;

const REQUESTS: usize = 10_000;
const CONCURRENCY: usize = 256;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_mib() -> u64 {
    support::rss::rss_kib().0 / 1024
}

fn live_kib() -> usize {
    support::alloc::live_bytes() / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run with --release --ignored (as .ci/run does)"]
async fn ten_thousand_blob_requests_at_concurrency_256() {
    // 16 blobs of 16..64 KiB, keyed by digest.
    let blobs: Arc<HashMap<String, Bytes>> = Arc::new(
        (0..16u32)
            .map(|i| {
                let data: Vec<u8> = (0..(16 + i * 3) * 1024)
                    .map(|j| (j.wrapping_mul(31) ^ i) as u8)
                    .collect();
                (digest(&data), Bytes::from(data))
            })
            .collect(),
    );
    let b = blobs.clone();
    let storage = net::serve(move |req: Request<hyper::body::Incoming>| {
        let blob = b
            .get(req.uri().path().trim_start_matches("/blobs/"))
            .cloned();
        let credentials = req.headers().contains_key("authorization");
        async move {
            match (credentials, blob) {
                (true, _) => http::Response::builder()
                    .status(400)
                    .body(net::full("Only one auth mechanism allowed"))
                    .unwrap(),
                (false, Some(blob)) => http::Response::builder()
                    .header("content-length", blob.len())
                    .body(net::full(blob))
                    .unwrap(),
                (false, None) => http::Response::builder()
                    .status(404)
                    .body(net::empty())
                    .unwrap(),
            }
        }
    })
    .await;
    // A registry that keeps no log of what it served (support::registry's log would grow).
    let registry = net::serve(move |req: Request<hyper::body::Incoming>| {
        let authorized = req
            .headers()
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
        let digest = req
            .uri()
            .path()
            .rsplit_once("/blobs/")
            .map(|(_, d)| d.to_owned());
        async move {
            match (authorized, digest) {
                (true, Some(d)) => http::Response::builder()
                    .status(307)
                    .header(
                        "location",
                        format!("http://{storage}/blobs/{d}?X-Amz-Signature=0f"),
                    )
                    .body(net::empty())
                    .unwrap(),
                _ => http::Response::builder()
                    .status(401)
                    .body(net::empty())
                    .unwrap(),
            }
        }
    })
    .await;
    let options = common::options::Options::parse_from([
        "registry_mirror",
        "--upstream",
        &format!("docker.io=http://{registry}"),
        "--storage-host",
        &storage.to_string(),
        "--pool-idle-timeout",
        "1s",
        "--log",
        "warn",
    ]);
    let mirror =
        Arc::new(common::Mirror::new(&options, common::Shared::new(&options).unwrap()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_axum(listener, mirror);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let load = |requests: usize| {
        let blobs = blobs.clone();
        async move {
            let started = Instant::now();
            let client = http_client(&[]);
            let gate = Arc::new(Semaphore::new(CONCURRENCY));
            let digests: Vec<String> = blobs.keys().cloned().collect();
            let mut tasks = tokio::task::JoinSet::new();
            let mut failures = Vec::new();
            for i in 0..requests {
                // Reap finished tasks as we go: a finished task's memory is held until joined.
                while let Some(done) = tasks.try_join_next() {
                    if let Err(e) = done.unwrap() {
                        failures.push(e);
                    }
                }
                let permit = gate.clone().acquire_owned().await.unwrap();
                let (client, d) = (client.clone(), digests[i % digests.len()].clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    let req = Request::get(format!("http://{addr}/v2/library/load/blobs/{d}"))
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let res = client
                        .request(req)
                        .await
                        .map_err(|e| format!("request: {e}"))?;
                    if res.status() != StatusCode::OK {
                        return Err(format!("status {}", res.status()));
                    }
                    let body = body_bytes(res.into_body())
                        .await
                        .map_err(|e| format!("body: {e}"))?;
                    if digest(&body) != d {
                        return Err("digest mismatch".to_owned());
                    }
                    Ok(())
                });
            }
            while let Some(done) = tasks.join_next().await {
                if let Err(e) = done.unwrap() {
                    failures.push(e);
                }
            }
            (failures, started.elapsed())
        }
    };
    let settle = |baseline: usize| async move {
        // Clients are gone; pooled connections idle out after 1 s.
        let mut fds = open_fds();
        for _ in 0..50 {
            if fds <= baseline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            fds = open_fds();
        }
        fds
    };
    let fds_start = open_fds();
    let (failures, _) = load(2_000).await;
    assert!(failures.is_empty(), "warm-up: {failures:?}");
    let fds_before = settle(fds_start + 8).await;
    let rss_before = rss_mib();
    let live_before = live_kib();

    let (failures, elapsed) = load(REQUESTS).await;
    println!(
        "{REQUESTS} requests at concurrency {CONCURRENCY}: {} failed, {:.1} s, {:.0} req/s",
        failures.len(),
        elapsed.as_secs_f64(),
        REQUESTS as f64 / elapsed.as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(elapsed < Duration::from_secs(240), "bounded in time");
    let fds_after = settle(fds_before + 8).await;
    let rss_after = rss_mib();
    let live_after = live_kib();
    // Once more: memory in use must not grow with the number of requests served.
    let (failures, _) = load(REQUESTS).await;
    assert!(failures.is_empty(), "second round: {failures:?}");
    let fds_again = settle(fds_before + 8).await;
    let rss_again = rss_mib();
    let live_again = live_kib();
    println!(
        "open fds {fds_start} at start, {fds_before} after warm-up, {fds_after} after 10k, {fds_again} after 20k; \
         in use {live_before} KiB after warm-up, {live_after} after 10k, {live_again} after 20k; \
         RSS {rss_before} MiB after warm-up, {rss_after} after 10k, {rss_again} after 20k"
    );
    assert!(
        fds_after <= fds_before + 8 && fds_again <= fds_before + 8,
        "file descriptors leak"
    );
    // Connections have idled out: what is still allocated is the process's steady state
    // (fakes, pools, caches with bounded sizes). 10,000 more requests may not add to it; a
    // leak of 100 bytes a request would add ~1 MiB.
    assert!(
        live_again <= live_after + 512,
        "bytes in use grow with requests: {live_after} -> {live_again} KiB"
    );
    assert!(
        live_after <= live_before + 512,
        "bytes in use grow with requests: {live_before} -> {live_after} KiB"
    );
    assert!(
        rss_after <= rss_before + 64 && rss_again <= rss_after + 64,
        "RSS {rss_before} -> {rss_after} -> {rss_again} MiB"
    );
}
