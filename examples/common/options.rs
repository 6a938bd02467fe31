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
    /// `*.suffix` wildcards, optionally with `:port` (e.g. `minio.internal:9000`).
    #[arg(
        long = "storage-host",
        env = "MIRROR_STORAGE_HOSTS",
        value_delimiter = ','
    )]
    pub storage_hosts: Vec<String>,

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
    Signed,
    Naive,
    Pass,
}

/// See [`Options::log_format`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
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
