use super::{origin_string, parse_origin, xml_error, Recorded, TestBody, UnknownHost};
use crate::signed_url::format_basic_timestamp;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Ready};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tower_service::Service;

/// Whose error a [`FakeStorage`] answers a second auth mechanism with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Provider {
    /// Amazon S3: `400 InvalidArgument`, "Only one auth mechanism allowed".
    #[default]
    S3,
    /// Cloudflare R2: `400 InvalidRequest`, "Missing x-amz-content-sha256".
    R2,
}

/// A rule a [`FakeStorage`] enforces; each can be turned off with
/// [`FakeStorage::enforce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageRule {
    /// A pre-signed request that also carries `Authorization` is refused with the
    /// [`Provider`]'s `400`.
    OneAuthMechanism,
    /// A request whose method is not the one the URL was signed for gets
    /// `403 SignatureDoesNotMatch`.
    SignedMethod,
    /// A request whose URL is not byte for byte the signed one gets
    /// `403 SignatureDoesNotMatch`.
    SignedUrl,
    /// A request after the URL's expiry gets `403 AccessDenied` ("Request has expired").
    Expiry,
    /// A request carrying `x-amz-*` headers the URL did not sign gets `403 AccessDenied`.
    UnsignedHeaders,
}

const ALL_RULES: [StorageRule; 5] = [
    StorageRule::OneAuthMechanism,
    StorageRule::SignedMethod,
    StorageRule::SignedUrl,
    StorageRule::Expiry,
    StorageRule::UnsignedHeaders,
];

/// An object store that checks pre-signed URLs the way S3 and R2 do, in memory.
///
/// It serves the objects a test [`put`](Self::put)s, to requests carrying a URL it
/// [`sign`](Self::sign)ed, and enforces the [`StorageRule`]s (all by default). `Range` is
/// honoured (`206`, or `416` with `Content-Range: bytes */<size>`), as is `If-Range` with
/// the object's `ETag`; a `HEAD` gets the headers of a `GET` and no body. Every request is
/// recorded ([`requests`](Self::requests)). Clones share objects, signatures and records.
///
/// Signed URLs look like S3's SigV4 ones (`X-Amz-Algorithm`, `X-Amz-Credential`,
/// `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`, `X-Amz-Signature`), so
/// [`SignedUrl`](crate::SignedUrl) reads their scheme and expiry, but the signature is a
/// keyed hash of this crate's: the fake is about the rules, not SigV4 itself.
///
/// ```
/// use std::time::Duration;
/// use http::{Method, Request, StatusCode};
/// use tower::ServiceExt;
/// use tower_signed_redirect::test_util::FakeStorage;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let storage = FakeStorage::new();
/// storage.put("/bucket/blob", "blob bytes");
/// let url = storage.sign(&Method::GET, "/bucket/blob", Duration::from_secs(600));
///
/// let get = Request::get(url.clone()).body(String::new()).unwrap();
/// assert_eq!(storage.clone().oneshot(get).await.unwrap().status(), StatusCode::OK);
///
/// // The client's credentials next to the signature: S3 refuses the request.
/// let replayed = Request::get(url).header("authorization", "Bearer t").body(String::new()).unwrap();
/// assert_eq!(storage.clone().oneshot(replayed).await.unwrap().status(), StatusCode::BAD_REQUEST);
/// # }
/// ```
#[derive(Clone)]
pub struct FakeStorage {
    config: Arc<StorageConfig>,
    state: Arc<Mutex<StorageState>>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

#[derive(Clone)]
struct StorageConfig {
    origin: Uri,
    provider: Provider,
    off: Vec<StorageRule>,
}

#[derive(Default)]
struct StorageState {
    /// The signing key: rotated by `revoke_signed_urls`.
    key: u64,
    objects: HashMap<String, bytes::Bytes>,
    /// Every URL signed, by its signature: the method it was signed for and the exact URL.
    signed: HashMap<String, (Method, String)>,
}

impl Default for FakeStorage {
    fn default() -> Self {
        FakeStorage::new()
    }
}

impl FakeStorage {
    /// A store at `https://bucket.s3.amazonaws.com` (a host
    /// [`WellKnownStorage`](crate::matcher::WellKnownStorage) accepts) with S3's errors and
    /// every rule enforced.
    pub fn new() -> Self {
        FakeStorage {
            config: Arc::new(StorageConfig {
                origin: Uri::from_static("https://bucket.s3.amazonaws.com"),
                provider: Provider::S3,
                off: Vec::new(),
            }),
            state: Arc::default(),
            log: Arc::default(),
        }
    }

    /// Serves at `origin` (`scheme://host[:port]`) instead.
    ///
    /// # Panics
    ///
    /// When `origin` is not an absolute URI with a scheme and an authority.
    pub fn at(mut self, origin: &str) -> Self {
        Arc::make_mut(&mut self.config).origin = parse_origin(origin);
        self
    }

    /// Answers a second auth mechanism as `provider` does (default [`Provider::S3`]).
    pub fn provider(mut self, provider: Provider) -> Self {
        Arc::make_mut(&mut self.config).provider = provider;
        self
    }

    /// Turns `rule` on or off (all are on by default).
    pub fn enforce(mut self, rule: StorageRule, on: bool) -> Self {
        let off = &mut Arc::make_mut(&mut self.config).off;
        off.retain(|r| *r != rule);
        if !on {
            off.push(rule);
        }
        self
    }

    /// The store's `scheme://host[:port]`.
    pub fn origin(&self) -> &Uri {
        &self.config.origin
    }

    /// Stores `data` at `path` (e.g. `/bucket/blob`).
    pub fn put(&self, path: &str, data: impl Into<bytes::Bytes>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.objects.insert(path.to_owned(), data.into());
    }

    /// A URL for `path` signed now for `method`, valid for `expires_in`.
    pub fn sign(&self, method: &Method, path: &str, expires_in: Duration) -> Uri {
        self.sign_at(method, path, SystemTime::now(), expires_in)
    }

    /// A URL for `path` signed at `signed_at` for `method`, valid for `expires_in` from then
    /// (sign in the past to get an expired URL).
    pub fn sign_at(
        &self,
        method: &Method,
        path: &str,
        signed_at: SystemTime,
        expires_in: Duration,
    ) -> Uri {
        let date = format_basic_timestamp(signed_at);
        let day = &date[..8];
        let unsigned = format!(
            "{}{path}?X-Amz-Algorithm=TEST-SIPHASH&X-Amz-Credential=FAKEKEY%2F{day}%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date={date}&X-Amz-Expires={}&X-Amz-SignedHeaders=host",
            origin_string(&self.config.origin),
            expires_in.as_secs(),
        );
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut hasher = DefaultHasher::new();
        (state.key, method.as_str(), &unsigned).hash(&mut hasher);
        let signature = format!("{:016x}", hasher.finish());
        let url = format!("{unsigned}&X-Amz-Signature={signature}");
        state
            .signed
            .insert(signature, (method.clone(), url.clone()));
        url.parse().expect("a signed URL is a valid URI")
    }

    /// Rotates the signing key: every URL signed so far is refused
    /// (`403 SignatureDoesNotMatch`), and URLs signed from now on carry other signatures. For
    /// testing what a client does with a URL that stopped working before its expiry.
    pub fn revoke_signed_urls(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.signed.clear();
        state.key = state.key.wrapping_add(1);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_on(&self, rule: StorageRule) -> bool {
        !self.config.off.contains(&rule)
    }

    /// Whether an object is stored at `path`.
    pub(super) fn has(&self, path: &str) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.objects.contains_key(path)
    }

    /// Records `req` and answers it (for a registry that hands storage's requests on).
    pub(super) fn record_and_answer<B>(&self, req: &Request<B>) -> Response<TestBody> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Recorded::of(req));
        self.answer(req.method(), req.uri(), req.headers())
    }

    /// Whether `uri` is addressed to this store (an origin-form URI counts as addressed to
    /// whoever receives it).
    pub(super) fn serves(&self, uri: &Uri) -> bool {
        uri.authority()
            .is_none_or(|a| Some(a) == self.config.origin.authority())
    }

    pub(super) fn answer(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Response<TestBody> {
        if let Some(refusal) = self.refusal(method, uri, headers) {
            return refusal;
        }
        let object = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.objects.get(uri.path()).cloned()
        };
        let Some(object) = object else {
            return xml_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            );
        };
        serve(method, headers, object)
    }

    /// The error storage answers, if any rule refuses the request.
    fn refusal(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<Response<TestBody>> {
        let signature = query_param(uri, "X-Amz-Signature");
        if signature.is_some()
            && headers.contains_key(header::AUTHORIZATION)
            && self.is_on(StorageRule::OneAuthMechanism)
        {
            return Some(match self.config.provider {
                Provider::S3 => xml_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
                     Signature query string parameter or the Authorization header should be specified",
                ),
                Provider::R2 => xml_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    "Missing x-amz-content-sha256",
                ),
            });
        }
        let Some(signature) = signature else {
            return Some(xml_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Access Denied",
            ));
        };
        let issued = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.signed.get(signature).cloned()
        };
        let mismatch = || {
            xml_error(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        };
        let Some((signed_method, signed_url)) = issued else {
            return Some(mismatch());
        };
        if self.is_on(StorageRule::Expiry) && expired(uri) {
            return Some(xml_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Request has expired",
            ));
        }
        if self.is_on(StorageRule::SignedUrl) && uri.to_string() != signed_url {
            return Some(mismatch());
        }
        if self.is_on(StorageRule::SignedMethod) && *method != signed_method {
            return Some(mismatch());
        }
        if self.is_on(StorageRule::UnsignedHeaders)
            && headers.keys().any(|k| k.as_str().starts_with("x-amz-"))
        {
            return Some(xml_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "There were headers present in the request which were not signed",
            ));
        }
        None
    }
}

impl fmt::Debug for FakeStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules: Vec<_> = ALL_RULES.iter().filter(|r| self.is_on(**r)).collect();
        f.debug_struct("FakeStorage")
            .field("origin", &self.config.origin)
            .field("provider", &self.config.provider)
            .field("rules", &rules)
            .finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for FakeStorage {
    type Response = Response<TestBody>;
    type Error = UnknownHost;
    type Future = Ready<Result<Response<TestBody>, UnknownHost>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UnknownHost>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !self.serves(req.uri()) {
            return ready(Err(UnknownHost::of(req.uri())));
        }
        ready(Ok(self.record_and_answer(&req)))
    }
}

/// A `GET` or `HEAD` of `object`, honouring `Range` and `If-Range`.
fn serve(method: &Method, headers: &HeaderMap, object: bytes::Bytes) -> Response<TestBody> {
    let len = object.len() as u64;
    let etag = format!("\"{:016x}\"", {
        let mut h = DefaultHasher::new();
        object.hash(&mut h);
        h.finish()
    });
    let if_range_holds = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = headers
        .get(header::RANGE)
        .filter(|_| if_range_holds)
        .map_or(Range::Whole, |v| parse_range(v, len));
    let mut res = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    let body = match range {
        Range::Whole => {
            res = res.header(header::CONTENT_LENGTH, len);
            object
        }
        Range::Bytes(start, end) => {
            res = res
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))
                .header(header::CONTENT_LENGTH, end - start + 1);
            object.slice(start as usize..=end as usize)
        }
        Range::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::CONTENT_TYPE, "application/xml")
                .body(TestBody::from("<Error><Code>InvalidRange</Code></Error>"))
                .expect("a valid response");
        }
    };
    let body = if *method == Method::HEAD {
        bytes::Bytes::new()
    } else {
        body
    };
    res.body(TestBody::new(body)).expect("a valid response")
}

/// What a `Range` header asks of an object.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// No range, or one S3 ignores (malformed, several ranges): the whole object.
    Whole,
    /// Bytes `start..=end`.
    Bytes(u64, u64),
    /// A range past the end (any range of an empty object).
    Unsatisfiable,
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range of an object of `len` bytes.
fn parse_range(value: &HeaderValue, len: u64) -> Range {
    let Some((first, last)) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .filter(|spec| !spec.contains(','))
        .and_then(|spec| spec.split_once('-'))
    else {
        return Range::Whole;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (first.trim(), last.trim()) {
        ("", n) => match number(n) {
            Some(n) if n > 0 && len > 0 => (len - n.min(len), len - 1),
            Some(_) => return Range::Unsatisfiable,
            None => return Range::Whole,
        },
        (a, b) => match (
            number(a),
            if b.is_empty() {
                Some(u64::MAX)
            } else {
                number(b)
            },
        ) {
            (Some(a), Some(b)) if a <= b => (a, b.min(len.saturating_sub(1))),
            _ => return Range::Whole,
        },
    };
    if start < len {
        Range::Bytes(start, end)
    } else {
        Range::Unsatisfiable
    }
}

/// The raw value of the first query parameter named `name`.
fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
}

/// `X-Amz-Date` + `X-Amz-Expires` is not in the future.
fn expired(uri: &Uri) -> bool {
    let expiry = crate::SignedUrl::new(uri).expires_at();
    expiry.is_some_and(|e| e <= SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let v = |s| HeaderValue::from_static(s);
        assert_eq!(parse_range(&v("bytes=0-0"), 10), Range::Bytes(0, 0));
        assert_eq!(parse_range(&v("bytes=5-"), 10), Range::Bytes(5, 9));
        assert_eq!(parse_range(&v("bytes=-3"), 10), Range::Bytes(7, 9));
        assert_eq!(parse_range(&v("bytes=8-20"), 10), Range::Bytes(8, 9));
        assert_eq!(parse_range(&v("bytes=10-"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(&v("bytes=0-0"), 0), Range::Unsatisfiable);
        assert_eq!(parse_range(&v("bytes=abc"), 10), Range::Whole);
        assert_eq!(parse_range(&v("bytes=0-1,5-6"), 10), Range::Whole);
    }
}
