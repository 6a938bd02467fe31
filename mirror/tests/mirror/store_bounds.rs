//! What a client or a storage host cannot make the blob store do: spool more than
//! `--blob-store-max-size` at once (a byte asked of many blobs starts a whole download of
//! each), write a tag record per invented `Accept`, or end an empty answer for a digest of
//! something as a clean, complete blob.

use crate::harness::start_mirror;
use crate::harness::store_hub::StoreHub;
use crate::support::net::http_client;
use crate::support::setup::test_blob;
use crate::support::{body_bytes, bounded};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The bytes of the files in `dir` now.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Eight blobs of 900 kB, each asked for one byte (`Range: bytes=0-0`) by a client that
/// hangs up: with a store of 1 MiB, the spool never holds more than 1 MiB at once (one
/// download; the others are served as without a store), and one blob is stored.
#[tokio::test]
async fn one_byte_asked_of_many_blobs_never_spools_more_than_the_store_holds() {
    const MAX: u64 = 1024 * 1024;
    let hub = StoreHub::start().await;
    hub.repo("library/public", true, &[]);
    let blobs: Vec<String> = (0..8u8)
        .map(|n| {
            let mut blob = test_blob(900_000);
            blob[0] = n;
            hub.blob("library/public", &blob)
        })
        .collect();
    // Slow storage: every download is still running when the next one is asked for.
    hub.state.storage_delay_ms.store(40, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    let max = MAX.to_string();
    let mirror =
        start_mirror(&hub.flags(&["--blob-store", store, "--blob-store-max-size", &max])).await;
    let spool = dir.path().join("spool");
    let mut peak = 0;
    for digest in &blobs {
        let req = Request::get(format!("http://{mirror}/v2/library/public/blobs/{digest}"))
            .header("range", "bytes=0-0")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            let res = http_client(&[]).request(req).await.unwrap();
            body_bytes(res.into_body()).await.ok()
        })
        .await;
        peak = peak.max(dir_bytes(&spool));
    }
    bounded(async {
        while super::store::count_stored(dir.path()) == 0 || dir_bytes(&spool) > 0 {
            peak = peak.max(dir_bytes(&spool));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(peak > 0, "a download was spooled");
    assert!(
        peak <= MAX,
        "the spool held {peak} bytes at once, over {MAX}"
    );
    assert_eq!(super::store::count_stored(dir.path()), 1);
}

/// 300 `HEAD`s of one tag, each with an invented `Accept`: the store keeps one record of
/// what the tag names for them, not one each.
#[tokio::test]
async fn an_invented_accept_names_no_tag_record_of_its_own() {
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let layer = hub.blob("library/alpine", b"layer");
    hub.manifest("library/alpine", "latest", &[&layer]);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    for i in 0..300 {
        let req = Request::head(format!(
            "http://{mirror}/v2/library/alpine/manifests/latest"
        ))
        .header("accept", format!("application/x-attacker-{i}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
        let res = bounded(http_client(&[]).request(req)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let records = || {
        walkdir(&dir.path().join("tags"))
            .into_iter()
            .filter(|p| p.is_file())
            .count()
    };
    bounded(async {
        while records() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(records(), 1, "one record for 300 invented Accept values");
}

/// Every path under `dir`.
fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        }
        out.push(path);
    }
    out
}

/// Storage answers `200`, `Content-Length: 0` for a blob of 16 bytes. An empty body has no
/// last byte to hold back: the mirror refuses it before its head (a `502`), with the store
/// and without, and stores nothing.
#[tokio::test]
async fn an_empty_answer_for_a_digest_of_something_is_refused() {
    let hub = StoreHub::start().await;
    hub.repo("library/public", true, &[]);
    let digest = hub.blob("library/public", b"not empty at all");
    let nothing = hub.blob("library/public", b"");
    hub.state.storage_empty.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let with_store =
        start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let without = start_mirror(&hub.flags(&[])).await;
    for mirror in [with_store, without] {
        let uri = format!("http://{mirror}/v2/library/public/blobs/{digest}");
        let req = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
        let res = bounded(http_client(&[]).request(req)).await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::BAD_GATEWAY,
            "{mirror} (with the store: {with_store})"
        );
        // The empty blob's own digest is served, empty.
        let uri = format!("http://{mirror}/v2/library/public/blobs/{nothing}");
        let req = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
        let res = bounded(http_client(&[]).request(req)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_bytes(res.into_body()).await.unwrap().len(), 0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        super::store::count_stored(dir.path()),
        1,
        "the empty blob only"
    );
}
