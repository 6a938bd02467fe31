//! What the store keeps objects by: their digest (sha256 or sha512, checked), their kind
//! (a blob, or a manifest with its media type), and who may read them.

use crate::auth::identity::Identity;
use crate::serve::verify::Expected;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// A digest the store keeps content by: `sha256:<64 hex>` or `sha512:<128 hex>`, lower-case.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ContentDigest {
    /// `sha256` or `sha512`.
    algorithm: &'static str,
    /// Lower-case hex, 64 or 128 digits.
    hex: Box<str>,
}

impl ContentDigest {
    /// `sha256:<hex>` or `sha512:<hex>`; `None` for other algorithms and malformed hex.
    pub fn parse(digest: &str) -> Option<ContentDigest> {
        let (algorithm, hex) = digest.split_once(':')?;
        let (algorithm, len) = match algorithm {
            "sha256" => ("sha256", 64),
            "sha512" => ("sha512", 128),
            _ => return None,
        };
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        (hex.len() == len && hex.bytes().all(lower_hex)).then(|| ContentDigest {
            algorithm,
            hex: hex.into(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> ContentDigest {
        use sha2::Digest;
        ContentDigest {
            algorithm: "sha256",
            hex: hex::encode(sha2::Sha256::digest(bytes)).into(),
        }
    }

    /// `sha256` or `sha512`.
    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    /// The hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// What content with this digest must hash to.
    pub fn expected(&self) -> Expected {
        crate::serve::verify::expected(&self.to_string())
            .expect("a checked digest is a valid expected digest")
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What kind of content an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A blob: a layer or a config.
    Blob,
    /// A manifest (or an index) fetched by digest or by tag.
    Manifest,
}

impl Kind {
    /// The top-level folder of its objects.
    pub fn folder(self) -> &'static str {
        match self {
            Kind::Blob => "blobs",
            Kind::Manifest => "manifests",
        }
    }
}

/// An object of the store: its kind and digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// A blob or a manifest.
    pub kind: Kind,
    /// Its content's digest.
    pub digest: ContentDigest,
}

impl ObjectKey {
    /// The blob with `digest`.
    pub fn blob(digest: ContentDigest) -> ObjectKey {
        ObjectKey {
            kind: Kind::Blob,
            digest,
        }
    }

    /// The manifest with `digest`.
    pub fn manifest(digest: ContentDigest) -> ObjectKey {
        ObjectKey {
            kind: Kind::Manifest,
            digest,
        }
    }
}

/// Who asks to read an object, and what the upstream would have to accept for it.
#[derive(Clone, Debug)]
pub enum Reader {
    /// A shared identity (the mirror's own login, or anonymous) in one repository of one
    /// registry: what the registry served it there, it may read again there (a blob that
    /// repository `a` served is read through `b` only once the registry said `b` has it).
    Shared(Scope),
    /// One client's own login: it may read an object only where the upstream accepted
    /// that login for that repository and digest, until its token ends.
    Login(Grant),
}

/// A shared identity in one repository of a registry, as the store names it: 32 hex
/// digits of the SHA-256 of the identity, the registry and the repository (a name neither
/// long, as a repository's may be, nor telling whoever lists the store who pulled what).
pub type Scope = Arc<str>;

/// A client login's read of one object in one repository: whose, where, until when.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    /// The login's identity key (a digest, never a credential).
    pub identity: Vec<u8>,
    /// The registry's name.
    pub registry: Arc<str>,
    /// The repository.
    pub repository: String,
    /// When the login's token ends.
    pub until: SystemTime,
}

impl Reader {
    /// The reader `who` is, asking `registry` for `repository`.
    pub fn of(who: &Identity, registry: &Arc<str>, repository: &str) -> Reader {
        match who.valid_until {
            None => Reader::Shared(scope(&who.key, registry, repository)),
            Some(until) => Reader::Login(Grant {
                identity: who.key.clone(),
                registry: registry.clone(),
                repository: repository.to_owned(),
                until,
            }),
        }
    }
}

/// The scope of the shared identity `who` in `repository` of `registry`.
fn scope(who: &[u8], registry: &str, repository: &str) -> Scope {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for part in [who, registry.as_bytes(), repository.as_bytes()] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hex::encode(&hash.finalize()[..16]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_and_sha512_digests_in_lower_case_hex() {
        let hex = "ab".repeat(32);
        assert_eq!(
            ContentDigest::parse(&format!("sha256:{hex}"))
                .unwrap()
                .to_string(),
            format!("sha256:{hex}")
        );
        assert!(ContentDigest::parse(&format!("sha512:{}", "0".repeat(128))).is_some());
        for bad in [
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", "ab".repeat(31)),
            format!("sha512:{hex}"),
            format!("blake3:{hex}"),
            format!("sha256:{}/..", "ab".repeat(31)),
            "sha256".to_owned(),
        ] {
            assert!(ContentDigest::parse(&bad).is_none(), "{bad}");
        }
        let identity = Identity::anonymous();
        let scope = |repository| match Reader::of(&identity, &"docker.io".into(), repository) {
            Reader::Shared(scope) => scope,
            other => panic!("{other:?}"),
        };
        let alpine = scope("library/alpine");
        assert!(
            alpine.len() == 32 && !alpine.contains("library"),
            "{alpine}"
        );
        // One scope per repository: what `library/alpine` served is not `library/debian`'s.
        assert_ne!(alpine, scope("library/debian"));
        assert_eq!(alpine, scope("library/alpine"));
    }
}
