//! Leases on the fetches in flight across a fleet (`shared_state.rs`): one replica downloads
//! a digest, or fetches a tag's manifest, and the others wait for it; when its replica dies,
//! the lease lapses and another takes it over.
//!
//! A lease's value is sealed with the replicas' key and names its holder and its end: one
//! written by whoever can write to Redis without the key, or kept past its end (a key given
//! a longer life, a genuine value replayed), is no lease. A replica takes it over at once,
//! so such a value costs a waiting replica one poll, not a wait.

use super::seal::{unix_millis, ReplicasKey};
use super::shared_state::SharedState;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long a lease lives unless it is renewed; its holder renews it every third of that.
pub const LEASE: Duration = Duration::from_secs(15);

/// Sets the lease to ARGV[1] (for ARGV[3] ms) if it is still what its taker saw: nothing
/// (ARGV[2] empty), or the value it judged no lease (ARGV[2]).
const TAKE: &str = "local cur = redis.call('GET', KEYS[1]) \
    if (cur == false and ARGV[2] == '') or cur == ARGV[2] then \
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) return 1 end return 0";
/// Sets the lease to ARGV[2] (for ARGV[3] ms) if its holder is ARGV[1].
const RENEW: &str = "local cur = redis.call('GET', KEYS[1]) \
    if cur and string.sub(cur, 1, #ARGV[1]) == ARGV[1] then \
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end return 0";
/// Deletes the lease if its holder is ARGV[1].
const RELEASE: &str = "local cur = redis.call('GET', KEYS[1]) \
    if cur and string.sub(cur, 1, #ARGV[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

/// A lease on a fetch in flight.
pub enum Lease {
    /// This replica holds it: it fetches, and releases it when done.
    Held(LeaseGuard),
    /// Another replica holds it: wait for what it fetches.
    Taken,
    /// Redis cannot say: fetch as if alone.
    Unknown,
}

/// A lease this replica holds, renewed in the background until it is released or dropped.
pub struct LeaseGuard {
    state: Arc<SharedState>,
    name: String,
    renewing: tokio::task::JoinHandle<()>,
}

impl SharedState {
    /// A lease on fetching `what` (a digest, or a manifest key's hash), for [`LEASE`].
    pub async fn lease(self: &Arc<Self>, what: &[Vec<u8>]) -> Lease {
        let name = self.key.hashed("lease", what);
        let current: Option<String> = match self.call(redis::cmd("GET").arg(&name)).await {
            Some(current) => current,
            None => return Lease::Unknown,
        };
        if current.as_deref().is_some_and(|v| self.live(&name, v)) {
            return Lease::Taken;
        }
        let script = redis::Script::new(TAKE);
        let mut take = script.prepare_invoke();
        take.key(&name)
            .arg(self.lease_value(&name))
            .arg(current.unwrap_or_default())
            .arg(LEASE.as_millis() as u64);
        match self.invoke(&take).await {
            Some(1) => Lease::Held(self.renewed(name)),
            Some(_) => Lease::Taken,
            None => Lease::Unknown,
        }
    }

    /// Whether a replica holds the lease on `what` (`None`: Redis cannot say).
    pub async fn leased(&self, what: &[Vec<u8>]) -> Option<bool> {
        let name = self.key.hashed("lease", what);
        let value: Option<String> = self.call(redis::cmd("GET").arg(&name)).await?;
        Some(value.is_some_and(|value| self.live(&name, &value)))
    }

    /// Whether `value` is a live lease on `name` now.
    fn live(&self, name: &str, value: &str) -> bool {
        live_at(&self.key, name, value, unix_millis(SystemTime::now()))
    }

    /// This replica's lease on `name`, sealed, ending a [`LEASE`] from now.
    fn lease_value(&self, name: &str) -> String {
        let end = unix_millis(SystemTime::now() + LEASE);
        self.key.seal(name, &format!("{} {end}", self.owner))
    }

    /// A script's answer, as every call's: bounded, timed, failing alike.
    async fn invoke(&self, script: &redis::ScriptInvocation<'_>) -> Option<i64> {
        self.on_connection(|mut connection| async move {
            script.invoke_async::<i64>(&mut connection).await
        })
        .await
    }

    /// The lease `name`, now this replica's, renewed every third of its life.
    fn renewed(self: &Arc<Self>, name: String) -> LeaseGuard {
        let (state, renewed) = (self.clone(), name.clone());
        let renewing = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let script = redis::Script::new(RENEW);
                let mut renew = script.prepare_invoke();
                renew
                    .key(&renewed)
                    .arg(format!("{} ", state.owner))
                    .arg(state.lease_value(&renewed))
                    .arg(LEASE.as_millis() as u64);
                let _ = state.invoke(&renew).await;
            }
        });
        LeaseGuard {
            state: self.clone(),
            name,
            renewing,
        }
    }
}

/// Whether `value` is a lease a replica sealed with `key` for `name`, and had not ended at
/// `now` (ms; a lease's end is its holder's clock: another's may be a lease's life behind).
fn live_at(key: &ReplicasKey, name: &str, value: &str, now: u64) -> bool {
    let end = key
        .unseal(name, value)
        .and_then(|held| held.rsplit_once(' '))
        .and_then(|(_, end)| end.parse::<u64>().ok());
    end.is_some_and(|end| now < end.saturating_add(LEASE.as_millis() as u64))
}

impl LeaseGuard {
    /// Releases the lease (if this replica still holds it): the others stop waiting.
    pub async fn release(mut self) {
        self.renewing.abort();
        let name = std::mem::take(&mut self.name);
        release(&self.state, &name).await;
    }
}

impl Drop for LeaseGuard {
    /// A lease dropped unreleased (its fetch answered nothing to keep, or failed) is
    /// released in the background: the others stop waiting now, not when it lapses.
    fn drop(&mut self) {
        self.renewing.abort();
        let name = std::mem::take(&mut self.name);
        if name.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let state = self.state.clone();
            runtime.spawn(async move { release(&state, &name).await });
        }
    }
}

/// Deletes the lease `name` if `state`'s replica holds it (bounded as every call is).
async fn release(state: &SharedState, name: &str) {
    let script = redis::Script::new(RELEASE);
    let mut command = script.prepare_invoke();
    command.key(name).arg(format!("{} ", state.owner));
    let _ = state.invoke(&command).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_live_only_sealed_for_its_name_and_until_its_end() {
        let key = ReplicasKey::new(Some("the-replicas-own-key"), &None).unwrap();
        let end = 1_000_000;
        let value = key.seal("rm:lease:a", &format!("0123456789abcdef {end}"));
        assert!(live_at(&key, "rm:lease:a", &value, end - 1));
        let skew = LEASE.as_millis() as u64;
        assert!(
            live_at(&key, "rm:lease:a", &value, end + skew - 1),
            "a clock behind"
        );
        assert!(
            !live_at(&key, "rm:lease:a", &value, end + skew),
            "ended: replayed, or kept"
        );
        assert!(
            !live_at(&key, "rm:lease:b", &value, end - 1),
            "moved to another lease"
        );
        assert!(
            !live_at(&key, "rm:lease:a", "forged 9999999999999", 0),
            "unsealed"
        );
        let other = ReplicasKey::new(Some("the-redis-password-xx"), &None).unwrap();
        let forged = other.seal("rm:lease:a", &format!("0123456789abcdef {end}"));
        assert!(
            !live_at(&key, "rm:lease:a", &forged, 0),
            "sealed with another key"
        );
    }
}
