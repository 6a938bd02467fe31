//! The set-up most loopback tests start from: a real S3 store holding one blob, and a
//! registry that redirects blob requests to URLs pre-signed for it.

use super::registry;
use super::s3::{AuthRule, Store};
use http::Method;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tower_signed_redirect::test_util::{FakeRegistry, Signing as RegistrySigning};

/// How the registry signs the storage URL it redirects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    /// For the request's own method, as CNCF distribution does.
    OwnMethod,
    /// Always for `GET`, as Docker Hub's store does.
    AlwaysGet,
    /// For `GET`, an hour ago, valid for a minute: expired.
    ExpiredGet,
}

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

    /// [`Loopback::start`], with the registry's challenges naming the token service `realm`.
    pub async fn with_realm(
        rule: AuthRule,
        signing: Signing,
        len: usize,
        realm: String,
    ) -> Loopback {
        let store = Arc::new(Store::start(rule).await);
        let data = test_blob(len);
        let digest = store.put_blob(&data);
        let s = store.clone();
        let sign_for = match signing {
            Signing::OwnMethod => RegistrySigning::RequestMethod,
            Signing::AlwaysGet | Signing::ExpiredGet => RegistrySigning::GetOnly,
        };
        let (registry, registry_fake) = registry::start_with(&realm, sign_for, move |method, d| {
            let key = registry::blob_key(d);
            Some(match signing {
                Signing::ExpiredGet => s.presign_at(
                    method,
                    &key,
                    SystemTime::now() - Duration::from_secs(3600),
                    Duration::from_secs(60),
                ),
                Signing::OwnMethod | Signing::AlwaysGet => s.presign(method, &key),
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
