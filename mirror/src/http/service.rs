//! The mirror as a hyper service: every request goes to [`Mirror::handle`]. No router
//! framework: the mirror's paths are matched in `paths.rs`, and a router in front would
//! only add its own per-request work (one boxed future per request here).

use super::mirror::Mirror;
use crate::serve::body::MirrorBody;
use http::{Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The mirror as a [`hyper::service::Service`], for hyper's (or hyper-util's) server. The
/// mirror is pull-only: request bodies are dropped unread.
#[derive(Clone)]
pub struct MirrorService(Arc<Mirror>);

impl MirrorService {
    /// Serves `mirror`.
    pub fn new(mirror: Mirror) -> MirrorService {
        MirrorService(Arc::new(mirror))
    }
}

impl<B> hyper::service::Service<Request<B>> for MirrorService {
    type Response = Response<MirrorBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<MirrorBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let mirror = self.0.clone();
        let (parts, _) = req.into_parts();
        Box::pin(async move { Ok(mirror.handle(&parts).await) })
    }
}
