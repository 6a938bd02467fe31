//! The blob store's hottest small blobs, in memory (`--blob-store-memory`): a hit on one is
//! answered from a shared buffer, without a trip to the blocking pool, a read of its file or
//! a copy. Filled from the store's own (verified) files as they are read; bounded by bytes,
//! the least recently used out; emptied of whatever the store forgets or evicts. Who may
//! read a blob is decided before, as for any stored blob: this only answers faster.

use super::keys::ObjectKey;
use bytes::Bytes;
use lru::LruCache;
use std::sync::Mutex;

/// The largest blob kept in memory: configs and small layers, the blobs whose requests
/// cost most per byte.
pub const HOT_MAX: u64 = 1024 * 1024;

/// Small blobs in memory, at most `capacity` bytes of them.
pub struct HotBlobs {
    blobs: Mutex<(LruCache<ObjectKey, Bytes>, u64)>,
    capacity: u64,
}

impl HotBlobs {
    /// At most `capacity` bytes (`0`: none).
    pub fn new(capacity: u64) -> HotBlobs {
        HotBlobs {
            blobs: Mutex::new((LruCache::unbounded(), 0)),
            capacity,
        }
    }

    /// Whether a blob of `size` bytes is kept here once read.
    pub fn keeps(&self, size: u64) -> bool {
        size <= HOT_MAX.min(self.capacity)
    }

    /// The blob `key`, if it is here (now the most recently used).
    pub fn get(&self, key: &ObjectKey) -> Option<Bytes> {
        if self.capacity == 0 {
            return None;
        }
        self.lock().0.get(key).cloned()
    }

    /// Keeps `blob` as `key`'s, the least recently used going while it is over capacity.
    pub fn put(&self, key: ObjectKey, blob: Bytes) {
        if !self.keeps(blob.len() as u64) {
            return;
        }
        let mut guard = self.lock();
        let (blobs, bytes) = &mut *guard;
        *bytes += blob.len() as u64;
        if let Some(old) = blobs.put(key, blob) {
            *bytes -= old.len() as u64;
        }
        while *bytes > self.capacity {
            match blobs.pop_lru() {
                Some((_, gone)) => *bytes -= gone.len() as u64,
                None => break,
            }
        }
    }

    /// Forgets `key`'s blob (the store no longer has it).
    pub fn remove(&self, key: &ObjectKey) {
        if self.capacity == 0 {
            return;
        }
        let mut guard = self.lock();
        let (blobs, bytes) = &mut *guard;
        if let Some(gone) = blobs.pop(key) {
            *bytes -= gone.len() as u64;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (LruCache<ObjectKey, Bytes>, u64)> {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::keys::ContentDigest;

    fn key(n: u8) -> ObjectKey {
        ObjectKey::blob(ContentDigest::sha256_of(&[n]))
    }

    #[test]
    fn small_blobs_within_capacity_least_recently_used_out() {
        let hot = HotBlobs::new(300);
        for n in 0..3 {
            hot.put(key(n), Bytes::from(vec![n; 100]));
        }
        assert!(hot.get(&key(0)).is_some());
        hot.put(key(3), Bytes::from(vec![3; 100]));
        assert!(hot.get(&key(1)).is_none(), "the least recently used went");
        assert_eq!(hot.get(&key(0)).unwrap(), Bytes::from(vec![0; 100]));
        hot.put(key(4), Bytes::from(vec![4; 301]));
        assert!(hot.get(&key(4)).is_none(), "larger than the whole");
        hot.remove(&key(0));
        assert!(hot.get(&key(0)).is_none());
        let off = HotBlobs::new(0);
        off.put(key(5), Bytes::from_static(b"x"));
        assert!(off.get(&key(5)).is_none() && !off.keeps(1));
        assert!(!HotBlobs::new(u64::MAX).keeps(HOT_MAX + 1));
    }
}
