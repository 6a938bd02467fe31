//! What crosses between a client's request and the mirror's request upstream: which of the
//! client's headers go (an allowlist), what the mirror marks its own requests with, and which
//! headers of the answer describe only the upstream connection.

use super::client::{RegistryOnly, UpstreamRequest};
use super::guard;
use crate::api::Route;
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::{Method, Request, Uri};
use http_body_util::Empty;
use tower_signed_redirect::CacheIdentity;

/// Request headers passed upstream (`Authorization` only when the client's own login goes
/// through).
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
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// What the mirror marks an upstream request with for its own use: the route (the
/// upstream-request metric's label), the request's identity in the redirect cache (none:
/// the answer is neither cached nor served from the cache), the part of the content it asks
/// for, and whether a redirect may be followed.
#[derive(Clone)]
pub struct RequestMarks {
    /// What the client's request was for.
    pub route: Route,
    /// Who the request is in the redirect cache, if its answer may be cached.
    pub identity: Option<CacheIdentity>,
    /// What part of the content is asked for.
    pub range: RangeAsked,
    /// Only the registry is asked: its redirect is the answer (a check that it would serve
    /// the content, which needs nothing of storage).
    pub registry_only: bool,
}

/// What part of the content an upstream request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAsked {
    /// What the client asked (its `Range` and `If-Range`, if any).
    Client,
    /// All of it (a download for the store).
    Whole,
    /// From this offset to the end (a download for the store, resumed).
    From(u64),
}

impl RequestMarks {
    /// A request for `route` whose answer the redirect cache does not keep.
    pub fn uncached(route: Route) -> RequestMarks {
        RequestMarks {
            route,
            identity: None,
            range: RangeAsked::Client,
            registry_only: false,
        }
    }
}

/// The upstream request for a client's request: same method (`GET` or `HEAD`), the
/// allowlisted headers (one pass over the client's; its `Authorization` only with
/// `credentials`), no body, marked as the mirror's own (not a storage hop), with `marks`.
pub fn upstream_request(
    parts: &Parts,
    method: &Method,
    uri: Uri,
    marks: RequestMarks,
    credentials: bool,
) -> UpstreamRequest {
    let mut req = Request::new(Empty::new());
    *req.method_mut() = if *method == Method::HEAD {
        Method::HEAD
    } else {
        Method::GET
    };
    *req.uri_mut() = uri;
    let ranged = |name: &HeaderName| name == header::RANGE || name == header::IF_RANGE;
    for (name, value) in &parts.headers {
        if FORWARDED.contains(name)
            && (credentials || name != header::AUTHORIZATION)
            && (marks.range == RangeAsked::Client || !ranged(name))
        {
            req.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let RangeAsked::From(offset) = marks.range {
        let range = http::HeaderValue::from_str(&format!("bytes={offset}-"))
            .expect("a number is a valid header value");
        req.headers_mut().insert(header::RANGE, range);
    }
    if marks.registry_only {
        req.extensions_mut().insert(RegistryOnly);
    }
    req.extensions_mut().insert(guard::OwnRequest);
    req.extensions_mut().insert(marks.route);
    if let Some(identity) = marks.identity {
        req.extensions_mut().insert(identity);
    }
    req
}

/// A bare `GET` of `uri` (a registry's `/v2/`), marked as the mirror's own request.
pub fn own_get(uri: Uri) -> UpstreamRequest {
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = uri;
    req.extensions_mut().insert(guard::OwnRequest);
    req
}

/// Whether the registry itself (not storage, after a redirect) refused the request with a
/// `401`: only the registry's own challenge is one the mirror answers.
pub fn refused_by_registry<B>(res: &http::Response<B>) -> bool {
    res.status() == http::StatusCode::UNAUTHORIZED
        && res
            .extensions()
            .get::<tower_signed_redirect::FollowedRedirect>()
            .is_none()
}

/// Removes the headers that describe the upstream connection, hashing only those present.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
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
