//! Storage matchers against adversarial hosts.

use http::Uri;
use tower_signed_redirect::matcher::{
    predicate, HostPatterns, SignedQuery, StorageMatcher, WellKnownStorage,
};

fn uri(s: &str) -> Uri {
    s.parse().unwrap()
}

#[test]
fn well_known_accepts_the_registries_storage() {
    let m = WellKnownStorage::new();
    for host in [
        "https://docker-images-prod.6aa30f8b08e16409b46e0173d6de2f56.r2.cloudflarestorage.com/x",
        "https://production.cloudflare.docker.com/x",
        "https://production.cloudfront.docker.com/x",
        "https://pkg-containers.githubusercontent.com/ghcr1/blobs/sha256:00",
        "https://cdn01.quay.io/x",
        "https://cdn06.quay.io/x",
        "https://d3uo42mtx6z2cr.cloudfront.net/x",
        "https://prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com/x",
        "https://prod-registry-k8s-io-eu-west-1.s3.dualstack.eu-west-1.amazonaws.com/x",
        "https://bucket.s3-us-west-2.amazonaws.com/x",
        "https://s3.amazonaws.com/bucket/x",
        "https://bucket.s3.cn-north-1.amazonaws.com.cn/x",
        "https://myregistry.blob.core.windows.net/x",
        "https://myregistry.westeurope.data.azurecr.io/x",
        "https://storage.googleapis.com/artifacts.p.appspot.com/x",
        "https://PRODUCTION.Cloudflare.Docker.COM./x",
        "https://production.cloudflare.docker.com:8443/x",
    ] {
        assert!(m.matches(&uri(host)), "{host}");
    }
}

#[test]
fn well_known_rejects_look_alikes() {
    let m = WellKnownStorage::new();
    for host in [
        "https://amazonaws.com.evil.net/x",
        "https://s3.amazonaws.com.evil.net/x",
        "https://evilamazonaws.com/x",
        "https://evil-s3.amazonaws.com.evil/x",
        "https://s3.amazonaws.com@evil.net/x",
        "https://user:pass@evil.net/x",
        "https://amazonaws.com/x",
        "https://ec2.us-east-1.amazonaws.com/x",
        "https://abc.execute-api.us-east-1.amazonaws.com/x",
        "https://r2.cloudflarestorage.com/x",
        "https://r2.cloudflarestorage.com.evil.net/x",
        "https://evilr2.cloudflarestorage.com/x",
        "https://cloudfront.net/x",
        "https://production.cloudflare.docker.com.evil.net/x",
        "https://xproduction.cloudflare.docker.com/x",
        "https://cdn07.quay.io/x",
        "https://quay.io/x",
        "https://registry-1.docker.io/v2/",
        "https://169.254.169.254/latest/meta-data",
        "https://127.0.0.1/x",
        "https://[::1]/x",
        "https://xn--amazonaws-zwe.com/x",
        "/relative/path",
    ] {
        assert!(!m.matches(&uri(host)), "{host}");
    }
    // A Cyrillic look-alike is not even a valid URI.
    assert!("https://аmazonaws.com/x".parse::<Uri>().is_err());
}

#[test]
fn host_patterns_exact_wildcard_port_and_ip() {
    let m = HostPatterns::new([
        "minio.internal:9000",
        "*.blobs.example.com",
        "exact.example.com",
        "127.0.0.1:9000",
        "[::1]",
        "Upper.Example.",
        "tls.example:443",
    ])
    .unwrap();
    for yes in [
        "http://minio.internal:9000/b",
        "https://a.blobs.example.com/x",
        "https://a.b.c.blobs.example.com/x",
        "https://EXACT.example.com./x",
        "http://127.0.0.1:9000/x",
        "http://[::1]:1234/x",
        "http://[0:0::1]/x",
        "https://upper.example/x",
        "https://tls.example/x",
        "http://tls.example:443/x",
    ] {
        assert!(m.matches(&uri(yes)), "{yes}");
    }
    for no in [
        "http://minio.internal/b",
        "http://minio.internal:9001/b",
        "https://blobs.example.com/x",
        "https://evilblobs.example.com/x",
        "https://blobs.example.com.evil.net/x",
        "https://sub.exact.example.com/x",
        "https://exact.example.com@evil.net/x",
        "http://127.0.0.1/x",
        "http://127.0.0.2:9000/x",
        "http://[::2]/x",
        "http://tls.example/x",
        "http://2130706433:9000/x",
        "http://0x7f.0.0.1:9000/x",
    ] {
        assert!(!m.matches(&uri(no)), "{no}");
    }
}

#[test]
fn wildcards_never_match_ip_literals() {
    for bad in [
        "*.0.0.1",
        "*.1",
        "*",
        "*.",
        "a.*.com",
        "*example.com",
        "ex ample.com",
        "",
        "host:",
        "host:99999",
        "[::1",
        "[nope]",
        "bücher.example",
    ] {
        let err = HostPatterns::new([bad]).unwrap_err();
        assert!(
            err.to_string().contains("invalid storage host pattern"),
            "{bad}: {err}"
        );
    }
    assert!(HostPatterns::new(["xn--bcher-kva.example"]).is_ok());
}

#[test]
fn signed_query_is_opt_in_and_host_agnostic() {
    let m = SignedQuery::new();
    assert!(m.matches(&uri(
        "http://10.0.0.1/x?X-Amz-Signature=1&X-Amz-Algorithm=AWS4-HMAC-SHA256"
    )));
    assert!(m.matches(&uri("https://a.example/x?sv=1&sig=2")));
    assert!(!m.matches(&uri("https://a.example/x?sig=2")));
    assert!(!m.matches(&uri("https://a.example/x")));
    assert!(!WellKnownStorage::new().matches(&uri("http://10.0.0.1/x?X-Amz-Signature=1")));
}

#[test]
fn combinators() {
    let r2 = HostPatterns::new(["*.r2.cloudflarestorage.com"]).unwrap();
    let signed = r2.clone().and(SignedQuery::new());
    assert!(signed.matches(&uri(
        "https://a.r2.cloudflarestorage.com/x?X-Amz-Signature=1"
    )));
    assert!(!signed.matches(&uri("https://a.r2.cloudflarestorage.com/x")));
    let either = r2
        .clone()
        .or(predicate(|u: &Uri| u.port_u16() == Some(9000)));
    assert!(either.matches(&uri("http://anything:9000/")));
    assert!(!either.matches(&uri("http://anything:9001/")));
    assert!(!r2
        .clone()
        .not()
        .matches(&uri("https://a.r2.cloudflarestorage.com/x")));
    let boxed: Box<dyn StorageMatcher + Send + Sync> = Box::new(r2);
    assert!(boxed.matches(&uri("https://a.r2.cloudflarestorage.com/x")));
    assert!(format!("{:?}", predicate(|_: &Uri| true)).contains("Predicate"));
}
