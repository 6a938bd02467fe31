//! The axum application: routes onto the shared [`Mirror`].

use crate::common::body::ProxyBody;
use crate::common::Mirror;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use std::sync::Arc;

/// The mirror's routes: `/v2/` (ping), `/token/{upstream}` (token service), and every
/// other `/v2/...` path (manifests, blobs, tags).
pub fn router(mirror: Arc<Mirror>) -> Router {
    Router::new()
        .route("/v2", get(ping))
        .route("/v2/", get(ping))
        .route("/token/{upstream}", get(token))
        .route("/v2/{*rest}", any(forward))
        .fallback(not_found)
        .with_state(mirror)
}

fn respond(res: http::Response<ProxyBody>) -> Response {
    res.map(axum::body::Body::new).into_response()
}

async fn ping(State(mirror): State<Arc<Mirror>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    respond(mirror.ping(&parts).await)
}

async fn token(
    State(mirror): State<Arc<Mirror>>,
    Path(upstream): Path<String>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    respond(mirror.token(&upstream, &parts).await)
}

async fn forward(State(mirror): State<Arc<Mirror>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    respond(mirror.forward(&parts).await)
}

async fn not_found() -> Response {
    respond(crate::common::registry_error(
        http::StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "not a registry API path",
    ))
}
