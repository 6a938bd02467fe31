//! Reading a download's spool as it grows, and making one. A spool reader never sends the
//! last byte of its answer before the download was verified, so a client never sees a
//! wrong or short blob end cleanly. (A stored blob's file is read by `pieces.rs`.)

use super::keys::ObjectKey;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tower_signed_redirect::BoxError;

/// How much one read takes from the file.
const READ_CHUNK: u64 = 256 * 1024;

/// Where a download stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillState {
    /// Bytes are still coming.
    Writing,
    /// Every byte arrived and matched the digest.
    Verified,
    /// The download ended short, broke, or did not match its digest.
    Failed,
}

/// How far a download is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes written to the spool so far.
    pub written: u64,
    /// Where it stands.
    pub state: FillState,
}

/// The error a reader of a failed download ends with.
#[derive(Debug)]
pub struct FillFailed;

impl std::fmt::Display for FillFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the blob's download failed before it was whole and verified")
    }
}

impl std::error::Error for FillFailed {}

/// A download's spool file, counted in the downloads' spool budget until the last of its
/// readers lets go of it: a reader that stalls keeps the disk it holds counted, even after
/// the download ended and the spool's name was removed.
pub struct SpoolFile {
    file: File,
    size: u64,
    spooled: Arc<AtomicU64>,
}

impl SpoolFile {
    /// `file`, `size` bytes of the budget `spooled` counts.
    pub fn counted(file: File, size: u64, spooled: Arc<AtomicU64>) -> SpoolFile {
        spooled.fetch_add(size, Ordering::Relaxed);
        SpoolFile {
            file,
            size,
            spooled,
        }
    }
}

impl std::ops::Deref for SpoolFile {
    type Target = File;

    fn deref(&self) -> &File {
        &self.file
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        self.spooled.fetch_sub(self.size, Ordering::Relaxed);
    }
}

/// A reader of `offset..end` of a download's spool, following the download's progress.
pub struct SpoolCursor {
    file: Arc<SpoolFile>,
    offset: u64,
    end: u64,
    progress: watch::Receiver<Progress>,
    /// Whether the last byte waits for the download to be verified (a client's reader;
    /// not the store's upload, which completes only on a verified download anyway).
    hold_last: bool,
}

impl SpoolCursor {
    /// `offset..end` of a download's spool, as far as `progress` says it is written.
    pub fn filling(
        file: Arc<SpoolFile>,
        offset: u64,
        end: u64,
        progress: watch::Receiver<Progress>,
        hold_last: bool,
    ) -> SpoolCursor {
        SpoolCursor {
            file,
            offset,
            end,
            progress,
            hold_last,
        }
    }

    /// The next bytes, at most `max`, once they are there; `None` at the end.
    pub async fn next(&mut self, max: u64) -> Result<Option<Bytes>, BoxError> {
        loop {
            if self.offset >= self.end {
                // The end of a body whose last byte was held (none, for an empty one) only
                // once the download was verified.
                if self.hold_last && !self.finished().await {
                    return Err(FillFailed.into());
                }
                return Ok(None);
            }
            let readable = self.readable()?;
            if self.offset < readable {
                let len = (readable - self.offset).min(max);
                let (file, offset) = (self.file.clone(), self.offset);
                let bytes = tokio::task::spawn_blocking(move || read_at(&file, offset, len))
                    .await
                    .map_err(|e| BoxError::from(e.to_string()))??;
                self.offset += len;
                return Ok(Some(bytes));
            }
            self.changed().await?;
        }
    }

    /// Waits until the download is no longer being written; whether it was verified.
    pub async fn finished(&mut self) -> bool {
        loop {
            match self.state() {
                FillState::Writing => {
                    if self.changed().await.is_err() {
                        return false;
                    }
                }
                state => return state == FillState::Verified,
            }
        }
    }

    fn state(&mut self) -> FillState {
        self.progress.borrow_and_update().state
    }

    /// How far the file may be read now.
    fn readable(&mut self) -> Result<u64, FillFailed> {
        let (end, hold_last) = (self.end, self.hold_last);
        let now = *self.progress.borrow_and_update();
        match now.state {
            FillState::Verified => Ok(end),
            FillState::Failed => Err(FillFailed),
            FillState::Writing if hold_last => Ok(now.written.min(end.saturating_sub(1))),
            FillState::Writing => Ok(now.written.min(end)),
        }
    }

    /// Waits for the download to move on.
    async fn changed(&mut self) -> Result<(), FillFailed> {
        let progress = &mut self.progress;
        if progress.changed().await.is_err() && progress.borrow().state == FillState::Writing {
            // The download went away without an end: it failed.
            return Err(FillFailed);
        }
        Ok(())
    }

    /// The cursor as a response body.
    pub fn into_body(self) -> UnsyncBoxBody<Bytes, BoxError> {
        let chunks = futures_util::stream::try_unfold(self, move |mut cursor| async move {
            Ok::<_, BoxError>(
                cursor
                    .next(READ_CHUNK)
                    .await?
                    .map(|bytes| (Frame::data(bytes), cursor)),
            )
        });
        StreamBody::new(chunks).boxed_unsync()
    }
}

/// `len` bytes of a spool others read too, from `offset`: positioned (`pread`), into zeroed
/// memory.
fn read_at(file: &File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

/// A body of an S3 object's stream (already the range asked for), failed after `idle`
/// without a chunk.
pub fn body_of(
    stream: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
    idle: std::time::Duration,
) -> UnsyncBoxBody<Bytes, BoxError> {
    use futures_util::TryStreamExt;
    let frames = stream.map_ok(Frame::data).map_err(BoxError::from);
    crate::serve::body::IdleTimeout::new(StreamBody::new(frames), idle).boxed_unsync()
}

/// Room a download leaves on the spool's disk, besides the blob.
const SPOOL_MARGIN: u64 = 64 * 1024 * 1024;

/// A new spool file in `dir` for a download of `key`.
pub fn create(
    dir: &std::path::Path,
    key: &ObjectKey,
) -> std::io::Result<(std::path::PathBuf, File)> {
    use std::hash::{BuildHasher, RandomState};
    let unique = RandomState::new().hash_one(std::time::Instant::now());
    let path = dir.join(format!("{}-{unique:016x}", key.digest.hex()));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

/// Reserves `size` bytes of disk for the spool `file` before a byte of it is served, so
/// that a disk that fills up meanwhile fails no download half way (a download that cannot
/// reserve its room is served as without a store). A file system that cannot reserve
/// (`EOPNOTSUPP`) is written as it comes.
pub fn reserve(file: &File, size: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{fallocate, FallocateFlags};
        let len = i64::try_from(size).map_err(std::io::Error::other)?;
        if len == 0 {
            return Ok(());
        }
        match fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, len) {
            Ok(()) | Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, size);
        Ok(())
    }
}

/// Whether the disk of `dir` has room for `size` more bytes, and a margin; why not if not.
pub fn has_room(dir: &std::path::Path, size: u64) -> Result<(), String> {
    let fs = nix::sys::statvfs::statvfs(dir).map_err(|e| e.to_string())?;
    let free = fs.blocks_available() as u64 * fs.fragment_size() as u64;
    match free >= size.saturating_add(SPOOL_MARGIN) {
        true => Ok(()),
        false => Err(format!("{free} bytes free on the spool's disk, for {size}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_reader_follows_the_download_and_holds_its_last_byte_until_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        std::fs::write(&path, b"").unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        let spooled = Arc::new(AtomicU64::new(0));
        let file = Arc::new(SpoolFile::counted(file, 6, spooled.clone()));
        assert_eq!(spooled.load(Ordering::Relaxed), 6, "counted while it lives");
        let (tx, rx) = watch::channel(Progress {
            written: 0,
            state: FillState::Writing,
        });
        let mut reader = SpoolCursor::filling(file.clone(), 0, 6, rx, true);
        file.write_all_at(b"abc", 0).unwrap();
        tx.send_modify(|p| p.written = 3);
        assert_eq!(reader.next(100).await.unwrap().unwrap(), "abc");
        file.write_all_at(b"def", 3).unwrap();
        tx.send_modify(|p| p.written = 6);
        assert_eq!(reader.next(100).await.unwrap().unwrap(), "de");
        let last = tokio::time::timeout(Duration::from_millis(50), reader.next(100)).await;
        assert!(last.is_err(), "the last byte waits");
        tx.send_modify(|p| p.state = FillState::Verified);
        assert_eq!(reader.next(100).await.unwrap().unwrap(), "f");
        assert!(reader.next(100).await.unwrap().is_none());

        let (tx, rx) = watch::channel(Progress {
            written: 6,
            state: FillState::Writing,
        });
        let mut failing = SpoolCursor::filling(file, 0, 6, rx, true);
        assert_eq!(failing.next(100).await.unwrap().unwrap(), "abcde");
        tx.send_modify(|p| p.state = FillState::Failed);
        assert!(failing.next(100).await.unwrap_err().is::<FillFailed>());
        drop((tx, reader, failing));
        assert_eq!(
            spooled.load(Ordering::Relaxed),
            0,
            "and no longer once its last reader let go"
        );
    }
}
