//! What a tag named when it was last fetched with a shared identity, kept in the store so
//! that a restarted mirror (or another replica) serves it while the upstream fails
//! (`--serve-stale`). A tag's record is named by its path and the manifest media types its
//! client accepts (only those a registry serves: an invented `Accept` names no record of
//! its own), and the store keeps [`MAX_TAG_RECORDS`] at most, the least recently written
//! going first. (Written and read by `tag_store.rs`.)

use super::backend::Backend;
use lru::LruCache;
use object_store::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The most tag records the store keeps.
pub const MAX_TAG_RECORDS: usize = 65_536;

/// The media types a tag's record is named by: the manifests and indexes registries serve
/// (and `*/*`). Others in a client's `Accept` are left out of its name.
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
    "*/*",
];

/// The store's name for a tag's record: a hash of the tag's `path` and the manifest media
/// types among `accept` (one per line, as the manifest cache keys them).
pub fn record_name(path: &str, accept: &[u8]) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(path.as_bytes());
    for known in MANIFEST_TYPES {
        if accept
            .split(|&b| b == b'\n')
            .any(|t| t.trim_ascii() == known.as_bytes())
        {
            hash.update(b"\n");
            hash.update(known.as_bytes());
        }
    }
    hex::encode(hash.finalize())
}

/// The tag records the store holds, by path, the least recently written first out.
pub struct TagRecords(Mutex<LruCache<Path, ()>>);

impl TagRecords {
    /// The records `backend` holds, from its listing (none, if it cannot be listed: those
    /// are then not counted until the next start).
    pub async fn read(backend: &Backend) -> TagRecords {
        let mut records = match backend.down() {
            true => Vec::new(),
            false => backend.list("tags").await.unwrap_or_default(),
        };
        records.sort_by_key(|meta| meta.last_modified);
        let mut lru = LruCache::unbounded();
        for meta in records {
            lru.put(meta.location, ());
        }
        TagRecords(Mutex::new(lru))
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Notes the record written at `path`; the records that go to keep [`MAX_TAG_RECORDS`].
    pub fn written(&self, path: Path) -> Vec<Path> {
        let mut lru = self.lock();
        lru.put(path, ());
        let mut gone = Vec::new();
        while lru.len() > MAX_TAG_RECORDS {
            gone.extend(lru.pop_lru().map(|(path, ())| path));
        }
        gone
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Path, ()>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a tag named, and when.
#[derive(Debug, PartialEq, Eq)]
pub struct TagRecord {
    /// The manifest's digest.
    pub digest: String,
    /// When it was fetched.
    pub fetched: SystemTime,
}

impl TagRecord {
    /// The record as the store keeps it: `{"digest":..,"fetched":<unix seconds>}`.
    pub fn to_json(&self) -> String {
        let fetched = self
            .fetched
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        serde_json::json!({ "digest": self.digest, "fetched": fetched }).to_string()
    }

    /// A record the store kept; `None` if it is not one.
    pub fn parse(json: &[u8]) -> Option<TagRecord> {
        let json: serde_json::Value = serde_json::from_slice(json).ok()?;
        Some(TagRecord {
            digest: json.get("digest")?.as_str()?.to_owned(),
            fetched: SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(json.get("fetched")?.as_u64()?))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_it_was_kept() {
        let record = TagRecord {
            digest: format!("sha256:{}", "ab".repeat(32)),
            fetched: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        assert_eq!(TagRecord::parse(record.to_json().as_bytes()), Some(record));
        assert_eq!(TagRecord::parse(b"{}"), None);
        // A time past what the clock holds is no record (not a panic).
        let absurd = br#"{"digest":"sha256:00","fetched":18446744073709551615}"#;
        assert_eq!(TagRecord::parse(absurd), None);
    }

    #[test]
    fn a_records_name_holds_only_the_manifest_types_a_client_accepts() {
        let path = "/v2/library/alpine/manifests/latest";
        let oci = b"application/vnd.oci.image.index.v1+json".as_slice();
        let invented = b"application/vnd.oci.image.index.v1+json\napplication/x-attacker-1";
        assert_eq!(record_name(path, oci), record_name(path, invented));
        assert_eq!(
            record_name(path, b""),
            record_name(path, b"application/x-attacker-2")
        );
        assert_ne!(record_name(path, oci), record_name(path, b""));
        assert_ne!(
            record_name(path, oci),
            record_name("/v2/library/alpine/manifests/3", oci)
        );
    }

    #[test]
    fn past_its_maximum_the_least_recently_written_record_goes() {
        let records = TagRecords(Mutex::new(LruCache::unbounded()));
        let path = |n: usize| Path::from(format!("tags/anonymous@docker.io/{n}"));
        for n in 0..MAX_TAG_RECORDS {
            assert!(records.written(path(n)).is_empty());
        }
        // Written again, the first is the most recent: the second goes.
        assert!(records.written(path(0)).is_empty());
        assert_eq!(records.written(path(MAX_TAG_RECORDS)), [path(1)]);
        assert_eq!(records.len(), MAX_TAG_RECORDS);
    }
}
