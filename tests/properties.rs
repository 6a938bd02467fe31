//! Properties: the allowlist holds for any request (and the builder refuses exactly the
//! names that may never be on it), absolute Location bytes survive, and host matching
//! respects label boundaries.

mod support;

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use proptest::prelude::*;
use support::mock::*;
use tower::ServiceExt;
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher};
use tower_signed_redirect::test_util::{FakeRegistry, FakeStorage};
use tower_signed_redirect::{HeadStrategy, SignedRedirectLayer};

const NEVER: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "connection",
    "transfer-encoding",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "x-amz-date",
    "x-goog-user-project",
    "x-ms-version",
    "content-type",
    "content-md5",
    "content-length",
    "proxy-authenticate",
    "trailers",
];

/// Whether the builder must refuse `name`: the design's list, restated independently of the
/// crate's code.
fn never_forwarded(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
    ];
    EXACT.contains(&name)
        || ["x-amz-", "x-goog-", "x-ms-", "content-"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// Builds the layer, catching the builder's refusal (without printing it).
fn build(allow: &[HeaderName], strategy: HeadStrategy) -> Option<SignedRedirectLayer> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let refusal = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("tower-signed-redirect:"));
            if !refusal {
                default(info);
            }
        }));
    });
    let allow = allow.to_vec();
    std::panic::catch_unwind(move || {
        SignedRedirectLayer::new()
            .forward_headers(allow)
            .head_strategy(strategy)
    })
    .ok()
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(NEVER).prop_map(str::to_owned),
        proptest::sample::select(
            &[
                "user-agent",
                "range",
                "if-range",
                "accept",
                "x-request-id",
                "accept-encoding"
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z][a-z0-9-]{0,12}",
    ]
}

fn run(future: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_header_outside_the_allowlist_reaches_storage(
        headers in proptest::collection::vec((header_name(), "[ -~]{0,20}"), 0..12),
        allow in proptest::collection::vec(header_name(), 0..10),
        keep_refused in proptest::bool::weighted(0.2),
        head in any::<bool>(),
        strategy in proptest::sample::select(&[HeadStrategy::RangeProbe, HeadStrategy::Get, HeadStrategy::Head][..]),
    ) {
        let method = if head { Method::HEAD } else { Method::GET };
        let mut req = Request::builder().method(method).uri("https://registry.example/v2/x/blobs/sha256:1");
        for (name, value) in &headers {
            req = req.header(name.as_str(), HeaderValue::from_str(value.trim()).unwrap());
        }
        let req = req.body("body".to_owned()).unwrap();
        let asked = req.headers().clone();
        // Mostly allowlists the builder takes, so that most cases reach storage.
        let allow: Vec<String> = allow.into_iter().filter(|n| keep_refused || !never_forwarded(n)).collect();
        let allow_names: Vec<HeaderName> = allow.iter().map(|n| n.parse().unwrap()).collect();
        let mut distinct = allow.clone();
        distinct.sort();
        distinct.dedup();
        let refused = allow.iter().any(|n| never_forwarded(n))
            || distinct.len() > tower_signed_redirect::MAX_FORWARDED_HEADERS;
        let built = build(&allow_names, strategy);
        prop_assert_eq!(built.is_none(), refused, "allowlist {:?}", allow);
        let Some(layer) = built else { return Ok(()) };
        let registry = FakeRegistry::new(FakeStorage::new()).at("https://registry.example");
        registry.put_blob("sha256:1", "blob");
        let client = MockClient::over(registry);
        let c = client.clone();
        run(async move {
            tower::ServiceBuilder::new().layer(layer).service(c).oneshot(req).await.unwrap();
        });
        let reqs = client.requests();
        prop_assert_eq!(reqs.len(), 2);
        for name in reqs[1].headers.keys() {
            let n = name.as_str();
            prop_assert!(!NEVER.contains(&n), "{} reached storage", n);
            let probe_range = head && strategy == HeadStrategy::RangeProbe && n == "range";
            prop_assert!(probe_range || allow.iter().any(|a| a == n), "{} is not allowlisted", n);
        }
        prop_assert_eq!(reqs[1].body.as_str(), "");
        // And every allowlisted header the caller sent goes whole, its values in order
        // (but `Range` and `If-Range`, which a HEAD's range probe replaces).
        let probe = head && strategy == HeadStrategy::RangeProbe;
        for name in &allow {
            if probe && (name == "range" || name == "if-range") {
                continue;
            }
            let sent: Vec<_> = reqs[1].headers.get_all(name.as_str()).iter().collect();
            let given: Vec<_> = asked.get_all(name.as_str()).iter().collect();
            prop_assert_eq!(sent, given, "{}", name);
        }
    }

    #[test]
    fn absolute_location_bytes_are_unchanged(
        host_label in "[a-zA-Z0-9-]{1,10}",
        port in proptest::option::of(0u16..),
        path in "(/[a-zA-Z0-9._~!$&'()*+,;=:@%-]{0,12}){1,5}",
        query in proptest::option::of("[a-zA-Z0-9._~!$&'()*+,;=:@%/?-]{0,40}"),
    ) {
        let mut raw = format!("https://{host_label}.r2.cloudflarestorage.com");
        if let Some(p) = port { raw.push_str(&format!(":{p}")); }
        raw.push_str(&path);
        if let Some(q) = &query { raw.push('?'); raw.push_str(q); }
        prop_assume!(raw.parse::<Uri>().is_ok());
        let location = raw.clone();
        let client = MockClient::new(move |req| Ok(match req.uri().host() {
            Some("registry.example") => redirect(302, &location),
            _ => response(200, "blob"),
        }));
        let c = client.clone();
        run(async move {
            let req = Request::get("https://registry.example/v2/x/blobs/sha256:1").body(String::new()).unwrap();
            tower::ServiceBuilder::new().layer(SignedRedirectLayer::new()).service(c).oneshot(req).await.unwrap();
        });
        let reqs = client.requests();
        prop_assert_eq!(reqs.len(), 2);
        prop_assert_eq!(&reqs[1].uri, &raw);
    }

    #[test]
    fn wildcard_matching_respects_label_boundaries(
        label in "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?",
        suffix in "[a-z]{1,8}\\.[a-z]{2,5}",
        glue in "[a-z0-9]{1,4}",
        evil in "[a-z]{1,8}\\.[a-z]{2,4}",
    ) {
        let wildcard = HostPatterns::new([format!("*.{suffix}")]).unwrap();
        let exact = HostPatterns::new([suffix.clone()]).unwrap();
        let cases = [
            (format!("{label}.{suffix}"), true, false),
            (format!("{label}.{}", suffix.to_uppercase()), true, false),
            (format!("{label}.{suffix}."), true, false),
            (suffix.clone(), false, true),
            (format!("{glue}{suffix}"), false, false),
            (format!("{label}.{suffix}.{evil}"), false, false),
            (format!("{label}.{suffix}@{evil}"), false, false),
        ];
        for (host, by_wildcard, by_exact) in cases {
            let uri: Uri = format!("https://{host}/x").parse().unwrap();
            prop_assert_eq!(wildcard.matches(&uri), by_wildcard, "*.{} vs {}", suffix, host);
            prop_assert_eq!(exact.matches(&uri), by_exact, "{} vs {}", suffix, host);
        }
    }
}
