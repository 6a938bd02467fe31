//! What replicas share beside the store, on Redis (or Valkey): what tags named (so that one
//! replica's `GET` serves the others' pulls of an unchanged tag, and every replica can serve
//! a tag stale), the reads the registry granted clients' logins, and leases on the
//! downloads and manifest fetches in flight (one replica fetches; the others wait for it,
//! or take over when its lease lapses because it died).
//!
//! Nothing secret is written: identities are HMAC-SHA256'd with a key the replicas share
//! (`MIRROR_SHARED_STATE_KEY`, its own, not the Redis password: whoever can write to Redis
//! must not be able to forge what replicas read there), and no token, password or signed
//! URL is ever a key or a value. Every value a replica acts on (a tag record, a grant and
//! its end) is sealed with an HMAC of its key and value: one written without the key, or
//! moved from another key, is none. Every call is bounded: a Redis that is down or slow costs a
//! request at most [`CALL_TIMEOUT`], and then none for [`DOWN_FOR`]; the mirror falls back
//! to what each replica knows alone, logged and counted, and `/readyz` does not change.

use super::keys::{Grant, ObjectKey};
use super::seal::{unix_millis, ReplicasKey};
use super::tags::TagRecord;
use crate::metrics::Metrics;
use crate::options::Options;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant, SystemTime};

/// The longest one call to Redis may take.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// How long Redis is left alone after a call failed.
pub const DOWN_FOR: Duration = Duration::from_secs(5);

/// The replicas' shared state.
pub struct SharedState {
    client: redis::Client,
    /// One multiplexed connection per worker thread (each on its worker's runtime): as
    /// many connections as `--workers`, each made once (concurrent first calls wait for it).
    connections: Mutex<HashMap<ThreadId, Arc<tokio::sync::OnceCell<ConnectionManager>>>>,
    /// Until when Redis is left alone, after a failure.
    down_until: Mutex<Option<Instant>>,
    /// The replicas' key: what names identities and seals values.
    pub(super) key: ReplicasKey,
    /// This replica, as its leases name it.
    pub(super) owner: String,
    metrics: Arc<Metrics>,
}

impl SharedState {
    /// The shared state `--shared-state` names (`redis://`, `rediss://`; the password in
    /// `MIRROR_SHARED_STATE_PASSWORD` or the URL), or `None` without it.
    pub fn open(
        options: &Options,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<SharedState>>, String> {
        let Some(url) = &options.shared_state else {
            return Ok(None);
        };
        let bad = |e: &dyn std::fmt::Display| format!("--shared-state: {e}");
        let mut info: redis::ConnectionInfo =
            redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(|e| bad(&e))?;
        // Who chose the destination: the operator (`--shared-state`); the password is
        // Redis's own, and goes nowhere else.
        if let Some(password) = &options.shared_state_password {
            info.redis.password = Some(password.clone());
        }
        let key = ReplicasKey::new(options.shared_state_key.as_deref(), &info.redis.password)
            .map_err(|e| bad(&e))?;
        let client = match &options.upstream_ca {
            Some(ca) if url.starts_with("rediss://") => {
                let root = std::fs::read(ca).map_err(|e| bad(&e))?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                };
                redis::Client::build_with_tls(info, certs).map_err(|e| bad(&e))?
            }
            _ => redis::Client::open(info).map_err(|e| bad(&e))?,
        };
        use std::hash::{BuildHasher, RandomState};
        let owner = format!("{:016x}", RandomState::new().hash_one(Instant::now()));
        Ok(Some(Arc::new(SharedState {
            client,
            connections: Mutex::default(),
            down_until: Mutex::new(None),
            key,
            owner,
            metrics,
        })))
    }

    /// Runs `command` on this worker's connection, bounded; `None` (logged and counted
    /// once per outage) when Redis cannot answer, or refuses (an error reply: out of
    /// memory, a wrong password, a value of another type than the replicas write).
    pub(super) async fn call<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Option<T> {
        self.on_connection(
            |mut connection| async move { command.query_async(&mut connection).await },
        )
        .await
    }

    /// What `request` answers on this worker's connection: bounded by [`CALL_TIMEOUT`],
    /// timed, and `None` (Redis left alone, counted, logged once) when it fails; `None`
    /// without asking while Redis is left alone. Every call to Redis goes through here.
    pub(super) async fn on_connection<T, F, Fut>(&self, request: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.lock_down().is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let connection = self.connection().await?;
        let started = Instant::now();
        let answer = tokio::time::timeout(CALL_TIMEOUT, request(connection)).await;
        self.metrics.observe_shared_state(started.elapsed());
        match answer {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => self.down(&e),
            Err(elapsed) => self.down(&elapsed),
        }
    }

    /// This worker's connection, made (within [`CALL_TIMEOUT`]) if it has none.
    async fn connection(&self) -> Option<ConnectionManager> {
        let thread = std::thread::current().id();
        let cell = self.lock_connections().entry(thread).or_default().clone();
        let made = cell
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(CALL_TIMEOUT)
                    .set_response_timeout(CALL_TIMEOUT)
                    .set_number_of_retries(1);
                let made = ConnectionManager::new_with_config(self.client.clone(), config);
                match tokio::time::timeout(CALL_TIMEOUT, made).await {
                    Ok(made) => made.map_err(|e| e.to_string()),
                    Err(elapsed) => Err(elapsed.to_string()),
                }
            })
            .await;
        match made {
            Ok(connection) => Some(connection.clone()),
            Err(e) => self.down(&e),
        }
    }

    /// Redis failed: left alone for [`DOWN_FOR`], counted, and logged if it was up.
    fn down<T>(&self, error: &dyn std::fmt::Display) -> Option<T> {
        self.metrics.shared_state_error();
        let was_up = self
            .lock_down()
            .replace(Instant::now() + DOWN_FOR)
            .is_none_or(|until| Instant::now() >= until + DOWN_FOR);
        if was_up {
            tracing::warn!(error = %error, "shared state: Redis does not answer; each replica goes on alone");
        }
        None
    }

    /// The replicas' key, which seals what they share.
    pub fn key(&self) -> &ReplicasKey {
        &self.key
    }

    /// What the tag `name` named for the shared identity `scope`, if a replica recorded it
    /// (and signed it: a record whose MAC fails, written by someone without the key, or
    /// moved from another tag's key, is none).
    pub async fn tag(&self, scope: &str, name: &str) -> Option<TagRecord> {
        let key = self.key.hashed("tag", &[scope, name]);
        let value: Option<String> = self.call(redis::cmd("GET").arg(&key)).await?;
        TagRecord::parse(self.key.unseal(&key, &value?)?.as_bytes())
    }

    /// Records what the tag `name` named for `scope`, for `keep` (at least a day).
    pub async fn put_tag(&self, scope: &str, name: &str, record: &TagRecord, keep: Duration) {
        let key = self.key.hashed("tag", &[scope, name]);
        let keep = keep.max(Duration::from_secs(24 * 3600)).as_millis() as u64;
        let value = self.key.seal(&key, &record.to_json());
        let _: Option<()> = self
            .call(redis::cmd("SET").arg(&key).arg(value).arg("PX").arg(keep))
            .await;
    }

    /// Records that the registry accepted `grant`'s login for `object`, until its token ends.
    pub async fn give(&self, grant: &Grant, object: &ObjectKey) {
        let Ok(left) = grant.until.duration_since(SystemTime::now()) else {
            return;
        };
        let key = self.grant_key(grant, object);
        let until = unix_millis(grant.until).to_string();
        let _: Option<()> = self
            .call(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(self.key.seal(&key, &until))
                    .arg("PX")
                    .arg(left.as_millis().max(1) as u64),
            )
            .await;
    }

    /// Whether a replica recorded that the registry accepted `grant`'s login for `object`,
    /// and both that record and the login's token have not ended (a record kept past its
    /// time by someone who can write to Redis still ends when it said it would).
    pub async fn allows(&self, grant: &Grant, object: &ObjectKey) -> bool {
        let now = unix_millis(SystemTime::now());
        if unix_millis(grant.until) <= now {
            return false;
        }
        let key = self.grant_key(grant, object);
        let value: Option<String> = self.call(redis::cmd("GET").arg(&key)).await.flatten();
        let until = value
            .as_deref()
            .and_then(|value| self.key.unseal(&key, value));
        until.and_then(|until| until.parse::<u64>().ok()) > Some(now)
    }

    fn grant_key(&self, grant: &Grant, object: &ObjectKey) -> String {
        let digest = object.digest.to_string();
        let parts: [&[u8]; 5] = [
            &grant.identity,
            grant.registry.as_bytes(),
            grant.repository.as_bytes(),
            object.kind.folder().as_bytes(),
            digest.as_bytes(),
        ];
        self.key.hashed("grant", &parts)
    }

    fn lock_down(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.down_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_connections(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ThreadId, Arc<tokio::sync::OnceCell<ConnectionManager>>>>
    {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}
