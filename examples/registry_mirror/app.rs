//! The axum application: the shared [`Mirror`] answers every path (its routes are in
//! `common/routes.rs`); axum serves it.

use crate::common::Mirror;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;

pub fn router(mirror: Arc<Mirror>) -> Router {
    Router::new().fallback(handle).with_state(mirror)
}

async fn handle(State(mirror): State<Arc<Mirror>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    mirror
        .handle(&parts)
        .await
        .map(axum::body::Body::new)
        .into_response()
}
