//! One request upstream, and its answer back to the client: the request is built from an
//! allowlist of the client's headers, the answer loses its hop-by-hop headers, gets its
//! auth challenges pointed at the mirror, and streams back with an idle timeout and a log
//! line when it ends.

use super::body::{IdleTimeout, Metered, ProxyBody, RequestLog};
use super::client::UpstreamRequest;
use super::errors::{registry_error, upstream_failure};
use super::token::rewrite_challenges;
use super::upstream::Upstream;
use super::Mirror;
use http::header::{self, HeaderName};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceExt;
use tower_signed_redirect::FollowedRedirect;

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

impl Mirror {
    /// Sends the client's `GET` or `HEAD` to `url` on `upstream` and streams the answer back.
    pub(super) async fn send(
        &self,
        upstream: &Arc<Upstream>,
        parts: &Parts,
        url: String,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let Some(req) = upstream_request(parts, &url) else {
            return registry_error(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                "invalid repository path",
            );
        };
        match self.client.clone().oneshot(req).await {
            Ok(res) => self.answer(upstream, parts, res, started),
            Err(err) => {
                let (res, message) = upstream_failure(&err);
                tracing::warn!(
                    method = %parts.method,
                    path = parts.uri.path(),
                    upstream = %upstream.name,
                    status = res.status().as_u16(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    error = %message,
                    "upstream request failed"
                );
                res
            }
        }
    }

    /// The upstream's answer, made the client's.
    fn answer(
        &self,
        upstream: &Arc<Upstream>,
        parts: &Parts,
        res: Response<ProxyBody>,
        started: Instant,
    ) -> Response<ProxyBody> {
        let (mut head, body) = res.into_parts();
        for name in HOP_BY_HOP {
            head.headers.remove(*name);
        }
        rewrite_challenges(&mut head.headers, parts, upstream);
        let followed = head.extensions.remove::<FollowedRedirect>();
        let log = RequestLog {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            upstream: upstream.clone(),
            status: head.status.as_u16(),
            redirect: match (&followed, head.status.is_redirection()) {
                (Some(_), _) => "followed",
                (None, true) => "passed",
                (None, false) => "none",
            },
            followed,
        };
        let body = Metered::new(IdleTimeout::new(body, self.idle_timeout), log, started).boxed();
        Response::from_parts(head, body)
    }
}

/// The upstream request for a client's request: same method (`GET` or `HEAD`), the
/// allowlisted headers, no body. `None` when `url` is not a valid URI.
fn upstream_request(parts: &Parts, url: &str) -> Option<UpstreamRequest> {
    let mut req = Request::new(Empty::new());
    *req.method_mut() = if parts.method == Method::HEAD {
        Method::HEAD
    } else {
        Method::GET
    };
    *req.uri_mut() = url.parse().ok()?;
    for name in FORWARDED {
        for value in parts.headers.get_all(name) {
            req.headers_mut().append(name.clone(), value.clone());
        }
    }
    Some(req)
}
