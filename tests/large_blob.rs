//! A 256 MiB blob streams through the layer from a real S3 store without being buffered.
//!
//! Its own test binary, so the process's peak RSS is this test's alone.

mod support;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::Duration;
use support::net::http_client;
use support::registry::{self, blob_key, blob_request_to};
use support::rss::{reset_peak, rss_kib};
use support::s3::{AuthRule, Store};
use tower::{ServiceBuilder, ServiceExt};
use tower_signed_redirect::matcher::HostPatterns;
use tower_signed_redirect::SignedRedirectLayer;

const BLOB: u64 = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_blob_streams_with_flat_memory() {
    let store = std::sync::Arc::new(Store::start(AuthRule::R2).await);
    // Generate the blob on the fly, 1 MiB at a time, straight into the store.
    let mut hasher = Sha256::new();
    let key_tmp = "incoming";
    let path = store.object_path(key_tmp);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut chunk = vec![0u8; 1 << 20];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..BLOB >> 20 {
        for b in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b.copy_from_slice(&state.to_le_bytes()[..b.len()]);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
    drop((file, chunk));
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let final_path = store.object_path(&blob_key(&digest));
    std::fs::create_dir_all(final_path.parent().unwrap()).unwrap();
    std::fs::rename(&path, &final_path).unwrap();

    let s = store.clone();
    let registry = registry::start(move |_, d| Some(s.presign(&Method::GET, &blob_key(d)))).await;
    let svc = ServiceBuilder::new()
        .layer(SignedRedirectLayer::with_matcher(
            HostPatterns::new([store.addr.to_string()]).unwrap(),
        ))
        .service(http_client(&[]));

    reset_peak();
    let (before, _) = rss_kib();

    let download = async {
        let res = svc
            .oneshot(blob_request_to(registry, Method::GET, &digest))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-length"], BLOB.to_string());
        let mut body = res.into_body();
        let (mut hasher, mut len) = (Sha256::new(), 0u64);
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            let data = frame.data_ref().unwrap();
            len += data.len() as u64;
            hasher.update(data);
        }
        (len, format!("sha256:{}", hex::encode(hasher.finalize())))
    };
    let (len, got) = tokio::time::timeout(Duration::from_secs(240), download)
        .await
        .expect("bounded in time");
    assert_eq!(len, BLOB);
    assert_eq!(got, digest);

    let (_, peak) = rss_kib();
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!(
        "peak RSS growth while streaming {} MiB: {growth_mib} MiB",
        BLOB >> 20
    );
    assert!(
        growth_mib < 32,
        "peak RSS grew by {growth_mib} MiB for a {} MiB blob",
        BLOB >> 20
    );
    store.assert_no_credentials_arrived();
}
