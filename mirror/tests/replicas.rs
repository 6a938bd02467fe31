//! Several replicas, one cache: three mirror processes on one S3 store (s3s-fs, every
//! request SigV4-checked) and one Redis (Debian's `redis-server` on loopback), against the
//! counting hub. A fleet spends one manifest `GET` per tag change and one download per
//! blob; a replica that dies mid-download leaves the blob to another; Redis stopped, each
//! replica goes on alone; nothing secret is written to Redis, and what an attacker with
//! its password writes there does not change what a tag names.

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "harness/mod.rs"]
mod harness;

use base64::Engine;
use bytes::Bytes;
use harness::fleet::{pull, Fleet, FLEET_KEY};
use harness::redis::PASSWORD;
use harness::store_hub::ask;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::bounded;
use support::net::http_client;
use support::s3::{ACCESS_KEY, SECRET_KEY};
use support::setup::test_blob;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_pulls_over_three_replicas_spend_one_manifest_get_and_one_download_per_blob() {
    let Some(fleet) = Fleet::start(400_000).await else {
        return;
    };
    // Storage slow enough (about 0.4 s a layer) that the first pulls overlap.
    fleet.hub.state.storage_delay_ms.store(15, Ordering::SeqCst);
    for wave in 0..3 {
        let pulls = (0..10).map(|i| pull(&fleet, fleet.replica(wave * 10 + i)));
        bounded(futures_util::future::join_all(pulls)).await;
    }
    assert_eq!(
        fleet.count(&fleet.hub.state.manifest_gets),
        1,
        "one manifest GET for 30 pulls"
    );
    assert_eq!(
        fleet.count(&fleet.hub.state.storage_gets),
        2,
        "one download per blob"
    );
    assert_eq!(
        fleet.count(&fleet.hub.state.blob_gets),
        2,
        "one registry GET per blob"
    );
    // And the store never failed a replica (a failure would leave it alone for 15 s, and
    // the counts above would hold by luck).
    for i in 0..3 {
        let (_, metrics) = ask(fleet.replica(i), Method::GET, "/metrics", None).await;
        let metrics = String::from_utf8(metrics.unwrap().to_vec()).unwrap();
        let unavailable = "registry_mirror_blob_store_total{event=\"unavailable\"} 0";
        assert!(metrics.contains(unavailable), "replica {i}: {metrics}");
    }

    // The tag moves: each replica sees it on its next pull, and the fleet spends one GET.
    let (moved, _) = fleet.hub.manifest(
        "library/app",
        "v1",
        &[&fleet.layers[1].1, &fleet.layers[0].1],
    );
    for i in 0..3 {
        assert_eq!(
            pull(&fleet, fleet.replica(i)).await,
            moved,
            "replica {i} sees the moved tag"
        );
    }
    assert_eq!(
        fleet.count(&fleet.hub.state.manifest_gets),
        2,
        "one more GET for the move"
    );
}

/// Redis over TLS (`rediss://`, a private CA given with `--upstream-ca`): the replicas share
/// what they fetch as over plain TCP, and none counts a failure of the shared state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_state_over_tls() {
    let Some(fleet) = Fleet::start_tls(50_000).await else {
        return;
    };
    assert!(fleet.redis.url().starts_with("rediss://"));
    fleet.hub.state.storage_delay_ms.store(5, Ordering::SeqCst);
    let pulls = (0..6).map(|i| pull(&fleet, fleet.replica(i)));
    bounded(futures_util::future::join_all(pulls)).await;
    assert_eq!(fleet.count(&fleet.hub.state.manifest_gets), 1);
    assert_eq!(fleet.count(&fleet.hub.state.storage_gets), 2);
    for i in 0..3 {
        let (_, metrics) = ask(fleet.replica(i), Method::GET, "/metrics", None).await;
        let metrics = String::from_utf8(metrics.unwrap().to_vec()).unwrap();
        assert!(
            metrics.contains("registry_mirror_shared_state_errors_total 0"),
            "replica {i}: {metrics}"
        );
    }
    assert!(!fleet.redis.keys("rm:tag:").is_empty(), "written over TLS");
}

/// A multi-arch image's platform manifests are fetched by digest: nine pulls of one over
/// three replicas at once (none has it) spend one manifest `GET` for the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_by_digest_is_fetched_once_for_the_fleet() {
    let Some(fleet) = Fleet::start(10_000).await else {
        return;
    };
    let (digest, manifest) = fleet
        .hub
        .manifest("library/app", "arm64", &[&fleet.layers[0].1]);
    fleet
        .hub
        .state
        .manifest_delay_ms
        .store(150, Ordering::SeqCst);
    let path = format!("/v2/library/app/manifests/{digest}");
    let pulls = (0..9).map(|i| {
        let path = path.clone();
        let replica = fleet.replica(i);
        async move { ask(replica, Method::GET, &path, None).await }
    });
    for (status, body) in bounded(futures_util::future::join_all(pulls)).await {
        assert!(
            status == StatusCode::OK && body == Some(manifest.clone()),
            "{status}"
        );
    }
    assert_eq!(
        fleet.count(&fleet.hub.state.manifest_gets),
        1,
        "one manifest GET by digest for the fleet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_every_replica_goes_on_alone() {
    let Some(mut fleet) = Fleet::start(300_000).await else {
        return;
    };
    // Redis is killed in the middle of nine pulls (each layer takes about 0.4 s to
    // download: some pulls hold leases, others wait on them): every pull passes.
    fleet.hub.state.storage_delay_ms.store(20, Ordering::SeqCst);
    let pid = fleet.redis.pid().unwrap();
    let kill = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    };
    let pulls = futures_util::future::join_all((0..9).map(|i| pull(&fleet, fleet.replica(i))));
    bounded(futures_util::future::join(pulls, kill)).await;
    assert!(!fleet.redis.answers(), "Redis is down");
    fleet.redis.stop();
    fleet.hub.state.storage_delay_ms.store(0, Ordering::SeqCst);
    for i in 0..6 {
        pull(&fleet, fleet.replica(i)).await;
    }
    for i in 0..3 {
        let (status, _) = ask(fleet.replica(i), Method::GET, "/readyz", None).await;
        assert_eq!(status, StatusCode::OK, "replica {i} is ready without Redis");
        let (_, metrics) = ask(fleet.replica(i), Method::GET, "/metrics", None).await;
        let metrics = String::from_utf8(metrics.unwrap().to_vec()).unwrap();
        let errors = metrics
            .lines()
            .find_map(|l| l.strip_prefix("registry_mirror_shared_state_errors_total "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap();
        assert!(
            errors > 0 || i == 0,
            "replica {i} counted no failure of Redis"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_download_leaves_the_blob_to_another() {
    let Some(mut fleet) = Fleet::start(1_000_000).await else {
        return;
    };
    // 62 chunks of 16 KiB, 50 ms apart: a download of about 3 s.
    fleet.hub.state.storage_delay_ms.store(50, Ordering::SeqCst);
    let (data, digest) = fleet.layers[0].clone();
    let path = format!("/v2/library/app/blobs/{digest}");
    let first = fleet.replica(0);
    let req = Request::get(format!("http://{first}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = bounded(http_client(&[]).request(req)).await.unwrap();
    let mut cut = res.into_body();
    bounded(cut.frame()).await.unwrap().unwrap();
    // Replica 1's client asks for the same blob: it waits for replica 0's download...
    let second = fleet.replica(1);
    let waiting = tokio::spawn(async move { ask(second, Method::GET, &path, None).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... which dies with it: its lease lapses, and replica 1 downloads the blob itself.
    fleet.hub.state.storage_delay_ms.store(0, Ordering::SeqCst);
    fleet.replicas[0].kill();
    let rest = async {
        while let Some(frame) = cut.frame().await {
            frame?;
        }
        Ok::<(), hyper::Error>(())
    };
    assert!(
        bounded(rest).await.is_err(),
        "the dead replica's client never got a clean end"
    );
    let (status, body) = bounded(waiting).await.unwrap();
    assert!(
        status == StatusCode::OK && body.as_deref() == Some(&data[..]),
        "{status}"
    );
    assert_eq!(
        fleet.count(&fleet.hub.state.storage_gets),
        2,
        "the dead replica's, and replica 1's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_is_written_to_redis() {
    let Some(mut fleet) = Fleet::start(50_000).await else {
        return;
    };
    let token = "client-login-token-9c1e5d77";
    fleet.hub.repo("team/private", false, &[token]);
    let layer = test_blob(40_000);
    let digest = fleet.hub.blob("team/private", &layer);
    fleet.hub.manifest("team/private", "v1", &[&digest]);
    for i in 0..3 {
        pull(&fleet, fleet.replica(i)).await;
        let (status, _) = ask(
            fleet.replica(i),
            Method::GET,
            "/v2/team/private/manifests/v1",
            Some(token),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = ask(
            fleet.replica(i),
            Method::GET,
            &format!("/v2/team/private/blobs/{digest}"),
            Some(token),
        )
        .await;
        assert!(status == StatusCode::OK && body.as_deref() == Some(&layer[..]));
    }
    // A client that logs in with a user name and password (`docker login`: Basic, through
    // the mirror's /token/, whose token service on the hub makes the password its token),
    // and a replica that logs in itself with an account of its own.
    fleet.hub.state.token_service.store(true, Ordering::SeqCst);
    let (alice, robot) = ("alice-password-61b2", "robot-password-0d9e");
    fleet.hub.repo("team/robot", false, &[alice, robot]);
    let robot_layer = test_blob(30_000);
    let robot_digest = fleet.hub.blob("team/robot", &robot_layer);
    let blob_path = format!("/v2/team/robot/blobs/{robot_digest}");
    let (status, _) = ask(fleet.replica(0), Method::GET, &blob_path, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the challenge names /token/"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{alice}"));
    let token_path = "/token/docker.io?service=hub&scope=repository:team/robot:pull";
    let req = Request::get(format!("http://{}{token_path}", fleet.replica(0)))
        .header("authorization", format!("Basic {basic}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = bounded(http_client(&[]).request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let answer = res.into_body().collect().await.unwrap().to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let issued = answer["token"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let (status, body) = ask(fleet.replica(i), Method::GET, &blob_path, Some(&issued)).await;
        assert!(status == StatusCode::OK && body.as_deref() == Some(&robot_layer[..]));
    }
    let mut own = fleet.flags.clone();
    own.extend(["--upstream-user", "robot", "--upstream-password", robot].map(String::from));
    own.extend(["--data-dir".to_owned(), fleet.data_dir()]);
    let own = harness::binary::Running::start(&own);
    let (status, body) = ask(own.addr, Method::GET, &blob_path, None).await;
    assert!(
        status == StatusCode::OK && body.as_deref() == Some(&robot_layer[..]),
        "{status}"
    );

    let dump = fleet.redis.dump();
    assert!(
        dump.iter().any(|k| k.starts_with("rm:grant:")),
        "the logins' grants are there: {dump:?}"
    );
    for entry in &dump {
        for secret in [
            token,
            alice,
            robot,
            &basic,
            &issued,
            "alice",
            "robot",
            "team/robot",
            "Bearer",
            SECRET_KEY,
            ACCESS_KEY,
            PASSWORD,
            FLEET_KEY,
            "s1gn4ture",
            "sig=",
            "team/private",
            "X-Amz",
        ] {
            assert!(!entry.contains(secret), "{secret:?} is in Redis: {entry:?}");
        }
    }
}

/// An attacker with the Redis password swaps the values of the tag records (the keys are
/// HMACs: which tag is which, it cannot tell) and writes a record of its own. With the
/// registry down, a replica that never served the tag serves what the tag named, as the
/// store recorded it: the records whose MAC fails are none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_record_forged_in_redis_names_nothing() {
    let Some(fleet) = Fleet::start(30_000).await else {
        return;
    };
    let (v2, _) = fleet.hub.manifest(
        "library/app",
        "v2",
        &[&fleet.layers[1].1, &fleet.layers[0].1],
    );
    let v1 = pull(&fleet, fleet.replica(0)).await;
    let (status, _) = ask(
        fleet.replica(0),
        Method::GET,
        "/v2/library/app/manifests/v2",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let keys = fleet.redis.until_keys("rm:tag:", 2).await;
    let values: Vec<String> = keys.iter().map(|k| fleet.redis.get(k).unwrap()).collect();
    for (i, key) in keys.iter().enumerate() {
        fleet.redis.set(key, &values[(i + 1) % values.len()]);
    }
    let forged = format!(r#"{{"digest":"{v2}","fetched":4102444800}}"#);
    fleet.redis.set(&keys[0], &forged);
    fleet.hub.state.registry_down.store(true, Ordering::SeqCst);
    for (tag, named) in [("v1", &v1), ("v2", &v2)] {
        let path = format!("/v2/library/app/manifests/{tag}");
        let (status, body) = ask(fleet.replica(1), Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{tag} served stale");
        assert_eq!(
            &support::registry::digest(&body.unwrap()),
            named,
            "what {tag} named"
        );
    }
}

/// A replica whose download answered nothing to keep (storage fails) lets go of its lease
/// at once: the next replica asks itself, rather than waiting the 15 s a lease lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_keeps_nothing_leaves_no_replica_waiting() {
    let Some(fleet) = Fleet::start(30_000).await else {
        return;
    };
    fleet.hub.state.storage_down.store(true, Ordering::SeqCst);
    let path = format!("/v2/library/app/blobs/{}", fleet.layers[0].1);
    let (status, _) = ask(fleet.replica(0), Method::GET, &path, None).await;
    assert!(!status.is_success(), "{status}");
    for i in 1..3 {
        let asked = ask(fleet.replica(i), Method::GET, &path, None);
        let answered = tokio::time::timeout(Duration::from_secs(5), asked).await;
        assert!(
            answered.is_ok(),
            "replica {i} waited on a lease nobody fills"
        );
    }
    assert_eq!(
        fleet.count(&fleet.hub.state.blob_gets),
        3,
        "each asked the registry"
    );
}
