//! Where the store's objects live: a local directory or an S3-compatible bucket, both
//! through `object_store`, and the names objects have there. Downloads in flight are
//! written to a spool directory first (`fill.rs`); what is in the store is whole and
//! verified.
//!
//! ```text
//! blobs/sha256/ab/<hex>                     a blob
//! manifests/sha256/ab/<hex>/<media type>    a manifest (its media type base64url-encoded)
//! access/<scope>/<kind>/sha256/<hex>       what a shared identity fetched there (empty)
//! tags/<scope>/<hash>                       what a tag named when it was last fetched
//!
//! (a scope is 32 hex digits naming an identity in a repository of a registry; with
//! replicas, an access record's name ends with `.<MAC>` of the replicas' key)
//! ```

use super::keys::{ContentDigest, Kind, ObjectKey};
use super::seal::ReplicasKey;
use crate::options::Options;
use base64::Engine;
use futures_util::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the store is left alone after it failed (refused, or did not answer): its
/// pulls go upstream without it meanwhile, so a store that hangs costs one pull its
/// timeout, not every pull.
pub const DOWN_FOR: Duration = Duration::from_secs(15);

/// The store's place, and the object store that reaches it.
pub struct Backend {
    /// The objects.
    pub objects: Arc<dyn ObjectStore>,
    /// What signs URLs of them for clients, and for how long (`--blob-store-redirect`, an
    /// S3 store only).
    pub signer: Option<super::s3::UrlSigner>,
    /// The local directory, for a local store (its spool is `<dir>/spool`, so that a
    /// verified download is committed by a rename).
    pub local: Option<PathBuf>,
    /// Where downloads in flight are written.
    pub spool: PathBuf,
    /// Where the store's objects start (an `s3://bucket/prefix`'s prefix).
    prefix: Path,
    /// How the place is named in logs (`s3://bucket/prefix` or the directory).
    pub name: String,
    /// Until when the store is left alone, after it failed.
    down_until: Mutex<Option<Instant>>,
    /// With replicas (`--shared-state`), their key: the names of access records carry a
    /// MAC of it, so that whoever can write the bucket cannot record an access.
    access_key: Option<ReplicasKey>,
}

impl Backend {
    /// The store `--blob-store` names, created if it is a directory; `None` for `none`.
    pub fn open(options: &Options) -> Result<Option<Backend>, String> {
        let data_dir = options.data_dir();
        let place = match options.blob_store.as_deref() {
            Some("none") if options.blob_store_redirect.is_some() => {
                return Err("--blob-store-redirect needs an s3:// blob store".into())
            }
            Some("none") => return Ok(None),
            Some(place) if place.starts_with("s3://") => place.to_owned(),
            Some(dir) => dir.strip_prefix("file://").unwrap_or(dir).to_owned(),
            None => data_dir.join("blobs").to_string_lossy().into_owned(),
        };
        if let Some(bucket_and_prefix) = place.strip_prefix("s3://") {
            let super::s3::S3Store {
                objects,
                signer,
                prefix,
            } = super::s3::open(options, bucket_and_prefix)?;
            let spool = data_dir.join("spool");
            std::fs::create_dir_all(&spool).map_err(|e| format!("{}: {e}", spool.display()))?;
            return Ok(Some(Backend {
                objects,
                signer,
                local: None,
                spool,
                prefix,
                name: place,
                down_until: Mutex::default(),
                access_key: access_key(options),
            }));
        }
        let dir = PathBuf::from(&place);
        let bad = |e: &dyn std::fmt::Display| format!("--blob-store {place}: {e}");
        if options.blob_store_redirect.is_some() {
            return Err(bad(
                &"--blob-store-redirect needs an s3:// store clients can reach",
            ));
        }
        std::fs::create_dir_all(dir.join("spool")).map_err(|e| bad(&e))?;
        // No fsync of what object_store writes (manifests, which are hashed again when
        // read, and access and tag records, whose loss costs a question upstream); a blob's
        // spool is synced before it is renamed into place (`fill.rs`).
        let objects = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| bad(&e))?
            .with_automatic_cleanup(true);
        Ok(Some(Backend {
            objects: Arc::new(objects),
            signer: None,
            spool: dir.join("spool"),
            local: Some(dir),
            prefix: Path::default(),
            name: place,
            down_until: Mutex::default(),
            access_key: access_key(options),
        }))
    }

    /// The file of the blob `key` in a local store (its path's parts are lower-case hex and
    /// names, the same on disk); `None` on S3, or for a manifest.
    pub fn local_blob(&self, key: &ObjectKey) -> Option<PathBuf> {
        let dir = self.local.as_ref().filter(|_| key.kind == Kind::Blob)?;
        Some(dir.join(self.object_path(key, None).as_ref()))
    }

    /// Where `key`'s content is: a manifest's name holds its media type.
    pub fn object_path(&self, key: &ObjectKey, media_type: Option<&str>) -> Path {
        let digest = &key.digest;
        let mut parts = vec![
            key.kind.folder().to_owned(),
            digest.algorithm().to_owned(),
            digest.hex()[..2].to_owned(),
            digest.hex().to_owned(),
        ];
        if let (Kind::Manifest, Some(media_type)) = (key.kind, media_type) {
            parts.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(media_type));
        }
        self.path(parts)
    }

    /// The empty object that says the shared identity `scope` fetched `key` (its name
    /// sealed with the replicas' key, if there is one).
    pub fn access_path(&self, scope: &str, key: &ObjectKey) -> Path {
        let (folder, algorithm) = (key.kind.folder(), key.digest.algorithm());
        let mut last = key.digest.hex().to_owned();
        if let Some(mac) = self.access_mac(scope, folder, algorithm, key.digest.hex()) {
            last = format!("{last}.{mac}");
        }
        self.path([
            "access".to_owned(),
            scope.to_owned(),
            folder.to_owned(),
            algorithm.to_owned(),
            last,
        ])
    }

    /// The MAC an access record's name carries, with the replicas' key.
    fn access_mac(&self, scope: &str, folder: &str, algorithm: &str, hex: &str) -> Option<String> {
        let key = self.access_key.as_ref()?;
        let hashed = key.hashed("access", &[scope, folder, algorithm, hex]);
        Some(hashed.rsplit(':').next().unwrap_or_default()[..20].to_owned())
    }

    /// The record of what a tag named for the shared identity `scope`; `hash` names the
    /// tag and the media types asked for.
    pub fn tag_path(&self, scope: &str, hash: &str) -> Path {
        self.path(["tags".to_owned(), scope.to_owned(), hash.to_owned()])
    }

    fn path(&self, parts: impl IntoIterator<Item = String>) -> Path {
        self.prefix
            .parts()
            .map(|p| p.as_ref().to_owned())
            .chain(parts)
            .collect::<Vec<_>>()
            .iter()
            .map(|p| object_store::path::PathPart::from(p.as_str()))
            .collect()
    }

    /// What `path` (from a listing) names: an object and its media type, or a shared
    /// identity's access to one.
    pub fn read_listed(&self, path: &Path) -> Option<Listed> {
        let parts: Vec<String> = path
            .prefix_match(&self.prefix)?
            .map(|p| decode(p.as_ref()))
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let key = |kind, algorithm: &str, hex: &str| {
            ContentDigest::parse(&format!("{algorithm}:{hex}"))
                .map(|digest| ObjectKey { kind, digest })
        };
        let kind = |folder: &str| match folder {
            "blobs" => Some(Kind::Blob),
            "manifests" => Some(Kind::Manifest),
            _ => None,
        };
        match parts.as_slice() {
            ["blobs", algorithm, _, hex] => {
                Some(Listed::Object(key(Kind::Blob, algorithm, hex)?, None))
            }
            ["manifests", algorithm, _, hex, media_type] => {
                let media_type = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(media_type)
                    .ok()
                    .and_then(|t| String::from_utf8(t).ok())?;
                Some(Listed::Object(
                    key(Kind::Manifest, algorithm, hex)?,
                    Some(media_type),
                ))
            }
            ["access", scope, folder, algorithm, last] => {
                // With the replicas' key, only a name sealed with it is an access.
                let mac = self.access_mac(scope, folder, algorithm, last.split('.').next()?);
                let hex = match mac {
                    Some(mac) => last.strip_suffix(&mac)?.strip_suffix('.')?,
                    None => last,
                };
                Some(Listed::Access(
                    (*scope).into(),
                    key(kind(folder)?, algorithm, hex)?,
                ))
            }
            _ => None,
        }
    }

    /// Every object under `folder` (`blobs`, `manifests`, `access`), with its size and time.
    pub async fn list(&self, folder: &str) -> Result<Vec<ObjectMeta>, object_store::Error> {
        let prefix = self.path([folder.to_owned()]);
        let mut listing = self.objects.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            out.push(meta?);
        }
        Ok(out)
    }

    /// Logs and counts a failure of the store while `doing` something: the pull goes on
    /// without it, and the store is left alone for [`DOWN_FOR`].
    pub fn failed(
        &self,
        metrics: &crate::metrics::Metrics,
        doing: &str,
        error: &dyn std::fmt::Display,
    ) {
        metrics.store(crate::metrics::StoreEvent::Unavailable);
        let was_up = self
            .lock_down()
            .replace(Instant::now() + DOWN_FOR)
            .is_none_or(|until| until <= Instant::now());
        match was_up {
            true => {
                tracing::warn!(store = %self.name, error = %error, "blob store failed to {doing}: serving without it for {}s", DOWN_FOR.as_secs())
            }
            false => {
                tracing::debug!(store = %self.name, error = %error, "blob store failed to {doing}")
            }
        }
    }

    /// Logs and counts a download that cannot be spooled (no room on the spool's disk):
    /// served as without a store; the store is not left alone for it (a smaller one fits).
    pub fn spool_failed(&self, metrics: &crate::metrics::Metrics, error: &dyn std::fmt::Display) {
        metrics.store(crate::metrics::StoreEvent::Unavailable);
        tracing::warn!(store = %self.name, error = %error, "blob store failed to spool a download: serving it without the store");
    }

    /// Whether the store failed less than [`DOWN_FOR`] ago: pulls go upstream without it.
    pub fn down(&self) -> bool {
        self.lock_down().is_some_and(|until| until > Instant::now())
    }

    fn lock_down(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.down_until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The replicas' key, with `--shared-state` (checked by the shared state when it opened).
fn access_key(options: &Options) -> Option<ReplicasKey> {
    options.shared_state.as_ref()?;
    ReplicasKey::new(options.shared_state_key.as_deref(), &None).ok()
}

/// What a listed path names.
pub enum Listed {
    /// An object, with a manifest's media type.
    Object(ObjectKey, Option<String>),
    /// A shared identity's access to an object.
    Access(Arc<str>, ObjectKey),
}

/// A path part as it was before `object_store` percent-encoded it.
fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_the_replicas_key_an_access_record_is_one_whose_name_is_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let options = <Options as clap::Parser>::parse_from([
            "registry-mirror",
            "--blob-store",
            dir.path().to_str().unwrap(),
            "--shared-state",
            "redis://127.0.0.1:1/0",
            "--shared-state-key",
            "the-replicas-own-key-1",
        ]);
        let backend = Backend::open(&options).unwrap().unwrap();
        let key = ObjectKey::blob(ContentDigest::sha256_of(b"layer"));
        let scope = "anonymous@docker.io/0123456789abcdef0123456789abcdef";
        let sealed = backend.access_path(scope, &key);
        assert!(
            sealed.as_ref().contains(&format!("{}.", key.digest.hex())),
            "{sealed}"
        );
        assert!(
            matches!(backend.read_listed(&sealed), Some(Listed::Access(s, k)) if &*s == scope && k == key)
        );
        // What a bucket's writer can name without the key: nothing.
        let plain = Path::from_iter(["access", scope, "blobs", "sha256", key.digest.hex()]);
        assert!(backend.read_listed(&plain).is_none(), "{plain}");
        let other = sealed.as_ref().replace(
            scope,
            "anonymous@docker.io/ffffffffffffffffffffffffffffffff",
        );
        assert!(
            backend.read_listed(&Path::from(other.as_str())).is_none(),
            "moved to another scope"
        );
    }

    #[test]
    fn staged_names_and_listed_paths() {
        let dir = tempfile::tempdir().unwrap();
        let options = <Options as clap::Parser>::parse_from([
            "registry-mirror",
            "--blob-store",
            dir.path().to_str().unwrap(),
        ]);
        let backend = Backend::open(&options).unwrap().unwrap();
        let digest = ContentDigest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let key = ObjectKey::manifest(digest.clone());
        let path = backend.object_path(&key, Some("application/vnd.oci.image.index.v1+json"));
        match backend.read_listed(&path) {
            Some(Listed::Object(listed, Some(media_type))) => {
                assert_eq!(listed, key);
                assert_eq!(media_type, "application/vnd.oci.image.index.v1+json");
            }
            _ => panic!("{path}"),
        }
        let scope = "anonymous@registry.local:5000/0123456789abcdef0123456789abcdef";
        let access = backend.access_path(scope, &ObjectKey::blob(digest));
        assert_eq!(access.parts().count(), 5, "{access}: the scope is one part");
        match backend.read_listed(&access) {
            Some(Listed::Access(listed_scope, listed)) => {
                assert_eq!(&*listed_scope, scope);
                assert_eq!(listed.kind, Kind::Blob);
            }
            _ => panic!("{access}"),
        }
    }
}
