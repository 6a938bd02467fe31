//! The replicas' shared state and store, attacked from where an outsider can stand: a
//! client without access asking the replica that did not serve the one with access;
//! someone with the Redis password (not the replicas' key) forging grants and tags;
//! someone who can write the bucket planting blobs and tag records; a Redis that answers
//! nothing, garbage or errors. Each is bounded, and on loopback.

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "harness/mod.rs"]
mod harness;

use harness::binary::Running;
use harness::fleet::{pull, Fleet};
use harness::redis::PASSWORD;
use harness::store_hub::ask;
use http::{Method, StatusCode};
use registry_mirror::cache::store::seal::ReplicasKey;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::bounded;
use support::s3::{AuthRule, Store, ACCESS_KEY, BUCKET, SECRET_KEY};
use support::setup::test_blob;

/// What the replicas' own code would name and seal with the Redis password as its key
/// (an attacker reads the source too).
fn attackers_key() -> ReplicasKey {
    ReplicasKey::new(Some(PASSWORD), &None).expect("the harness's password is long enough")
}

/// The record name `tags.rs` gives a client's `path` accepting the hub's manifest type.
fn record_name(path: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(harness::store_hub::MANIFEST_TYPE.as_bytes());
    hex::encode(hash.finalize())
}

/// The store's name for anonymous clients in `repository` of the hub (`docker.io`), as
/// the code names it (an attacker reads the source too).
fn anonymous_scope(repository: &str) -> String {
    let mut hash = Sha256::new();
    for part in [&b"anonymous"[..], b"docker.io", repository.as_bytes()] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hex::encode(&hash.finalize()[..16])
}

/// Waits until the shared store holds the blob `digest`.
async fn until_stored(s3: &Store, digest: &str) {
    let path = s3.object_path(&blob_key(digest));
    bounded(async {
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn blob_key(digest: &str) -> String {
    Store::blob_key("fleet", digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_forged_with_the_redis_password_reads_no_private_blob() {
    let Some(fleet) = Fleet::start(10_000).await else {
        return;
    };
    fleet.hub.repo("acme/secret", false, &["alice"]);
    let secret = test_blob(30_000);
    let digest = fleet.hub.blob("acme/secret", &secret);
    let (manifest, _) = fleet.hub.manifest("acme/secret", "v1", &[&digest]);
    let path = format!("/v2/acme/secret/blobs/{digest}");
    let (status, body) = ask(fleet.replica(0), Method::GET, &path, Some("alice")).await;
    assert!(status == StatusCode::OK && body.as_deref() == Some(&secret[..]));
    until_stored(&fleet.s3, &digest).await;
    let tag = "/v2/acme/secret/manifests/v1";
    assert_eq!(
        ask(fleet.replica(0), Method::GET, tag, Some("alice"))
            .await
            .0,
        StatusCode::OK
    );
    // Replica 1 finds both in the shared store: it asks the registry for Mallory and for
    // an anonymous client, and the registry refuses them.
    let by_digest = format!("/v2/acme/secret/manifests/{manifest}");
    for i in 0..2 {
        for who in [Some("mallory"), None] {
            for path in [&path[..], tag, &by_digest] {
                let (status, _) = ask(fleet.replica(i), Method::GET, path, who).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{who:?} {path} on {i}");
            }
        }
    }
    // Mallory knows the Redis password and his own identity (a Bearer token the mirror did
    // not hand out is `token:` + its SHA-256): he writes the grant he would have, sealed
    // with the password, valid for an hour, under the name the password would give it.
    let identity = [b"token:".as_slice(), &Sha256::digest(b"mallory")].concat();
    let parts: [&[u8]; 5] = [
        &identity,
        b"docker.io",
        b"acme/secret",
        b"blobs",
        digest.as_bytes(),
    ];
    let name = attackers_key().hashed("grant", &parts);
    let until = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    fleet.redis.set(&name, &attackers_key().seal(&name, &until));
    // And Alice's grant, whose value he can read, copied onto every grant name there is.
    let grants = fleet.redis.keys("rm:grant:");
    assert!(!grants.is_empty(), "Alice's grant is shared");
    let alices = fleet.redis.get(&grants[0]).unwrap();
    for name in &grants {
        fleet.redis.set(name, &alices);
    }
    let (status, body) = ask(fleet.replica(1), Method::GET, &path, Some("mallory")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the registry was asked, and refused"
    );
    assert!(body.as_deref() != Some(&secret[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_record_sealed_with_the_redis_password_names_nothing() {
    let Some(fleet) = Fleet::start(10_000).await else {
        return;
    };
    let v1 = pull(&fleet, fleet.replica(0)).await;
    let (v2, _) = fleet
        .hub
        .manifest("library/app", "v2", &[&fleet.layers[1].1]);
    let path = "/v2/library/app/manifests/v2";
    assert_eq!(
        ask(fleet.replica(0), Method::GET, path, None).await.0,
        StatusCode::OK
    );
    let records = fleet.redis.until_keys("rm:tag:", 2).await;
    // v1 (whichever record it is) made to name v2: sealed with the password, on every
    // record's own name and on the name the password gives v1's.
    let json = format!(r#"{{"digest":"{v2}","fetched":4102444800}}"#);
    let name = record_name("/v2/library/app/manifests/v1");
    let scope = anonymous_scope("library/app");
    let guessed = attackers_key().hashed("tag", &[scope.as_str(), &name]);
    for key in records.iter().chain([&guessed]) {
        fleet.redis.set(key, &attackers_key().seal(key, &json));
    }
    fleet.hub.state.registry_down.store(true, Ordering::SeqCst);
    let (status, body) = ask(
        fleet.replica(1),
        Method::GET,
        "/v2/library/app/manifests/v1",
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "served stale, as the store recorded it"
    );
    assert_eq!(
        support::registry::digest(&body.unwrap()),
        v1,
        "v1 still names v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_planted_in_the_bucket_never_reads_as_complete_and_is_replaced() {
    let Some(fleet) = Fleet::start(10_000).await else {
        return;
    };
    let data = test_blob(300_000);
    let digest = fleet.hub.blob("library/app", &data);
    let planted: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
    fleet.s3.put(&blob_key(&digest), &planted);
    let path = format!("/v2/library/app/blobs/{digest}");
    let (status, body) = ask(fleet.replica(1), Method::GET, &path, None).await;
    assert!(
        body.is_none(),
        "{status}: the download ends with an error, never complete"
    );
    // Deleted from the bucket and forgotten: the next pull fetches it and stores it right.
    let object = fleet.s3.object_path(&blob_key(&digest));
    bounded(async {
        loop {
            let (status, body) = ask(fleet.replica(1), Method::GET, &path, None).await;
            if status == StatusCode::OK && body.as_deref() == Some(&data[..]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while std::fs::read(&object).ok().as_deref() != Some(&data[..]) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // An empty object under a digest that is not the empty blob's is no blob at all: its
    // head alone (Content-Length: 0) would be a complete answer.
    let other = test_blob(5_000);
    let other_digest = fleet.hub.blob("library/app", &other);
    fleet.s3.put(&blob_key(&other_digest), b"");
    let path = format!("/v2/library/app/blobs/{other_digest}");
    let (status, body) = ask(fleet.replica(2), Method::GET, &path, None).await;
    assert!(
        status == StatusCode::OK && body.as_deref() == Some(&other[..]),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_record_planted_in_the_bucket_names_nothing() {
    let Some(fleet) = Fleet::start(10_000).await else {
        return;
    };
    let v1 = pull(&fleet, fleet.replica(0)).await;
    fleet
        .hub
        .manifest("library/app", "v9", &[&fleet.layers[1].1]);
    let tags = fleet.s3.object_path("fleet/tags");
    let folder = bounded(async {
        loop {
            if let Some(Ok(entry)) = std::fs::read_dir(&tags).ok().and_then(|mut d| d.next()) {
                return entry.path();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // v9, which no replica fetched, made to name v1, unsealed (the bucket's writer has no
    // key); and a record of absurd time, which once panicked the pull.
    let name = record_name("/v2/library/app/manifests/v9");
    let json = format!(r#"{{"digest":"{v1}","fetched":4102444800}}"#);
    std::fs::write(folder.join(&name), json).unwrap();
    fleet.hub.state.registry_down.store(true, Ordering::SeqCst);
    let (status, body) = ask(
        fleet.replica(1),
        Method::GET,
        "/v2/library/app/manifests/v9",
        None,
    )
    .await;
    let named = body.map(|b| support::registry::digest(&b));
    assert!(
        status != StatusCode::OK && named.as_deref() != Some(&v1[..]),
        "{status}"
    );
    fleet.hub.state.registry_down.store(false, Ordering::SeqCst);
    let absurd = format!(r#"{{"digest":"{v1}","fetched":18446744073709551615}}"#);
    std::fs::write(folder.join(&name), absurd).unwrap();
    for i in 0..3 {
        let (status, _) = ask(
            fleet.replica(i),
            Method::GET,
            "/v2/library/app/manifests/v9",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "replica {i}");
    }
}

#[test]
fn a_replica_refuses_to_start_without_a_key_of_its_own() {
    let shared = [
        "--blob-store",
        "s3://b/x",
        "--s3-endpoint",
        "http://127.0.0.1:1",
    ];
    let redis = [
        "--shared-state",
        "redis://127.0.0.1:1/0",
        "--shared-state-password",
        PASSWORD,
    ];
    for key in [None, Some(PASSWORD), Some("short")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_registry-mirror"));
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(shared)
            .args(redis);
        command.args([
            "--s3-access-key-id",
            ACCESS_KEY,
            "--s3-secret-access-key",
            SECRET_KEY,
        ]);
        if let Some(key) = key {
            command.args(["--shared-state-key", key]);
        }
        let out = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_bounded(out);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key:?}: {said}");
        assert!(
            said.contains("--shared-state-key") && !said.contains(PASSWORD),
            "{said}"
        );
    }
    let _ = BUCKET;
}

/// The child's output, killed if it has not exited within 20 s.
fn wait_bounded(mut child: std::process::Child) -> std::process::Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the replica did not exit on a refused configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A fake Redis on loopback: "silent" (accepts, never answers), "garbage" (answers with
/// what is not RESP), "huge" (announces a 1 GB value, then stalls), "errors" (`-ERR`).
fn fake_redis(mode: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                let mut buf = [0u8; 4096];
                while let Ok(1..) = stream.read(&mut buf) {
                    let reply: &[u8] = match mode {
                        "silent" => continue,
                        "garbage" => b"\x00\xff%%not-resp\r\n*-7\r\n$x\r\n",
                        "huge" => b"$1000000000\r\nabc",
                        _ => b"-ERR nope\r\n",
                    };
                    if stream.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_redis_never_fails_or_hangs_a_pull() {
    const KEY: &str = "hmac-key-never-logged-77";
    for mode in ["silent", "garbage", "huge", "errors"] {
        let hub = harness::store_hub::StoreHub::start().await;
        hub.repo("library/app", true, &[]);
        let digest = hub.blob("library/app", &test_blob(300_000));
        hub.manifest("library/app", "v1", &[&digest]);
        let s3 = Store::start(AuthRule::S3).await;
        let dir = tempfile::tempdir().unwrap();
        let (endpoint, redis) = (
            format!("http://{}", s3.addr),
            format!("redis://127.0.0.1:{}/0", fake_redis(mode)),
        );
        let mirror = Running::start(&hub.flags(&[
            "--blob-store",
            &format!("s3://{BUCKET}/fleet"),
            "--s3-endpoint",
            &endpoint,
            "--s3-access-key-id",
            ACCESS_KEY,
            "--s3-secret-access-key",
            SECRET_KEY,
            "--shared-state",
            &redis,
            "--shared-state-password",
            PASSWORD,
            "--shared-state-key",
            KEY,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ]));
        for _ in 0..2 {
            for path in [
                "/v2/library/app/manifests/v1".to_owned(),
                format!("/v2/library/app/blobs/{digest}"),
            ] {
                let started = Instant::now();
                let (status, body) = ask(mirror.addr, Method::GET, &path, None).await;
                assert!(
                    status == StatusCode::OK && body.is_some(),
                    "{mode}: {path}: {status}"
                );
                let took = started.elapsed();
                assert!(
                    took < Duration::from_secs(5),
                    "{mode}: {path} took {took:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for line in mirror.lines.lock().unwrap().iter() {
            assert!(
                !line.contains(PASSWORD) && !line.contains(KEY),
                "{mode}: a secret in {line}"
            );
        }
    }
}

/// Someone with the Redis password writes a lease on a blob's download (its name seen with
/// `MONITOR` while another fetch ran; the test computes it), unsealed and without end: it
/// is no lease, so no replica waits on it (it once held a pull for ten minutes), and the
/// fleet still downloads the blob once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_forged_in_redis_holds_no_pull() {
    let Some(fleet) = Fleet::start(10_000).await else {
        return;
    };
    let data = test_blob(200_000);
    let digest = fleet.hub.blob("library/app", &data);
    let key = ReplicasKey::new(Some(harness::fleet::FLEET_KEY), &None).unwrap();
    let name = key.hashed("lease", &[b"blobs".to_vec(), digest.clone().into_bytes()]);
    fleet
        .redis
        .set(&name, "held-forever-by-someone-with-the-password");
    let path = format!("/v2/library/app/blobs/{digest}");
    let started = Instant::now();
    let (status, body) = ask(fleet.replica(1), Method::GET, &path, None).await;
    assert!(status == StatusCode::OK && body.as_deref() == Some(&data[..]));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = ask(fleet.replica(2), Method::GET, &path, None).await;
    assert!(status == StatusCode::OK && body.as_deref() == Some(&data[..]));
    assert_eq!(fleet.hub.count(&fleet.hub.state.storage_gets), 1);
}

/// Someone with the Redis password replays an older, genuinely sealed record of a tag while
/// a replica fetches the tag's new manifest (holding the lease): a replica waiting on that
/// lease sees the record change, and would serve the old image; the registry's `HEAD`
/// (free) says the tag names another digest, so it waits on, and serves the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_tag_record_does_not_roll_a_tag_back() {
    let Some(fleet) = Fleet::start(10_000).await else {
        return;
    };
    let v1 = pull(&fleet, fleet.replica(0)).await;
    let tag = "/v2/library/app/manifests/v1";
    let records = fleet.redis.until_keys("rm:tag:", 1).await;
    let old = fleet.redis.get(&records[0]).unwrap();
    // The tag moved once already: another genuine record, of another image.
    let (moved, _) = fleet.hub.manifest(
        "library/app",
        "v1",
        &[&fleet.layers[1].1, &fleet.layers[0].1],
    );
    assert_eq!(pull(&fleet, fleet.replica(0)).await, moved);
    let older = bounded(async {
        loop {
            match fleet.redis.get(&records[0]) {
                Some(now) if now != old => return now,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    // The tag moves; replica 0 fetches it slowly (holding the lease) while replica 2, cold,
    // waits on that lease and the attacker flips the record between the two v1 records.
    let (v2, _) = fleet
        .hub
        .manifest("library/app", "v1", &[&fleet.layers[1].1]);
    fleet
        .hub
        .state
        .manifest_delay_ms
        .store(2500, Ordering::SeqCst);
    let fetching = tokio::spawn({
        let replica = fleet.replica(0);
        async move { ask(replica, Method::GET, tag, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flipping = {
        let name = records[0].clone();
        let (a, b) = (old.clone(), older.clone());
        let redis = &fleet.redis;
        let until = Instant::now() + Duration::from_millis(2000);
        let mut flip = false;
        async move {
            while Instant::now() < until {
                redis.set(&name, if flip { &a } else { &b });
                flip = !flip;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let waiting = ask(fleet.replica(2), Method::GET, tag, None);
    let ((status, body), ()) = futures_util::future::join(waiting, flipping).await;
    assert_eq!(status, StatusCode::OK);
    let served = support::registry::digest(&body.unwrap());
    assert!(
        served != v1 && served != moved,
        "rolled back to a replayed record's image"
    );
    assert_eq!(served, v2);
    let (status, _) = bounded(fetching).await.unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// Someone who can write the bucket records an access of anonymous to a private layer
/// (an empty object where the replicas keep theirs, under the name the code gives it):
/// names of access records carry a MAC of the replicas' key, so it is none, and neither a
/// replica that looks it up nor one that lists the bucket at start serves the layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_planted_in_the_bucket_grants_nothing() {
    let Some(mut fleet) = Fleet::start(10_000).await else {
        return;
    };
    fleet.hub.repo("acme/secret", false, &["alice"]);
    let secret = test_blob(40_000);
    let digest = fleet.hub.blob("acme/secret", &secret);
    let path = format!("/v2/acme/secret/blobs/{digest}");
    let (status, _) = ask(fleet.replica(0), Method::GET, &path, Some("alice")).await;
    assert_eq!(status, StatusCode::OK);
    until_stored(&fleet.s3, &digest).await;
    let hex = digest.strip_prefix("sha256:").unwrap();
    let scope = anonymous_scope("acme/secret");
    fleet
        .s3
        .put(&format!("fleet/access/{scope}/blobs/sha256/{hex}"), b"");
    let restarted = fleet.add_replica();
    for mirror in [fleet.replica(1), restarted] {
        let (status, body) = ask(mirror, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the registry's answer");
        assert!(body.as_deref() != Some(&secret[..]));
    }
}
