use super::{is_ip_literal, is_strict_subdomain, normalized_host, StorageMatcher};
use http::Uri;

/// Exact storage hosts that registries redirect blob downloads to.
pub(crate) const EXACT: &[&str] = &[
    // Docker Hub
    "production.cloudflare.docker.com",
    "production.cloudfront.docker.com",
    // GHCR
    "pkg-containers.githubusercontent.com",
    // Quay
    "cdn.quay.io",
    "cdn01.quay.io",
    "cdn02.quay.io",
    "cdn03.quay.io",
    "cdn04.quay.io",
    "cdn05.quay.io",
    "cdn06.quay.io",
    // GCR / Google Cloud Storage, path style
    "storage.googleapis.com",
];

/// Suffixes whose strict subdomains are storage hosts.
pub(crate) const SUBDOMAINS_OF: &[&str] = &[
    // Docker Hub's R2 buckets: docker-images-prod.<account>.r2.cloudflarestorage.com
    "r2.cloudflarestorage.com",
    // CloudFront distributions (Quay, ECR Public)
    "cloudfront.net",
    // Azure Blob Storage and ACR's data endpoints
    "blob.core.windows.net",
    "data.azurecr.io",
    // Google Cloud Storage, virtual-hosted style
    "storage.googleapis.com",
];

/// The object-storage and CDN hosts that public registries redirect blob downloads to.
///
/// Covers Docker Hub (`*.r2.cloudflarestorage.com`, `production.cloudflare.docker.com`,
/// `production.cloudfront.docker.com`), GHCR (`pkg-containers.githubusercontent.com`),
/// Quay (`cdn.quay.io`, `cdn01.quay.io` … `cdn06.quay.io`, `*.cloudfront.net`), ECR and
/// registry.k8s.io (Amazon S3, below), ECR Public (`*.cloudfront.net`), ACR
/// (`*.blob.core.windows.net`, `*.data.azurecr.io`) and GCR (`storage.googleapis.com` and
/// `*.storage.googleapis.com`).
///
/// Amazon S3 hosts are recognised by shape rather than listed: a host under
/// `amazonaws.com` (or `amazonaws.com.cn`) with a label `s3` or a label starting with `s3-`
/// before that suffix, e.g. `bucket.s3.amazonaws.com`,
/// `prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com`,
/// `bucket.s3-us-west-2.amazonaws.com`, `x.s3.dualstack.eu-west-1.amazonaws.com`.
/// Other AWS services (`ec2.amazonaws.com`, API Gateway's `execute-api` hosts) do not match.
///
/// IP literals never match; add them explicitly with
/// [`HostPatterns`](super::HostPatterns) if your storage is addressed by IP.
///
/// ```
/// use tower_signed_redirect::matcher::{StorageMatcher, WellKnownStorage};
///
/// let m = WellKnownStorage::new();
/// for yes in [
///     "https://docker-images-prod.6aa30f8b08e16409b46e0173d6de2f56.r2.cloudflarestorage.com/registry-v2/x",
///     "https://prod-registry-k8s-io-us-east-2.s3.dualstack.us-east-2.amazonaws.com/x",
///     "https://pkg-containers.githubusercontent.com/ghcr1/blobs/sha256:00",
/// ] {
///     assert!(m.matches(&yes.parse().unwrap()), "{yes}");
/// }
/// for no in [
///     "https://amazonaws.com.evil.net/x",
///     "https://evilamazonaws.com/x",
///     "https://abc.execute-api.us-east-1.amazonaws.com/x",
///     "https://registry-1.docker.io/v2/",
/// ] {
///     assert!(!m.matches(&no.parse().unwrap()), "{no}");
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WellKnownStorage {
    _priv: (),
}

impl WellKnownStorage {
    /// The preset.
    pub const fn new() -> Self {
        WellKnownStorage { _priv: () }
    }
}

/// The last labels of every host above: anything else is rejected before the lists are read.
const TOP_LEVEL: &[&str] = &["com", "net", "io", "cn"];

impl StorageMatcher for WellKnownStorage {
    fn matches(&self, uri: &Uri) -> bool {
        let Some(host) = normalized_host(uri) else {
            return false;
        };
        let tld = host.rsplit('.').next().unwrap_or(host);
        if !TOP_LEVEL.iter().any(|t| tld.eq_ignore_ascii_case(t)) || is_ip_literal(host) {
            return false;
        }
        EXACT.iter().any(|h| host.eq_ignore_ascii_case(h))
            || SUBDOMAINS_OF.iter().any(|s| is_strict_subdomain(host, s))
            || is_amazon_s3(host)
    }
}

fn is_amazon_s3(host: &str) -> bool {
    let prefix = ["amazonaws.com", "amazonaws.com.cn"]
        .iter()
        .find_map(|s| is_strict_subdomain(host, s).then(|| &host[..host.len() - s.len() - 1]));
    prefix.is_some_and(|labels| {
        labels.split('.').any(|label| {
            label.eq_ignore_ascii_case("s3")
                || label
                    .get(..3)
                    .is_some_and(|p| p.eq_ignore_ascii_case("s3-"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_host_ends_in_a_known_top_level_label() {
        for host in EXACT
            .iter()
            .chain(SUBDOMAINS_OF)
            .chain(&["amazonaws.com", "amazonaws.com.cn"])
        {
            let tld = host.rsplit('.').next().unwrap();
            assert!(TOP_LEVEL.contains(&tld), "{host}");
        }
    }
}
