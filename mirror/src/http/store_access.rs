//! Who may read what the blob store holds (a blob, or a manifest by digest). The store
//! answers first: a client's login the registry accepted for that repository and digest,
//! until its token ends; a shared identity (the mirror's own login, clients without one)
//! the registry served it to within `--blob-store-recheck`. Anyone else, or later, asks the
//! registry with a `HEAD` (not followed to storage): a `200` or a redirect to the content
//! grants the read, which the store remembers; a refusal (`401`, `403`, `404`) sends the
//! pull upstream; while the registry fails (no answer, `429`, `5xx`), a shared identity
//! reads what the registry served it within `--serve-stale`.

use super::exchange::Exchange;
use crate::api::Route;
use crate::cache::store::blobs::BlobStore;
use crate::cache::store::keys::{Kind, ObjectKey, Reader};
use crate::upstream::request::{RangeAsked, RequestMarks};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri};
use std::sync::Arc;

/// Whether `reader`, asking for `key` at `uri`, may read it from `store`.
pub async fn may_read(
    store: &Arc<BlobStore>,
    exchange: &Exchange<'_>,
    uri: &Uri,
    key: &ObjectKey,
    reader: &Reader,
) -> bool {
    if store.allows_without_asking(key, reader) || store.shared_allows(key, reader).await {
        return true;
    }
    let route = match key.kind {
        Kind::Blob => Route::Blob,
        Kind::Manifest => Route::Manifest,
    };
    let marks = RequestMarks {
        registry_only: true,
        range: RangeAsked::Whole,
        ..RequestMarks::uncached(route)
    };
    match exchange.send_upstream(uri, &Method::HEAD, marks).await {
        Ok(res) if serves_content(res.status(), res.headers()) => {
            store.allow(key, reader);
            true
        }
        Ok(res) if !fails(res.status()) => false,
        // The registry cannot say: what it served this shared identity lately still goes.
        _ => store.allows_while_failing(key, reader),
    }
}

/// Whether a registry's answer to a `HEAD` says it serves the content: a `200`, or a
/// redirect to it (with a `Location`). A `304` (the client's `If-None-Match`), a `300` or
/// a `206` say nothing of the whole content.
fn serves_content(status: StatusCode, headers: &HeaderMap) -> bool {
    let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
    status == StatusCode::OK || (redirect && headers.contains_key(header::LOCATION))
}

/// Whether an answer says the registry fails, rather than refuses: `429` or `5xx`.
fn fails(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_200_or_a_redirect_with_a_location_grants_a_read() {
        let mut location = HeaderMap::new();
        location.insert(
            header::LOCATION,
            "https://storage.example/x".parse().unwrap(),
        );
        let none = HeaderMap::new();
        assert!(serves_content(StatusCode::OK, &none));
        assert!(serves_content(StatusCode::TEMPORARY_REDIRECT, &location));
        assert!(!serves_content(StatusCode::TEMPORARY_REDIRECT, &none));
        for status in [304, 300, 206, 204, 401, 404] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(!serves_content(status, &location), "{status}");
        }
        assert!(fails(StatusCode::TOO_MANY_REQUESTS) && fails(StatusCode::BAD_GATEWAY));
        assert!(!fails(StatusCode::NOT_FOUND) && !fails(StatusCode::UNAUTHORIZED));
    }
}
