//! The whole layer against a mock inner service whose responses are fuzzed: status, headers
//! (including Location, several of them), body. Checks, beyond "no panic": no credential or
//! unlisted header reaches a storage hop, storage hops carry no body, and no signature text
//! appears in any error's Display or Debug.
#![no_main]

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tower::{service_fn, Layer, Service};
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};
use std::time::Duration;
use tower_signed_redirect::{FollowedRedirect, HeadStrategy, RedirectCache, SignedRedirectLayer};

const SECRET: &str = "FUZZSECRETSIG";
const ALLOWED: &[&str] = &["user-agent", "range", "if-range", "accept"];

#[derive(Debug)]
struct MockError(String);
impl std::fmt::Display for MockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for MockError {}

/// A cursor over the fuzz input.
struct Input<'a>(&'a [u8]);
impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn bytes(&mut self) -> &'a [u8] {
        let n = (self.byte() as usize).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

/// One fuzzed response: mostly redirects, with Location headers built around the secret.
fn response(input: &mut Input<'_>) -> Result<Response<Full<Bytes>>, MockError> {
    let kind = input.byte();
    if kind == 255 {
        return Err(MockError(format!("connection reset fetching https://x.r2.cloudflarestorage.com/b?X-Amz-Signature={SECRET}")));
    }
    let status = match kind % 4 {
        0 => 300 + u16::from(input.byte() % 10),
        1 => [200u16, 206, 400, 403, 404, 416, 500][input.byte() as usize % 7],
        _ => [301u16, 302, 303, 307, 308][input.byte() as usize % 5],
    };
    let mut res = Response::new(Full::new(Bytes::copy_from_slice(input.bytes())));
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    for _ in 0..input.byte() % 3 {
        let host = match input.byte() % 5 {
            0 => "https://a.r2.cloudflarestorage.com",
            1 => "http://a.r2.cloudflarestorage.com",
            2 => "https://evil.example",
            3 => "",
            _ => "https://production.cloudflare.docker.com:443",
        };
        let mut loc = host.as_bytes().to_vec();
        // The path: no '?', '&', '=' or '#', so the signature below is a parameter of its own.
        loc.extend(input.bytes().iter().filter(|b| !b"?&=#".contains(b)));
        loc.extend_from_slice(format!("?X-Amz-Signature={SECRET}&").as_bytes());
        loc.extend_from_slice(input.bytes());
        if let Ok(v) = HeaderValue::from_bytes(&loc) {
            res.headers_mut().append("location", v);
        }
    }
    for _ in 0..input.byte() % 3 {
        let name = ["content-range", "content-length", "etag", "x-amz-request-id"][input.byte() as usize % 4];
        if let Ok(v) = HeaderValue::from_bytes(input.bytes()) {
            res.headers_mut().append(name, v);
        }
    }
    Ok(res)
}

fuzz_target!(|data: &[u8]| {
    if data.windows(10).any(|w| w == b"FUZZSECRET") {
        return;
    }
    let mut input = Input(data);
    let method = [Method::GET, Method::HEAD, Method::POST][input.byte() as usize % 3].clone();
    let strategy = [HeadStrategy::RangeProbe, HeadStrategy::Get, HeadStrategy::Head][input.byte() as usize % 3];
    let max = usize::from(input.byte() % 6);
    // Half the inputs run twice through a redirect cache that keeps every URL.
    let cached = input.byte() % 2 == 1;
    let responses: Vec<_> = (0..8).map(|_| response(&mut input)).collect();
    let responses = Arc::new(Mutex::new(responses.into_iter()));
    let seen: Arc<Mutex<Vec<Request<String>>>> = Arc::default();
    let (r, s) = (responses.clone(), seen.clone());
    let inner = service_fn(move |req: Request<String>| {
        let mut next = r.lock().unwrap().next().unwrap_or_else(|| Ok(Response::new(Full::new(Bytes::new()))));
        // The signed-URL error text is a storage hop's; the registry hop fails plainly.
        if next.is_err() && req.uri().host() == Some("registry-1.docker.io") {
            next = Err(MockError("connection refused".into()));
        }
        s.lock().unwrap().push(req);
        std::future::ready(next)
    });
    let matcher = WellKnownStorage::new().or(HostPatterns::new(["evil.example:8443"]).unwrap());
    let mut layer = SignedRedirectLayer::with_matcher(matcher)
        .head_strategy(strategy)
        .max_redirects(max);
    if cached {
        layer = layer.redirect_cache(RedirectCache::new(4).max_age(Duration::from_secs(60)));
    }
    let mut svc = layer.layer(inner);
    let request = || Request::builder()
        .method(method.clone())
        .uri("https://registry-1.docker.io/v2/library/alpine/blobs/sha256:00")
        .header("authorization", "Bearer registry-token")
        .header("cookie", "c=1")
        .header("x-amz-security-token", "t")
        .header("content-type", "text/plain")
        .header("user-agent", "fuzz")
        .header("range", "bytes=0-")
        .body("client body".to_owned())
        .unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut results = Vec::new();
    for _ in 0..if cached { 2 } else { 1 } {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut future = pin!(svc.call(request()));
        results.push(loop {
            if let Poll::Ready(r) = future.as_mut().poll(&mut cx) {
                break r;
            }
        });
    }
    // The caller's requests (and their resends after a refused cached URL) go to the
    // registry; every other request is a storage hop.
    let storage_hops = seen.lock().unwrap();
    let storage_hops = storage_hops.iter().filter(|r| r.uri().host() != Some("registry-1.docker.io"));
    for (i, req) in storage_hops.enumerate() {
        assert!(req.body().is_empty(), "storage hop {i} has a body");
        for name in req.headers().keys() {
            assert!(ALLOWED.contains(&name.as_str()), "{name} reached storage hop {i}");
        }
        assert!(matches!(*req.method(), Method::GET | Method::HEAD));
    }
    for result in results {
        match result {
            Err(e) => {
                let text = format!("{e} {e:?} {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
                assert!(!text.contains(SECRET), "{text}");
            }
            Ok(res) => {
                if let Some(f) = res.extensions().get::<FollowedRedirect>() {
                    let text = format!("{f:?}");
                    assert!(!text.contains(SECRET), "{text}");
                }
            }
        }
    }
});
