//! The blob store under the binary as operators run it: the process killed (`SIGKILL`) in the
//! middle of a download, then started again on the same store. Nothing partial is ever
//! served or committed, and what the crash left in the spool is gone at start.

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "harness/mod.rs"]
mod harness;

use bytes::Bytes;
use harness::binary::Running;
use harness::store_hub::StoreHub;
use http_body_util::{BodyExt, Empty};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::bounded;
use support::net::http_client;

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type().unwrap().is_dir() {
                true => pending.push(entry.path()),
                false => out.push(entry.path()),
            }
        }
    }
    out
}

#[tokio::test]
async fn a_mirror_killed_mid_download_serves_nothing_partial_and_cleans_up_at_start() {
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let data = support::setup::test_blob(2_000_000);
    let digest = hub.blob("library/alpine", &data);
    // 123 chunks of 16 KiB, 20 ms apart: a download of about 2.5 s.
    hub.state.storage_delay_ms.store(20, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap().to_owned();
    let flags = hub.flags(&["--blob-store", &store]);
    let running = Running::start(&flags);
    let mirror = running.addr;
    let url = format!("http://{mirror}/v2/library/alpine/blobs/{digest}");
    let req = http::Request::get(&url)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = bounded(http_client(&[]).request(req)).await.unwrap();
    let mut body = res.into_body();
    let mut received = 0;
    while received < 200_000 {
        received += bounded(body.frame())
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap()
            .len();
    }
    // Killed with the download half-way in its spool.
    let spooled = files_in(&dir.path().join("spool"));
    assert_eq!(spooled.len(), 1, "the download's spool");
    drop(running);
    let rest: Result<(), _> = async {
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok::<(), hyper::Error>(())
    }
    .await;
    assert!(rest.is_err(), "a body cut by the crash never ends cleanly");
    assert!(
        files_in(&dir.path().join("blobs")).is_empty(),
        "nothing partial committed"
    );

    // Started again on the same store: the crash's leftovers are gone, and the blob is
    // downloaded again, whole.
    hub.state.storage_delay_ms.store(0, Ordering::SeqCst);
    let running = Running::start(&flags);
    let mirror = running.addr;
    assert!(
        files_in(&dir.path().join("spool")).is_empty(),
        "the spool was cleaned at start"
    );
    let url = format!("http://{mirror}/v2/library/alpine/blobs/{digest}");
    let req = http::Request::get(&url)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = bounded(http_client(&[]).request(req)).await.unwrap();
    let body = bounded(res.into_body().collect()).await.unwrap().to_bytes();
    assert!(body == data[..], "the whole blob");
    bounded(async {
        while files_in(&dir.path().join("blobs")).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let stored = files_in(&dir.path().join("blobs"));
    assert!(
        std::fs::read(&stored[0]).unwrap() == data,
        "the stored blob is whole"
    );
    assert_eq!(hub.state.storage_gets.load(Ordering::SeqCst), 2);
}
