//! What the mirror keeps so that pulls spend less upstream: the manifest cache
//! ([`manifests`], in memory), the redirect cache's configuration ([`redirects`]; the cache
//! itself is `tower-signed-redirect`'s `RedirectCache`, which the layer consults), and the
//! blob store ([`store`]: blobs and manifests by digest, on disk or S3, shared by replicas).

pub mod manifests;
pub mod redirects;
pub mod store;
