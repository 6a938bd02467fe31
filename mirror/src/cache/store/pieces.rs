//! A stored blob read back from a local store's file, within a bound on memory: a piece is
//! read only when the client's connection asks for one (a stream its client does not read
//! costs no read), the first small and each next twice the last, up to 1 MiB; the next is
//! read ahead (on the blocking pool, while the last is written to the client) only while
//! all the store's reads together hold less than their budget, and past it pieces stay
//! small. Small blobs read whole for the memory tier (`hot.rs`) count against it too.

use bytes::Bytes;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tower_signed_redirect::BoxError;

/// The first piece of a stored blob read for a client.
const FIRST_PIECE: u64 = 64 * 1024;

/// The largest piece.
const LARGEST_PIECE: u64 = 1024 * 1024;

/// A piece once the reads hold their whole budget.
const TIGHT_PIECE: u64 = 16 * 1024;

/// What the store's reads hold in memory at once, and the most they may.
pub struct ReadBudget {
    held: AtomicU64,
    cap: u64,
}

impl ReadBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: u64) -> Arc<ReadBudget> {
        Arc::new(ReadBudget {
            held: AtomicU64::new(0),
            cap,
        })
    }

    /// Whether `len` more bytes fit.
    pub fn has_room(&self, len: u64) -> bool {
        self.held.load(Ordering::Relaxed).saturating_add(len) <= self.cap
    }

    /// The bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// `buf` as bytes that count against the budget until their last clone is dropped.
    fn counted(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        self.held.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Bytes::from_owner(Held {
            buf,
            budget: self.clone(),
        })
    }
}

/// Bytes a store read holds, counted in its budget while they live.
struct Held {
    buf: Vec<u8>,
    budget: Arc<ReadBudget>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let len = self.buf.len() as u64;
        self.budget.held.fetch_sub(len, Ordering::Relaxed);
    }
}

/// The next `len` bytes of `file` (this reader's alone), from its position, into memory
/// `read_to_end` fills without zeroing it first; short is an error.
fn read_next(file: &File, len: u64, budget: &Arc<ReadBudget>) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(budget.counted(buf))
}

/// The stored blob at `path` (a local store's file), positioned at `start`; `Ok(None)`:
/// no such file.
pub async fn open(path: PathBuf, start: u64) -> std::io::Result<Option<File>> {
    tokio::task::spawn_blocking(move || {
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(start))?;
        Ok(Some(file))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The whole stored blob at `path` of `size` bytes, counted in `budget`; `Ok(None)`: no
/// such file. A file of another size is an error.
pub async fn read_whole(
    path: PathBuf,
    size: u64,
    budget: Arc<ReadBudget>,
) -> std::io::Result<Option<Bytes>> {
    tokio::task::spawn_blocking(move || {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let blob = read_next(&file, size, &budget)?;
        let mut more = [0u8; 1];
        match (&file).read(&mut more)? {
            0 => Ok(Some(blob)),
            _ => Err(std::io::Error::other(
                "a stored blob is not the size it was stored with",
            )),
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A piece being read on the blocking pool: the file back, and the piece.
type Reading = tokio::task::JoinHandle<std::io::Result<(File, Bytes)>>;

fn read_piece(file: File, len: u64, budget: &Arc<ReadBudget>) -> Reading {
    let budget = budget.clone();
    tokio::task::spawn_blocking(move || read_next(&file, len, &budget).map(|piece| (file, piece)))
}

/// Where a stored blob's body stands: its file (or the read of its next piece, which has
/// it), how far it is, and how large its next piece is.
struct Pieces {
    file: Option<File>,
    reading: Option<Reading>,
    offset: u64,
    end: u64,
    piece: u64,
    budget: Arc<ReadBudget>,
}

impl Pieces {
    /// The next piece, read now or ahead; then the one after is read ahead if the budget
    /// has room for it.
    async fn next(&mut self) -> Result<Option<Bytes>, BoxError> {
        if self.offset >= self.end {
            return Ok(None);
        }
        let reading = match self.reading.take() {
            Some(reading) => reading,
            None => {
                let file = self
                    .file
                    .take()
                    .ok_or("a stored blob's read failed before")?;
                let len = self.piece_len();
                read_piece(file, len, &self.budget)
            }
        };
        let (file, piece) = reading.await.map_err(|e| BoxError::from(e.to_string()))??;
        self.offset += piece.len() as u64;
        self.piece = (self.piece * 2).min(LARGEST_PIECE);
        let next = self.piece_len();
        match self.offset < self.end && self.budget.has_room(next) {
            true => self.reading = Some(read_piece(file, next, &self.budget)),
            false => self.file = Some(file),
        }
        Ok(Some(piece))
    }

    /// How much the next read takes: the next piece, or a small one past the budget.
    fn piece_len(&self) -> u64 {
        let piece = match self.budget.has_room(self.piece) {
            true => self.piece,
            false => TIGHT_PIECE,
        };
        piece.min(self.end - self.offset)
    }
}

/// `offset..end` of a stored blob whose `file` is at `offset`, as a body.
pub fn stored_body(
    file: File,
    (offset, end): (u64, u64),
    budget: Arc<ReadBudget>,
) -> UnsyncBoxBody<Bytes, BoxError> {
    let pieces = Pieces {
        file: Some(file),
        reading: None,
        offset,
        end,
        piece: FIRST_PIECE,
        budget,
    };
    let frames = futures_util::stream::try_unfold(pieces, |mut pieces| async move {
        Ok::<_, BoxError>(
            pieces
                .next()
                .await?
                .map(|piece| (Frame::data(piece), pieces)),
        )
    });
    StreamBody::new(frames).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stored_blob_reads_back_whole_and_by_range_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(3 * LARGEST_PIECE + 5))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let budget = ReadBudget::new(8 * LARGEST_PIECE);
        let read = |(start, end): (u64, u64), budget: Arc<ReadBudget>| {
            let path = path.clone();
            async move {
                let file = open(path, start).await.unwrap().unwrap();
                stored_body(file, (start, end), budget)
            }
        };
        let body = read((0, data.len() as u64), budget.clone()).await;
        assert_eq!(budget.held(), 0, "nothing read before the body is polled");
        let whole = body.collect().await.unwrap().to_bytes();
        assert!(whole == data[..], "every piece, in order");
        let (start, end) = (LARGEST_PIECE - 3, 2 * LARGEST_PIECE + 2);
        let middle = read((start, end), budget.clone()).await;
        let middle = middle.collect().await.unwrap().to_bytes();
        assert!(middle == data[start as usize..end as usize]);
        assert_eq!(budget.held(), 0, "released with the pieces");

        // A client that reads one frame and stops holds that piece and the one read
        // ahead: a small one, then, once the budget is held, tight ones and none ahead.
        let mut stalled = read((0, data.len() as u64), budget.clone()).await;
        let first = stalled.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len() as u64, FIRST_PIECE);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            budget.held(),
            FIRST_PIECE + 2 * FIRST_PIECE,
            "one piece and one ahead"
        );
        let tight = ReadBudget::new(0);
        let mut starved = read((0, data.len() as u64), tight.clone()).await;
        let piece = starved.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(piece.len() as u64, TIGHT_PIECE);
        drop((first, stalled, piece, starved));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!((budget.held(), tight.held()), (0, 0));

        let small = read_whole(path.clone(), data.len() as u64, budget.clone()).await;
        assert!(small.unwrap().unwrap() == data[..]);
        let short = read_whole(path.clone(), data.len() as u64 - 1, budget.clone()).await;
        assert!(short.is_err(), "not the size it was stored with");
        assert!(open(dir.path().join("gone"), 0).await.unwrap().is_none());
    }
}
