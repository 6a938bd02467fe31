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

/// `GET` of `path` at `mirror`: the status, and the body if it ended cleanly.
async fn fetch(mirror: std::net::SocketAddr, path: &str) -> (http::StatusCode, Option<Bytes>) {
    let req = http::Request::get(format!("http://{mirror}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = bounded(http_client(&[]).request(req)).await.unwrap();
    let status = res.status();
    let body = bounded(res.into_body().collect()).await.ok();
    (status, body.map(|b| b.to_bytes()))
}

/// A full disk never fails a pull: the mirror's data directory is a file system of 80 MiB
/// of its own (the store keeps 64 MiB free besides a download). A blob the disk has no
/// room for is served as without a store; a download whose room was reserved goes on to
/// the end and is stored even when the disk fills up under it half way (without the
/// reservation, its spool's next write fails with `ENOSPC` and every reader's body breaks).
#[tokio::test]
async fn a_full_disk_never_fails_a_pull() {
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let (small, large, slow) = (
        support::setup::test_blob(1_000_000),
        support::setup::test_blob(20 * 1024 * 1024),
        support::setup::test_blob(6 * 1024 * 1024),
    );
    let digests: Vec<String> = [&small, &large, &slow]
        .iter()
        .map(|data| hub.blob("library/alpine", data))
        .collect();
    let path = |i: usize| format!("/v2/library/alpine/blobs/{}", digests[i]);
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start_on_small_disk(dir.path(), 80, &hub.flags(&[]));
    let mirror = running.addr;
    let gets = || hub.state.storage_gets.load(Ordering::SeqCst);

    // Room for the small blob: stored, the second pull a hit.
    for _ in 0..2 {
        let (status, body) = fetch(mirror, &path(0)).await;
        assert!(
            status == 200 && body.as_deref() == Some(&small[..]),
            "{status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gets(), 1, "the small blob was stored");

    // No room for the large one: both pulls served whole, from upstream.
    for _ in 0..2 {
        let (status, body) = fetch(mirror, &path(1)).await;
        assert!(
            status == 200 && body.as_deref() == Some(&large[..]),
            "{status}"
        );
    }
    assert_eq!(gets(), 3, "the large blob was not stored, and never failed");
    let (_, metrics) = fetch(mirror, "/metrics").await;
    let metrics = String::from_utf8(metrics.unwrap().to_vec()).unwrap();
    assert!(
        metrics.contains("registry_mirror_blob_store_total{event=\"unavailable\"} 2"),
        "counted: {metrics}"
    );

    // The disk fills up while a download is under way (16 KiB every 2 ms: about 0.8 s).
    hub.state.storage_delay_ms.store(2, Ordering::SeqCst);
    let req = http::Request::get(format!("http://{mirror}{}", path(2)))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = bounded(http_client(&[]).request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut received = Vec::new();
    while received.len() < 500_000 {
        let frame = bounded(body.frame()).await.unwrap().unwrap();
        received.extend_from_slice(&frame.into_data().unwrap());
    }
    let filled = running.in_namespace(&format!(
        "dd if=/dev/zero of='{}/filler' bs=1M count=200 2>/dev/null",
        dir.path().display()
    ));
    assert!(!filled.success(), "dd stopped at a full disk");
    while let Some(frame) = bounded(body.frame()).await {
        received.extend_from_slice(&frame.expect("the body ends cleanly").into_data().unwrap());
    }
    assert!(
        received == slow,
        "the whole blob, though the disk filled up under it"
    );
    hub.state.storage_delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = fetch(mirror, &path(2)).await;
    assert!(status == 200 && body.as_deref() == Some(&slow[..]));
    assert_eq!(gets(), 4, "and it was stored: the second pull is a hit");
}

/// `--blob-store-redirect`: a blob an S3 store holds is answered with a `307` to a URL of
/// the store pre-signed for a `GET`, which the store (s3s, checking every signature) serves
/// to a client with no credentials at all; a byte changed in its signature, or a `HEAD`
/// on it, is refused. Only a reader the store serves the blob to gets one (a private
/// layer's URL goes to nobody else), the mirror's `HEAD` answers itself, and no log line
/// holds the signature.
// On a runtime of several threads: the in-process S3 store answers while the binary starts
// (which blocks this thread until its ready line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_blob_is_answered_with_a_url_of_the_store_signed_for_a_get() {
    use support::s3::{AuthRule, Store, BUCKET, SECRET_KEY};
    let s3 = Store::start(AuthRule::S3).await;
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    hub.repo("alice/private", false, &["alice-token"]);
    let (public, private) = (
        support::setup::test_blob(300_000),
        support::setup::test_blob(200_000),
    );
    let public_digest = hub.blob("library/alpine", &public);
    let private_digest = hub.blob("alice/private", &private);
    let data = tempfile::tempdir().unwrap();
    let data_dir = ["--data-dir", data.path().to_str().unwrap()];
    let redirect = ["--blob-store-redirect", "5m"];
    let flags = hub.s3_flags(
        &s3,
        ("mirror", SECRET_KEY),
        &[&data_dir[..], &redirect].concat(),
    );
    let running = Running::start(&flags);
    let mirror = running.addr;
    let get = |path: String, auth: Option<&'static str>| async move {
        let mut req = http::Request::get(path);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let res = bounded(http_client(&[]).request(req.body(Empty::<Bytes>::new()).unwrap()))
            .await
            .unwrap();
        let (head, body) = res.into_parts();
        (head, bounded(body.collect()).await.unwrap().to_bytes())
    };
    let public_path = format!("http://{mirror}/v2/library/alpine/blobs/{public_digest}");
    let private_path = format!("http://{mirror}/v2/alice/private/blobs/{private_digest}");
    // The first pulls fill the store, streamed as without the flag.
    let (head, body) = get(public_path.clone(), None).await;
    assert!(head.status == 200 && body == public[..]);
    let (head, body) = get(private_path.clone(), Some("Bearer alice-token")).await;
    assert!(head.status == 200 && body == private[..]);
    let object = |digest: &str| s3.blob_path("mirror", digest);
    bounded(async {
        while !object(&public_digest).exists() || !object(&private_digest).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let storage_gets = hub.state.storage_gets.load(Ordering::SeqCst);

    let (head, body) = get(public_path.clone(), None).await;
    assert_eq!(head.status, 307, "a stored blob: to the store");
    assert!(body.is_empty());
    assert_eq!(
        head.headers["docker-content-digest"],
        public_digest.as_str()
    );
    assert_eq!(head.headers["cache-control"], "no-store, private");
    let location = head.headers["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("http://{}/{BUCKET}/mirror/blobs/", s3.addr))
            && location.contains("X-Amz-Signature="),
        "{location}"
    );
    let (head, body) = get(location.clone(), None).await;
    assert!(head.status == 200 && body == public[..], "{}", head.status);
    // Tampered with: refused by the store.
    let signature = location
        .split("X-Amz-Signature=")
        .nth(1)
        .unwrap()
        .to_owned();
    let flipped = match signature.as_bytes()[0] {
        b'0' => "1",
        _ => "0",
    };
    let tampered = location.replace(&signature, &format!("{flipped}{}", &signature[1..]));
    let (head, _) = get(tampered, None).await;
    assert_eq!(head.status, 403, "a changed signature");
    let res = bounded(
        http_client(&[]).request(
            http::Request::head(&location)
                .body(Empty::<Bytes>::new())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403, "signed for a GET only");
    // HEAD through the mirror: answered by the mirror, with the blob's size.
    let res = bounded(
        http_client(&[]).request(
            http::Request::head(&public_path)
                .body(Empty::<Bytes>::new())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert!(res.status() == 200 && res.headers()["content-length"] == "300000");

    // The private layer's URL goes to alice, and to nobody the registry refuses.
    let (head, _) = get(private_path.clone(), Some("Bearer alice-token")).await;
    assert_eq!(head.status, 307);
    for (who, auth) in [
        ("anonymous", None),
        ("mallory", Some("Bearer mallory-token")),
    ] {
        let (head, body) = get(private_path.clone(), auth).await;
        assert_eq!(head.status, 401, "{who}");
        assert!(
            head.headers.get("location").is_none() && body != private[..],
            "{who}"
        );
    }
    assert_eq!(
        hub.state.storage_gets.load(Ordering::SeqCst),
        storage_gets,
        "nothing more downloaded"
    );
    // Gone from the bucket (another replica evicted it): no URL to nothing; the pull is
    // served as without the store, and the blob stored again.
    std::fs::remove_file(object(&public_digest)).unwrap();
    let (head, body) = get(public_path.clone(), None).await;
    assert!(head.status == 200 && body == public[..], "{}", head.status);
    assert_eq!(
        hub.state.storage_gets.load(Ordering::SeqCst),
        storage_gets + 1
    );
    let lines = running.lines.lock().unwrap().join("\n");
    assert!(lines.contains("\"status\":307"), "the 307s are logged");
    assert!(!lines.contains(&signature), "no signature in the log");
}

/// The mirror's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A client that opens HTTP/2 streams for a stored blob and never reads them (a window of
/// nothing, then of one byte) makes the mirror hold little: pieces are read only when the
/// connection asks for one, small first, and read ahead only within a budget; hyper's send
/// buffer holds 256 KiB a stream at most. (Each stream once read 1 MiB before its answer
/// and 1 MiB ahead: 90 streams with shut windows held 180 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_are_never_read_hold_little_memory() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let data = support::setup::test_blob(8 * 1024 * 1024);
    let digest = hub.blob("library/alpine", &data);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap().to_owned();
    let running = Running::start(&hub.flags(&["--blob-store", &store]));
    let path = format!("/v2/library/alpine/blobs/{digest}");
    assert_eq!(
        fetch(running.addr, &path).await.1.as_deref(),
        Some(&data[..])
    );
    bounded(async {
        while files_in(&dir.path().join("blobs")).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let before = rss_kib(running.child.id());
    let (mut held, mut senders, mut grew) = (Vec::new(), Vec::new(), Vec::new());
    for window in [0, 1] {
        let stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(window)
                .adaptive_window(false)
                .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        for _ in 0..90 {
            let req = http::Request::get(format!("http://{}{path}", running.addr))
                .body(Empty::new())
                .unwrap();
            let res = bounded(sender.send_request(req)).await.unwrap();
            assert_eq!(res.status(), 200);
            held.push(res);
        }
        senders.push(sender);
        tokio::time::sleep(Duration::from_millis(300)).await;
        grew.push(rss_kib(running.child.id()).saturating_sub(before));
    }
    // Shut windows: the first piece and the one read ahead, 192 KiB a stream (17 MiB for
    // 90); a one-byte window: as much as hyper's send buffer holds besides (256 KiB).
    assert!(
        grew[0] < 24 * 1024,
        "90 streams, windows shut: {} KiB",
        grew[0]
    );
    assert!(grew[1] < 72 * 1024, "and 90 of one byte: {} KiB", grew[1]);
    drop((held, senders));
}

/// A reader that stalls keeps its download's spool counted in the spool budget after the
/// download ended (on S3 the spool's name is removed once it is uploaded; the open file
/// still holds the disk): a client that opens streams it never reads cannot make the
/// mirror spool more than `--blob-store-max-size`. Once it lets go, the next blob is
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_keeps_its_spool_counted() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use support::s3::{AuthRule, Store, SECRET_KEY};
    let s3 = Store::start(AuthRule::S3).await;
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let blobs: Vec<(Vec<u8>, String)> = (0..3u8)
        .map(|i| {
            let data: Vec<u8> = support::setup::test_blob(4 * 1024 * 1024)
                .into_iter()
                .map(|b| b ^ i)
                .collect();
            let digest = hub.blob("library/alpine", &data);
            (data, digest)
        })
        .collect();
    let data_dir = tempfile::tempdir().unwrap();
    let running = Running::start(&hub.s3_flags(
        &s3,
        ("mirror", SECRET_KEY),
        &[
            "--data-dir",
            data_dir.path().to_str().unwrap(),
            "--blob-store-max-size",
            "6MiB",
        ],
    ));
    let object = |digest: &str| s3.blob_path("mirror", digest);
    let path = |i: usize| format!("/v2/library/alpine/blobs/{}", blobs[i].1);
    // The first blob, on a stream whose window stays shut.
    let stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let req = http::Request::get(format!("http://{}{}", running.addr, path(0)))
        .body(Empty::new())
        .unwrap();
    let stalled = bounded(sender.send_request(req)).await.unwrap();
    assert_eq!(stalled.status(), 200);
    bounded(async {
        while !object(&blobs[0].1).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Its spool still counts: the second blob does not fit beside it, and is served
    // without being stored.
    assert_eq!(
        fetch(running.addr, &path(1)).await.1.as_deref(),
        Some(&blobs[1].0[..])
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !object(&blobs[1].1).exists(),
        "not stored beside the stalled one"
    );
    drop((stalled, sender));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fetch(running.addr, &path(2)).await.1.as_deref(),
        Some(&blobs[2].0[..])
    );
    bounded(async {
        while !object(&blobs[2].1).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
