//! Load: the mirror serves 10,000 blob requests at concurrency 256 against loopback fakes
//! (a registry redirecting every blob to a storage fake that rejects credentials). Zero
//! failures, every body's digest right, open file descriptors back to their baseline (taken
//! after a warm-up round of 2,000 requests) once idle connections time out, and the bytes in
//! use (a counting allocator) flat from 10,000 to 20,000 requests: a leak shows as growth
//! with the request count. RSS is printed too, but glibc keeps freed memory for reuse and it
//! moves by ~10 MiB from round to round, too much to find a small leak with.
//!
//! Ignored by default (it wants a release build); `.ci/run` runs it:
//! `cargo test --release -p registry-mirror --test load -- --ignored --nocapture`.

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "harness/mod.rs"]
mod harness;

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::body_bytes;
use support::net::{self, http_client};
use support::registry::{digest, TOKEN};
use tokio::sync::Semaphore;

const REQUESTS: usize = 10_000;
const CONCURRENCY: usize = 256;

type Blobs = Arc<HashMap<String, Bytes>>;

/// What the process holds at one point: open descriptors, resident and allocated memory.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    fds: usize,
    rss_mib: u64,
    live_kib: usize,
}

impl Snapshot {
    fn now(fds: usize) -> Snapshot {
        Snapshot {
            fds,
            rss_mib: support::rss::rss_kib().0 / 1024,
            live_kib: support::alloc::live_bytes() / 1024,
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 16 blobs of 16..64 KiB, keyed by digest.
fn blobs() -> Blobs {
    Arc::new(
        (0..16u32)
            .map(|i| {
                let data: Vec<u8> = (0..(16 + i * 3) * 1024)
                    .map(|j| (j.wrapping_mul(31) ^ i) as u8)
                    .collect();
                (digest(&data), Bytes::from(data))
            })
            .collect(),
    )
}

/// Storage that serves `blobs` and refuses credentials as S3 does; a registry that keeps no
/// log (a recording fake's log would grow) and redirects every blob there. Returns the
/// registry and storage addresses.
async fn fakes(blobs: Blobs) -> (SocketAddr, SocketAddr) {
    let storage = net::serve(move |req: Request<hyper::body::Incoming>| {
        let blob = blobs
            .get(req.uri().path().trim_start_matches("/blobs/"))
            .cloned();
        let credentials = req.headers().contains_key("authorization");
        async move {
            let res = match (credentials, blob) {
                (true, _) => http::Response::builder()
                    .status(400)
                    .body(net::full("Only one auth mechanism allowed")),
                (false, Some(blob)) => http::Response::builder()
                    .header("content-length", blob.len())
                    .body(net::full(blob)),
                (false, None) => http::Response::builder().status(404).body(net::empty()),
            };
            res.unwrap()
        }
    })
    .await;
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
            let res = match (authorized, digest) {
                (true, Some(d)) => http::Response::builder().status(307).header(
                    "location",
                    format!("http://{storage}/blobs/{d}?X-Amz-Signature=0f"),
                ),
                _ => http::Response::builder().status(401),
            };
            res.body(net::empty()).unwrap()
        }
    })
    .await;
    (registry, storage)
}

/// `requests` blob pulls through the mirror at [`CONCURRENCY`], each body's digest checked:
/// the failures, and how long it took.
async fn pull_round(mirror: SocketAddr, blobs: &Blobs, requests: usize) -> (Vec<String>, Duration) {
    let started = Instant::now();
    let client = http_client(&[]);
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let digests: Vec<String> = blobs.keys().cloned().collect();
    let mut tasks = tokio::task::JoinSet::<Result<(), String>>::new();
    let mut failures = Vec::new();
    for i in 0..requests {
        // Reap finished tasks as we go: a finished task's memory is held until joined.
        while let Some(done) = tasks.try_join_next() {
            failures.extend(done.unwrap().err());
        }
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (client, d) = (client.clone(), digests[i % digests.len()].clone());
        tasks.spawn(async move {
            let _permit = permit;
            let req = Request::get(format!("http://{mirror}/v2/library/load/blobs/{d}"))
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
        failures.extend(done.unwrap().err());
    }
    (failures, started.elapsed())
}

/// Waits (bounded) for the clients' and pools' connections to close, down to `baseline`
/// open descriptors; returns what the process holds then.
async fn settle(baseline: usize) -> Snapshot {
    let mut fds = open_fds();
    for _ in 0..50 {
        if fds <= baseline {
            break;
        }
        // Pooled connections idle out after 1 s.
        tokio::time::sleep(Duration::from_millis(200)).await;
        fds = open_fds();
    }
    Snapshot::now(fds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run with --release --ignored (as .ci/run does)"]
async fn ten_thousand_blob_requests_at_concurrency_256() {
    let blobs = blobs();
    let (registry, storage) = fakes(blobs.clone()).await;
    let mirror = harness::start_mirror(&[
        "--upstream".to_owned(),
        format!("docker.io=http://{registry}"),
        "--storage-host".to_owned(),
        storage.to_string(),
        "--pool-idle-timeout".to_owned(),
        "1s".to_owned(),
        "--log".to_owned(),
        "warn".to_owned(),
    ])
    .await;

    // Warm-up: pools, caches and buffers reach their steady state.
    let fds_start = open_fds();
    let (failures, _) = pull_round(mirror, &blobs, 2_000).await;
    assert!(failures.is_empty(), "warm-up: {failures:?}");
    let warm = settle(fds_start + 8).await;

    // The load: every request answered, whole and right, in bounded time.
    let (failures, elapsed) = pull_round(mirror, &blobs, REQUESTS).await;
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
    let after = settle(warm.fds + 8).await;

    // Once more: what the process holds must not grow with the number of requests served.
    let (failures, _) = pull_round(mirror, &blobs, REQUESTS).await;
    assert!(failures.is_empty(), "second round: {failures:?}");
    let again = settle(warm.fds + 8).await;
    println!("at start {fds_start} fds; after warm-up {warm:?}; after 10k {after:?}; after 20k {again:?}");

    // Leaks: descriptors back to the warm baseline; bytes in use flat (what is still
    // allocated is the steady state: fakes, pools, bounded caches; a leak of 100 bytes a
    // request would add ~1 MiB); RSS only loosely bounded (glibc keeps freed memory).
    assert!(
        after.fds <= warm.fds + 8 && again.fds <= warm.fds + 8,
        "file descriptors leak"
    );
    assert!(
        again.live_kib <= after.live_kib + 512 && after.live_kib <= warm.live_kib + 512,
        "bytes in use grow with requests: {} -> {} -> {} KiB",
        warm.live_kib,
        after.live_kib,
        again.live_kib
    );
    assert!(
        after.rss_mib <= warm.rss_mib + 64 && again.rss_mib <= after.rss_mib + 64,
        "RSS {} -> {} -> {} MiB",
        warm.rss_mib,
        after.rss_mib,
        again.rss_mib
    );
}
