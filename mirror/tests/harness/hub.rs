//! A registry that wants Bearer tokens from a token service that wants the mirror's own
//! account (or its identity token), with tokens the test can expire; blobs redirect to URLs
//! pre-signed by the real S3 store. For the mirror's login and cache tests.

use crate::support::net;
use crate::support::registry::blob_key;
use crate::support::s3::{AuthRule, Store};
use base64::Engine;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const USER: &str = "mirror-account";
pub const PASSWORD: &str = "pa55-w0rd-of-the-mirror";
pub const IDENTITY_TOKEN: &str = "identity-t0ken-of-the-mirror";

/// What the token service was asked: method, query or form, `Authorization`.
pub type TokenLog = Arc<Mutex<Vec<(Method, String, Option<String>)>>>;

/// A registry that wants Bearer tokens from its token service, which wants the mirror's
/// account (or its identity token); blobs redirect to URLs pre-signed by the store.
pub struct Hub {
    pub registry: SocketAddr,
    pub store: Arc<Store>,
    /// Tokens the registry accepts now.
    pub valid: Arc<Mutex<HashSet<String>>>,
    pub token_log: TokenLog,
    /// Blob requests the registry answered with a redirect.
    pub redirects: Arc<AtomicUsize>,
    /// Authorization values the registry received.
    pub registry_auth: Arc<Mutex<Vec<Option<String>>>>,
    pub blob: Vec<u8>,
    pub digest: String,
}

impl Hub {
    pub async fn start(expires: Duration) -> Hub {
        let store = Arc::new(Store::start(AuthRule::S3).await);
        let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let digest = store.put_blob(&blob);
        let valid: Arc<Mutex<HashSet<String>>> = Arc::default();
        let token_log: TokenLog = Arc::default();
        let issued = Arc::new(AtomicUsize::new(0));
        let (v, log) = (valid.clone(), token_log.clone());
        let tokens = net::serve(move |req: Request<Incoming>| {
            let (valid, log, issued) = (v.clone(), log.clone(), issued.clone());
            async move {
                let auth = req
                    .headers()
                    .get("authorization")
                    .map(|a| a.to_str().unwrap().to_owned());
                let method = req.method().clone();
                let query = req.uri().query().unwrap_or_default().to_owned();
                let form =
                    String::from_utf8(req.into_body().collect().await.unwrap().to_bytes().to_vec())
                        .unwrap();
                let basic = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
                );
                let allowed = match method {
                    Method::POST => {
                        form.contains(&format!("refresh_token={IDENTITY_TOKEN}"))
                            && form.contains("grant_type=refresh_token")
                    }
                    _ => auth.as_deref() == Some(basic.as_str()),
                };
                log.lock().unwrap().push((
                    method,
                    if form.is_empty() { query } else { form },
                    auth,
                ));
                if !allowed {
                    return Response::builder().status(401).body(net::empty()).unwrap();
                }
                let token = format!("tok-{}", issued.fetch_add(1, Ordering::SeqCst));
                valid.lock().unwrap().insert(token.clone());
                Response::builder()
                    .header("content-type", "application/json")
                    .body(net::full(format!(
                        r#"{{"token":"{token}","expires_in":300}}"#
                    )))
                    .unwrap()
            }
        })
        .await;
        let (v, s) = (valid.clone(), store.clone());
        let redirects = Arc::new(AtomicUsize::new(0));
        let registry_auth: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let (r, ra) = (redirects.clone(), registry_auth.clone());
        let registry = net::serve(move |req: Request<Incoming>| {
            let auth = req.headers().get("authorization").map(|a| a.to_str().unwrap().to_owned());
            ra.lock().unwrap().push(auth.clone());
            let token = auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")).map(str::to_owned);
            let ok = token.is_some_and(|t| v.lock().unwrap().contains(&t));
            let path = req.uri().path().to_owned();
            let res = if !ok {
                let name = path.trim_start_matches("/v2/").split("/blobs/").next().unwrap_or("");
                Response::builder().status(401).header(
                    "www-authenticate",
                    format!("Bearer realm=\"http://{tokens}/token\",service=\"registry.test\",scope=\"repository:{name}:pull\""),
                )
            } else if let Some((_, d)) = path.rsplit_once("/blobs/") {
                r.fetch_add(1, Ordering::SeqCst);
                let location = s.presign_at(&Method::GET, &blob_key(d), std::time::SystemTime::now(), expires);
                Response::builder().status(307).header("location", location)
            } else {
                Response::builder()
            };
            async move { res.body(net::empty()).unwrap() }
        })
        .await;
        Hub {
            registry,
            store,
            valid,
            token_log,
            redirects,
            registry_auth,
            blob,
            digest,
        }
    }

    pub fn flags(&self, extra: &[&str]) -> Vec<String> {
        let mut f = vec![
            "--upstream".to_owned(),
            format!("docker.io=http://{}", self.registry),
            "--storage-host".to_owned(),
            self.store.addr.to_string(),
        ];
        f.extend(extra.iter().map(|s| s.to_string()));
        f
    }

    pub fn blob_path(&self) -> String {
        format!("/v2/library/test/blobs/{}", self.digest)
    }
}
