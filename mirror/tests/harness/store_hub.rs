//! A registry with public and private repositories, for the blob store's tests: anonymous
//! clients read the public ones, each login (a Bearer token) its own private ones; blob
//! requests redirect to a storage server on loopback whose faults a test sets (down, wrong
//! bytes, slow, a reset mid-body, `Range` honoured); every request is counted.

use crate::support::bounded;
use crate::support::net::{self, http_client, ServerBody};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Incoming;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// One repository: who reads it, what it holds.
#[derive(Default)]
struct Repo {
    public: bool,
    readers: HashSet<String>,
    blobs: HashSet<String>,
    /// By tag and by digest: the manifest's bytes.
    manifests: HashMap<String, Bytes>,
}

/// What the registry and its storage were asked, and the faults to play.
#[derive(Default)]
pub struct HubState {
    repos: Mutex<HashMap<String, Repo>>,
    blobs: Mutex<HashMap<String, Bytes>>,
    pub blob_gets: AtomicUsize,
    pub blob_heads: AtomicUsize,
    pub manifest_gets: AtomicUsize,
    pub manifest_heads: AtomicUsize,
    pub storage_gets: AtomicUsize,
    /// `Range` values storage was asked for.
    pub storage_ranges: Mutex<Vec<String>>,
    /// The registry answers `503` to everything.
    pub registry_down: AtomicBool,
    /// The registry answers this status to everything (`429`, say; 0: it does not).
    pub registry_status: std::sync::atomic::AtomicU16,
    /// Storage answers `503` to everything.
    pub storage_down: AtomicBool,
    /// Storage flips a byte of every blob it serves.
    pub storage_corrupt: AtomicBool,
    /// Storage waits this long (ms) between 16 KiB chunks.
    pub storage_delay_ms: AtomicU64,
    /// The registry waits this long (ms) before it answers a manifest `GET`.
    pub manifest_delay_ms: AtomicU64,
    /// Storage breaks off the next whole-blob answer after this many bytes (0: never).
    pub storage_reset_after: AtomicU64,
    /// (attack tests) The registry's challenge names a token service on the registry
    /// itself (`/token`): a Basic login's password is its token; no login: `anonymous-token`.
    pub token_service: AtomicBool,
    /// (attack tests) The registry reads the *last* `Authorization` header, not the first.
    pub auth_last: AtomicBool,
    /// (attack tests) Storage answers every blob `200` with an empty body.
    pub storage_empty: AtomicBool,
    /// (attack tests) The registry's own address.
    pub own: std::sync::OnceLock<SocketAddr>,
}

pub struct StoreHub {
    pub registry: SocketAddr,
    pub storage: SocketAddr,
    pub state: Arc<HubState>,
}

impl StoreHub {
    pub async fn start() -> StoreHub {
        let state = Arc::new(HubState::default());
        let s = state.clone();
        let storage = net::serve(move |req| storage(s.clone(), req)).await;
        let s = state.clone();
        let registry = net::serve(move |req| registry(s.clone(), storage, req)).await;
        let _ = state.own.set(registry);
        StoreHub {
            registry,
            storage,
            state,
        }
    }

    /// A repository, public or read by `readers` (Bearer tokens).
    pub fn repo(&self, name: &str, public: bool, readers: &[&str]) {
        let mut repos = self.state.repos.lock().unwrap();
        let repo = repos.entry(name.to_owned()).or_default();
        repo.public = public;
        repo.readers.extend(readers.iter().map(|r| r.to_string()));
    }

    /// Puts `data` in `repo` as a blob; returns its digest.
    pub fn blob(&self, repo: &str, data: &[u8]) -> String {
        self.blob_as(repo, data, crate::support::registry::digest(data))
    }

    /// Puts `data` in `repo` as a blob of its sha512 digest; returns the digest.
    pub fn blob_sha512(&self, repo: &str, data: &[u8]) -> String {
        use sha2::Digest;
        let digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)));
        self.blob_as(repo, data, digest)
    }

    fn blob_as(&self, repo: &str, data: &[u8], digest: String) -> String {
        self.state
            .blobs
            .lock()
            .unwrap()
            .insert(digest.clone(), Bytes::copy_from_slice(data));
        let mut repos = self.state.repos.lock().unwrap();
        repos
            .entry(repo.to_owned())
            .or_default()
            .blobs
            .insert(digest.clone());
        digest
    }

    /// Tags a manifest of `layers` (the first also its config) in `repo`; returns the
    /// manifest's digest and bytes.
    pub fn manifest(&self, repo: &str, tag: &str, layers: &[&str]) -> (String, Bytes) {
        let descriptor = |d: &&str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":1}}"#
            )
        };
        let all: Vec<String> = layers.iter().map(descriptor).collect();
        let body = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{},"layers":[{}]}}"#,
            descriptor(&layers[0]),
            all.join(",")
        ));
        let digest = crate::support::registry::digest(&body);
        let mut repos = self.state.repos.lock().unwrap();
        let repo = repos.entry(repo.to_owned()).or_default();
        repo.manifests.insert(tag.to_owned(), body.clone());
        repo.manifests.insert(digest.clone(), body.clone());
        (digest, body)
    }

    pub fn flags(&self, extra: &[&str]) -> Vec<String> {
        let mut f = vec![
            "--upstream".to_owned(),
            format!("docker.io=http://{}", self.registry),
            "--storage-host".to_owned(),
            self.storage.to_string(),
            "--log".to_owned(),
            "info".to_owned(),
        ];
        f.extend(extra.iter().map(|s| s.to_string()));
        f
    }

    /// [`StoreHub::flags`] with a blob store in the real S3 store `s3`'s bucket, under
    /// `prefix`, signed with `secret`, and `extra`.
    pub fn s3_flags(
        &self,
        s3: &crate::support::s3::Store,
        (prefix, secret): (&str, &str),
        extra: &[&str],
    ) -> Vec<String> {
        use crate::support::s3::{ACCESS_KEY, BUCKET};
        let (store, endpoint) = (
            format!("s3://{BUCKET}/{prefix}"),
            format!("http://{}", s3.addr),
        );
        let mut flags = vec![
            "--blob-store",
            &store,
            "--s3-endpoint",
            &endpoint,
            "--s3-access-key-id",
            ACCESS_KEY,
            "--s3-secret-access-key",
            secret,
        ];
        flags.extend_from_slice(extra);
        self.flags(&flags)
    }

    pub fn count(&self, counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// `method` on `path` at `mirror` (anonymous unless `token`): status and body (if whole).
pub async fn ask(
    mirror: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<Bytes>) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{mirror}{path}"))
        .header("accept", MANIFEST_TYPE);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let res = bounded(http_client(&[]).request(req.body(Empty::<Bytes>::new()).unwrap()))
        .await
        .unwrap();
    let status = res.status();
    (
        status,
        res.into_body().collect().await.ok().map(|b| b.to_bytes()),
    )
}

fn status(code: u16) -> Response<ServerBody> {
    Response::builder().status(code).body(net::empty()).unwrap()
}

async fn registry(
    state: Arc<HubState>,
    storage: SocketAddr,
    req: Request<Incoming>,
) -> Response<ServerBody> {
    if state.registry_down.load(Ordering::SeqCst) {
        return status(503);
    }
    let answer = state.registry_status.load(Ordering::SeqCst);
    if answer != 0 {
        return status(answer);
    }
    let path = req.uri().path().to_owned();
    if path == "/v2/" {
        return status(200);
    }
    if path == "/token" && state.token_service.load(Ordering::SeqCst) {
        use base64::Engine;
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|up| up.split_once(':').map(|(_, p)| p.to_owned()))
            .unwrap_or_else(|| "anonymous-token".to_owned());
        return Response::builder()
            .header("content-type", "application/json")
            .body(net::full(format!(
                r#"{{"token":"{token}","expires_in":300}}"#
            )))
            .unwrap();
    }
    let auths: Vec<_> = req.headers().get_all("authorization").iter().collect();
    let chosen = match state.auth_last.load(Ordering::SeqCst) {
        true => auths.last().copied(),
        false => auths.first().copied(),
    };
    let token = chosen
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(rest) = path.strip_prefix("/v2/") else {
        return status(404);
    };
    let (name, kind, reference) =
        match (rest.rsplit_once("/blobs/"), rest.rsplit_once("/manifests/")) {
            (Some((name, digest)), _) => (name, "blobs", digest),
            (_, Some((name, reference))) => (name, "manifests", reference),
            _ => return status(404),
        };
    let delay = state.manifest_delay_ms.load(Ordering::SeqCst);
    if kind == "manifests" && req.method() == Method::GET && delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let repos = state.repos.lock().unwrap();
    let Some(repo) = repos.get(name) else {
        return status(404);
    };
    let allowed = repo.public || token.as_ref().is_some_and(|t| repo.readers.contains(t));
    if !allowed {
        return Response::builder()
            .status(401)
            .header(
                "www-authenticate",
                if state.token_service.load(Ordering::SeqCst) {
                    format!(
                        "Bearer realm=\"http://{}/token\",service=\"hub\"",
                        state.own.get().unwrap()
                    )
                } else {
                    "Bearer realm=\"http://auth.invalid/token\",service=\"hub\"".to_owned()
                },
            )
            .body(net::empty())
            .unwrap();
    }
    let head = req.method() == Method::HEAD;
    if kind == "blobs" {
        let counter = if head {
            &state.blob_heads
        } else {
            &state.blob_gets
        };
        counter.fetch_add(1, Ordering::SeqCst);
        if !repo.blobs.contains(reference) {
            return status(404);
        }
        return Response::builder()
            .status(307)
            .header(
                "location",
                format!("http://{storage}/blobs/{reference}?sig=s1gn4ture"),
            )
            .body(net::empty())
            .unwrap();
    }
    let counter = if head {
        &state.manifest_heads
    } else {
        &state.manifest_gets
    };
    counter.fetch_add(1, Ordering::SeqCst);
    let Some(body) = repo.manifests.get(reference).cloned() else {
        return status(404);
    };

    let res = Response::builder()
        .header("content-type", MANIFEST_TYPE)
        .header(
            "docker-content-digest",
            crate::support::registry::digest(&body),
        )
        .header("content-length", body.len());
    res.body(if head { net::empty() } else { net::full(body) })
        .unwrap()
}

async fn storage(state: Arc<HubState>, req: Request<Incoming>) -> Response<ServerBody> {
    if state.storage_down.load(Ordering::SeqCst) {
        return status(503);
    }
    state.storage_gets.fetch_add(1, Ordering::SeqCst);
    let Some(digest) = req.uri().path().strip_prefix("/blobs/") else {
        return status(404);
    };
    let Some(mut data) = state.blobs.lock().unwrap().get(digest).cloned() else {
        return status(404);
    };
    if state.storage_corrupt.load(Ordering::SeqCst) {
        let mut bad = data.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        data = Bytes::from(bad);
    }
    if state.storage_empty.load(Ordering::SeqCst) {
        return Response::builder()
            .header("content-type", "application/octet-stream")
            .header("content-length", 0)
            .body(net::empty())
            .unwrap();
    }
    let size = data.len();
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    if let Some(range) = &range {
        state.storage_ranges.lock().unwrap().push(range.clone());
    }
    let mut res = Response::builder().header("content-type", "application/octet-stream");
    let (start, reset) = match from {
        Some(from) => {
            res = res
                .status(206)
                .header("content-range", format!("bytes {from}-{}/{size}", size - 1));
            (from, 0)
        }
        None => (
            0,
            state.storage_reset_after.swap(0, Ordering::SeqCst) as usize,
        ),
    };
    let delay = Duration::from_millis(state.storage_delay_ms.load(Ordering::SeqCst));
    let body = data.slice(start..);
    let res = res.header("content-length", body.len());
    if delay.is_zero() && reset == 0 {
        return res.body(net::full(body)).unwrap();
    }
    let chunks = futures_util::stream::unfold((body, 0usize), move |(rest, sent)| async move {
        if rest.is_empty() {
            return None;
        }
        if reset > 0 && sent >= reset {
            let broken: Result<http_body::Frame<Bytes>, net::BoxError> =
                Err("storage broke off".into());
            return Some((broken, (Bytes::new(), sent)));
        }
        tokio::time::sleep(delay).await;
        let mut rest = rest;
        let mut take = rest.len().min(16 * 1024);
        if reset > 0 {
            take = take.min(reset - sent);
        }
        let chunk = rest.split_to(take);
        Some((Ok(http_body::Frame::data(chunk)), (rest, sent + take)))
    });
    res.body(StreamBody::new(chunks).boxed()).unwrap()
}
