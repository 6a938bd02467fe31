//! The axum application: the shared [`Mirror`] answers every path (its routes are in
//! `routes.rs`), as the router's fallback service.

use crate::Mirror;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use std::convert::Infallible;
use std::sync::Arc;

/// The mirror's router.
pub fn router(mirror: Arc<Mirror>) -> Router {
    // A plain service rather than a handler: no extractors to run for each request.
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let mirror = mirror.clone();
        async move {
            let (parts, _) = req.into_parts();
            Ok::<Response, Infallible>(mirror.handle(&parts).await.map(axum::body::Body::new))
        }
    }))
}
