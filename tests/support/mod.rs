//! Helpers shared by the test files of both crates (the mirror's include this folder by
//! path): a recording mock client, loopback servers, a real signature-verifying S3 store
//! and a registry-like upstream, a log sink, a time bound, body readers.
//! `alloc.rs` (a counting allocator) and `rss.rs` (resident memory) are shared with the
//! benches too, which include them by path.
#![allow(dead_code, unreachable_pub)]

pub mod alloc;
pub mod logs;
pub mod mock;
pub mod net;
pub mod registry;
pub mod rss;
pub mod s3;
pub mod setup;

use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long any one test may take; loopback tests finish in well under a second.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Runs `f`, failing the test if it takes longer than [`LIMIT`].
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test exceeded its time bound")
}

/// Reads a whole body.
pub async fn body_bytes<B: http_body::Body>(body: B) -> Result<Bytes, B::Error> {
    Ok(body.collect().await?.to_bytes())
}

/// Reads a whole response body as UTF-8, failing the test on a body error.
pub async fn body_string<B>(res: http::Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    String::from_utf8(body_bytes(res.into_body()).await.unwrap().to_vec()).unwrap()
}
