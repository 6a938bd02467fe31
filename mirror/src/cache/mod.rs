//! What the mirror keeps so that pulls spend less upstream: the manifest cache
//! ([`manifests`]) and the redirect cache's configuration ([`redirects`]; the cache itself is
//! `tower-signed-redirect`'s `RedirectCache`, which the layer consults).

pub mod manifests;
pub mod redirects;
pub mod store;
