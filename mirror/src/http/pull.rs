//! A pull, on its way: who is asking (the identity the caches key by), the caches, the
//! upstream, and the answer back. Only `GET` and `HEAD` of the distribution API's pull paths
//! get here.

use super::answer::{Answers, SentUpstream};
use super::blob_pull::{BlobAsked, BlobPull};
use super::exchange::Exchange;
use super::manifest_pull::ManifestPull;
use super::paths::Registries;
use crate::api::path::Endpoint;
use crate::api::Route;
use crate::auth::identity::Identity;
use crate::auth::issued::IssuedTokens;
use crate::auth::logins::Logins;
use crate::cache::store::keys::{ContentDigest, Reader};
use crate::serve::body::MirrorBody;
use crate::serve::errors::{plain_answer, registry_error};
use crate::serve::log::RequestLog;
use crate::serve::verify;
use crate::upstream::registry::Registry;
use crate::upstream::request::RequestMarks;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Uri};
use std::sync::Arc;
use std::time::Instant;

/// Pulls from the upstream registries, through the caches.
pub struct Pull {
    /// How requests go upstream with each registry's login.
    logins: Arc<Logins>,
    /// The tokens `/token/` handed out: the identities of clients' own logins.
    issued: Arc<IssuedTokens>,
    /// How upstream answers are made the client's.
    answers: Answers,
    /// The manifest cache's way, with `--manifest-cache` above 0.
    manifests: Option<ManifestPull>,
    /// The blob store's way, unless `--blob-store none`.
    blobs: Option<BlobPull>,
    /// Whether the redirect cache is on.
    redirect_cache: bool,
    /// `--verify-digests`: only sha256 and sha512 blob digests are forwarded.
    verify_digests: bool,
}

impl Pull {
    /// Pulls with `logins`; the identities of clients' own logins come from `issued`.
    pub fn new(
        logins: Logins,
        issued: Arc<IssuedTokens>,
        answers: Answers,
        (manifests, blobs): (Option<ManifestPull>, Option<BlobPull>),
        redirect_cache: bool,
        verify_digests: bool,
    ) -> Pull {
        Pull {
            logins: Arc::new(logins),
            issued,
            answers,
            manifests,
            blobs,
            redirect_cache,
            verify_digests,
        }
    }

    /// How requests go upstream with each registry's login.
    pub fn logins(&self) -> &Logins {
        &self.logins
    }

    /// `/v2/`: answered by `registry` (with its auth challenge pointed at this mirror).
    /// While the registry fails (`429`, `5xx`, or no answer), the mirror answers `/v2/`
    /// itself, `200`: the ping grants nothing, and clients that stop at a failed ping (skopeo
    /// does) go on to pull what the mirror can serve without the registry.
    pub async fn ping(&self, registry: &Arc<Registry>, parts: &Parts) -> Response<MirrorBody> {
        let exchange = self.exchange(registry, parts);
        let answer = exchange
            .send_upstream(
                &registry.api_root(),
                &parts.method,
                RequestMarks::uncached(Route::Ping),
            )
            .await;
        let failing = match &answer {
            Ok(res) => {
                res.status() == StatusCode::TOO_MANY_REQUESTS || res.status().is_server_error()
            }
            Err(_) => true,
        };
        if failing && (self.blobs.is_some() || self.manifests.is_some()) {
            tracing::warn!(upstream = %registry.name, "upstream failing: the mirror answers /v2/ itself");
            let log = RequestLog::new(
                parts,
                registry.name.clone(),
                Route::Ping,
                200,
                self.answers.metrics(),
            );
            log.finish(2, "complete", exchange.started);
            let mut res = plain_answer(StatusCode::OK, "application/json", "{}".into());
            res.headers_mut().insert(
                HeaderName::from_static("docker-distribution-api-version"),
                HeaderValue::from_static("registry/2.0"),
            );
            return res;
        }
        let sent = SentUpstream {
            uri: registry.api_root(),
            identity: None,
            started: exchange.started,
            route: Route::Ping,
            store: None,
        };
        exchange.answer_client(sent, answer)
    }

    /// `/v2/<rest>`: a manifest, blob, tag list or referrers list, from the registry
    /// `registries` choose for it.
    pub async fn pull(
        &self,
        registries: &Registries,
        rest: &str,
        parts: &Parts,
    ) -> Response<MirrorBody> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return registry_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "this mirror is pull-only",
            );
        }
        let target = match registries.target(parts, rest) {
            Ok(target) => target,
            Err(refused) => {
                return registry_error(refused.status(), refused.code(), refused.message())
            }
        };
        if let (true, Endpoint::Blob(digest)) = (self.verify_digests, target.endpoint) {
            if !verify::can_verify(digest.algorithm) {
                return registry_error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "--verify-digests checks sha256 and sha512 digests only",
                );
            }
        }
        let route = target.route();
        if let (Endpoint::Blob(digest), Some(blobs)) = (target.endpoint, &self.blobs) {
            let who = self.identity(&target.registry, parts, route);
            let digest = ContentDigest::parse(&format!("{}:{}", digest.algorithm, digest.encoded));
            if let (Some(who), Some(digest)) = (who, digest) {
                let exchange = self.exchange(&target.registry, parts);
                let reader = Reader::of(&who, &target.registry.name, &target.repository);
                let asked = BlobAsked {
                    uri: &target.uri,
                    repository: &target.repository,
                    digest,
                    identity: self.redirect_cache.then(|| who.cache_identity()),
                };
                return blobs.answer(&exchange, asked, reader).await;
            }
        }
        self.forward(&target.registry, parts, target.uri, route)
            .await
    }

    /// A client's request on its way to `registry`.
    fn exchange<'a>(&'a self, registry: &'a Arc<Registry>, parts: &'a Parts) -> Exchange<'a> {
        Exchange {
            registry,
            parts,
            logins: &self.logins,
            answers: &self.answers,
            started: Instant::now(),
        }
    }

    /// Sends the client's `GET` or `HEAD` to `uri` on `registry` and streams the answer back,
    /// through the caches; `route` is what the client's path asks for (parsed once, by the
    /// caller).
    async fn forward(
        &self,
        registry: &Arc<Registry>,
        parts: &Parts,
        uri: Uri,
        route: Route,
    ) -> Response<MirrorBody> {
        let exchange = self.exchange(registry, parts);
        // Who is asking, for the caches (worked out only for what a cache keeps: it hashes
        // the client's credentials).
        let who = self.identity(registry, parts, route);
        if let (Route::Manifest, Some(manifests), Some(who)) = (route, &self.manifests, &who) {
            return manifests.answer(&exchange, uri, who).await;
        }
        // Only blobs are in the redirect cache: other requests are rarely redirected, and
        // would wait for another's round trip for nothing (single-flight).
        let identity = who
            .filter(|_| route == Route::Blob)
            .map(|who| who.cache_identity());
        let marks = RequestMarks {
            identity: identity.clone(),
            ..RequestMarks::uncached(route)
        };
        let answer = exchange.send_upstream(&uri, &parts.method, marks).await;
        let sent = SentUpstream {
            uri,
            identity,
            started: exchange.started,
            route,
            store: None,
        };
        exchange.answer_client(sent, answer)
    }

    /// Who the request is, for the caches: every client of a mirror that logs in itself is
    /// its login; with clients' own logins, see [`IssuedTokens::identity`]. `None` where no
    /// cache keeps the answer.
    fn identity(&self, registry: &Registry, parts: &Parts, route: Route) -> Option<Identity> {
        let cacheable = match route {
            Route::Manifest => self.manifests.is_some(),
            Route::Blob => self.redirect_cache || self.blobs.is_some(),
            _ => false,
        };
        match self.logins.identity(registry) {
            _ if !cacheable => None,
            Some(own) => Some(own.clone()),
            None => self.issued.identity(&parts.headers),
        }
    }
}
