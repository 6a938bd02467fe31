//! One download into the store: the blob streamed from upstream into a spool file, hashed
//! as it comes, resumed with `Range` where it broke off, and committed only when it is
//! whole and matches its digest. Readers (every client waiting for the blob) read the spool
//! as it grows; the download goes on to its end whether or not they stay.

use super::keys::{ObjectKey, Scope};
use super::spool::{FillState, Progress, SpoolCursor, SpoolFile};
use crate::serve::body::{IdleTimeout, UpstreamBody};
use crate::serve::verify::DigestHasher;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tower_signed_redirect::BoxError;

/// How many times a broken download is resumed with `Range` before it is given up.
const MAX_RESUMES: u32 = 3;

/// How many chunks a download's writer may be behind its receiver.
const QUEUED: usize = 8;

/// Asks the upstream for the blob again from an offset (`Range: bytes=<offset>-`), for a
/// download that broke off there.
pub type Resume =
    Arc<dyn Fn(u64) -> BoxFuture<'static, Result<Response<UpstreamBody>, BoxError>> + Send + Sync>;

/// A download in flight.
pub struct Fill {
    /// What is downloaded.
    pub key: ObjectKey,
    /// Its size (the upstream's `Content-Length`).
    pub size: u64,
    /// The upstream's `Content-Type`.
    pub media_type: HeaderValue,
    /// The spool file.
    pub(super) path: PathBuf,
    pub(super) file: Arc<SpoolFile>,
    progress: watch::Receiver<Progress>,
    /// The shared identities the upstream served the blob to: the download's own, and
    /// those of readers it accepted since (recorded in the store on commit).
    pub(super) scopes: Mutex<Vec<Scope>>,
    /// Those of `scopes` recorded in the store.
    pub(super) recorded: tokio::sync::Mutex<Vec<Scope>>,
}

impl Fill {
    /// A download of `key` (`size` bytes of `media_type`) into `file` at `path`, reporting
    /// to `progress`'s sender.
    pub(super) fn new(
        key: ObjectKey,
        size: u64,
        media_type: HeaderValue,
        (path, file): (PathBuf, SpoolFile),
        progress: watch::Receiver<Progress>,
    ) -> Fill {
        Fill {
            key,
            size,
            media_type,
            path,
            file: Arc::new(file),
            progress,
            scopes: Mutex::default(),
            recorded: tokio::sync::Mutex::default(),
        }
    }

    /// A client's reader of `start..end` of the blob, as it arrives.
    pub fn reader(&self, start: u64, end: u64) -> SpoolCursor {
        SpoolCursor::filling(self.file.clone(), start, end, self.progress.clone(), true)
    }

    /// A reader of the whole blob for the store's upload.
    pub(super) fn upload_reader(&self) -> SpoolCursor {
        SpoolCursor::filling(
            self.file.clone(),
            0,
            self.size,
            self.progress.clone(),
            false,
        )
    }

    /// Where the download is.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Records that the upstream served the blob to the shared identity `scope` too.
    pub fn add_scope(&self, scope: &Scope) {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
}

/// Why a download was not stored.
#[derive(Debug)]
pub enum FillError {
    /// The upstream's body broke off, or stalled, and could not be resumed.
    Interrupted(String),
    /// The upstream sent more than its `Content-Length`.
    TooLong,
    /// What arrived is not what the digest says.
    DigestMismatch,
    /// The spool could not be written.
    Spool(std::io::Error),
}

impl std::fmt::Display for FillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FillError::Interrupted(e) => write!(f, "the download broke off: {e}"),
            FillError::TooLong => f.write_str("the upstream sent more than its Content-Length"),
            FillError::DigestMismatch => {
                f.write_str("the blob's content does not match its digest")
            }
            FillError::Spool(e) => write!(f, "the spool could not be written: {e}"),
        }
    }
}

/// Downloads `fill` from `body` into its spool, resuming with `resume`, and reports each
/// write and the end to `progress`. `Ok` when the whole blob arrived and matched its
/// digest: its readers may have it all then (the spool is synced to disk when it is
/// committed, not before they do).
///
/// The bytes are hashed and written by a thread of the blocking pool behind a bounded queue
/// ([`QUEUED`] chunks): the worker's thread goes on receiving while the last chunks are
/// hashed and written, so the two take a core each.
pub(super) async fn download(
    fill: &Fill,
    progress: Arc<watch::Sender<Progress>>,
    body: UpstreamBody,
    resume: Resume,
    idle: Duration,
) -> Result<(), FillError> {
    let expected = fill.key.digest.expected();
    let (queue, chunks) = tokio::sync::mpsc::channel::<Bytes>(QUEUED);
    let writer = {
        let (file, hasher) = (fill.file.clone(), DigestHasher::new(&expected));
        tokio::task::spawn_blocking(move || write_spool(&file, hasher, chunks, &progress))
    };
    let received = receive(fill, body, resume, idle, queue).await;
    // The queue is closed: the writer ends once it wrote what was queued.
    let hasher = writer
        .await
        .map_err(|e| FillError::Spool(std::io::Error::other(e.to_string())))?
        .map_err(FillError::Spool)?;
    received?;
    match hasher.matches(&expected) {
        true => Ok(()),
        false => Err(FillError::DigestMismatch),
    }
}

/// Receives the blob from `body` (and the bodies `resume` asks for where it broke off) into
/// `queue`, all of it and no more.
async fn receive(
    fill: &Fill,
    body: UpstreamBody,
    resume: Resume,
    idle: Duration,
    queue: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), FillError> {
    let mut body = IdleTimeout::new(body, idle);
    let (mut received, mut skip, mut resumes) = (0u64, 0u64, 0);
    loop {
        match next_data(&mut body).await {
            Ok(Some(mut chunk)) => {
                let dropped = skip.min(chunk.len() as u64);
                let _ = chunk.split_to(dropped as usize);
                skip -= dropped;
                if received + chunk.len() as u64 > fill.size {
                    return Err(FillError::TooLong);
                }
                received += chunk.len() as u64;
                if !chunk.is_empty() && queue.send(chunk).await.is_err() {
                    // The writer stopped: its error is the download's.
                    return Ok(());
                }
            }
            Ok(None) if received == fill.size => return Ok(()),
            outcome if resumes < MAX_RESUMES => {
                resumes += 1;
                let why = match outcome {
                    Err(e) => e.to_string(),
                    Ok(_) => format!("ended after {received} of {} bytes", fill.size),
                };
                tracing::warn!(digest = %fill.key.digest, received, error = %why, "blob download broke off: resuming");
                let (resumed, from) = resumed_body(&resume, received).await?;
                skip = received - from;
                body = IdleTimeout::new(resumed, idle);
            }
            Ok(_) => {
                return Err(FillError::Interrupted(format!(
                    "{received} of {} bytes",
                    fill.size
                )))
            }
            Err(e) => return Err(FillError::Interrupted(e.to_string())),
        }
    }
}

/// The writer: hashes each queued chunk and writes it to the spool after the last, telling
/// `progress` how much is written; returns the hash once the queue is closed and empty.
fn write_spool(
    file: &File,
    mut hasher: DigestHasher,
    mut chunks: tokio::sync::mpsc::Receiver<Bytes>,
    progress: &watch::Sender<Progress>,
) -> std::io::Result<DigestHasher> {
    let mut written = 0u64;
    while let Some(chunk) = chunks.blocking_recv() {
        hasher.update(&chunk);
        file.write_all_at(&chunk, written)?;
        written += chunk.len() as u64;
        progress.send_modify(|p| p.written = written);
    }
    Ok(hasher)
}

/// The upstream's body from `written` on, asked for with `Range`: a `206` from there, or a
/// whole `200` (whose first bytes are skipped). Returns the body and where it starts.
async fn resumed_body(resume: &Resume, written: u64) -> Result<(UpstreamBody, u64), FillError> {
    let res = resume(written)
        .await
        .map_err(|e| FillError::Interrupted(e.to_string()))?;
    let starts_at = |res: &Response<UpstreamBody>| {
        res.headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    match res.status() {
        StatusCode::PARTIAL_CONTENT if starts_at(&res) == Some(written) => {
            Ok((res.into_body(), written))
        }
        StatusCode::OK => Ok((res.into_body(), 0)),
        status => Err(FillError::Interrupted(format!(
            "resuming was answered {status}"
        ))),
    }
}

/// The next data frame of `body` (trailers are skipped).
async fn next_data<B>(body: &mut B) -> Result<Option<Bytes>, BoxError>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// The state a download's readers see once it ended.
pub(super) fn finished(outcome: &Result<(), FillError>) -> FillState {
    match outcome {
        Ok(()) => FillState::Verified,
        Err(_) => FillState::Failed,
    }
}
