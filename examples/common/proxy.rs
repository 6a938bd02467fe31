//! One request upstream, and its answer back to the client: the request is built from an
//! allowlist of the client's headers, the answer loses its hop-by-hop headers, gets its
//! auth challenges pointed at the mirror, and streams back with an idle timeout and a log
//! line when it ends.

use super::body::{IdleTimeout, Metered, MirrorBody, RequestLog};
use super::client::{UpstreamBody, UpstreamRequest};
use super::errors::upstream_failure;
use super::token::rewrite_challenges;
use super::upstream::Upstream;
use super::Mirror;
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::{Method, Request, Response, Uri};
use http_body_util::Empty;
use std::sync::Arc;
use std::time::Instant;
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
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

impl Mirror {
    /// Sends the client's `GET` or `HEAD` to `uri` on `upstream` and streams the answer back.
    pub(super) async fn send(
        &self,
        upstream: &Arc<Upstream>,
        parts: &Parts,
        uri: Uri,
    ) -> Response<MirrorBody> {
        let started = Instant::now();
        let req = upstream_request(parts, uri);
        match self.client.send(req).await {
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
        res: Response<UpstreamBody>,
        started: Instant,
    ) -> Response<MirrorBody> {
        let (mut head, body) = res.into_parts();
        remove_hop_by_hop(&mut head.headers);
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
        let body = Metered::new(IdleTimeout::new(body, self.idle_timeout), log, started);
        Response::from_parts(head, MirrorBody::Upstream(body))
    }
}

/// The upstream request for a client's request: same method (`GET` or `HEAD`), the
/// allowlisted headers (one pass over the client's), no body.
fn upstream_request(parts: &Parts, uri: Uri) -> UpstreamRequest {
    let mut req = Request::new(Empty::new());
    *req.method_mut() = if parts.method == Method::HEAD {
        Method::HEAD
    } else {
        Method::GET
    };
    *req.uri_mut() = uri;
    for (name, value) in &parts.headers {
        if FORWARDED.contains(name) {
            req.headers_mut().append(name.clone(), value.clone());
        }
    }
    req
}

/// Removes the headers that describe the upstream connection, hashing only those present.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut found = [false; 7];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            found[i] = true;
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(found).filter(|(_, found)| *found) {
        headers.remove(name);
    }
}
