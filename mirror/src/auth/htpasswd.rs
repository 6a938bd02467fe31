//! Client authentication on the mirror (`--htpasswd`): an htpasswd file of bcrypt entries,
//! as CNCF distribution's `auth.htpasswd` reads, checked against `Authorization: Basic`.
//!
//! bcrypt is slow by design, which makes logins a way to spend the mirror's CPU and a
//! clock that tells users apart. So:
//! - an unknown user is checked against a dummy hash of the file's highest cost: the same
//!   work, the same time as a known user with a wrong password;
//! - bcrypt runs on tokio's blocking pool (never on a worker's thread), at most
//!   [`Users::bcrypt_permits`] at a time; a login that waits longer than [`QUEUE_WAIT`] for
//!   its turn is told to come back;
//! - an address with [`FREE_FAILURES`] failed logins in a row is throttled, without any
//!   bcrypt, up to [`MAX_LOCKOUT`] (`throttle.rs` says how);
//! - an accepted login (user and password, however the header spells them) is remembered,
//!   as a SHA-256 digest, for five minutes, in a bounded LRU: floods evict the least recently
//!   used logins, never all of them.

use base64::Engine;
use http::header::{HeaderMap, AUTHORIZATION};
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::throttle::FailedLogins;
pub use super::throttle::{FREE_FAILURES, MAX_LOCKOUT};

/// How long an accepted login is remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// How many accepted logins are remembered at most.
const MAX_REMEMBERED: usize = 4096;

/// How long a login waits for its turn at bcrypt before it is told to come back.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The users of an htpasswd file, and what the mirror remembers of their logins.
pub struct Users {
    hashes: Arc<HashMap<String, String>>,
    /// Checked for unknown users: bcrypt of a random password at the file's highest cost.
    dummy: Arc<String>,
    accepted: Mutex<LruCache<[u8; 32], Instant>>,
    failed: FailedLogins,
    permits: Arc<Semaphore>,
    bcrypt_runs: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    peak_in_flight: Arc<AtomicUsize>,
}

/// What a login check says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// A known user with the right password.
    Accepted,
    /// No credentials, unknown user or wrong password (they are not told apart).
    Refused,
    /// Too many failures from this address, or too many logins waiting: try again after.
    Throttled(Duration),
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
        let mut cost = 4;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad(&format!("line {}: not user:hash", n + 1)))?;
            let entry_cost = ["$2a$", "$2b$", "$2y$"]
                .iter()
                .find_map(|p| hash.strip_prefix(p))
                .and_then(|rest| rest.get(..2)?.parse::<u32>().ok())
                .ok_or_else(|| {
                    bad(&format!(
                        "line {}: only bcrypt entries (htpasswd -B)",
                        n + 1
                    ))
                })?;
            cost = cost.max(entry_cost);
            hashes.insert(user.to_owned(), hash.to_owned());
        }
        if hashes.is_empty() {
            return Err(bad(&"no users"));
        }
        let random: [u8; 16] = rand_bytes();
        let dummy = bcrypt::hash(hex::encode(random), cost).map_err(|e| bad(&e))?;
        let permit_count = bcrypt_at_once();
        let cap = |n| NonZeroUsize::new(n).expect("a non-zero bound");
        tracing::info!(
            users = hashes.len(),
            bcrypt_at_once = permit_count,
            "htpasswd loaded"
        );
        Ok(Users {
            hashes: Arc::new(hashes),
            dummy: Arc::new(dummy),
            accepted: Mutex::new(LruCache::new(cap(MAX_REMEMBERED))),
            failed: FailedLogins::default(),
            permits: Arc::new(Semaphore::new(permit_count)),
            bcrypt_runs: AtomicU64::new(0),
            in_flight: Arc::default(),
            peak_in_flight: Arc::default(),
        })
    }

    /// Checks the `Basic` credentials of a request from `client`.
    pub async fn check(&self, headers: &HeaderMap, client: IpAddr) -> Check {
        let Some((user, password)) = headers.get(AUTHORIZATION).and_then(|v| basic(v.as_bytes()))
        else {
            return Check::Refused;
        };
        // One login, one digest, however the header spelled it.
        let digest: [u8; 32] = Sha256::new()
            .chain_update((user.len() as u64).to_le_bytes())
            .chain_update(user.as_bytes())
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        // Throttled first: a locked-out address learns nothing, not even whether a guess
        // matches a remembered login.
        if let Some(wait) = self.failed.lockout(client) {
            return Check::Throttled(wait);
        }
        if self
            .lock_accepted()
            .get(&digest)
            .is_some_and(|until| *until > Instant::now())
        {
            return Check::Accepted;
        }
        // Counted before it waits: a burst from one address gets no more bcrypt checks than
        // a sequence would.
        let Some(checking) = self.failed.start_check(client) else {
            return Check::Throttled(Duration::from_secs(1));
        };
        let verified =
            match tokio::time::timeout(QUEUE_WAIT, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => self.bcrypt(&user, password, permit).await,
                Ok(Err(_)) => false,
                // Not counted as a failure (`checking` ends uncounted when dropped).
                Err(_) => return Check::Throttled(Duration::from_secs(1)),
            };
        checking.end(verified);
        if verified {
            self.lock_accepted().put(digest, Instant::now() + REMEMBER);
            Check::Accepted
        } else {
            Check::Refused
        }
    }

    /// One bcrypt check of `password` for `user` (against the dummy hash for an unknown
    /// user: the same work).
    /// `permit` is held by the blocking task itself: a client that goes away mid-check
    /// frees it only when the CPU work is done, so the bound holds.
    async fn bcrypt(&self, user: &str, password: String, permit: OwnedSemaphorePermit) -> bool {
        let (hash, known) = match self.hashes.get(user) {
            Some(hash) => (hash.clone(), true),
            None => ((*self.dummy).clone(), false),
        };
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        let (in_flight, peak) = (self.in_flight.clone(), self.peak_in_flight.clone());
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let ok = bcrypt::verify(password, &hash).unwrap_or(false);
            in_flight.fetch_sub(1, Ordering::SeqCst);
            ok
        })
        .await
        .unwrap_or(false);
        ok && known
    }

    /// How many bcrypt checks ran.
    pub fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(Ordering::Relaxed)
    }

    /// How many bcrypt checks may run at once.
    pub fn bcrypt_permits(&self) -> usize {
        bcrypt_at_once()
    }

    /// The most bcrypt checks that ran at once.
    pub fn peak_concurrent_bcrypt(&self) -> usize {
        self.peak_in_flight.load(Ordering::SeqCst)
    }

    fn lock_accepted(&self) -> std::sync::MutexGuard<'_, LruCache<[u8; 32], Instant>> {
        self.accepted.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many bcrypt checks may run at once: half the cores, at least one.
fn bcrypt_at_once() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}

/// 16 bytes that no one can guess, for the dummy hash (std's hasher keys come from the OS).
fn rand_bytes() -> [u8; 16] {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(0u8);
    let b = RandomState::new().hash_one(1u8);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
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

    fn alice() -> (tempfile::TempDir, std::path::PathBuf, Users) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&path, format!("# users\nalice:{hash}\n")).unwrap();
        let users = Users::load(&path).unwrap();
        (dir, path, users)
    }

    fn header(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {b64}")).unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn bcrypt_entries_are_checked_and_remembered() {
        let (_dir, path, users) = alice();
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(
            users.check(&header("alice:s3cret"), ip).await,
            Check::Accepted
        );
        let runs = users.bcrypt_runs();
        assert_eq!(
            users.check(&header("alice:s3cret"), ip).await,
            Check::Accepted
        );
        assert_eq!(users.bcrypt_runs(), runs, "remembered");
        assert_eq!(
            users.check(&header("alice:wrong"), ip).await,
            Check::Refused
        );
        assert_eq!(users.check(&header("bob:s3cret"), ip).await, Check::Refused);
        assert_eq!(users.check(&HeaderMap::new(), ip).await, Check::Refused);
        std::fs::write(&path, "alice:{SHA}abc\n").unwrap();
        assert!(Users::load(&path).unwrap_err().contains("only bcrypt"));
    }

    #[tokio::test]
    async fn failed_logins_throttle_an_address_for_a_while() {
        let (_dir, _path, users) = alice();
        // A check whose client went away (its future dropped mid-check) is not counted:
        // however many, the address is not locked out.
        let other = IpAddr::from([127, 0, 0, 2]);
        for _ in 0..2 * FREE_FAILURES {
            drop(users.failed.start_check(other).expect("not throttled"));
        }
        assert_eq!(
            users.check(&header("alice:s3cret"), other).await,
            Check::Accepted
        );
        // Locked out after FREE_FAILURES wrong passwords; once the wait has passed, the right
        // password gets through (and a wrong one doubles the wait).
        let third = IpAddr::from([127, 0, 0, 3]);
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                users.check(&header("alice:wrong"), third).await,
                Check::Refused
            );
        }
        assert!(matches!(
            users.check(&header("alice:bad"), third).await,
            Check::Throttled(_)
        ));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            users.check(&header("alice:wrong"), third).await,
            Check::Refused
        );
        match users.check(&header("alice:bad"), third).await {
            Check::Throttled(wait) => assert!(wait > Duration::from_secs(1), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(
            users.check(&header("alice:s3cret"), third).await,
            Check::Accepted
        );
    }
}
