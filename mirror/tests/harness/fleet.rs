//! A fleet of replicas for the tests of processes: mirror processes on one S3 store
//! (s3s-fs, every request SigV4-checked) and one Redis (Debian's `redis-server` on
//! loopback), against the counting hub, configured as an operator would (a Redis password,
//! and a key of the replicas' own that whoever can write to Redis does not know).

use super::binary::Running;
use super::redis::{RedisServer, PASSWORD};
use super::store_hub::{ask, StoreHub};
use crate::support::s3::{AuthRule, Store, SECRET_KEY};
use crate::support::setup::test_blob;
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// The key the fleet's replicas seal what they share with (`--shared-state-key`).
pub const FLEET_KEY: &str = "fleet-key-of-the-replicas-only-41d7";

/// The fleet: the hub, the shared S3 store, Redis, and three replicas.
pub struct Fleet {
    pub hub: StoreHub,
    pub s3: Store,
    pub redis: RedisServer,
    pub replicas: Vec<Running>,
    /// `library/app:v1`'s two layers: their bytes and digests.
    pub layers: Vec<(Vec<u8>, String)>,
    /// The flags every replica runs with.
    pub flags: Vec<String>,
    _data: Vec<tempfile::TempDir>,
}

impl Fleet {
    /// `None` when redis-server is not installed (and not required).
    pub async fn start(layer_size: usize) -> Option<Fleet> {
        Self::start_with(layer_size, RedisServer::start()?).await
    }

    /// The fleet on Redis over TLS (`rediss://`, its certificate trusted with
    /// `--upstream-ca`).
    pub async fn start_tls(layer_size: usize) -> Option<Fleet> {
        Self::start_with(layer_size, RedisServer::start_tls()?).await
    }

    async fn start_with(layer_size: usize, redis: RedisServer) -> Option<Fleet> {
        let s3 = Store::start(AuthRule::S3).await;
        let hub = StoreHub::start().await;
        hub.repo("library/app", true, &[]);
        let layers: Vec<(Vec<u8>, String)> = (0..2u8)
            .map(|i| {
                let data: Vec<u8> = test_blob(layer_size).into_iter().map(|b| b ^ i).collect();
                let digest = hub.blob("library/app", &data);
                (data, digest)
            })
            .collect();
        hub.manifest("library/app", "v1", &[&layers[0].1, &layers[1].1]);
        let ca = redis
            .tls
            .as_ref()
            .map(|(_, ca)| ca.to_str().unwrap().to_owned());
        let mut flags = hub.s3_flags(
            &s3,
            ("fleet", SECRET_KEY),
            &[
                "--shared-state",
                &redis.url(),
                "--shared-state-password",
                PASSWORD,
                "--shared-state-key",
                FLEET_KEY,
            ],
        );
        if let Some(ca) = ca {
            flags.extend(["--upstream-ca".to_owned(), ca]);
        }
        let mut fleet = Fleet {
            hub,
            s3,
            redis,
            replicas: Vec::new(),
            layers,
            flags,
            _data: Vec::new(),
        };
        for _ in 0..3 {
            fleet.add_replica();
        }
        Some(fleet)
    }

    pub fn add_replica(&mut self) -> SocketAddr {
        let data = tempfile::tempdir().unwrap();
        let mut flags = self.flags.clone();
        flags.extend([
            "--data-dir".to_owned(),
            data.path().to_str().unwrap().to_owned(),
        ]);
        self._data.push(data);
        let running = Running::start(&flags);
        let addr = running.addr;
        self.replicas.push(running);
        addr
    }

    /// A data directory of its own, for a replica started by hand (removed with the fleet).
    pub fn data_dir(&mut self) -> String {
        let data = tempfile::tempdir().unwrap();
        let path = data.path().to_str().unwrap().to_owned();
        self._data.push(data);
        path
    }

    pub fn replica(&self, i: usize) -> SocketAddr {
        self.replicas[i % self.replicas.len()].addr
    }

    pub fn count(&self, counter: &std::sync::atomic::AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// A pull of `library/app:v1` through `mirror`, as a client does it (manifest by tag, then
/// its layers), every digest checked; the manifest's digest.
pub async fn pull(fleet: &Fleet, mirror: SocketAddr) -> String {
    let (status, manifest) = ask(mirror, Method::GET, "/v2/library/app/manifests/v1", None).await;
    assert_eq!(status, StatusCode::OK);
    let manifest = manifest.unwrap();
    for (data, digest) in &fleet.layers {
        assert!(manifest
            .windows(digest.len())
            .any(|w| w == digest.as_bytes()));
        let (status, body) = ask(
            mirror,
            Method::GET,
            &format!("/v2/library/app/blobs/{digest}"),
            None,
        )
        .await;
        let same = body.as_deref() == Some(&data[..]);
        assert!(status == StatusCode::OK && same, "{status} for {digest}");
    }
    crate::support::registry::digest(&manifest)
}
