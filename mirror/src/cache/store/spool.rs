//! Reading a blob from a file: a stored blob (whole and verified), or a download's spool
//! as it grows. A spool reader never sends the last byte of its answer before the download
//! was verified, so a client never sees a wrong or short blob end cleanly.

use super::keys::ObjectKey;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::sync::watch;
use tower_signed_redirect::BoxError;

/// How much one read takes from the file.
const READ_CHUNK: u64 = 256 * 1024;

/// How much one read takes from a stored blob: larger, as nothing waits on a writer.
const STORED_CHUNK: u64 = 1024 * 1024;

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

/// A reader of `offset..end` of a download's spool, following the download's progress.
pub struct SpoolCursor {
    file: Arc<File>,
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
        file: Arc<File>,
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

/// The next `len` bytes of a file this reader has alone, from its position, into memory
/// `read_to_end` fills without zeroing it first.
fn read_next(file: &File, len: u64) -> std::io::Result<Bytes> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}

/// A piece of a stored blob being read on the blocking pool.
type Reading = tokio::task::JoinHandle<std::io::Result<(File, Bytes)>>;

/// Starts reading the next `len` bytes of `file` (this reader's alone) on the blocking pool.
fn read_ahead(file: File, len: u64) -> Reading {
    tokio::task::spawn_blocking(move || read_next(&file, len).map(|piece| (file, piece)))
}

/// `offset..end` of a stored blob whose file is at `offset`, in [`STORED_CHUNK`] pieces,
/// each read while the one before is written to the client (the read on the blocking
/// pool, the write on the worker: two cores where there are two).
fn stored_body(file: File, offset: u64, end: u64) -> UnsyncBoxBody<Bytes, BoxError> {
    let first = read_ahead(file, (end - offset).min(STORED_CHUNK));
    let state = (Some(first), offset, end);
    let pieces = futures_util::stream::try_unfold(state, |(reading, offset, end)| async move {
        let Some(reading) = reading else {
            return Ok(None);
        };
        let (file, piece) = reading.await.map_err(|e| BoxError::from(e.to_string()))??;
        let next = offset + piece.len() as u64;
        let reading = (next < end).then(|| read_ahead(file, (end - next).min(STORED_CHUNK)));
        Ok::<_, BoxError>(Some((Frame::data(piece), (reading, next, end))))
    });
    StreamBody::new(pieces).boxed_unsync()
}

/// `start..end` of the stored blob at `path` (a local store's file): opened and its first
/// piece read in one trip to the blocking pool, and a blob of one piece (most layers'
/// configs, small layers) answered as one frame of known length. `Ok(None)`: no such file.
pub async fn read_stored(
    path: std::path::PathBuf,
    (start, end): (u64, u64),
) -> std::io::Result<Option<UnsyncBoxBody<Bytes, BoxError>>> {
    let first = (end - start).min(STORED_CHUNK);
    let opened = tokio::task::spawn_blocking(move || {
        use std::io::{Seek, SeekFrom};
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(start))?;
        let piece = read_next(&file, first)?;
        Ok(Some((file, piece)))
    })
    .await
    .map_err(std::io::Error::other)??;
    let Some((file, piece)) = opened else {
        return Ok(None);
    };
    if start + first == end {
        let whole = http_body_util::Full::new(piece).map_err(|never| match never {});
        return Ok(Some(whole.boxed_unsync()));
    }
    let rest = stored_body(file, start + first, end);
    let first = futures_util::stream::once(async move { Ok::<_, BoxError>(Frame::data(piece)) });
    let rest = http_body_util::BodyStream::new(rest);
    Ok(Some(StreamBody::new(first.chain(rest)).boxed_unsync()))
}

/// The whole stored blob at `path` (a local store's file) of `size` bytes, in one trip to
/// the blocking pool; `Ok(None)`: no such file. A file of another size is an error.
pub async fn read_whole(path: std::path::PathBuf, size: u64) -> std::io::Result<Option<Bytes>> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut blob = Vec::with_capacity(size as usize);
        (&file).take(size + 1).read_to_end(&mut blob)?;
        match blob.len() as u64 == size {
            true => Ok(Some(Bytes::from(blob))),
            false => Err(std::io::Error::other(
                "a stored blob is not the size it was stored with",
            )),
        }
    })
    .await
    .map_err(std::io::Error::other)?
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
        let file = Arc::new(File::options().read(true).write(true).open(&path).unwrap());
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
        let mut reader = SpoolCursor::filling(file, 0, 6, rx, true);
        assert_eq!(reader.next(100).await.unwrap().unwrap(), "abcde");
        tx.send_modify(|p| p.state = FillState::Failed);
        assert!(reader.next(100).await.unwrap_err().is::<FillFailed>());
        drop(tx);
    }

    #[tokio::test]
    async fn a_stored_blob_reads_back_whole_and_by_range_in_one_piece_or_many() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(2 * STORED_CHUNK + 5))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let read = |range: (u64, u64)| {
            let path = path.clone();
            async move {
                let body = read_stored(path, range).await.unwrap().unwrap();
                let exact = http_body::Body::size_hint(&body).exact();
                (body.collect().await.unwrap().to_bytes(), exact)
            }
        };
        let (whole, _) = read((0, data.len() as u64)).await;
        assert!(whole == data[..], "every piece, in order");
        let (middle, _) = read((STORED_CHUNK - 3, 2 * STORED_CHUNK + 2)).await;
        assert!(middle == data[STORED_CHUNK as usize - 3..2 * STORED_CHUNK as usize + 2]);
        // One piece: one frame, its length known (hyper sends it with the head).
        let (small, exact) = read((10, 20)).await;
        assert_eq!((&small[..], exact), (&data[10..20], Some(10)));
        let gone = read_stored(dir.path().join("gone"), (0, 1)).await.unwrap();
        assert!(gone.is_none());
    }
}
