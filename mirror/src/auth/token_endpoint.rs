//! The Bearer token flow through the mirror, for clients' own logins (pass-through): the
//! upstream's `WWW-Authenticate` realm is rewritten to the mirror's `/token/<upstream>`, and
//! token requests there are proxied to the upstream's token service with the client's own
//! credentials. Clients never need to reach the token service, and private repositories
//! work with the user's login.
//!
//! With a login of the mirror's own (`--upstream-user`, `--upstream-credentials`, or
//! `--htpasswd` alone), `/token/` is not served: a client gets no token minted with the
//! mirror's account. The tokens it hands out are remembered ([`IssuedTokens`]).

use super::challenge::{with_realm, Challenge};
use super::credentials::Login;
use super::issued::{IssuedTo, IssuedTokens};
use super::token_service::{TokenAnswer, TOKEN_BODY_LIMIT};
use crate::api::Route;
use crate::metrics::Metrics;
use crate::serve::body::{MirrorBody, UpstreamBody};
use crate::serve::errors::{registry_error, upstream_failure};
use crate::upstream::client::UpstreamClient;
use crate::upstream::registry::Registry;
use crate::upstream::request::{own_get, remove_hop_by_hop, upstream_request, RequestMarks};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use std::sync::Arc;
use tower_signed_redirect::FollowedRedirect;

/// The mirror's `/token/<upstream>` endpoint.
pub struct TokenEndpoint {
    issued: Arc<IssuedTokens>,
    client: UpstreamClient,
    metrics: Arc<Metrics>,
}

impl TokenEndpoint {
    /// The endpoint, sending with `client` and remembering what it hands out in `issued`.
    pub fn new(
        issued: Arc<IssuedTokens>,
        client: UpstreamClient,
        metrics: Arc<Metrics>,
    ) -> TokenEndpoint {
        TokenEndpoint {
            issued,
            client,
            metrics,
        }
    }

    /// `GET /token/<upstream>?service=..&scope=..`: `registry`'s token service, asked with
    /// the client's credentials (if any). Not served when the mirror logs in itself.
    pub async fn answer(
        &self,
        registry: &Arc<Registry>,
        login: &Login,
        parts: &Parts,
    ) -> Response<MirrorBody> {
        if !matches!(login, Login::PassThrough) {
            return registry_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "this mirror logs in to the upstream itself and hands out no tokens",
            );
        }
        let uri = match self.token_service(registry, parts).await {
            Ok(uri) => uri,
            Err(res) => return res,
        };
        // Who chose the destination: the upstream, in its own challenge (a realm is never
        // learned from storage's answers); the credentials are the client's own.
        registry.announce_realm(&uri);
        let marks = RequestMarks::uncached(Route::of(uri.path()));
        let answer = self
            .client
            .send(upstream_request(parts, &parts.method, uri, marks, true))
            .await;
        let res = match answer {
            Ok(res) if res.extensions().get::<FollowedRedirect>().is_some() => {
                // A token service that redirects to storage: storage chooses no tokens.
                self.metrics.request(Route::Token, 502, &registry.name);
                return registry_error(
                    StatusCode::BAD_GATEWAY,
                    "UNAVAILABLE",
                    "the token service redirected to storage",
                );
            }
            Ok(res) => res,
            Err(err) => {
                let (res, message) = upstream_failure(&err);
                self.metrics
                    .request(Route::Token, res.status().as_u16(), &registry.name);
                tracing::warn!(upstream = %registry.name, error = %message, "token request failed");
                return res;
            }
        };
        self.relay(registry, parts, res).await
    }

    /// The token service's answer, read whole (at most 64 KiB) and handed to the client; the
    /// token it holds is remembered as issued to whoever asked.
    async fn relay(
        &self,
        registry: &Registry,
        parts: &Parts,
        res: Response<UpstreamBody>,
    ) -> Response<MirrorBody> {
        let (mut head, body) = res.into_parts();
        remove_hop_by_hop(&mut head.headers);
        let Ok(body) = Limited::new(body, TOKEN_BODY_LIMIT).collect().await else {
            self.metrics.request(Route::Token, 502, &registry.name);
            return registry_error(
                StatusCode::BAD_GATEWAY,
                "UNAVAILABLE",
                "the token service's answer could not be read",
            );
        };
        let body = body.to_bytes();
        if head.status.is_success() {
            if let Some(answer) = TokenAnswer::parse(&body) {
                self.issued
                    .remember(&answer.token, IssuedTo::of(parts), answer.lifetime);
            }
        }
        self.metrics
            .request(Route::Token, head.status.as_u16(), &registry.name);
        tracing::info!(upstream = %registry.name, status = head.status.as_u16(), "token");
        head.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(head, MirrorBody::Local(Full::new(body)))
    }

    /// The token service URL for the client's token request: the registry's realm (learned
    /// from its `/v2/` if not seen yet) with the client's query, if credentials may go there.
    async fn token_service(
        &self,
        registry: &Registry,
        parts: &Parts,
    ) -> Result<Uri, Response<MirrorBody>> {
        let realm = match registry.realm() {
            Some(realm) => realm,
            None => self.learn_realm(registry).await.ok_or_else(|| {
                registry_error(
                    StatusCode::BAD_GATEWAY,
                    "UNAVAILABLE",
                    "upstream offers no token service",
                )
            })?,
        };
        let url = match parts.uri.query() {
            Some(q) if realm.contains('?') => format!("{realm}&{q}"),
            Some(q) => format!("{realm}?{q}"),
            None => realm,
        };
        registry
            .check_realm(&url)
            .map_err(|e| registry_error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", &e))
    }

    /// Asks the registry's `/v2/` for the token service its challenge names.
    async fn learn_realm(&self, registry: &Registry) -> Option<String> {
        let res = self.client.send(own_get(registry.api_root())).await.ok()?;
        if res.extensions().get::<FollowedRedirect>().is_some() {
            // Storage answered, not the upstream: nothing it says names a token service.
            return None;
        }
        for challenge in res.headers().get_all(header::WWW_AUTHENTICATE) {
            if let Some(realm) = challenge.to_str().ok().and_then(Challenge::bearer_realm) {
                registry.set_realm(&realm);
            }
        }
        registry.realm()
    }
}

/// Points the registries' `Bearer` challenges at the mirror's `/token/` endpoint, at the URL
/// clients reach the mirror by.
#[derive(Clone)]
pub struct ChallengeRewriter {
    /// `--public-url`, without a trailing `/`.
    public_url: Option<String>,
    /// Whether the mirror serves HTTPS itself (`--tls-cert`).
    tls: bool,
}

impl ChallengeRewriter {
    /// Clients reach the mirror at `public_url` (else at their `Host`, over https if `tls`).
    pub fn new(public_url: Option<&str>, tls: bool) -> ChallengeRewriter {
        ChallengeRewriter {
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            tls,
        }
    }

    /// Points the `Bearer` challenges of **the registry's own** answer at the mirror's
    /// token endpoint, remembering the registry's realm. `Basic` challenges pass unchanged.
    pub fn rewrite_challenges(&self, headers: &mut HeaderMap, parts: &Parts, registry: &Registry) {
        if !headers.contains_key(header::WWW_AUTHENTICATE) {
            return;
        }
        let endpoint = format!("{}/token/{}", self.public_url(parts), registry.name);
        let challenges: Vec<HeaderValue> = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|challenge| {
                if let Some(realm) = Challenge::bearer_realm(challenge) {
                    registry.set_realm(&realm);
                }
                HeaderValue::from_str(&with_realm(challenge, &endpoint)).ok()
            })
            .collect();
        headers.remove(header::WWW_AUTHENTICATE);
        for challenge in challenges {
            headers.append(header::WWW_AUTHENTICATE, challenge);
        }
    }

    /// How the client reaches the mirror: `--public-url`, else its `Host` with the scheme
    /// the mirror serves (behind a TLS front, give `--public-url`).
    fn public_url(&self, parts: &Parts) -> String {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}")
    }
}
