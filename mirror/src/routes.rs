//! What each path does, and which upstream a request is for.

use super::api::{self, Endpoint};
use super::body::MirrorBody;
use super::errors::registry_error;
use super::guard;
use super::htpasswd::Check;
use super::metrics::Route;
use super::server::ClientAddr;
use super::upstream::Upstream;
use super::verify;
use super::Mirror;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Mirror {
    /// Answers one request: the mirror's only entry point, for every server.
    ///
    /// - `GET /healthz`: the process is up; `GET /readyz`: it can reach its default
    ///   upstream; `GET /metrics`: Prometheus metrics (none of them need a login);
    /// - `GET|HEAD /v2/`: the API version check;
    /// - `GET /token/<upstream>`: the token service (see `token.rs`);
    /// - `GET|HEAD /v2/<name>/{manifests,blobs,tags,referrers}/...`: pulled from the upstream.
    ///
    /// With `--htpasswd`, every `/v2/` and `/token/` request needs a login to the mirror.
    pub async fn handle(&self, parts: &Parts) -> Response<MirrorBody> {
        let path = parts.uri.path();
        match path {
            "/healthz" => return text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => {
                return match self.is_ready().await {
                    true => text(StatusCode::OK, "text/plain", "ready\n".into()),
                    false => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "the default upstream cannot be reached\n".into(),
                    ),
                }
            }
            "/metrics" => {
                return text(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.shared.metrics.encode(),
                )
            }
            _ => {}
        }
        if parts
            .headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            // Which one would the upstream read? Not a question to leave open.
            return registry_error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "more than one Authorization header",
            );
        }
        if let Some(users) = &self.shared.users {
            let client = parts
                .extensions
                .get::<ClientAddr>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.0.ip());
            match users.check(&parts.headers, client).await {
                Check::Accepted => {}
                Check::Refused => {
                    let mut res = registry_error(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "log in to the mirror",
                    );
                    res.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"registry mirror\""),
                    );
                    return res;
                }
                Check::Throttled(wait) => {
                    let mut res = registry_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TOOMANYREQUESTS",
                        "too many failed logins: try again later",
                    );
                    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                    res.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    return res;
                }
            }
        }
        if path == "/v2" || path == "/v2/" {
            with_namespace(self.ping(parts).await, self.select_by_ns(parts))
        } else if let Some(name) = path.strip_prefix("/token/") {
            self.token(name, parts).await
        } else if let Some(rest) = path.strip_prefix("/v2/") {
            with_namespace(self.pull(rest, parts).await, self.select_by_ns(parts))
        } else {
            registry_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "not a registry API path",
            )
        }
    }

    /// `/v2/`: answered by the upstream (with its auth challenge pointed at this mirror).
    async fn ping(&self, parts: &Parts) -> Response<MirrorBody> {
        let upstream = self
            .select_by_ns(parts)
            .unwrap_or_else(|| self.upstreams[0].clone());
        self.send(&upstream, parts, upstream.api_root(), Route::Ping)
            .await
    }

    /// `/v2/<rest>`: a manifest, blob, tag list or referrers list.
    async fn pull(&self, rest: &str, parts: &Parts) -> Response<MirrorBody> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return registry_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "this mirror is pull-only",
            );
        }
        let (upstream, prefixed, rest) = self.select(parts, rest);
        let api = match api::parse(rest) {
            Ok(api) => api,
            Err(refused) => {
                return registry_error(refused.status(), refused.code(), refused.message())
            }
        };
        if let (true, Endpoint::Blob(digest)) = (self.verify_digests, api.endpoint) {
            if !verify::can_verify(digest.algorithm) {
                return registry_error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "--verify-digests checks sha256 and sha512 digests only",
                );
            }
        }
        let (name, tail) = rest.split_at(api.name.len());
        let library = upstream.needs_library(name);
        // Only the parameters the endpoint defines go upstream (not containerd's `ns`, not
        // cache-busting noise): `n` and `last` for tags, `artifactType` for referrers.
        let allowed: &[&str] = match api.endpoint {
            Endpoint::TagsList => &["n", "last"],
            Endpoint::Referrers(_) => &["artifactType"],
            Endpoint::Manifest(_) | Endpoint::Blob(_) => &[],
        };
        let query = parts.uri.query().map(|q| keep_params(q, allowed));
        let path = match parts.uri.path_and_query() {
            // The usual case: the client's path and query are the upstream's, byte for byte.
            Some(same) if !prefixed && !library && query.as_deref() == parts.uri.query() => {
                same.clone()
            }
            _ => {
                let library = if library { "library/" } else { "" };
                let query = query.filter(|q| !q.is_empty());
                let path = match query {
                    Some(q) => format!("/v2/{library}{name}{tail}?{q}"),
                    None => format!("/v2/{library}{name}{tail}"),
                };
                match PathAndQuery::try_from(path) {
                    Ok(path) => path,
                    Err(_) => {
                        return registry_error(
                            StatusCode::BAD_REQUEST,
                            "NAME_INVALID",
                            "invalid repository path",
                        )
                    }
                }
            }
        };
        self.send(&upstream, parts, upstream.uri(path), api.endpoint.into())
            .await
    }

    /// Whether the default upstream answers `/v2/` (with anything, a `401` included), asked
    /// at most every five seconds.
    async fn is_ready(&self) -> bool {
        const FRESH: Duration = Duration::from_secs(5);
        if let Some((at, ready)) = *self.ready.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < FRESH {
                return ready;
            }
        }
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = self.upstreams[0].api_root();
        req.extensions_mut().insert(guard::Upstream);
        let answered = tokio::time::timeout(Duration::from_secs(5), self.client.send(req)).await;
        let ready = matches!(answered, Ok(Ok(_)));
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), ready));
        ready
    }

    /// containerd's `?ns=<registry>`, when it names a configured upstream. containerd
    /// form-encodes the value: `ns=registry.local%3A5000`.
    fn select_by_ns(&self, parts: &Parts) -> Option<Arc<Upstream>> {
        let ns = parts
            .uri
            .query()?
            .split('&')
            .find_map(|p| p.strip_prefix("ns="))?;
        let ns = percent_encoding::percent_decode_str(ns)
            .decode_utf8()
            .ok()?;
        self.upstreams
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(&ns))
            .cloned()
    }

    /// The upstream for a `/v2/<rest>` path: `ns`, else a leading `<upstream-name>/` (a
    /// host-like name), else the default. Returns it, whether the path named it, and the
    /// rest of the path.
    fn select<'a>(&self, parts: &Parts, rest: &'a str) -> (Arc<Upstream>, bool, &'a str) {
        if let Some(upstream) = self.select_by_ns(parts) {
            return (upstream, false, rest);
        }
        // As in Docker's reference grammar, a first component is a registry host only if
        // it looks like one; `e2e/image` stays a repository even with an upstream "e2e".
        if let Some((first, after)) = rest
            .split_once('/')
            .filter(|(f, _)| f.contains(['.', ':']) || *f == "localhost")
        {
            if let Some(upstream) = self.upstreams.iter().find(|u| u.name == first) {
                return (upstream.clone(), true, after);
            }
        }
        (self.upstreams[0].clone(), false, rest)
    }
}

/// The answer to a request whose `ns` named an upstream says so (`OCI-Namespace`, as the
/// OCI distribution spec's "Registry Proxying" asks of a proxy that honours `ns`).
fn with_namespace(
    mut res: Response<MirrorBody>,
    ns: Option<Arc<Upstream>>,
) -> Response<MirrorBody> {
    if let Some(value) = ns.and_then(|u| HeaderValue::from_str(&u.name).ok()) {
        res.headers_mut()
            .insert(HeaderName::from_static("oci-namespace"), value);
    }
    res
}

/// The parameters of `query` named in `allowed`, in their order.
fn keep_params(query: &str, allowed: &[&str]) -> String {
    query
        .split('&')
        .filter(|p| allowed.contains(&p.split('=').next().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("&")
}

/// A small answer the mirror writes itself.
fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<MirrorBody> {
    let mut res = Response::new(MirrorBody::Local(Full::new(Bytes::from(body))));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}
