//! Client authentication on the mirror (`--htpasswd`): an htpasswd file of bcrypt entries,
//! as CNCF distribution's `auth.htpasswd` reads, checked against `Authorization: Basic`.
//!
//! bcrypt is slow by design, so it runs on tokio's blocking pool (never on a worker's
//! thread), and an accepted `Authorization` value is remembered, as a SHA-256 digest, for
//! five minutes.

use base64::Engine;
use http::header::{HeaderMap, AUTHORIZATION};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REMEMBER: Duration = Duration::from_secs(300);
const MAX_REMEMBERED: usize = 1024;

pub struct Users {
    hashes: Arc<HashMap<String, String>>,
    accepted: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The users' names, never their hashes.
        f.debug_set().entries(self.hashes.keys()).finish()
    }
}

impl Users {
    /// Reads `user:hash` lines; every hash must be bcrypt (`$2a$`, `$2b$`, `$2y$`).
    pub fn load(path: &std::path::Path) -> Result<Users, String> {
        let bad = |e: &dyn std::fmt::Display| format!("--htpasswd {}: {e}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| bad(&e))?;
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad(&format!("line {}: not user:hash", n + 1)))?;
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(bad(&format!(
                    "line {}: only bcrypt entries (htpasswd -B)",
                    n + 1
                )));
            }
            hashes.insert(user.to_owned(), hash.to_owned());
        }
        if hashes.is_empty() {
            return Err(bad(&"no users"));
        }
        Ok(Users {
            hashes: Arc::new(hashes),
            accepted: Mutex::default(),
        })
    }

    /// Whether the request carries the Basic credentials of a user in the file.
    pub async fn allow(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        {
            let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
            if accepted
                .get(&digest)
                .is_some_and(|until| *until > Instant::now())
            {
                return true;
            }
        }
        let Some((user, password)) = basic(value.as_bytes()) else {
            return false;
        };
        let Some(hash) = self.hashes.get(&user).cloned() else {
            return false;
        };
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if verified {
            let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
            if accepted.len() >= MAX_REMEMBERED {
                accepted.clear();
            }
            accepted.insert(digest, Instant::now() + REMEMBER);
        }
        verified
    }
}

/// `Basic base64(user:password)` → (user, password).
fn basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[tokio::test]
    async fn bcrypt_entries_are_checked_and_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&path, format!("# users\nalice:{hash}\n")).unwrap();
        let users = Users::load(&path).unwrap();
        let header = |user_pass: &str| {
            let mut h = HeaderMap::new();
            let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
            h.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {b64}")).unwrap(),
            );
            h
        };
        assert!(users.allow(&header("alice:s3cret")).await);
        assert!(users.allow(&header("alice:s3cret")).await, "remembered");
        assert!(!users.allow(&header("alice:wrong")).await);
        assert!(!users.allow(&header("bob:s3cret")).await);
        assert!(!users.allow(&HeaderMap::new()).await);
        std::fs::write(&path, "alice:{SHA}abc\n").unwrap();
        assert!(Users::load(&path).unwrap_err().contains("only bcrypt"));
    }
}
