//! A stored blob read back: from memory (`hot.rs`), a local store's file (`pieces.rs`), or
//! an S3 store's object, which others can write too, checked against its digest as it
//! streams.

use super::blobs::BlobStore;
use super::keys::ObjectKey;
use super::pieces;
use super::spool;
use crate::serve::verify::{DigestMismatch, Verified};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use object_store::{GetOptions, ObjectStoreExt};
use std::sync::Arc;
use tower_signed_redirect::BoxError;

impl BlobStore {
    /// A body of `start..end` of the stored blob `key` of `size` bytes, or `None` when the
    /// store cannot read it now (the pull then goes upstream; a blob gone from the store is
    /// forgotten).
    pub async fn read(
        self: &Arc<Self>,
        key: &ObjectKey,
        (start, end, size): (u64, u64, u64),
    ) -> Option<UnsyncBoxBody<Bytes, BoxError>> {
        // Nothing to read (the empty blob): nothing asked of the store.
        if start >= end || end > size {
            return (start == end).then(|| whole(Bytes::new()));
        }
        let part = |blob: Bytes| Some(whole(blob.slice(start as usize..end as usize)));
        if let Some(blob) = self.hot.get(key) {
            return part(blob);
        }
        let reads = self.reads.clone();
        let read = match self.backend.local_blob(key) {
            // A small blob is read whole, once, and kept in memory, while reads have room.
            Some(file) if self.hot.keeps(size) && reads.has_room(size) => {
                match pieces::read_whole(file, size, reads).await {
                    Ok(Some(blob)) => {
                        self.hot.put(key.clone(), blob.clone());
                        return part(blob);
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
            Some(file) => match pieces::open(file, start).await {
                Ok(file) => Ok(file.map(|file| pieces::stored_body(file, (start, end), reads))),
                Err(e) => Err(e.to_string()),
            },
            None => self.read_shared(key, (start, end, size)).await,
        };
        let read = read.map_err(|e| self.unavailable("read", &e));
        if let Ok(None) = read {
            self.forget(key);
        }
        read.ok().flatten()
    }

    /// With `--blob-store-redirect`, a URL of the stored blob `key` of `size` bytes,
    /// pre-signed for a `GET` (a bearer credential for that one object, handed only to a
    /// reader the store serves `key` to) for the configured lifetime, and no longer than
    /// `until` (a login's token); `None` without it, when it cannot be signed now, or when
    /// the store no longer holds the blob at that size (another replica evicted it, or it
    /// was changed: forgotten then, and read or fetched as without the flag).
    pub async fn signed_url(
        self: &Arc<Self>,
        key: &ObjectKey,
        size: u64,
        until: Option<std::time::SystemTime>,
    ) -> Option<String> {
        let (signer, lifetime) = self.backend.signer.as_ref()?;
        let left = until.map(|until| until.duration_since(std::time::SystemTime::now()));
        let lifetime = match left {
            Some(Ok(left)) => left.min(*lifetime),
            Some(Err(_)) => return None,
            None => *lifetime,
        };
        let path = self.backend.object_path(key, None);
        match self.backend.objects.head(&path).await {
            Ok(meta) if meta.size == size => {}
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                self.forget(key);
                return None;
            }
            Err(e) => {
                self.unavailable("look for a blob", &e);
                return None;
            }
        }
        match signer.signed_url(http::Method::GET, &path, lifetime).await {
            Ok(url) => Some(url.to_string()),
            Err(e) => {
                self.unavailable("sign a URL", &e);
                None
            }
        }
    }

    /// `start..end` of an S3 store's object. Whoever can write the bucket could have put
    /// anything under a digest's name (the replicas verified what they wrote, not what is
    /// there now): a whole blob is hashed as it streams and its last piece held back until
    /// it matched, so a planted blob ends the client's download with an error, never as
    /// complete; then it is forgotten and deleted, and the next pull fetches it afresh.
    /// A range cannot be checked without the rest, and is served as stored.
    async fn read_shared(
        self: &Arc<Self>,
        key: &ObjectKey,
        (start, end, size): (u64, u64, u64),
    ) -> Result<Option<UnsyncBoxBody<Bytes, BoxError>>, String> {
        let path = self.backend.object_path(key, None);
        let options = GetOptions::default().with_range(Some(start..end));
        let got = match self.backend.objects.get_opts(&path, options).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let body = spool::body_of(got.into_stream(), self.idle_timeout);
        if (start, end) != (0, size) {
            return Ok(Some(body));
        }
        let (store, key) = (self.clone(), key.clone());
        let checked = Verified::new(body, Some(key.digest.expected())).map_err(move |e| {
            if e.is::<DigestMismatch>() {
                store.planted(&key);
            }
            e
        });
        Ok(Some(checked.boxed_unsync()))
    }

    /// An S3 object that did not match its digest: forgotten, and deleted in the
    /// background (its digest names what it should have held; the bucket holds no other).
    fn planted(&self, key: &ObjectKey) {
        tracing::warn!(digest = %key.digest, "a stored blob does not match its digest: deleted");
        self.forget(key);
        let (objects, path) = (
            self.backend.objects.clone(),
            self.backend.object_path(key, None),
        );
        tokio::spawn(async move {
            if let Err(e) = objects.delete(&path).await {
                tracing::warn!(error = %e, "a blob that did not match its digest could not be deleted");
            }
        });
    }
}

/// A body of `blob`, one frame of known length.
fn whole(blob: Bytes) -> UnsyncBoxBody<Bytes, BoxError> {
    http_body_util::Full::new(blob)
        .map_err(|never| match never {})
        .boxed_unsync()
}
