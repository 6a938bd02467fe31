//! What a tag named, kept (`tags.rs`): in the shared state, for the other replicas, and in
//! the store; with replicas both copies are sealed with their key, so that whoever can write
//! to Redis or the bucket does not name tags.

use super::blobs::BlobStore;
use super::tags::TagRecord;
use object_store::{ObjectStoreExt, PutPayload};

impl BlobStore {
    /// Keeps what the tag `name` named for the shared identity `scope`: in the shared state
    /// (for the other replicas) and in the store.
    pub async fn put_tag(&self, scope: &str, name: &str, record: &TagRecord) {
        if let Some(shared) = &self.shared {
            shared.put_tag(scope, name, record, self.serve_stale).await;
        }
        if self.backend.down() {
            return;
        }
        let path = self.backend.tag_path(scope, name);
        let json = match &self.shared {
            Some(shared) => shared.key().seal(path.as_ref(), &record.to_json()),
            None => record.to_json(),
        };
        let json = PutPayload::from(json);
        if let Err(e) = self.backend.objects.put(&path, json).await {
            return self.unavailable("record a tag", &e);
        }
        for gone in self.tag_records.written(path) {
            if let Err(e) = self.backend.objects.delete(&gone).await {
                tracing::warn!(error = %e, "an old tag record could not be deleted");
            }
        }
    }

    /// What the tag `name` named for the shared identity `scope`, if a replica recorded it
    /// in the shared state, or the store kept it (sealed as in the shared state when the
    /// replicas have one: whoever can write the bucket does not name tags then).
    pub async fn tag(&self, scope: &str, name: &str) -> Option<TagRecord> {
        if let Some(shared) = &self.shared {
            if let Some(record) = shared.tag(scope, name).await {
                return Some(record);
            }
        }
        let path = self.backend.tag_path(scope, name);
        let bytes = self.get_bytes(&path, "read a tag").await.ok()??;
        match &self.shared {
            Some(shared) => {
                let sealed = std::str::from_utf8(&bytes).ok()?;
                TagRecord::parse(shared.key().unseal(path.as_ref(), sealed)?.as_bytes())
            }
            None => TagRecord::parse(&bytes),
        }
    }
}
