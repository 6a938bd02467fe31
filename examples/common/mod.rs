#![allow(dead_code)]

//! The registry mirror both examples serve: upstream selection, the Bearer token flow,
//! blobs through `SignedRedirectLayer`, registry-style errors and one log line per request.
//!
//! Framework-free: handlers take the request's `http::request::Parts` and return an
//! `http::Response`, so axum and plain hyper serve the same code.

pub mod body;
pub mod options;
pub mod upstream;

use body::{BoxError, IdleTimeout, Metered, ProxyBody, RequestLog};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use options::{Options, RedirectMode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};
use tower_signed_redirect::{FollowedRedirect, SignedRedirectLayer};
use upstream::Upstream;

/// Requests the mirror sends upstream: `GET` or `HEAD`, no body.
pub type UpstreamRequest = Request<Empty<Bytes>>;
/// The upstream client: hyper-util's, behind a response timeout and the redirect handling.
pub type UpstreamClient = BoxCloneSyncService<UpstreamRequest, Response<ProxyBody>, BoxError>;

/// Request headers passed upstream.
const FORWARDED: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::ACCEPT,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MATCH,
    header::USER_AGENT,
];

/// Response headers that describe the upstream connection, not the response.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

pub struct Mirror {
    upstreams: Vec<Arc<Upstream>>,
    client: UpstreamClient,
    idle_timeout: Duration,
}

impl Mirror {
    pub fn from_options(options: &Options) -> Result<Mirror, String> {
        let upstreams = options
            .upstreams
            .iter()
            .map(|u| Upstream::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        if upstreams.is_empty() {
            return Err("at least one --upstream is needed".into());
        }
        Ok(Mirror::new(
            upstreams,
            build_client(options)?,
            options.idle_timeout,
        ))
    }

    pub fn new(upstreams: Vec<Upstream>, client: UpstreamClient, idle_timeout: Duration) -> Mirror {
        Mirror {
            upstreams: upstreams.into_iter().map(Arc::new).collect(),
            client,
            idle_timeout,
        }
    }

    /// Dispatches by path (for servers without a router).
    pub async fn route(&self, parts: &Parts) -> Response<ProxyBody> {
        let path = parts.uri.path();
        if path == "/v2" || path == "/v2/" {
            self.ping(parts).await
        } else if let Some(name) = path.strip_prefix("/token/") {
            self.token(name, parts).await
        } else if path.starts_with("/v2/") {
            self.forward(parts).await
        } else {
            registry_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "not a registry API path",
            )
        }
    }

    /// `GET|HEAD /v2/`: the API version check, answered by the upstream (with its auth
    /// challenge pointed at this mirror's token endpoint).
    pub async fn ping(&self, parts: &Parts) -> Response<ProxyBody> {
        let upstream = self
            .select_by_ns(parts)
            .unwrap_or_else(|| self.upstreams[0].clone());
        let url = upstream.url("", None);
        self.send(&upstream, parts, url).await
    }

    /// `GET /token/<upstream>?service=..&scope=..`: proxies the upstream's token service,
    /// passing the client's credentials (if any) through.
    pub async fn token(&self, name: &str, parts: &Parts) -> Response<ProxyBody> {
        let Some(upstream) = self.upstreams.iter().find(|u| u.name == name).cloned() else {
            return registry_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such upstream");
        };
        let realm = match upstream.realm() {
            Some(realm) => realm,
            None => match self.learn_realm(&upstream, parts).await {
                Some(realm) => realm,
                None => {
                    return registry_error(
                        StatusCode::BAD_GATEWAY,
                        "UNAVAILABLE",
                        "upstream offers no token service",
                    )
                }
            },
        };
        let url = match parts.uri.query() {
            Some(q) if realm.contains('?') => format!("{realm}&{q}"),
            Some(q) => format!("{realm}?{q}"),
            None => realm,
        };
        self.send(&upstream, parts, url).await
    }

    /// `GET|HEAD /v2/<name>/{manifests,blobs,tags,referrers}/...`.
    pub async fn forward(&self, parts: &Parts) -> Response<ProxyBody> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return registry_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "this mirror is pull-only",
            );
        }
        let rest = parts.uri.path().trim_start_matches("/v2/");
        let (upstream, rest) = self.select(parts, rest);
        let Some((name, tail)) = split_repository(rest) else {
            return registry_error(
                StatusCode::NOT_FOUND,
                "NAME_INVALID",
                "not a repository path",
            );
        };
        let query = parts.uri.query().map(strip_ns).filter(|q| !q.is_empty());
        let url = upstream.url(
            &format!("{}{tail}", upstream.repository(name)),
            query.as_deref(),
        );
        self.send(&upstream, parts, url).await
    }

    async fn send(
        &self,
        upstream: &Arc<Upstream>,
        parts: &Parts,
        url: String,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let mut log = RequestLog {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            upstream: upstream.clone(),
            status: 0,
            redirect: "none",
            followed: None,
        };
        let mut req = Request::new(Empty::new());
        *req.method_mut() = if parts.method == Method::HEAD {
            Method::HEAD
        } else {
            Method::GET
        };
        *req.uri_mut() = match url.parse() {
            Ok(uri) => uri,
            Err(_) => {
                return registry_error(
                    StatusCode::BAD_REQUEST,
                    "NAME_INVALID",
                    "invalid repository path",
                )
            }
        };
        for name in FORWARDED {
            for value in parts.headers.get_all(name) {
                req.headers_mut().append(name.clone(), value.clone());
            }
        }
        let res = match self.client.clone().oneshot(req).await {
            Ok(res) => res,
            Err(err) => {
                let (res, message) = upstream_failure(&err);
                tracing::warn!(
                    method = %log.method,
                    path = log.uri.path(),
                    upstream = %upstream.name,
                    status = res.status().as_u16(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    error = %message,
                    "upstream request failed"
                );
                return res;
            }
        };
        let (mut head, body) = res.into_parts();
        for name in HOP_BY_HOP {
            head.headers.remove(*name);
        }
        if head.headers.contains_key(header::WWW_AUTHENTICATE) {
            let token_endpoint = token_endpoint(parts, upstream);
            let challenges: Vec<HeaderValue> = head
                .headers
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| {
                    HeaderValue::from_str(&upstream.rewrite_challenge(v, &token_endpoint)).ok()
                })
                .collect();
            head.headers.remove(header::WWW_AUTHENTICATE);
            for c in challenges {
                head.headers.append(header::WWW_AUTHENTICATE, c);
            }
        }
        log.status = head.status.as_u16();
        log.followed = head.extensions.remove::<FollowedRedirect>();
        if log.followed.is_none() && head.status.is_redirection() {
            log.redirect = "passed";
        }
        let body = Metered::new(IdleTimeout::new(body, self.idle_timeout), log, started).boxed();
        Response::from_parts(head, body)
    }

    /// Asks the upstream's `/v2/` for its Bearer realm.
    async fn learn_realm(&self, upstream: &Upstream, parts: &Parts) -> Option<String> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = upstream.url("", None).parse().ok()?;
        let res = self.client.clone().oneshot(req).await.ok()?;
        for value in res.headers().get_all(header::WWW_AUTHENTICATE) {
            if let Ok(v) = value.to_str() {
                upstream.rewrite_challenge(v, &token_endpoint(parts, upstream));
            }
        }
        upstream.realm()
    }

    /// containerd's `?ns=<registry>`, when it names a configured upstream.
    fn select_by_ns(&self, parts: &Parts) -> Option<Arc<Upstream>> {
        let ns = parts
            .uri
            .query()?
            .split('&')
            .find_map(|p| p.strip_prefix("ns="))?;
        self.upstreams.iter().find(|u| u.name == ns).cloned()
    }

    /// The upstream for a `/v2/<rest>` path: `ns`, else a leading `<upstream-name>/` (a
    /// host-like name), else the default. Returns it with the rest of the path.
    fn select<'a>(&self, parts: &Parts, rest: &'a str) -> (Arc<Upstream>, &'a str) {
        if let Some(upstream) = self.select_by_ns(parts) {
            return (upstream, rest);
        }
        // As in Docker's reference grammar, a first component is a registry host only if
        // it looks like one; `e2e/image` stays a repository even with an upstream "e2e".
        if let Some((first, after)) = rest
            .split_once('/')
            .filter(|(f, _)| f.contains(['.', ':']) || *f == "localhost")
        {
            if let Some(upstream) = self.upstreams.iter().find(|u| u.name == first) {
                return (upstream.clone(), after);
            }
        }
        (self.upstreams[0].clone(), rest)
    }
}

/// `library/alpine/manifests/latest` → (`library/alpine`, `/manifests/latest`).
fn split_repository(rest: &str) -> Option<(&str, &str)> {
    ["/manifests/", "/blobs/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|kind| rest.rfind(kind))
        .max()
        .map(|i| rest.split_at(i))
        .filter(|(name, _)| {
            !name.is_empty()
                && name
                    .split('/')
                    .all(|s| !s.is_empty() && s != "." && s != "..")
        })
}

fn strip_ns(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.starts_with("ns="))
        .collect::<Vec<_>>()
        .join("&")
}

/// The mirror's token endpoint for `upstream`, as the client reaches the mirror.
fn token_endpoint(parts: &Parts, upstream: &Upstream) -> String {
    format!("http://{}/token/{}", host(&parts.headers), upstream.name)
}

fn host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
}

/// A registry-style error: `{"errors":[{"code":..,"message":..}]}`.
pub fn registry_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(
            http_body_util::Full::new(Bytes::from(body))
                .map_err(|e| match e {})
                .boxed(),
        )
        .expect("static response parts are valid")
}

/// 504 for timeouts, 502 for everything else that kept the upstream from answering. The
/// message is the error's `Display`: this crate's errors print URLs redacted.
fn upstream_failure(err: &BoxError) -> (Response<ProxyBody>, String) {
    let timed_out = {
        let inner = err
            .downcast_ref::<tower_signed_redirect::Error>()
            .and_then(|e| e.inner())
            .map(|e| e as &(dyn std::error::Error + 'static));
        let mut next: Option<&(dyn std::error::Error + 'static)> = inner.or(Some(&**err));
        let mut found = false;
        while let Some(e) = next {
            found |= e.is::<tower::timeout::error::Elapsed>();
            next = e.source();
        }
        found
    };
    let message = match err.downcast_ref::<tower_signed_redirect::Error>() {
        Some(e) => format!(
            "{e}: {}",
            std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        ),
        None => err.to_string(),
    };
    let res = if timed_out {
        registry_error(StatusCode::GATEWAY_TIMEOUT, "TIMEOUT", &message)
    } else {
        registry_error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", &message)
    };
    (res, message)
}

/// hyper-util's client over HTTP and HTTPS (rustls, webpki roots plus `--upstream-ca`),
/// behind a response timeout and the configured redirect handling.
pub fn build_client(options: &Options) -> Result<UpstreamClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &options.upstream_ca {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("--upstream-ca {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("--upstream-ca {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("--upstream-ca {}: {e}", path.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(options.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        // The idle timeout is enforced only with a timer to run the pool's reaper.
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(options.pool_idle_timeout)
        .pool_max_idle_per_host(256)
        .build::<_, Empty<Bytes>>(https);
    let timed = ServiceBuilder::new()
        .timeout(options.response_timeout)
        .service(client);

    let mut matcher = HostPatterns::new(&options.storage_hosts).map_err(|e| e.to_string())?;
    if matcher.is_empty() {
        matcher = HostPatterns::default();
    }
    let storage = WellKnownStorage::new().or(matcher);
    Ok(match options.redirects {
        RedirectMode::Signed => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_err(BoxError::from)
                .map_response(|res: Response<_>| {
                    res.map(|b: tower_signed_redirect::ResponseBody<_>| {
                        b.map_err(BoxError::from).boxed()
                    })
                })
                .layer(SignedRedirectLayer::with_matcher(storage))
                .service(timed),
        ),
        RedirectMode::Naive => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_response(|res: Response<_>| {
                    res.map(|b: hyper::body::Incoming| b.map_err(BoxError::from).boxed())
                })
                .layer(
                    tower_http::follow_redirect::FollowRedirectLayer::with_policy(
                        tower_http::follow_redirect::policy::Limited::new(5),
                    ),
                )
                .service(timed),
        ),
        RedirectMode::Pass => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_response(|res: Response<_>| {
                    res.map(|b: hyper::body::Incoming| b.map_err(BoxError::from).boxed())
                })
                .service(timed),
        ),
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Builds the mirror and binds its listener; on failure prints the reason
/// and exits (2 for configuration, 1 for the socket), as both examples' `main` want.
pub async fn start(options: &Options) -> (Arc<Mirror>, tokio::net::TcpListener) {
    let mirror = match Mirror::from_options(options) {
        Ok(mirror) => Arc::new(mirror),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    match tokio::net::TcpListener::bind(options.listen).await {
        Ok(listener) => (mirror, listener),
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", options.listen);
            std::process::exit(1);
        }
    }
}
