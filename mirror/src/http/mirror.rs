//! One worker's mirror, and the way every request takes through it: [`Mirror::handle`].

use super::answer::Answers;
use super::blob_pull::BlobPull;
use super::health::{self, Readiness};
use super::manifest_pull::ManifestPull;
use super::manifest_store::StoredManifests;
use super::paths::{with_namespace, ClientPath, Registries};
use super::pull::Pull;
use crate::auth::credentials::{self, Login};
use crate::auth::htpasswd::{Check, Users};
use crate::auth::issued::IssuedTokens;
use crate::auth::logins::Logins;
use crate::auth::token_endpoint::{ChallengeRewriter, TokenEndpoint};
use crate::auth::tokens::Tokens;
use crate::cache::manifests::ManifestCache;
use crate::cache::redirects::redirect_cache;
use crate::cache::store::blobs::BlobStore;
use crate::metrics::Metrics;
use crate::options::{Options, RedirectMode};
use crate::serve::body::MirrorBody;
use crate::serve::errors::registry_error;
use crate::serve::server::ClientAddr;
use crate::upstream::client::{self, UpstreamClient};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tower_signed_redirect::RedirectCache;

/// What every worker's mirror shares, each part handed to the room that uses it: the
/// caches, the logins' state and the metrics.
#[derive(Clone)]
pub struct Shared {
    /// Where storage redirects led (`--redirect-cache`), if on.
    pub redirects: Option<RedirectCache>,
    /// The manifest cache (`--manifest-cache`), if on.
    pub manifests: Option<Arc<ManifestCache>>,
    /// The blob store (`--blob-store`), if on.
    pub blobs: Option<Arc<BlobStore>>,
    /// The tokens the mirror logged in for with its own credentials.
    pub tokens: Arc<Tokens>,
    /// The tokens `/token/` handed out to clients: whom to, until when.
    pub issued: Arc<IssuedTokens>,
    /// The clients' logins to the mirror, with `--htpasswd`.
    pub users: Option<Arc<Users>>,
    /// The Prometheus metrics served at `/metrics`.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// [`Shared::open`], outside any runtime (the binary, before its workers start): on a
    /// runtime of its own, for the blob store's listing. Panics inside a runtime.
    pub fn new(options: &Options) -> Result<Shared, String> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(Shared::open(options))
    }

    /// The shared state `options` ask for: the `--htpasswd` file read, the blob store
    /// opened (what it holds read back from it), the caches empty.
    pub async fn open(options: &Options) -> Result<Shared, String> {
        let users = match &options.htpasswd {
            Some(path) => Some(Arc::new(Users::load(path)?)),
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        Ok(Shared {
            blobs: BlobStore::open(options, metrics.clone()).await?,
            redirects: redirect_cache(options),
            manifests: (options.manifest_cache > 0)
                .then(|| Arc::new(ManifestCache::new(options.manifest_cache))),
            tokens: Arc::default(),
            issued: Arc::default(),
            users,
            metrics,
        })
    }
}

/// One worker's mirror: its upstream registries, its client (and connection pools), and
/// what it shares with the other workers. [`Mirror::handle`] answers a request.
pub struct Mirror {
    /// The upstream registries (`--upstream`), and which one a path goes to.
    registries: Registries,
    /// The clients' logins to the mirror (`--htpasswd`), if it asks for them.
    users: Option<Arc<Users>>,
    /// Pulls: through the caches and the blob store, to the upstream.
    pull: Pull,
    /// `/token/<upstream>`: tokens for clients' own logins.
    token_endpoint: TokenEndpoint,
    /// `/readyz`: whether the default upstream answers.
    readiness: Readiness,
    /// The Prometheus metrics (`/metrics`).
    metrics: Arc<Metrics>,
}

/// `--redirects naive` (the control) replays requests, credentials included, to wherever a
/// redirect points: never with the mirror's own login.
fn check_naive(options: &Options, by_registry: &HashMap<Arc<str>, Login>) -> Result<(), String> {
    let own_login = by_registry
        .values()
        .any(|l| !matches!(l, Login::PassThrough));
    if options.redirects == RedirectMode::Naive && own_login {
        return Err(
            "--redirects naive replays credentials to storage: not with the mirror's own login"
                .into(),
        );
    }
    Ok(())
}

impl Mirror {
    /// A worker's mirror, sharing `shared` with the others.
    pub fn new(options: &Options, shared: Shared) -> Result<Mirror, String> {
        let registries = Registries::parse(&options.upstreams)?;
        check_public_url(options.public_url.as_deref())?;
        let by_registry = credentials::logins(options, registries.all())?;
        check_naive(options, &by_registry)?;
        let metrics = shared.metrics;
        let client = UpstreamClient::new(options, shared.redirects.clone(), metrics.clone())?;
        let logins = Logins::new(
            by_registry,
            shared.tokens,
            client.clone(),
            client::token_client(options)?,
        );
        let challenges =
            ChallengeRewriter::new(options.public_url.as_deref(), options.tls_cert.is_some());
        let answers = Answers::new(
            metrics.clone(),
            shared.redirects.clone(),
            challenges,
            options.verify_digests,
            options.idle_timeout,
        );
        let stored = || shared.blobs.clone().map(StoredManifests::new);
        let wait = options.connect_timeout + options.response_timeout;
        let manifests = shared.manifests.map(|cache| {
            ManifestPull::new(
                cache,
                stored(),
                (options.serve_stale, wait),
                metrics.clone(),
            )
        });
        let blobs = shared
            .blobs
            .map(|store| BlobPull::new(store, metrics.clone(), wait));
        let pull = Pull::new(
            logins,
            shared.issued.clone(),
            answers,
            (manifests, blobs),
            shared.redirects.is_some(),
            options.verify_digests,
        );
        Ok(Mirror {
            readiness: Readiness::new(client.clone(), registries.default_registry().api_root()),
            token_endpoint: TokenEndpoint::new(shared.issued, client, metrics.clone()),
            registries,
            users: shared.users,
            pull,
            metrics,
        })
    }

    /// Answers one request: the mirror's only entry point, for every server. Its way:
    ///
    /// 1. **parse**: what the path asks for ([`ClientPath`]);
    /// 2. **route**: `/healthz`, `/readyz` and `/metrics` need no login;
    /// 3. **who is asking**: one `Authorization` at most, and with `--htpasswd` a login to
    ///    the mirror;
    /// 4. **caches**: `/token/<upstream>` goes to its token service; `/v2/` and a pull
    ///    (`/v2/<name>/...`) go through [`Pull`], which works out the identity the caches
    ///    key by and asks them first;
    /// 5. **upstream**: then the registry, with its login;
    /// 6. **response**: the upstream's answer streams back, made the client's.
    pub async fn handle(&self, parts: &Parts) -> Response<MirrorBody> {
        let path = ClientPath::of(parts.uri.path());
        match path {
            ClientPath::Healthz => return health::healthz(),
            ClientPath::Readyz => return self.readiness.answer().await,
            ClientPath::Metrics => return health::metrics(&self.metrics),
            _ => {}
        }
        if let Some(refused) = self.check_login(parts).await {
            return refused;
        }
        let ns = self.registries.by_ns(parts);
        match path {
            ClientPath::Ping => {
                let registry = ns
                    .clone()
                    .unwrap_or_else(|| self.registries.default_registry().clone());
                with_namespace(self.pull.ping(&registry, parts).await, ns)
            }
            ClientPath::Token(name) => match self.registries.named(name) {
                Some(registry) => {
                    let login = self.pull.logins().login(registry);
                    self.token_endpoint.answer(registry, login, parts).await
                }
                None => registry_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such upstream"),
            },
            ClientPath::Pull(rest) => {
                with_namespace(self.pull.pull(&self.registries, rest, parts).await, ns)
            }
            _ => registry_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "not a registry API path",
            ),
        }
    }

    /// Who is asking: a refusal for a request with more than one `Authorization`, or, with
    /// `--htpasswd`, without a login to the mirror; `None` to go on.
    async fn check_login(&self, parts: &Parts) -> Option<Response<MirrorBody>> {
        if parts
            .headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            // Which one would the upstream read? Not a question to leave open.
            return Some(registry_error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "more than one Authorization header",
            ));
        }
        let users = self.users.as_ref()?;
        let client = parts
            .extensions
            .get::<ClientAddr>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.0.ip());
        let (mut res, name, value) = match users.check(&parts.headers, client).await {
            Check::Accepted => return None,
            Check::Refused => (
                registry_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "log in to the mirror",
                ),
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"registry mirror\""),
            ),
            Check::Throttled(wait) => (
                registry_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOOMANYREQUESTS",
                    "too many failed logins: try again later",
                ),
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64),
            ),
        };
        res.headers_mut().insert(name, value);
        Some(res)
    }
}

/// `--public-url`, if given, must be `http(s)://host[:port]`.
fn check_public_url(url: Option<&str>) -> Result<(), String> {
    let Some(url) = url else {
        return Ok(());
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("--public-url {url:?}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(format!("--public-url {url:?}: use http(s)://host[:port]"));
    }
    Ok(())
}
