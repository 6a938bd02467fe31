//! The set-up most loopback tests start from: a real S3 store holding one blob, and a
//! registry that redirects blob requests to URLs pre-signed for it.

use super::registry;
use super::s3::{AuthRule, Store};
use http::Method;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tower_signed_redirect::test_util::FakeRegistry;
pub use tower_signed_redirect::test_util::Signing;

/// `len` bytes of a repeating pattern.
pub fn test_blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

pub struct Loopback {
    pub store: Arc<Store>,
    pub registry: SocketAddr,
    /// The registry's records: what it received.
    pub registry_fake: FakeRegistry,
    pub digest: String,
    pub data: Vec<u8>,
}

impl Loopback {
    /// A store with one `len`-byte blob, and a registry redirecting to it signed as `signing`.
    pub async fn start(rule: AuthRule, signing: Signing, len: usize) -> Loopback {
        Loopback::with_realm(rule, signing, len, "http://auth.invalid/token".into()).await
    }

    /// [`Loopback::start`] with URLs signed for `GET` an hour ago, valid for a minute: expired.
    pub async fn expired(rule: AuthRule, len: usize) -> Loopback {
        let expired = Some((
            SystemTime::now() - Duration::from_secs(3600),
            Duration::from_secs(60),
        ));
        Loopback::build(
            rule,
            Signing::GetOnly,
            len,
            "http://auth.invalid/token".into(),
            expired,
        )
        .await
    }

    /// [`Loopback::start`], with the registry's challenges naming the token service `realm`.
    pub async fn with_realm(
        rule: AuthRule,
        signing: Signing,
        len: usize,
        realm: String,
    ) -> Loopback {
        Loopback::build(rule, signing, len, realm, None).await
    }

    async fn build(
        rule: AuthRule,
        signing: Signing,
        len: usize,
        realm: String,
        signed_at: Option<(SystemTime, Duration)>,
    ) -> Loopback {
        let store = Arc::new(Store::start(rule).await);
        let data = test_blob(len);
        let digest = store.put_blob(&data);
        let s = store.clone();
        let (registry, registry_fake) = registry::start_with(&realm, signing, move |method, d| {
            let key = registry::blob_key(d);
            Some(match signed_at {
                Some((at, valid_for)) => s.presign_at(method, &key, at, valid_for),
                None => s.presign(method, &key),
            })
        })
        .await;
        Loopback {
            store,
            registry,
            registry_fake,
            digest,
            data,
        }
    }

    /// A blob request for the blob, to the registry.
    pub fn blob_request(
        &self,
        method: Method,
    ) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
        registry::blob_request_to(self.registry, method, &self.digest)
    }
}
