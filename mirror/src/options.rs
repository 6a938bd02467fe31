//! Command-line flags and environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A Docker Hub (and friends) pull-through mirror that follows blob redirects to pre-signed
/// storage URLs server-side, with `tower-signed-redirect`.
#[derive(clap::Parser, Clone, Debug)]
#[command(version, about)]
pub struct Options {
    /// Address to listen on.
    #[arg(long, env = "MIRROR_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,

    /// Upstream registries: a preset (docker.io, ghcr.io, quay.io, gcr.io, registry.k8s.io)
    /// or NAME=URL (e.g. local=http://127.0.0.1:5001). The first is the default; the others
    /// are selected by a path prefix (/v2/ghcr.io/owner/image/...) or containerd's `ns` query.
    #[arg(
        long = "upstream",
        env = "MIRROR_UPSTREAMS",
        value_delimiter = ',',
        default_value = "docker.io"
    )]
    pub upstreams: Vec<String>,

    /// Extra storage hosts to follow redirects to, besides the well-known ones: exact hosts or
    /// `*.suffix` wildcards, optionally with `:port` (e.g. `minio.internal:9000`). Hosts
    /// listed here may resolve to private addresses.
    #[arg(
        long = "storage-host",
        env = "MIRROR_STORAGE_HOSTS",
        value_delimiter = ','
    )]
    pub storage_hosts: Vec<String>,

    /// Also follow redirects to any host when the URL carries a recognised signature (S3,
    /// GCS, Azure, CloudFront, Cloudflare), for storage hosts that change. Such a hop never
    /// connects to a loopback, private, link-local, CGNAT, multicast or unspecified address
    /// (checked after DNS) unless its host is a `--storage-host`.
    #[arg(long, env = "MIRROR_FOLLOW_SIGNED_URLS")]
    pub follow_signed_urls: bool,

    /// Follow a redirect from an https upstream to storage on plain http (private storage,
    /// MinIO-style). Refused by default.
    #[arg(long, env = "MIRROR_ALLOW_HTTP_STORAGE")]
    pub allow_http_storage: bool,

    /// Resolve HOST to IP instead of asking DNS (repeat or comma-separate), as curl's
    /// `--resolve`: `storage.internal=10.0.0.5`.
    #[arg(long = "resolve", env = "MIRROR_RESOLVE", value_delimiter = ',')]
    pub resolve: Vec<String>,

    /// Verify `blobs/sha256:<hex>` and `blobs/sha512:<hex>` downloads while they stream: a
    /// body whose digest does not match ends with an error instead of a clean end, so a
    /// client never stores it; blob digests of other algorithms are refused.
    #[arg(long, env = "MIRROR_VERIFY_DIGESTS")]
    pub verify_digests: bool,

    /// How many storage URLs to remember, so that repeated pulls skip the registry round
    /// trip while the URL is valid (0: off).
    #[arg(long, env = "MIRROR_REDIRECT_CACHE", default_value_t = 10_000)]
    pub redirect_cache: usize,

    /// Stop using a cached storage URL this long before its signature expires.
    #[arg(long, env = "MIRROR_REDIRECT_CACHE_MARGIN", default_value = "60s", value_parser = parse_duration)]
    pub redirect_cache_margin: Duration,

    /// The longest a storage URL is cached, whatever its signature says; URLs whose expiry
    /// cannot be read (Docker Hub's `production.cloudflare.docker.com` links) are cached this
    /// long, and refreshed from the registry if storage refuses them first.
    #[arg(long, env = "MIRROR_REDIRECT_CACHE_MAX_AGE", default_value = "10m", value_parser = parse_duration)]
    pub redirect_cache_max_age: Duration,

    /// Bytes of manifests to keep in memory (`0`: no manifest cache): by digest they are
    /// served from it, by tag after an upstream `HEAD` says they are unchanged.
    #[arg(long, env = "MIRROR_MANIFEST_CACHE", default_value_t = 64 * 1024 * 1024)]
    pub manifest_cache: usize,

    /// Serve a cached tag's manifest this long after it was fetched when the upstream
    /// answers `429` or `5xx`, or cannot be reached (`0`: never).
    #[arg(long, env = "MIRROR_SERVE_STALE", default_value = "24h", value_parser = parse_duration)]
    pub serve_stale: Duration,

    /// Where the mirror keeps its state: the blob store (unless `--blob-store` says
    /// otherwise) and the downloads in flight. Default: `$STATE_DIRECTORY` (systemd's
    /// `StateDirectory=`), else `$XDG_DATA_HOME/registry-mirror`, else
    /// `~/.local/share/registry-mirror`. Created at start.
    #[arg(long, env = "MIRROR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Where blobs and manifests are kept, by digest: a directory (default:
    /// `<data-dir>/blobs`), `s3://bucket/prefix` (any S3-compatible store: with `--s3-*`),
    /// or `none` (stream every blob from upstream).
    #[arg(long, env = "MIRROR_BLOB_STORE")]
    pub blob_store: Option<String>,

    /// The most the blob store holds: past it, the least recently used blobs go until it
    /// holds 90% of it (`20GiB`, `500MiB`, or bytes).
    #[arg(long, env = "MIRROR_BLOB_STORE_MAX_SIZE", default_value = "20GiB", value_parser = parse_size)]
    pub blob_store_max_size: u64,

    /// Bytes of the blob store's small blobs (1 MiB or less: configs, small layers) also
    /// kept in memory, answered without reading their file (`0`: none).
    #[arg(long, env = "MIRROR_BLOB_STORE_MEMORY", default_value = "64MiB", value_parser = parse_size)]
    pub blob_store_memory: u64,

    /// How long a shared identity (the mirror's own login, or clients without one) reads
    /// what the blob store holds after the registry last said it serves it; past that, a
    /// `HEAD` (not followed to storage, free against Docker Hub's pull limit) asks again.
    /// While the registry fails, what it served within `--serve-stale` is served (`0`: ask
    /// every time).
    #[arg(long, env = "MIRROR_BLOB_STORE_RECHECK", default_value = "1h", value_parser = parse_duration)]
    pub blob_store_recheck: Duration,

    /// The S3 endpoint of an `s3://` blob store (`https://<account>.r2.cloudflarestorage.com`,
    /// `http://minio.internal:9000`); default: AWS S3 in `--s3-region`.
    #[arg(long, env = "MIRROR_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// The region of an `s3://` blob store (`auto` for R2).
    #[arg(long, env = "MIRROR_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// The access key id of an `s3://` blob store (else `AWS_ACCESS_KEY_ID`).
    #[arg(long, env = "MIRROR_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,

    /// The secret access key of an `s3://` blob store (else `AWS_SECRET_ACCESS_KEY`); keep
    /// it in the environment, out of `ps`.
    #[arg(long, env = "MIRROR_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// Address an `s3://` blob store's bucket as `<bucket>.<endpoint>` (AWS's
    /// virtual-hosted style) instead of `<endpoint>/<bucket>`.
    #[arg(long, env = "MIRROR_S3_VIRTUAL_HOSTED_STYLE")]
    pub s3_virtual_hosted_style: bool,

    /// Answer a blob an `s3://` store holds with a `307` to a URL of the store, pre-signed
    /// for a `GET` that long (`5m`), instead of streaming it: clients that reach the bucket
    /// fetch from it directly. Off by default.
    #[arg(long, env = "MIRROR_BLOB_STORE_REDIRECT", value_parser = parse_duration)]
    pub blob_store_redirect: Option<Duration>,

    /// State the replicas of a fleet share: `redis://host:6379/0` or `rediss://` (Redis or
    /// Valkey): what tags named, clients' read grants, and leases on the downloads in flight.
    /// Without it, each replica knows only what it did itself.
    #[arg(long, env = "MIRROR_SHARED_STATE")]
    pub shared_state: Option<String>,

    /// The password of `--shared-state` (rather than in its URL, out of `ps`).
    #[arg(long, env = "MIRROR_SHARED_STATE_PASSWORD", hide_env_values = true)]
    pub shared_state_password: Option<String>,

    /// The key the replicas seal what they share and hash identities with (HMAC-SHA256),
    /// at least 16 bytes, the same on every replica; required with `--shared-state`, and not
    /// the Redis password (whoever can write to Redis must not know it).
    #[arg(long, env = "MIRROR_SHARED_STATE_KEY", hide_env_values = true)]
    pub shared_state_key: Option<String>,

    /// The mirror's own credentials for upstreams: a Docker `config.json` (`auths`, keyed by
    /// registry host, with `auth` = base64 `user:password`, or `identitytoken`). With them
    /// the mirror logs in itself and clients need no login.
    #[arg(long, env = "MIRROR_UPSTREAM_CREDENTIALS")]
    pub upstream_credentials: Option<PathBuf>,

    /// User name for the default upstream (with `--upstream-password`).
    #[arg(long, env = "MIRROR_UPSTREAM_USER", requires = "upstream_password")]
    pub upstream_user: Option<String>,

    /// Password or access token for the default upstream.
    #[arg(
        long,
        env = "MIRROR_UPSTREAM_PASSWORD",
        requires = "upstream_user",
        hide_env_values = true
    )]
    pub upstream_password: Option<String>,

    /// Require clients to log in to the mirror: an htpasswd file of bcrypt entries
    /// (`htpasswd -B`). Needed when the mirror has credentials of its own, or it serves what
    /// its account can read to anyone who reaches it.
    #[arg(long, env = "MIRROR_HTPASSWD")]
    pub htpasswd: Option<PathBuf>,

    /// The URL clients reach the mirror at (e.g. `https://mirror.example.com` behind a TLS
    /// front), used in the auth challenges it sends. Default: `http(s)://<Host header>`.
    #[arg(long, env = "MIRROR_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Serve HTTPS with this PEM certificate chain (with `--tls-key`).
    #[arg(long, env = "MIRROR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "MIRROR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How blob redirects are handled: `signed` (this crate's layer), `naive` (follow by
    /// replaying the request, as a plain redirect follower does: breaks on S3 and R2), or
    /// `pass` (return the redirect to the client).
    #[arg(long, env = "MIRROR_REDIRECTS", default_value = "signed")]
    pub redirects: RedirectMode,

    /// Time allowed to connect to an upstream or storage host.
    #[arg(long, env = "MIRROR_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time allowed for an upstream or storage host to answer with response headers.
    #[arg(long, env = "MIRROR_RESPONSE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub response_timeout: Duration,

    /// Longest pause allowed between two chunks of a response body. There is no total
    /// timeout: a multi-GB layer takes as long as it takes.
    #[arg(long, env = "MIRROR_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long an idle upstream or storage connection is kept for reuse.
    #[arg(long, env = "MIRROR_POOL_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub pool_idle_timeout: Duration,

    /// Extra PEM root certificates to trust for upstreams (private registries).
    #[arg(long, env = "MIRROR_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// Worker threads, each with its own runtime and connection pool (default: one per core).
    #[arg(long, env = "MIRROR_WORKERS")]
    pub workers: Option<usize>,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(
        long,
        env = "MIRROR_LOG",
        default_value = "info,tower_signed_redirect=debug"
    )]
    pub log: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = "MIRROR_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// See [`Options::redirects`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectMode {
    /// Followed with this crate's layer.
    Signed,
    /// Followed by replaying the request.
    Naive,
    /// Returned to the client.
    Pass,
}

/// See [`Options::log_format`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `250ms`, `10s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "invalid duration unit in {s:?} (use ms, s, m or h)"
        )),
    }
}

/// `20GiB`, `500MiB`, `64KiB`, `1GB` (powers of 1000), or bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let unit: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?} (use KiB, MiB, GiB or TiB)"
            ))
        }
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

impl Options {
    /// `--data-dir`, or its default: `$STATE_DIRECTORY`, `$XDG_DATA_HOME/registry-mirror`,
    /// `~/.local/share/registry-mirror`, in that order (`./registry-mirror-data` without a
    /// home directory).
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        let env = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(dir) = env("STATE_DIRECTORY") {
            // systemd may list several, separated by colons: the first is ours.
            let first = dir
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            return PathBuf::from(first);
        }
        if let Some(dir) = env("XDG_DATA_HOME") {
            return dir.join("registry-mirror");
        }
        match env("HOME") {
            Some(home) => home.join(".local/share/registry-mirror"),
            None => PathBuf::from("registry-mirror-data"),
        }
    }
}

/// Installs the tracing subscriber the options ask for.
pub fn init_logging(options: &Options) {
    let filter = tracing_subscriber::EnvFilter::try_new(&options.log).unwrap_or_else(|e| {
        eprintln!(
            "invalid --log filter {:?}: {e}; using \"info\"",
            options.log
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match options.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
