//! The blob store, against the loopback hub (`harness/store_hub.rs`): filled while it
//! serves, served from afterwards, verified, bounded, one download per digest, and read only
//! by those the registry served a blob to.

use crate::harness::start_mirror;
use crate::harness::store_hub::StoreHub;
use crate::support::net::http_client;
use crate::support::setup::test_blob;
use crate::support::{body_bytes, bounded};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A pull request as docker sends it, with a login's token if any.
fn pull(
    mirror: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    range: Option<&str>,
) -> Request<Empty<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{mirror}{path}"))
        .header("user-agent", "docker/27.0 (test)");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if let Some(range) = range {
        req = req.header("range", range);
    }
    req.body(Empty::new()).unwrap()
}

async fn send(req: Request<Empty<Bytes>>) -> Response<Incoming> {
    bounded(http_client(&[]).request(req)).await.unwrap()
}

/// The status and whole body of a GET (`None` for a body that did not end cleanly).
async fn get_blob(
    mirror: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<Bytes>) {
    let res = send(pull(mirror, Method::GET, path, token, None)).await;
    let status = res.status();
    (status, body_bytes(res.into_body()).await.ok())
}

/// The blob files in a local store.
fn stored_blobs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.join("blobs")];
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

/// Whether `body` is `data` (compared by digest: a failing test prints two lines, not two
/// blobs).
fn same(body: Option<&[u8]>, data: impl AsRef<[u8]>) -> bool {
    body.map(crate::support::registry::digest)
        == Some(crate::support::registry::digest(data.as_ref()))
}

/// The access records of a local store.
fn accesses(dir: &Path) -> usize {
    let mut n = 0;
    let mut pending = vec![dir.join("access")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type().unwrap().is_dir() {
                true => pending.push(entry.path()),
                false => n += 1,
            }
        }
    }
    n
}

/// The files a local store's spool holds.
fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("spool")).map_or(0, |d| d.count())
}

/// How many blobs a local store holds.
pub fn count_stored(dir: &Path) -> usize {
    stored_blobs(dir).len()
}

/// Waits until no download is in the spool of the local store at `dir`.
async fn until_spool_empty(dir: &Path) {
    bounded(async {
        while std::fs::read_dir(dir.join("spool")).is_ok_and(|mut d| d.next().is_some()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Waits until the store holds `n` blobs.
async fn until_stored(dir: &Path, n: usize) {
    bounded(async {
        while stored_blobs(dir).len() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

async fn hub_with_public_blob(len: usize) -> (StoreHub, Vec<u8>, String) {
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let data = test_blob(len);
    let digest = hub.blob("library/alpine", &data);
    (hub, data, digest)
}

#[tokio::test]
async fn a_blob_is_stored_while_it_is_served_then_served_from_the_store() {
    let (hub, data, digest) = hub_with_public_blob(300_000).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", store])).await;
    let path = format!("/v2/library/alpine/blobs/{digest}");

    let (status, body) = get_blob(mirror, &path, None).await;
    assert!(
        status == StatusCode::OK && same(body.as_deref(), &data),
        "{status}"
    );
    until_stored(dir.path(), 1).await;
    assert_eq!(
        (
            hub.count(&hub.state.blob_gets),
            hub.count(&hub.state.storage_gets)
        ),
        (1, 1)
    );

    // From the store: nothing asked upstream for the content.
    let (status, body) = get_blob(mirror, &path, None).await;
    assert!(
        status == StatusCode::OK && same(body.as_deref(), &data),
        "{status}"
    );
    let res = send(pull(mirror, Method::HEAD, &path, None, None)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(res.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    let res = send(pull(
        mirror,
        Method::GET,
        &path,
        None,
        Some("bytes=1000-1999"),
    ))
    .await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 1000-1999/{}", data.len()).as_str()
    );
    assert!(same(
        Some(&body_bytes(res.into_body()).await.unwrap()),
        &data[1000..2000]
    ));
    let res = send(pull(
        mirror,
        Method::GET,
        &path,
        None,
        Some("bytes=300000-"),
    ))
    .await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers()["content-range"], "bytes */300000");
    let counts = (
        hub.count(&hub.state.blob_gets),
        hub.count(&hub.state.blob_heads),
        hub.count(&hub.state.storage_gets),
    );
    assert_eq!(counts, (1, 0, 1), "the store answered all but the first");
    assert_eq!(spooled(dir.path()), 0, "nothing left in the spool");
    super::metrics_with(
        mirror,
        &[
            "registry_mirror_blob_store_total{event=\"fill\"} 1".into(),
            "registry_mirror_blob_store_total{event=\"hit\"} 4".into(),
            format!("registry_mirror_blob_store_bytes {}", data.len()),
            "registry_mirror_blob_store_objects 1".into(),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_range_on_a_cold_miss_fetches_the_whole_blob_and_slices_it() {
    let (hub, data, digest) = hub_with_public_blob(200_000).await;
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = format!("/v2/library/alpine/blobs/{digest}");
    let res = send(pull(
        mirror,
        Method::GET,
        &path,
        None,
        Some("bytes=100-199"),
    ))
    .await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert!(same(
        Some(&body_bytes(res.into_body()).await.unwrap()),
        &data[100..200]
    ));
    assert!(
        hub.state.storage_ranges.lock().unwrap().is_empty(),
        "storage was asked for all of it"
    );
    until_stored(dir.path(), 1).await;
    let (_, body) = get_blob(mirror, &path, None).await;
    assert!(same(body.as_deref(), &data));
    assert_eq!(hub.count(&hub.state.storage_gets), 1);
}

#[tokio::test]
async fn wrong_bytes_from_storage_are_never_stored_and_never_end_cleanly() {
    let (hub, data, digest) = hub_with_public_blob(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = format!("/v2/library/alpine/blobs/{digest}");
    hub.state
        .storage_corrupt
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = get_blob(mirror, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body, None,
        "the client's body broke off before its last byte"
    );
    super::metrics_with(
        mirror,
        &["registry_mirror_blob_store_total{event=\"fill_failed\"} 1".into()],
    )
    .await;
    assert!(stored_blobs(dir.path()).is_empty(), "nothing stored");
    assert_eq!(spooled(dir.path()), 0, "and nothing left behind");
    // Good bytes again: downloaded again, and stored.
    hub.state
        .storage_corrupt
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let (_, body) = get_blob(mirror, &path, None).await;
    assert!(same(body.as_deref(), &data));
    until_stored(dir.path(), 1).await;
    assert_eq!(hub.count(&hub.state.storage_gets), 2);
}

#[tokio::test]
async fn twenty_concurrent_clients_spend_one_download_and_are_served_as_it_arrives() {
    let (hub, data, digest) = hub_with_public_blob(1_000_000).await;
    // 62 chunks of 16 KiB, 5 ms apart: about 300 ms to download.
    hub.state
        .storage_delay_ms
        .store(5, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = format!("/v2/library/alpine/blobs/{digest}");
    let pulls = (0..20).map(|_| {
        let path = path.clone();
        async move { get_blob(mirror, &path, None).await }
    });
    let started = std::time::Instant::now();
    let bodies = bounded(futures_util::future::join_all(pulls)).await;
    for (status, body) in bodies {
        assert!(
            status == StatusCode::OK && same(body.as_deref(), &data),
            "{status}"
        );
    }
    assert_eq!(
        hub.count(&hub.state.storage_gets),
        1,
        "one download from storage"
    );
    assert_eq!(hub.count(&hub.state.blob_gets), 1, "one registry GET");
    let scrape = super::metrics_with(
        mirror,
        &["registry_mirror_blob_store_total{event=\"fill\"} 1".into()],
    )
    .await;
    let joined = scrape
        .lines()
        .find_map(|l| l.strip_prefix("registry_mirror_blob_store_total{event=\"joined\"} "))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap();
    let hits = scrape
        .lines()
        .find_map(|l| l.strip_prefix("registry_mirror_blob_store_total{event=\"hit\"} "))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap();
    assert_eq!(
        joined + hits,
        19,
        "the others joined the download, or came after it"
    );
    assert!(
        joined > 0,
        "some were served while it was arriving ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_goes_away_mid_blob_leaves_the_download_running() {
    let (hub, data, digest) = hub_with_public_blob(500_000).await;
    hub.state
        .storage_delay_ms
        .store(3, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = format!("/v2/library/alpine/blobs/{digest}");
    let res = send(pull(mirror, Method::GET, &path, None, None)).await;
    let mut body = res.into_body();
    let first = bounded(body.frame()).await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    until_stored(dir.path(), 1).await;
    let (_, body) = get_blob(mirror, &path, None).await;
    assert!(same(body.as_deref(), &data));
    assert_eq!(hub.count(&hub.state.storage_gets), 1);
}

#[tokio::test]
async fn an_interrupted_download_is_resumed_with_range() {
    let (hub, data, digest) = hub_with_public_blob(400_000).await;
    hub.state
        .storage_reset_after
        .store(150_000, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = format!("/v2/library/alpine/blobs/{digest}");
    let (status, body) = get_blob(mirror, &path, None).await;
    assert!(
        status == StatusCode::OK && same(body.as_deref(), &data),
        "{status}"
    );
    // Resumed from what had arrived when storage broke off (its last bytes before the
    // break may not have left it).
    let ranges = hub.state.storage_ranges.lock().unwrap().clone();
    let from: Vec<u64> = ranges
        .iter()
        .map(|r| {
            r.trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        matches!(from[..], [n] if n > 100_000 && n <= 150_000),
        "{ranges:?}"
    );
    until_stored(dir.path(), 1).await;
    assert!(same(
        Some(&std::fs::read(&stored_blobs(dir.path())[0]).unwrap()),
        &data
    ));
}

#[tokio::test]
async fn eviction_keeps_the_store_within_its_size_least_recently_used_first() {
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let blobs: Vec<(Vec<u8>, String)> = (0..4u8)
        .map(|i| {
            let data: Vec<u8> = test_blob(100_000).into_iter().map(|b| b ^ i).collect();
            let digest = hub.blob("library/alpine", &data);
            (data, digest)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let flags = hub.flags(&[
        "--blob-store",
        dir.path().to_str().unwrap(),
        "--blob-store-max-size",
        "310000",
    ]);
    let mirror = start_mirror(&flags).await;
    let path = |d: &str| format!("/v2/library/alpine/blobs/{d}");
    for (i, (data, digest)) in blobs.iter().enumerate() {
        assert!(same(
            get_blob(mirror, &path(digest), None).await.1.as_deref(),
            data
        ));
        super::metrics_with(
            mirror,
            &[format!(
                "registry_mirror_blob_store_total{{event=\"fill\"}} {}",
                i + 1
            )],
        )
        .await;
        // Committed before the next.
        until_spool_empty(dir.path()).await;
        if i == 2 {
            // The first is used again: the second, then the third, are now the least
            // recently used.
            get_blob(mirror, &path(&blobs[0].1), None).await;
        }
    }
    // 4 × 100 kB against 310 kB: past it at the fourth (400 kB), and down to its low
    // watermark, 279 kB (90%): two went, the second and the third (down to the maximum
    // alone, one would have).
    let scrape = super::metrics_with(
        mirror,
        &["registry_mirror_blob_store_total{event=\"evicted\"} 2".into()],
    )
    .await;
    assert!(
        scrape.contains("registry_mirror_blob_store_bytes 200000"),
        "{scrape}"
    );
    bounded(async {
        while stored_blobs(dir.path()).len() > 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let before = hub.count(&hub.state.storage_gets);
    for kept in [0, 3] {
        get_blob(mirror, &path(&blobs[kept].1), None).await;
    }
    assert_eq!(
        hub.count(&hub.state.storage_gets),
        before,
        "the first (used again) and the newest are still there"
    );
    get_blob(mirror, &path(&blobs[1].1), None).await;
    assert_eq!(
        hub.count(&hub.state.storage_gets),
        before + 1,
        "an evicted one is downloaded again"
    );
}

#[tokio::test]
async fn a_restarted_mirror_keeps_its_store_and_pulls_an_image_through_an_outage() {
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let layers: Vec<(Vec<u8>, String)> = (0..2u8)
        .map(|i| {
            let data: Vec<u8> = test_blob(150_000).into_iter().map(|b| b ^ i).collect();
            let digest = hub.blob("library/alpine", &data);
            (data, digest)
        })
        .collect();
    let (manifest_digest, manifest) =
        hub.manifest("library/alpine", "latest", &[&layers[0].1, &layers[1].1]);
    let dir = tempfile::tempdir().unwrap();
    let flags = hub.flags(&["--blob-store", dir.path().to_str().unwrap()]);
    let first = start_mirror(&flags).await;
    let by_tag = "/v2/library/alpine/manifests/latest";
    let by_digest = format!("/v2/library/alpine/manifests/{manifest_digest}");
    for path in [by_tag, &by_digest] {
        let res = send(pull(first, Method::GET, path, None, None)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_bytes(res.into_body()).await.unwrap(), manifest);
    }
    // As Docker asks: HEAD by tag (with its own Accept), then GET by digest.
    let docker_accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
    let mut head = pull(first, Method::HEAD, by_tag, None, None);
    head.headers_mut()
        .insert("accept", docker_accept.parse().unwrap());
    assert_eq!(send(head).await.status(), StatusCode::OK);
    for (data, digest) in &layers {
        let (_, body) = get_blob(first, &format!("/v2/library/alpine/blobs/{digest}"), None).await;
        assert!(same(body.as_deref(), data));
    }
    until_stored(dir.path(), 2).await;
    // What the manifest cache kept is in the store too (written in the background), and who
    // fetched each of the three objects.
    bounded(async {
        while !dir.path().join("tags").exists() || accesses(dir.path()) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // The registry goes down three ways (503, 429, nothing listening), its storage too; a
    // new mirror process starts on the same store each time.
    hub.state
        .storage_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (blob_gets, storage_gets) = (
        hub.count(&hub.state.blob_gets),
        hub.count(&hub.state.storage_gets),
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nothing_listens = closed.local_addr().unwrap();
    drop(closed);
    let unreachable = [
        "--upstream",
        &format!("docker.io=http://{nothing_listens}"),
        "--blob-store",
        dir.path().to_str().unwrap(),
    ]
    .map(String::from);
    for (outage, status, flags) in [
        ("503", 503, flags.clone()),
        ("429", 429, flags.clone()),
        ("refused", 0, unreachable.to_vec()),
    ] {
        let set = |code: u16| {
            let state = &hub.state;
            state
                .registry_down
                .store(code == 503, std::sync::atomic::Ordering::SeqCst);
            let other = if code == 503 { 0 } else { code };
            state
                .registry_status
                .store(other, std::sync::atomic::Ordering::SeqCst);
        };
        set(status);
        let second = start_mirror(&flags).await;
        // The ping, which skopeo stops at when it fails, is the mirror's own while the
        // registry is down.
        let res = send(pull(second, Method::GET, "/v2/", None, None)).await;
        assert_eq!(res.status(), StatusCode::OK, "{outage}");
        let mut head = pull(second, Method::HEAD, by_tag, None, None);
        head.headers_mut()
            .insert("accept", docker_accept.parse().unwrap());
        let res = send(head).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "{outage}: Docker's HEAD by tag, from the store"
        );
        assert_eq!(
            res.headers()["docker-content-digest"],
            manifest_digest.as_str()
        );
        for path in [by_tag, &by_digest] {
            let res = send(pull(second, Method::GET, path, None, None)).await;
            assert_eq!(res.status(), StatusCode::OK, "{outage}: {path}");
            assert_eq!(
                res.headers()["docker-content-digest"],
                manifest_digest.as_str()
            );
            assert_eq!(body_bytes(res.into_body()).await.unwrap(), manifest);
        }
        for (data, digest) in &layers {
            let (status, body) =
                get_blob(second, &format!("/v2/library/alpine/blobs/{digest}"), None).await;
            assert!(
                status == StatusCode::OK && same(body.as_deref(), data),
                "{outage}: {status}"
            );
        }
        assert_eq!(
            hub.count(&hub.state.blob_gets),
            blob_gets,
            "{outage}: no upstream blob request"
        );
        assert_eq!(
            hub.count(&hub.state.storage_gets),
            storage_gets,
            "{outage}: nothing from storage"
        );
        super::metrics_with(
            second,
            &["registry_mirror_manifest_cache_total{event=\"stale\"} 2".into()],
        )
        .await;
    }

    // A tag fetched longer than `--serve-stale` ago is not served through the outage; its
    // digest and blobs still are.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    hub.state
        .registry_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut stale = flags.clone();
    stale.extend(["--serve-stale", "1s"].map(String::from));
    let third = start_mirror(&stale).await;
    let res = send(pull(third, Method::GET, by_tag, None, None)).await;
    assert_ne!(res.status(), StatusCode::OK, "past --serve-stale");
    let res = send(pull(third, Method::GET, &by_digest, None, None)).await;
    assert_eq!(res.status(), StatusCode::OK, "a digest, always");
    let (status, body) = get_blob(
        third,
        &format!("/v2/library/alpine/blobs/{}", layers[0].1),
        None,
    )
    .await;
    assert!(status == StatusCode::OK && same(body.as_deref(), &layers[0].0));
}

/// The mirror's flags for a blob store in the real S3 store's bucket, under `mirror/`.
fn s3_flags(hub: &StoreHub, s3: &crate::support::s3::Store, secret: &str) -> Vec<String> {
    let data = tempfile::tempdir().unwrap().keep();
    hub.s3_flags(
        s3,
        ("mirror", secret),
        &["--data-dir", data.to_str().unwrap()],
    )
}

#[tokio::test]
async fn the_s3_backend_keeps_blobs_in_a_real_s3_store_that_checks_every_signature() {
    use crate::support::s3::{AuthRule, Store, SECRET_KEY};
    let s3 = Store::start(AuthRule::S3).await;
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    // Past one 8 MiB part: a multipart upload.
    let big = test_blob(12 * 1024 * 1024 + 5);
    let small = test_blob(70_000);
    let (big_digest, small_digest) = (
        hub.blob("library/alpine", &big),
        hub.blob("library/alpine", &small),
    );
    let flags = s3_flags(&hub, &s3, SECRET_KEY);
    let mirror = start_mirror(&flags).await;
    for (data, digest) in [(&big, &big_digest), (&small, &small_digest)] {
        let (status, body) =
            get_blob(mirror, &format!("/v2/library/alpine/blobs/{digest}"), None).await;
        assert!(
            status == StatusCode::OK && same(body.as_deref(), data),
            "{status}"
        );
    }
    let object = |digest: &str| s3.blob_path("mirror", digest);
    bounded(async {
        while !object(&big_digest).exists() || !object(&small_digest).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(same(
        Some(&std::fs::read(object(&big_digest)).unwrap()),
        &big
    ));
    // Every request the mirror sent the store was signed with its keys (s3s verified them);
    // none was pre-signed, none carried a client's credentials.
    let requests = s3.requests();
    assert!(
        requests.iter().any(|r| r.target.contains("uploadId")),
        "a multipart upload"
    );
    for r in &requests {
        let auth = r
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTESTSTORE/"),
            "{} {}",
            r.method,
            r.target
        );
    }
    // Another mirror on the same bucket, with the registry and its storage down.
    hub.state
        .registry_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    hub.state
        .storage_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let second = start_mirror(&flags).await;
    for (data, digest) in [(&big, &big_digest), (&small, &small_digest)] {
        let (status, body) =
            get_blob(second, &format!("/v2/library/alpine/blobs/{digest}"), None).await;
        assert!(
            status == StatusCode::OK && same(body.as_deref(), data),
            "{status}"
        );
        let res = send(pull(
            second,
            Method::GET,
            &format!("/v2/library/alpine/blobs/{digest}"),
            None,
            Some("bytes=10-19"),
        ))
        .await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert!(same(
            Some(&body_bytes(res.into_body()).await.unwrap()),
            &data[10..20]
        ));
    }
    assert_eq!(hub.count(&hub.state.storage_gets), 2);
}

#[tokio::test]
async fn a_store_that_refuses_the_mirror_never_fails_a_pull() {
    use crate::support::s3::{AuthRule, Store};
    let s3 = Store::start(AuthRule::S3).await;
    let (hub, data, digest) = hub_with_public_blob(90_000).await;
    // A wrong secret: every request to the store fails its signature check.
    let mirror = start_mirror(&s3_flags(&hub, &s3, "not-the-secret")).await;
    let path = format!("/v2/library/alpine/blobs/{digest}");
    for _ in 0..2 {
        let (status, body) = get_blob(mirror, &path, None).await;
        assert!(
            status == StatusCode::OK && same(body.as_deref(), &data),
            "{status}"
        );
    }
    super::metrics_with(mirror, &["registry_mirror_blob_store_objects 0".into()]).await;
    // Its listing failed at start: counted, and the store left alone since (no download
    // was spooled for it).
    let scrape = super::metrics_with(
        mirror,
        &["registry_mirror_blob_store_total{event=\"fill\"} 0".into()],
    )
    .await;
    assert!(
        !scrape.contains("registry_mirror_blob_store_total{event=\"unavailable\"} 0"),
        "{scrape}"
    );
    assert_eq!(
        hub.count(&hub.state.storage_gets),
        2,
        "each pull downloaded it"
    );
}

/// An S3 store that accepts connections and never answers (a black-holed bucket): the
/// mirror starts, and every pull is served whole from upstream; the store holds one pull at
/// most its answer timeout (5 s), then is left alone, so the pulls after it do not wait.
#[tokio::test]
async fn a_store_that_never_answers_holds_no_pull_for_long() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        // Every connection accepted and kept open, unanswered, until the test ends.
        silent.set_nonblocking(true).unwrap();
        let mut open = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < until {
            match silent.accept() {
                Ok((conn, _)) => open.push(conn),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let (hub, data, digest) = hub_with_public_blob(80_000).await;
    let flags = hub.flags(&[
        "--blob-store",
        "s3://bucket/mirror",
        "--s3-endpoint",
        &format!("http://{endpoint}"),
        "--s3-access-key-id",
        "AKIDSILENT",
        "--s3-secret-access-key",
        "silent-secret",
        "--data-dir",
        tempfile::tempdir().unwrap().keep().to_str().unwrap(),
    ]);
    let started = std::time::Instant::now();
    let mirror = start_mirror(&flags).await;
    let start = started.elapsed();
    assert!(start < Duration::from_secs(12), "started in {start:?}");
    let path = format!("/v2/library/alpine/blobs/{digest}");
    for i in 0..5 {
        let asked = std::time::Instant::now();
        let (status, body) = get_blob(mirror, &path, None).await;
        assert!(
            status == StatusCode::OK && same(body.as_deref(), &data),
            "{status}"
        );
        let took = asked.elapsed();
        // Left alone since it failed at start: no pull waits for it.
        assert!(took < Duration::from_secs(3), "pull {i} took {took:?}");
    }
    assert_eq!(hub.count(&hub.state.storage_gets), 5, "each from upstream");
    drop(held);
}

/// A blob named by its sha512 digest is checked, stored and served like a sha256 one; one
/// whose bytes are wrong is never stored and never ends cleanly.
#[tokio::test]
async fn a_sha512_blob_is_verified_stored_and_served() {
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let (good, bad) = (test_blob(120_000), test_blob(90_000));
    let (good_digest, bad_digest) = (
        hub.blob_sha512("library/alpine", &good),
        hub.blob_sha512("library/alpine", &bad),
    );
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = |d: &str| format!("/v2/library/alpine/blobs/{d}");
    let (status, body) = get_blob(mirror, &path(&good_digest), None).await;
    assert!(
        status == StatusCode::OK && same(body.as_deref(), &good),
        "{status}"
    );
    until_stored(dir.path(), 1).await;
    let stored = stored_blobs(dir.path());
    assert!(
        stored[0].to_string_lossy().contains("/blobs/sha512/"),
        "{stored:?}"
    );
    let res = send(pull(
        mirror,
        Method::GET,
        &path(&good_digest),
        None,
        Some("bytes=5-9"),
    ))
    .await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()["docker-content-digest"], good_digest.as_str());
    assert!(same(
        Some(&body_bytes(res.into_body()).await.unwrap()),
        &good[5..10]
    ));
    assert_eq!(
        hub.count(&hub.state.storage_gets),
        1,
        "the second read a hit"
    );

    hub.state
        .storage_corrupt
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (_, body) = get_blob(mirror, &path(&bad_digest), None).await;
    assert!(body.is_none(), "a wrong sha512 blob never ends cleanly");
    until_spool_empty(dir.path()).await;
    assert_eq!(count_stored(dir.path()), 1, "and is not stored");
}

/// On S3 a download is uploaded in parts as it arrives; one whose bytes turn out wrong is
/// aborted (S3's `AbortMultipartUpload`), and the bucket holds nothing under its digest.
#[tokio::test]
async fn an_s3_upload_of_wrong_bytes_is_aborted_and_leaves_nothing() {
    use crate::support::s3::{AuthRule, Store, SECRET_KEY};
    let s3 = Store::start(AuthRule::S3).await;
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    // Two 8 MiB parts and a bit, arriving over about a second: the first part is sent
    // long before the last byte says the blob is wrong.
    let data = test_blob(17 * 1024 * 1024);
    let digest = hub.blob("library/alpine", &data);
    hub.state
        .storage_corrupt
        .store(true, std::sync::atomic::Ordering::SeqCst);
    hub.state
        .storage_delay_ms
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let mirror = start_mirror(&s3_flags(&hub, &s3, SECRET_KEY)).await;
    let path = format!("/v2/library/alpine/blobs/{digest}");
    let (_, body) = get_blob(mirror, &path, None).await;
    assert!(body.is_none(), "never ends cleanly");
    let aborted = |requests: &[crate::support::s3::StoreRequest]| {
        requests
            .iter()
            .any(|r| r.method == "DELETE" && r.target.contains("uploadId"))
    };
    bounded(async {
        while !aborted(&s3.requests()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let requests = s3.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "PUT" && r.target.contains("partNumber=1")),
        "a part was sent before the digest was known"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.method == "POST" && r.target.contains("uploadId")),
        "never completed"
    );
    let object = s3.blob_path("mirror", &digest);
    assert!(!object.exists(), "nothing under its digest");
}

/// A pull that joins a download in flight is served from it as it grows, not once it is
/// whole: its first bytes arrive while the download is still running (nothing committed,
/// the spool still there). Storage sends 16 KiB every 25 ms: 1 MB takes 1.5 s.
#[tokio::test]
async fn a_joining_pull_is_served_from_the_download_as_it_grows() {
    let (hub, data, digest) = hub_with_public_blob(1_000_000).await;
    hub.state
        .storage_delay_ms
        .store(25, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    let path = format!("/v2/library/alpine/blobs/{digest}");
    let first = send(pull(mirror, Method::GET, &path, None, None)).await;
    let mut first = first.into_body();
    let mut received = 0;
    while received < 200_000 {
        let frame = bounded(first.frame()).await.unwrap().unwrap();
        received += frame.into_data().unwrap().len();
    }
    let joined = send(pull(mirror, Method::GET, &path, None, None)).await;
    assert_eq!(joined.status(), StatusCode::OK);
    let mut joined = joined.into_body();
    let mut got = Vec::new();
    while got.len() < 100_000 {
        let frame = bounded(joined.frame()).await.unwrap().unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(
        (count_stored(dir.path()), spooled(dir.path())),
        (0, 1),
        "the joining pull had 100 kB while the download was still in its spool"
    );
    assert_eq!(&got[..], &data[..got.len()]);
    let rest = bounded(joined.collect()).await.unwrap().to_bytes();
    got.extend_from_slice(&rest);
    assert!(same(Some(&got), &data));
    drop(first);
    assert_eq!(
        hub.count(&hub.state.storage_gets),
        1,
        "one download for both"
    );
}

/// A `Range` whose last byte is the largest number there is (it once wrapped to a range
/// ending before it starts, which failed the store's read and left the store alone for all
/// pulls): the blob's last byte, and the store still serves the next pull.
#[tokio::test]
async fn a_range_to_the_largest_last_byte_is_the_rest_of_the_blob() {
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let (small, large) = (test_blob(70_000), test_blob(3 * 1024 * 1024));
    let digests = [
        hub.blob("library/alpine", &small),
        hub.blob("library/alpine", &large),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(&hub.flags(&["--blob-store", dir.path().to_str().unwrap()])).await;
    for (data, digest) in [(&small, &digests[0]), (&large, &digests[1])] {
        let path = format!("/v2/library/alpine/blobs/{digest}");
        assert!(same(get_blob(mirror, &path, None).await.1.as_deref(), data));
    }
    until_stored(dir.path(), 2).await;
    let gets = hub.count(&hub.state.storage_gets);
    for (data, digest) in [(&small, &digests[0]), (&large, &digests[1])] {
        let path = format!("/v2/library/alpine/blobs/{digest}");
        let range = format!("bytes={}-{}", data.len() - 1, u64::MAX);
        let res = send(pull(mirror, Method::GET, &path, None, Some(&range))).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        let expected = format!("bytes {0}-{0}/{1}", data.len() - 1, data.len());
        assert_eq!(res.headers()["content-range"], expected.as_str());
        let body = body_bytes(res.into_body()).await.unwrap();
        assert_eq!(&body[..], &data[data.len() - 1..]);
        assert!(same(get_blob(mirror, &path, None).await.1.as_deref(), data));
    }
    assert_eq!(hub.count(&hub.state.storage_gets), gets, "every read a hit");
    let scrape = super::metrics_with(mirror, &[]).await;
    assert!(
        scrape.contains("registry_mirror_blob_store_total{event=\"unavailable\"} 0"),
        "{scrape}"
    );
}

/// The empty blob (some images have one) stored on S3 is answered without asking the store
/// for a range of nothing (which S3 refuses, and which once left the store alone for every
/// pull): the second pull is a hit, and the store never failed.
#[tokio::test]
async fn the_empty_blob_on_s3_is_a_hit_that_asks_the_store_nothing() {
    use crate::support::s3::{AuthRule, Store, SECRET_KEY};
    let s3 = Store::start(AuthRule::S3).await;
    let hub = StoreHub::start().await;
    hub.repo("library/alpine", true, &[]);
    let digest = hub.blob("library/alpine", b"");
    let mirror = start_mirror(&s3_flags(&hub, &s3, SECRET_KEY)).await;
    let path = format!("/v2/library/alpine/blobs/{digest}");
    let (status, body) = get_blob(mirror, &path, None).await;
    assert!(status == StatusCode::OK && body.as_deref() == Some(&b""[..]));
    let object = s3.blob_path("mirror", &digest);
    bounded(async {
        while !object.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let gets = hub.count(&hub.state.storage_gets);
    for _ in 0..2 {
        let (status, body) = get_blob(mirror, &path, None).await;
        assert!(
            status == StatusCode::OK && body.as_deref() == Some(&b""[..]),
            "{status}"
        );
    }
    assert_eq!(hub.count(&hub.state.storage_gets), gets, "hits");
    let scrape = super::metrics_with(mirror, &[]).await;
    assert!(
        scrape.contains("registry_mirror_blob_store_total{event=\"unavailable\"} 0"),
        "{scrape}"
    );
}
