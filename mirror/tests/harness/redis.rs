//! A throw-away `redis-server` (Debian's) on 127.0.0.1 for the replicas' tests: a free port,
//! a password, no persistence, its state in a temporary directory; stopped when dropped.
//!
//! Without `redis-server` on the machine the tests that need it say so and pass, unless
//! `MIRROR_TESTS_NEED_REDIS` is set (as `.ci/run` sets it, after installing it): then they
//! fail.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "redis-test-password-0f3a";

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// With [`RedisServer::start_tls`]: the TLS port, and the PEM file of its certificate
    /// (its own CA: `--upstream-ca` for the mirror).
    pub tls: Option<(u16, std::path::PathBuf)>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// A server on a free loopback port; `None` (with a line on stderr) when `redis-server`
    /// is not installed and the tests do not require it.
    pub fn start() -> Option<RedisServer> {
        Self::start_serving(false)
    }

    /// A server that also speaks TLS on a second port, with a certificate for 127.0.0.1 (the
    /// plain port stays, for the tests' own reads).
    pub fn start_tls() -> Option<RedisServer> {
        Self::start_serving(true)
    }

    fn start_serving(tls: bool) -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                std::env::var_os("MIRROR_TESTS_NEED_REDIS").is_none(),
                "MIRROR_TESTS_NEED_REDIS is set, and redis-server is not installed"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server; .ci/run installs it)");
            return None;
        }
        let mut last = String::new();
        for _ in 0..5 {
            // The port is free when asked; another process may take it before redis binds
            // it: then redis exits, and another port is tried.
            let free = || {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            };
            let (port, tls_port) = (free(), tls.then(free));
            match RedisServer::start_on(port, tls_port) {
                Ok(server) => return Some(server),
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn start_on(port: u16, tls_port: Option<u16>) -> Result<RedisServer, String> {
        let dir = tempfile::tempdir().unwrap();
        // On stdin: the password stays out of the process list.
        let mut config = format!(
            "bind 127.0.0.1\nport {port}\nsave \"\"\nappendonly no\nrequirepass \"{PASSWORD}\"\n\
             dir \"{0}\"\nlogfile \"{0}/redis.log\"\ndaemonize no\n",
            dir.path().display()
        );
        let mut tls = None;
        if let Some(tls_port) = tls_port {
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
            std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
            config.push_str(&format!(
                "tls-port {tls_port}\ntls-cert-file \"{}\"\ntls-key-file \"{}\"\n\
                 tls-ca-cert-file \"{}\"\ntls-auth-clients no\n",
                cert_pem.display(),
                key_pem.display(),
                cert_pem.display()
            ));
            tls = Some((tls_port, cert_pem));
        }
        let mut child = Command::new("redis-server")
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(config.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut server = RedisServer {
            child: Some(child),
            port,
            tls,
            _dir: dir,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = server.child.as_mut().unwrap().try_wait() {
                server.child = None;
                return Err(format!("redis-server exited: {status}"));
            }
            if server.answers() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err("redis-server did not answer PING within 10 s".into())
    }

    /// `redis://127.0.0.1:<port>/0` (the password goes separately), or `rediss://` on the
    /// TLS port of a [`RedisServer::start_tls`] server.
    pub fn url(&self) -> String {
        match &self.tls {
            Some((port, _)) => format!("rediss://127.0.0.1:{port}/0"),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// A connection (the `redis` crate's, synchronous), bounded.
    fn connection(&self) -> Option<redis::Connection> {
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", self.port);
        let client = redis::Client::open(url).ok()?;
        let conn = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()?;
        conn.set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        Some(conn)
    }

    /// Whether it answers `PING`.
    pub fn answers(&self) -> bool {
        self.connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
            .is_some_and(|pong| pong == "PONG")
    }

    /// Every key, and every string value: what an attacker with the Redis password reads.
    pub fn dump(&self) -> Vec<String> {
        let mut conn = self.connection().expect("a connection to redis");
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        let mut out = keys.clone();
        for key in keys {
            if let Ok(Some(value)) = redis::cmd("GET")
                .arg(&key)
                .query::<Option<String>>(&mut conn)
            {
                out.push(value);
            }
        }
        out
    }

    /// Sets `key` to `value`: what an attacker with the Redis password writes.
    pub fn set(&self, key: &str, value: &str) {
        let mut conn = self.connection().expect("a connection to redis");
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query::<()>(&mut conn)
            .unwrap();
    }

    /// The string value at `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        let mut conn = self.connection().expect("a connection to redis");
        redis::cmd("GET").arg(key).query(&mut conn).unwrap()
    }

    /// Every key that starts with `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut conn = self.connection().expect("a connection to redis");
        redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut conn)
            .unwrap()
    }

    /// The server's process id (to stop it from another task: `kill -9`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The keys that start with `prefix`, once there are `at_least` (bounded).
    pub async fn until_keys(&self, prefix: &str, at_least: usize) -> Vec<String> {
        crate::support::bounded(async {
            loop {
                let keys = self.keys(prefix);
                if keys.len() >= at_least {
                    return keys;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// Stops the server (the tests of an outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
