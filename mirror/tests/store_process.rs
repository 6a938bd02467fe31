//! The blob store under the binary as operators run it: the process killed (`SIGKILL`) in the
//! middle of a download, then started again on the same store. Nothing partial is ever
//! served or committed, and what the crash left in the spool is gone at start.

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "harness/mod.rs"]
mod harness;

use bytes::Bytes;
use harness::store_hub::StoreHub;
use http_body_util::{BodyExt, Empty};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;
use support::bounded;
use support::net::http_client;

/// A child process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary with `flags`, on a port of the OS's choosing; its address from its "ready"
/// log line.
fn start(flags: &[String]) -> (Running, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_registry-mirror"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--log-format",
            "json",
        ])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the registry-mirror binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let child = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if json["fields"]["message"] == "registry mirror ready" {
                let listen = json["fields"]["listen"].as_str().unwrap_or_default();
                let _ = tx.send(listen.parse::<SocketAddr>());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a ready line within 30 s")
        .expect("the listen address in it");
    (child, addr)
}

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
    let (running, mirror) = start(&flags);
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
    let (_running, mirror) = start(&flags);
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
