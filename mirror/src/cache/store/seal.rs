//! The replicas' key (`--shared-state-key`): what the names of their shared records are
//! HMAC-SHA256s with (so identities, repositories and tags are not readable there), and
//! what every value they act on is sealed with (so one written without the key, or moved
//! from another record's name, is none). Whoever can write to Redis or the bucket must not
//! know it: it is not the Redis password.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::SystemTime;

/// The key the replicas of a fleet share, the same on every replica.
pub struct ReplicasKey(Vec<u8>);

impl ReplicasKey {
    /// `--shared-state-key`: given, at least 16 bytes, and not `password` (Redis's).
    pub fn new(key: Option<&str>, password: &Option<String>) -> Result<Self, &'static str> {
        match key {
            None => Err("give the replicas a key of their own to seal what they share: --shared-state-key (MIRROR_SHARED_STATE_KEY), the same on every replica"),
            Some(key) if key.len() < 16 => Err("--shared-state-key must be at least 16 bytes"),
            Some(key) if password.as_deref() == Some(key) => Err(
                "--shared-state-key must not be the Redis password: whoever can write to Redis could forge what replicas read",
            ),
            Some(key) => Ok(ReplicasKey(key.as_bytes().to_vec())),
        }
    }

    fn mac<P: AsRef<[u8]>>(&self, kind: &str, parts: &[P]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        for part in std::iter::once(kind.as_bytes()).chain(parts.iter().map(AsRef::as_ref)) {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac
    }

    /// The name `parts` have, as records of `kind`: `rm:<kind>:<hex HMAC>`.
    pub fn hashed<P: AsRef<[u8]>>(&self, kind: &str, parts: &[P]) -> String {
        let mac = self.mac(kind, parts).finalize().into_bytes();
        format!("rm:{kind}:{}", hex::encode(mac))
    }

    /// `value`, sealed as the value of the record `name`: `<value>\n<hex HMAC>`.
    pub fn seal(&self, name: &str, value: &str) -> String {
        let mac = self.mac("value", &[name, value]).finalize().into_bytes();
        format!("{value}\n{}", hex::encode(mac))
    }

    /// What [`seal`](Self::seal) sealed as the value of `name`; `None` if `sealed` is not
    /// that (written without the key, or moved from another record). Checked in constant
    /// time.
    pub fn unseal<'a>(&self, name: &str, sealed: &'a str) -> Option<&'a str> {
        let (value, mac) = sealed.rsplit_once('\n')?;
        let mac = hex::decode(mac).ok()?;
        let check = self.mac("value", &[name, value]);
        check.verify_slice(&mac).ok().map(|()| value)
    }
}

/// `time` as milliseconds since the Unix epoch (0 before it).
pub fn unix_millis(time: SystemTime) -> u64 {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key: &str) -> ReplicasKey {
        ReplicasKey::new(Some(key), &None).unwrap()
    }

    #[test]
    fn a_value_unseals_only_under_its_name_and_with_the_replicas_key() {
        let (ours, theirs) = (key("the-replicas-key-1"), key("the-redis-password"));
        let sealed = ours.seal("rm:tag:a", "{\"digest\":\"d\"}");
        assert_eq!(ours.unseal("rm:tag:a", &sealed), Some("{\"digest\":\"d\"}"));
        assert_eq!(
            ours.unseal("rm:tag:b", &sealed),
            None,
            "moved to another record"
        );
        assert_eq!(ours.unseal("rm:tag:a", &theirs.seal("rm:tag:a", "x")), None);
        let tampered = sealed.replacen('d', "e", 1);
        assert_eq!(ours.unseal("rm:tag:a", &tampered), None);
        assert_eq!(ours.unseal("rm:tag:a", "1"), None, "an unsealed value");
        assert_ne!(ours.hashed("tag", &["a"]), theirs.hashed("tag", &["a"]));
        assert_ne!(
            ours.hashed("tag", &["ab", "c"]),
            ours.hashed("tag", &["a", "bc"])
        );
    }

    #[test]
    fn the_key_is_the_replicas_own() {
        let password = Some("the-redis-password".to_owned());
        assert!(ReplicasKey::new(None, &password).is_err());
        assert!(ReplicasKey::new(Some("short"), &None).is_err());
        assert!(ReplicasKey::new(Some("the-redis-password"), &password).is_err());
        assert!(ReplicasKey::new(Some("another-key-of-16+"), &password).is_ok());
    }
}
