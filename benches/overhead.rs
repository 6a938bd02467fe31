//! Per-request overhead of the layer, against the bare inner service and tower-http's
//! `FollowRedirect`, with the same in-memory mock inner service (no sockets); and the cost
//! of matching and signed-URL parsing.
//!
//! Before the timings it prints allocations per request for each variant (a counting
//! global allocator). `benches/micro.sh` runs this and prints the ratios.

use criterion::{criterion_group, BatchSize, Criterion};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use tower::{Layer, Service};
use tower_http::follow_redirect::FollowRedirectLayer;
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};
use tower_signed_redirect::{SignedRedirectLayer, SignedUrl};

#[path = "../tests/support/alloc.rs"]
mod alloc;

use alloc::{allocations_in, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

const STORAGE: &str = "https://docker-images-prod.6aa30f8b08e16409b46e0173d6de2f56.r2.cloudflarestorage.com/registry-v2/docker/registry/v2/blobs/sha256/ab/abcdef/data?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=f1%2F20240101%2Fauto%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=1200&X-Amz-SignedHeaders=host&X-Amz-Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The mock: the registry host redirects (when `redirect`), anything else answers 200.
#[derive(Clone, Copy)]
struct Mock {
    redirect: bool,
}

impl Service<Request<String>> for Mock {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        let mut res = Response::new(String::new());
        if self.redirect && req.uri().host() == Some("registry-1.docker.io") {
            *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            res.headers_mut()
                .insert("location", HeaderValue::from_static(STORAGE));
        }
        ready(Ok(res))
    }
}

/// A blob request as a proxy sends it upstream (static header values: reference-counted
/// clones, as with hyper-parsed requests).
fn request() -> Request<String> {
    Request::get("https://registry-1.docker.io/v2/library/alpine/blobs/sha256:abcdef")
        .header(
            "authorization",
            HeaderValue::from_static("Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.token"),
        )
        .header(
            "user-agent",
            HeaderValue::from_static("docker/27.0.3 go/go1.21.13 os/linux arch/amd64"),
        )
        .header("accept", HeaderValue::from_static("*/*"))
        .header("accept-encoding", HeaderValue::from_static("gzip"))
        .header("range", HeaderValue::from_static("bytes=0-"))
        .body(String::new())
        .unwrap()
}

/// One request through `svc`, polled to completion (the mock's futures are ready at once;
/// tower-http's re-polls itself after a redirect).
fn call<S, B>(svc: &mut S, req: Request<String>) -> Response<B>
where
    S: Service<Request<String>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut future = pin!(svc.call(req));
    for _ in 0..8 {
        if let Poll::Ready(res) = future.as_mut().poll(&mut cx) {
            return res.unwrap();
        }
    }
    panic!("mock requests complete within a few polls")
}

fn allocations_per_request<S, B>(mut svc: S) -> f64
where
    S: Service<Request<String>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    const N: usize = 1000;
    let requests: Vec<_> = (0..N).map(|_| request()).collect();
    let n = allocations_in(|| {
        for req in requests {
            drop(black_box(call(&mut svc, req)));
        }
    });
    n as f64 / N as f64
}

fn report_allocations() {
    let pass = Mock { redirect: false };
    let redirect = Mock { redirect: true };
    println!(
        "allocations per request (mock inner service, {} headers):",
        request().headers().len()
    );
    println!(
        "  pass_through/bare               {:>5.1}",
        allocations_per_request(pass)
    );
    println!(
        "  pass_through/signed_redirect    {:>5.1}",
        allocations_per_request(SignedRedirectLayer::new().layer(pass))
    );
    println!(
        "  pass_through/tower_http         {:>5.1}",
        allocations_per_request(FollowRedirectLayer::new().layer(pass))
    );
    println!(
        "  one_redirect/signed_redirect    {:>5.1}",
        allocations_per_request(SignedRedirectLayer::new().layer(redirect))
    );
    println!(
        "  one_redirect/tower_http         {:>5.1}",
        allocations_per_request(FollowRedirectLayer::new().layer(redirect))
    );
}

fn pass_through(c: &mut Criterion) {
    let mut group = c.benchmark_group("pass_through");
    let inner = Mock { redirect: false };
    let mut bare = inner;
    let mut signed = SignedRedirectLayer::new().layer(inner);
    let mut tower_http = FollowRedirectLayer::new().layer(inner);
    group.bench_function("bare", |b| {
        b.iter_batched(request, |r| call(&mut bare, r), BatchSize::SmallInput)
    });
    group.bench_function("signed_redirect", |b| {
        b.iter_batched(request, |r| call(&mut signed, r), BatchSize::SmallInput)
    });
    group.bench_function("tower_http", |b| {
        b.iter_batched(request, |r| call(&mut tower_http, r), BatchSize::SmallInput)
    });
    let post = || {
        let mut r = request();
        *r.method_mut() = http::Method::POST;
        r
    };
    group.bench_function("bare_post", |b| {
        b.iter_batched(post, |r| call(&mut bare, r), BatchSize::SmallInput)
    });
    group.bench_function("signed_redirect_post", |b| {
        b.iter_batched(post, |r| call(&mut signed, r), BatchSize::SmallInput)
    });
    group.finish();
}

fn one_redirect(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_redirect");
    let inner = Mock { redirect: true };
    let mut signed = SignedRedirectLayer::new().layer(inner);
    // tower-http's standard policy: a redirect limit plus FilterCredentials.
    let mut tower_http = FollowRedirectLayer::new().layer(inner);
    // Both really follow: the final answer is storage's 200.
    assert_eq!(call(&mut signed, request()).status(), StatusCode::OK);
    assert_eq!(call(&mut tower_http, request()).status(), StatusCode::OK);
    group.bench_function("signed_redirect", |b| {
        b.iter_batched(request, |r| call(&mut signed, r), BatchSize::SmallInput)
    });
    group.bench_function("tower_http", |b| {
        b.iter_batched(request, |r| call(&mut tower_http, r), BatchSize::SmallInput)
    });
    group.finish();
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("matcher");
    let well_known = WellKnownStorage::new();
    let patterns = HostPatterns::new([
        "minio.internal:9000",
        "*.blobs.example.com",
        "production.cloudflare.docker.com",
    ])
    .unwrap();
    let r2: Uri = STORAGE.parse().unwrap();
    let s3: Uri = "https://prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com/x"
        .parse()
        .unwrap();
    let miss: Uri = "https://registry-1.docker.io.evil.example/v2/"
        .parse()
        .unwrap();
    let custom: Uri = "https://a.b.blobs.example.com/x".parse().unwrap();
    group.bench_function("well_known/match_r2", |b| {
        b.iter(|| well_known.matches(black_box(&r2)))
    });
    group.bench_function("well_known/match_s3", |b| {
        b.iter(|| well_known.matches(black_box(&s3)))
    });
    group.bench_function("well_known/no_match", |b| {
        b.iter(|| well_known.matches(black_box(&miss)))
    });
    group.bench_function("host_patterns/match", |b| {
        b.iter(|| patterns.matches(black_box(&custom)))
    });
    group.bench_function("host_patterns/no_match", |b| {
        b.iter(|| patterns.matches(black_box(&miss)))
    });
    group.bench_function("signed_url/parse", |b| {
        b.iter(|| SignedUrl::new(black_box(&r2)).scheme())
    });
    group.bench_function("signed_url/expiry", |b| {
        b.iter(|| SignedUrl::new(black_box(&r2)).expires_at())
    });
    group.bench_function("signed_url/redact", |b| {
        b.iter(|| SignedUrl::new(black_box(&r2)).to_string())
    });
    group.finish();
}

criterion_group!(benches, pass_through, one_redirect, matching);

/// `OVERHEAD_COUNT=<variant>:<n>`: run one variant `n` times and exit, for instruction
/// counting under `valgrind --tool=callgrind` (deterministic on a shared machine).
fn count_mode(spec: &str) {
    let (variant, n) = spec.split_once(':').expect("OVERHEAD_COUNT=<variant>:<n>");
    let n: usize = n.parse().expect("a count");
    let pass = Mock { redirect: false };
    let redirect = Mock { redirect: true };
    fn run<S, B>(mut svc: S, n: usize)
    where
        S: Service<Request<String>, Response = Response<B>>,
        S::Error: std::fmt::Debug,
    {
        for _ in 0..n {
            drop(black_box(call(&mut svc, request())));
        }
    }
    match variant {
        "pass_through/bare" => run(pass, n),
        "pass_through/signed_redirect" => run(SignedRedirectLayer::new().layer(pass), n),
        "pass_through/tower_http" => run(FollowRedirectLayer::new().layer(pass), n),
        "one_redirect/signed_redirect" => run(SignedRedirectLayer::new().layer(redirect), n),
        "one_redirect/tower_http" => run(FollowRedirectLayer::new().layer(redirect), n),
        other => panic!("unknown variant {other}"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var("OVERHEAD_COUNT") {
        return count_mode(&spec);
    }
    report_allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
