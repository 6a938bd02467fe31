//! A real S3-compatible store (s3s + s3s-fs) on loopback that verifies every SigV4
//! pre-signed URL (signature, method, expiry), behind a thin test layer that
//!
//! - enforces the documented S3 / R2 rule the in-process store does not: a pre-signed
//!   request that also carries `Authorization` is rejected (S3: `400 InvalidArgument: Only
//!   one auth mechanism allowed`; R2: `400 InvalidRequest: Missing x-amz-content-sha256`);
//! - records every request's method, target and headers, and counts the body bytes served.

use super::net::{self, ServerBody};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

pub const ACCESS_KEY: &str = "AKIDTESTSTORE";
pub const SECRET_KEY: &str = "s3cr3t-t3st-k3y-never-logged";
pub const BUCKET: &str = "registry";
pub const REGION: &str = "us-east-1";

/// How the store answers a pre-signed request that also carries `Authorization`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRule {
    /// Amazon S3: `400 InvalidArgument`, "Only one auth mechanism allowed".
    S3,
    /// Cloudflare R2: `400 InvalidRequest`, "Missing x-amz-content-sha256".
    R2,
}

/// One request as the store received it.
#[derive(Clone, Debug)]
pub struct StoreRequest {
    pub method: Method,
    pub target: String,
    pub headers: HeaderMap,
}

impl StoreRequest {
    pub fn presigned(&self) -> bool {
        self.target.contains("X-Amz-Signature=")
    }

    /// The `X-Amz-Signature` value of a pre-signed request.
    pub fn signature(&self) -> Option<&str> {
        let (_, rest) = self.target.split_once("X-Amz-Signature=")?;
        Some(rest.split('&').next().unwrap_or(rest))
    }
}

pub struct Store {
    pub addr: SocketAddr,
    root: PathBuf,
    _dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<StoreRequest>>>,
    served: Arc<AtomicU64>,
    /// Signatures refused from now on (`revoke_signatures_seen`).
    revoked: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Store {
    pub async fn start(rule: AuthRule) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(&root).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let s3 = builder.build();
        let log = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(AtomicU64::new(0));
        let revoked: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
        let (log2, served2, revoked2) = (log.clone(), served.clone(), revoked.clone());
        let addr = net::serve(move |req: Request<hyper::body::Incoming>| {
            let (s3, log, served, revoked) =
                (s3.clone(), log2.clone(), served2.clone(), revoked2.clone());
            async move {
                let record = StoreRequest {
                    method: req.method().clone(),
                    target: req.uri().to_string(),
                    headers: req.headers().clone(),
                };
                let rejected =
                    record.presigned() && record.headers.contains_key(http::header::AUTHORIZATION);
                let revoked = record
                    .signature()
                    .is_some_and(|sig| revoked.lock().unwrap().contains(sig));
                log.lock().unwrap().push(record);
                if rejected {
                    return s3_error(rule);
                }
                if revoked {
                    return signature_mismatch();
                }
                match s3.call(req.map(s3s::Body::from)).await {
                    Ok(res) => {
                        // Count blob bytes: the bodies of successful answers.
                        let counted = res.status().is_success();
                        res.map(|body| {
                            CountingBody {
                                inner: body,
                                served,
                                counted,
                            }
                            .map_err(Into::into)
                            .boxed()
                        })
                    }
                    Err(e) => Response::builder()
                        .status(500)
                        .body(net::full(format!("{e:?}")))
                        .unwrap(),
                }
            }
        })
        .await;
        Store {
            addr,
            root,
            _dir: dir,
            log,
            served,
            revoked,
        }
    }

    /// Refuses, from now on, every pre-signed URL the store has been sent so far (`403
    /// SignatureDoesNotMatch`), as after a key rotation: URLs signed later still work.
    pub fn revoke_signatures_seen(&self) {
        let seen: Vec<String> = self
            .requests()
            .iter()
            .filter_map(|r| r.signature().map(str::to_owned))
            .collect();
        self.revoked.lock().unwrap().extend(seen);
    }

    /// Stores `data` where CNCF distribution keeps a blob; returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> String {
        let digest = super::registry::digest(data);
        self.put(&super::registry::blob_key(&digest), data);
        digest
    }

    /// Stores an object (written where s3s-fs keeps it).
    pub fn put(&self, key: &str, data: &[u8]) {
        let path = self.object_path(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// The object key of the blob `digest` (`sha256:<hex>`) in a registry mirror's store
    /// under `prefix`, as the mirror names it.
    pub fn blob_key(prefix: &str, digest: &str) -> String {
        let hex = digest.trim_start_matches("sha256:");
        format!("{prefix}/blobs/sha256/{}/{hex}", &hex[..2])
    }

    /// Where the store keeps the blob `digest` of a mirror's store under `prefix`.
    pub fn blob_path(&self, prefix: &str, digest: &str) -> PathBuf {
        self.object_path(&Self::blob_key(prefix, digest))
    }

    /// A pre-signed URL for `method` on `key`, signed at `signed_at` for `expires_in`.
    pub fn presign_at(
        &self,
        method: &Method,
        key: &str,
        signed_at: SystemTime,
        expires_in: Duration,
    ) -> String {
        let url = format!("http://{}/{BUCKET}/{key}", self.addr);
        let identity = Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test").into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires_in);
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("s3")
            .time(signed_at)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let host = self.addr.to_string();
        let signable = SignableRequest::new(
            method.as_str(),
            &url,
            std::iter::once(("host", host.as_str())),
            SignableBody::UnsignedPayload,
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .body(())
            .unwrap();
        instructions.apply_to_request_http1x(&mut req);
        req.uri().to_string()
    }

    /// A pre-signed URL for `method` on `key`, valid for an hour from now.
    pub fn presign(&self, method: &Method, key: &str) -> String {
        self.presign_at(method, key, SystemTime::now(), Duration::from_secs(3600))
    }

    pub fn requests(&self) -> Vec<StoreRequest> {
        self.log.lock().unwrap().clone()
    }

    /// Body bytes of successful answers the store has sent so far.
    pub fn served_bytes(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// Every pre-signed request the store received carried only headers from the layer's
    /// default allowlist (plus `host`, which the client sets from the URL).
    pub fn assert_no_credentials_arrived(&self) {
        const ALLOWED: &[&str] = &["host", "user-agent", "range", "if-range", "accept"];
        for req in self.requests().iter().filter(|r| r.presigned()) {
            for name in req.headers.keys() {
                assert!(
                    ALLOWED.contains(&name.as_str()),
                    "{name} reached the store on {} {}",
                    req.method,
                    req.target
                );
            }
        }
    }
}

fn s3_error(rule: AuthRule) -> Response<ServerBody> {
    let (code, message) = match rule {
        AuthRule::S3 => ("InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified"),
        AuthRule::R2 => ("InvalidRequest", "Missing x-amz-content-sha256"),
    };
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header("content-type", "application/xml")
        .body(net::full(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        )))
        .unwrap()
}

fn signature_mismatch() -> Response<ServerBody> {
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header("content-type", "application/xml")
        .body(net::full(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SignatureDoesNotMatch</Code>\
             <Message>The request signature we calculated does not match the signature you provided.</Message></Error>",
        ))
        .unwrap()
}

/// Counts the data bytes of a body as they are sent.
struct CountingBody<B> {
    inner: B,
    served: Arc<AtomicU64>,
    counted: bool,
}

impl<B> http_body::Body for CountingBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let (Some(Ok(data)), true) = (
            frame.as_ref().map(|f| f.as_ref().map(|f| f.data_ref())),
            self.counted,
        ) {
            self.served
                .fetch_add(data.map_or(0, |d| d.len() as u64), Ordering::SeqCst);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
