//! What a tag named when it was last fetched with a shared identity, kept in the store so
//! that a restarted mirror (or another replica) serves it while the upstream fails
//! (`--serve-stale`).

use super::blobs::BlobStore;
use object_store::{ObjectStoreExt, PutPayload};
use std::time::{Duration, SystemTime};

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
            fetched: SystemTime::UNIX_EPOCH + Duration::from_secs(json.get("fetched")?.as_u64()?),
        })
    }
}

impl BlobStore {
    /// Keeps what the tag `name` named for the shared identity `scope`: in the shared state
    /// (for the other replicas) and in the store.
    pub async fn put_tag(&self, scope: &str, name: &str, record: &TagRecord) {
        if let Some(shared) = &self.shared {
            shared.put_tag(scope, name, record, self.serve_stale).await;
        }
        let path = self.backend.tag_path(scope, name);
        let json = PutPayload::from(record.to_json());
        if let Err(e) = self.backend.objects.put(&path, json).await {
            self.unavailable("record a tag", &e);
        }
    }

    /// What the tag `name` named for the shared identity `scope`, if a replica recorded it
    /// in the shared state, or the store kept it.
    pub async fn tag(&self, scope: &str, name: &str) -> Option<TagRecord> {
        if let Some(shared) = &self.shared {
            if let Some(record) = shared.tag(scope, name).await {
                return Some(record);
            }
        }
        let path = self.backend.tag_path(scope, name);
        TagRecord::parse(&self.get_bytes(&path, "read a tag").await.ok()??)
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
    }
}
