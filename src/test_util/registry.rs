use super::storage::FakeStorage;
use super::{json_error, origin_string, parse_origin, Recorded, TestBody, UnknownHost};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// Which method a [`FakeRegistry`] signs its storage URLs for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signing {
    /// `GET`, whatever the request's method, as Docker Hub and GHCR do: a `HEAD` sent to
    /// the URL fails the signature.
    #[default]
    GetOnly,
    /// The request's own method, as CNCF distribution does: a `GET` for a `HEAD` fails.
    RequestMethod,
}

type Locate = dyn Fn(&Method, &str) -> Option<String> + Send + Sync;

/// Where a [`FakeRegistry`] sends blob requests.
#[derive(Clone)]
enum Blobs {
    /// To URLs signed by this store, which also answers them.
    Storage(FakeStorage),
    /// To whatever the closure says (for storage the fake does not answer itself).
    Located(Arc<Locate>),
}

/// A registry that redirects blob downloads to pre-signed storage URLs, in memory.
///
/// `GET` and `HEAD` of `/v2/<name>/blobs/<digest>` are answered with a redirect (`307` by
/// default) to a URL its [`FakeStorage`] signed for `GET` or for the request's method
/// ([`Signing`]), valid for 20 minutes by default; an unknown blob gets `404 BLOB_UNKNOWN`.
/// `/v2/` answers `200`, manifests put with [`put_manifest`](Self::put_manifest) are served,
/// and with [`require_token`](Self::require_token) every `/v2/` request needs that Bearer
/// token (else `401` with a `WWW-Authenticate` challenge). The redirect can be relative, go
/// through CDN hops first ([`cdn`](Self::cdn)), and use another status.
///
/// As a service it plays every host a client would reach: requests to the registry's
/// origin, to its CDN origins, and to its storage's origin (handed to the
/// [`FakeStorage`]), so it is the inner service of a
/// [`SignedRedirectLayer`](crate::SignedRedirectLayer) as a real HTTP client would be. A
/// request to any other host fails with [`UnknownHost`]. Every request is recorded
/// ([`requests`](Self::requests); storage's are in [`FakeStorage::requests`] too). Clones
/// share blobs, manifests and records.
///
/// ```
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
/// use tower_signed_redirect::test_util::{FakeRegistry, FakeStorage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = FakeRegistry::new(FakeStorage::new());
/// registry.put_blob("sha256:00", "layer bytes");
///
/// let req = Request::get("https://registry.test/v2/library/alpine/blobs/sha256:00")
///     .body(String::new())
///     .unwrap();
/// let res = registry.clone().oneshot(req).await.unwrap();
/// assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
/// assert!(res.headers()["location"].to_str().unwrap().contains("X-Amz-Signature="));
/// # }
/// ```
#[derive(Clone)]
pub struct FakeRegistry {
    config: Arc<RegistryConfig>,
    blobs: Blobs,
    manifests: Arc<Mutex<HashMap<String, (HeaderValue, bytes::Bytes)>>>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

#[derive(Clone, Debug)]
struct RegistryConfig {
    origin: Uri,
    signing: Signing,
    redirect_status: StatusCode,
    relative: bool,
    cdns: Vec<Uri>,
    expires_in: Duration,
    token: Option<String>,
    realm: Option<String>,
}

impl FakeRegistry {
    /// A registry at `https://registry.test` redirecting to URLs `storage` signs.
    pub fn new(storage: FakeStorage) -> Self {
        FakeRegistry::with_blobs(Blobs::Storage(storage))
    }

    /// A registry that redirects a blob request to `locate(method, digest)` (`None`: an
    /// unknown blob), `method` being the one to sign for. For storage this fake does not
    /// play, such as a real S3 server; requests to it are not answered here.
    pub fn redirecting_to<F>(locate: F) -> Self
    where
        F: Fn(&Method, &str) -> Option<String> + Send + Sync + 'static,
    {
        FakeRegistry::with_blobs(Blobs::Located(Arc::new(locate)))
    }

    fn with_blobs(blobs: Blobs) -> Self {
        FakeRegistry {
            config: Arc::new(RegistryConfig {
                origin: Uri::from_static("https://registry.test"),
                signing: Signing::default(),
                redirect_status: StatusCode::TEMPORARY_REDIRECT,
                relative: false,
                cdns: Vec::new(),
                expires_in: Duration::from_secs(20 * 60),
                token: None,
                realm: None,
            }),
            blobs,
            manifests: Arc::default(),
            log: Arc::default(),
        }
    }

    /// Serves at `origin` (`scheme://host[:port]`) instead of `https://registry.test`.
    ///
    /// # Panics
    ///
    /// When `origin` is not an absolute URI with a scheme and an authority.
    pub fn at(mut self, origin: &str) -> Self {
        self.config_mut().origin = parse_origin(origin);
        self
    }

    /// Signs storage URLs as `signing` says (default [`Signing::GetOnly`]).
    pub fn signing(mut self, signing: Signing) -> Self {
        self.config_mut().signing = signing;
        self
    }

    /// Redirects with `status` (default `307`).
    pub fn redirect_status(mut self, status: StatusCode) -> Self {
        self.config_mut().redirect_status = status;
        self
    }

    /// Sends a relative `Location` (the signed URL's path and query), as Artifact Registry
    /// does. The storage must then be [`at`](FakeStorage::at) the registry's origin.
    pub fn relative_location(mut self, relative: bool) -> Self {
        self.config_mut().relative = relative;
        self
    }

    /// Redirects through a CDN at `origin` first, which redirects (`302`) to the next CDN
    /// or to storage. Call again for a longer chain.
    ///
    /// # Panics
    ///
    /// When `origin` is not an absolute URI with a scheme and an authority.
    pub fn cdn(mut self, origin: &str) -> Self {
        self.config_mut().cdns.push(parse_origin(origin));
        self
    }

    /// Signs storage URLs valid for `expires_in` (default 20 minutes).
    pub fn expires_in(mut self, expires_in: Duration) -> Self {
        self.config_mut().expires_in = expires_in;
        self
    }

    /// Requires `Authorization: Bearer <token>` on every `/v2/` request.
    pub fn require_token(mut self, token: &str) -> Self {
        self.config_mut().token = Some(token.to_owned());
        self
    }

    /// The token service the `401` challenge names (default `<origin>/token`).
    pub fn realm(mut self, realm: &str) -> Self {
        self.config_mut().realm = Some(realm.to_owned());
        self
    }

    /// Stores a blob under `digest` (any string, `sha256:...` by convention) in the
    /// registry's storage.
    ///
    /// # Panics
    ///
    /// For a registry made with [`redirecting_to`](Self::redirecting_to): its storage is
    /// not this fake's.
    pub fn put_blob(&self, digest: &str, data: impl Into<bytes::Bytes>) {
        match &self.blobs {
            Blobs::Storage(storage) => storage.put(&blob_path(digest), data),
            Blobs::Located(_) => {
                panic!("put_blob on a registry whose storage is not a FakeStorage")
            }
        }
    }

    /// Serves `body` as `<repository>:<reference>`'s manifest, of type `media_type`.
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: impl Into<bytes::Bytes>,
    ) {
        let media_type = HeaderValue::from_str(media_type).expect("a valid media type");
        self.manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                format!("{repository}/manifests/{reference}"),
                (media_type, body.into()),
            );
    }

    /// Every request received so far (storage's included), in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn config_mut(&mut self) -> &mut RegistryConfig {
        Arc::make_mut(&mut self.config)
    }

    fn is_registry(&self, uri: &Uri) -> bool {
        let same_origin = uri
            .authority()
            .is_none_or(|a| Some(a) == self.config.origin.authority());
        same_origin
            && (uri.path() == "/v2" || uri.path().starts_with("/v2/") || uri.path() == "/token")
    }

    fn answer<B>(&self, req: &Request<B>) -> Result<Response<TestBody>, UnknownHost> {
        let uri = req.uri();
        if self.is_registry(uri) {
            return Ok(self.registry(req.method(), uri, req.headers()));
        }
        if let Some(i) = self
            .config
            .cdns
            .iter()
            .position(|cdn| uri.authority() == cdn.authority())
        {
            return Ok(self.cdn_hop(i, uri));
        }
        match &self.blobs {
            Blobs::Storage(storage) if storage.serves(uri) => Ok(storage.record_and_answer(req)),
            _ => Err(UnknownHost::of(uri)),
        }
    }

    fn registry(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &http::HeaderMap,
    ) -> Response<TestBody> {
        let path = uri.path();
        if path == "/token" {
            let token = self.config.token.as_deref().unwrap_or("anonymous");
            let body =
                format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#);
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(TestBody::from(body))
                .expect("a valid response");
        }
        if let Some(challenge) = self.challenge(headers) {
            return challenge;
        }
        if *method != Method::GET && *method != Method::HEAD {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the fake registry is pull-only",
            );
        }
        let rest = path.trim_start_matches("/v2").trim_start_matches('/');
        if rest.is_empty() {
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(TestBody::from("{}"))
                .expect("a valid response");
        }
        match rest.rsplit_once("/blobs/") {
            Some((_, digest)) => self.blob(method, digest),
            None => self.manifest(method, rest),
        }
    }

    /// The registry's `401` challenge, when it requires a token and `headers` lack it.
    fn challenge(&self, headers: &http::HeaderMap) -> Option<Response<TestBody>> {
        let token = self.config.token.as_ref()?;
        let expected = format!("Bearer {token}");
        if headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            == Some(expected.as_bytes())
        {
            return None;
        }
        let origin = origin_string(&self.config.origin);
        let realm = self
            .config
            .realm
            .clone()
            .unwrap_or_else(|| format!("{origin}/token"));
        let host = self.config.origin.host().unwrap_or("registry");
        let mut res = json_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
        let challenge = format!("Bearer realm=\"{realm}\",service=\"{host}\"");
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        Some(res)
    }

    /// The manifest at `rest` (`<name>/manifests/<reference>`), if one was added.
    fn manifest(&self, method: &Method, rest: &str) -> Response<TestBody> {
        let manifest = self
            .manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(rest)
            .cloned();
        let Some((media_type, body)) = manifest else {
            return json_error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        let len = body.len();
        let body = if *method == Method::HEAD {
            bytes::Bytes::new()
        } else {
            body
        };
        Response::builder()
            .header(header::CONTENT_TYPE, media_type)
            .header(header::CONTENT_LENGTH, len)
            .body(TestBody::new(body))
            .expect("a valid response")
    }

    fn blob(&self, method: &Method, digest: &str) -> Response<TestBody> {
        let Some(target) = self.storage_url(method, digest) else {
            return json_error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
            );
        };
        let location = match self.config.cdns.first() {
            Some(cdn) => format!(
                "{}/_hop/{}/{digest}",
                origin_string(cdn),
                sign_for_code(method, self.config.signing)
            ),
            None if self.config.relative => {
                let uri: Uri = target.parse().expect("a signed URL is a valid URI");
                uri.path_and_query()
                    .map_or_else(String::new, |p| p.to_string())
            }
            None => target,
        };
        redirect(self.config.redirect_status, &location)
    }

    /// A CDN hop: `302` to the next CDN, or to storage.
    fn cdn_hop(&self, i: usize, uri: &Uri) -> Response<TestBody> {
        let Some((method, digest)) = uri
            .path()
            .strip_prefix("/_hop/")
            .and_then(|rest| rest.split_once('/'))
        else {
            return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "not a CDN path");
        };
        let location = match self.config.cdns.get(i + 1) {
            Some(next) => format!("{}/_hop/{method}/{digest}", origin_string(next)),
            None => {
                let method = if method == "HEAD" {
                    Method::HEAD
                } else {
                    Method::GET
                };
                match self.sign(&method, digest) {
                    Some(url) => url,
                    None => {
                        return json_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown")
                    }
                }
            }
        };
        redirect(StatusCode::FOUND, &location)
    }

    /// The signed URL of `digest` for a request of `method`.
    fn storage_url(&self, method: &Method, digest: &str) -> Option<String> {
        let sign_for = match self.config.signing {
            Signing::GetOnly => Method::GET,
            Signing::RequestMethod => method.clone(),
        };
        self.sign(&sign_for, digest)
    }

    fn sign(&self, method: &Method, digest: &str) -> Option<String> {
        match &self.blobs {
            Blobs::Storage(storage) => {
                let path = blob_path(digest);
                storage.has(&path).then(|| {
                    storage
                        .sign(method, &path, self.config.expires_in)
                        .to_string()
                })
            }
            Blobs::Located(locate) => locate(method, digest),
        }
    }
}

impl fmt::Debug for FakeRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeRegistry")
            .field("origin", &self.config.origin)
            .field("signing", &self.config.signing)
            .field("redirect_status", &self.config.redirect_status)
            .field("relative_location", &self.config.relative)
            .field("cdns", &self.config.cdns)
            .field("expires_in", &self.config.expires_in)
            .field("requires_token", &self.config.token.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for FakeRegistry {
    type Response = Response<TestBody>;
    type Error = UnknownHost;
    type Future = Ready<Result<Response<TestBody>, UnknownHost>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UnknownHost>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Recorded::of(&req));
        ready(self.answer(&req))
    }
}

/// Where a blob is kept in storage, as CNCF distribution lays it out.
fn blob_path(digest: &str) -> String {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    let prefix = hex.get(..2).unwrap_or(hex);
    format!("/registry/docker/registry/v2/blobs/{algorithm}/{prefix}/{hex}/data")
}

/// The method a CDN hop signs for, in its path.
fn sign_for_code(method: &Method, signing: Signing) -> &'static str {
    match (signing, method) {
        (Signing::RequestMethod, &Method::HEAD) => "HEAD",
        _ => "GET",
    }
}

/// A redirect with an HTML body, as CNCF distribution sends.
fn redirect(status: StatusCode, location: &str) -> Response<TestBody> {
    let body = format!(
        "<a href=\"{}\">Temporary Redirect</a>.\n",
        location.replace('&', "&amp;")
    );
    Response::builder()
        .status(status)
        .header(header::LOCATION, location)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(TestBody::from(body))
        .expect("a valid redirect")
}
