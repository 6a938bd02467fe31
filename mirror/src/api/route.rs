//! What a request is for: the kind that routing, the caches, the upstream client and the
//! metrics' labels share.

use super::path::{self, Endpoint};

/// What a request was for.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`, the API version check.
    Ping,
    /// `/token/...`, the mirror's token endpoint.
    Token,
    /// A `/manifests/` path.
    Manifest,
    /// A `/blobs/` path.
    Blob,
    /// A `/tags/` path.
    Tags,
    /// A `/referrers/` path.
    Referrers,
    /// Anything else.
    Other,
}

impl Route {
    /// The route of a mirror (or upstream) path, as the distribution grammar reads it:
    /// `/v2/foo/blobs/bar/manifests/x` is a manifest of the repository `foo/blobs/bar`.
    pub fn of(path: &str) -> Route {
        if path == "/v2" || path == "/v2/" {
            return Route::Ping;
        }
        if path.starts_with("/token/") {
            return Route::Token;
        }
        let Some(api) = path
            .strip_prefix("/v2/")
            .and_then(|rest| path::parse(rest).ok())
        else {
            return Route::Other;
        };
        api.endpoint.into()
    }

    /// Its name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Ping => "ping",
            Route::Token => "token",
            Route::Manifest => "manifest",
            Route::Blob => "blob",
            Route::Tags => "tags",
            Route::Referrers => "referrers",
            Route::Other => "other",
        }
    }
}

impl From<Endpoint<'_>> for Route {
    fn from(endpoint: Endpoint<'_>) -> Route {
        match endpoint {
            Endpoint::Blob(_) => Route::Blob,
            Endpoint::Manifest(_) => Route::Manifest,
            Endpoint::TagsList => Route::Tags,
            Endpoint::Referrers(_) => Route::Referrers,
        }
    }
}
