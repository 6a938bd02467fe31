//! What each path asks for, and which upstream registry a request is for: the client's
//! path read, the registry chosen (containerd's `ns`, a path prefix, or the default),
//! and the upstream path built from the client's.

use crate::api::path::{self, Endpoint, Refused};
use crate::api::Route;
use crate::serve::body::MirrorBody;
use crate::upstream::registry::Registry;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Response, Uri};
use std::sync::Arc;

/// What a client's path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientPath<'a> {
    /// `GET /healthz`: the process is up.
    Healthz,
    /// `GET /readyz`: the default upstream answers.
    Readyz,
    /// `GET /metrics`: Prometheus metrics.
    Metrics,
    /// `/v2/`: the API version check.
    Ping,
    /// `/token/<upstream>`: the token endpoint of clients' own logins.
    Token(&'a str),
    /// `/v2/<rest>`: a manifest, blob, tag list or referrers list.
    Pull(&'a str),
    /// Anything else.
    Unknown,
}

impl ClientPath<'_> {
    /// What `path` asks for.
    pub fn of(path: &str) -> ClientPath<'_> {
        match path {
            "/healthz" => ClientPath::Healthz,
            "/readyz" => ClientPath::Readyz,
            "/metrics" => ClientPath::Metrics,
            "/v2" | "/v2/" => ClientPath::Ping,
            _ => match (path.strip_prefix("/token/"), path.strip_prefix("/v2/")) {
                (Some(name), _) => ClientPath::Token(name),
                (_, Some(rest)) => ClientPath::Pull(rest),
                _ => ClientPath::Unknown,
            },
        }
    }
}

/// A pull, read: the registry it goes to, the upstream URI, and what it asks for.
pub struct Target<'a> {
    /// The registry the pull goes to.
    pub registry: Arc<Registry>,
    /// The upstream URI: the registry's, with the client's path (`library/` added, the
    /// upstream prefix removed, unknown parameters dropped).
    pub uri: Uri,
    /// What is asked of the repository.
    pub endpoint: Endpoint<'a>,
    /// The repository, as the registry names it (`library/alpine` for Docker Hub's
    /// `alpine`).
    pub repository: std::borrow::Cow<'a, str>,
}

/// The upstream registries, the first the default.
pub struct Registries(Vec<Arc<Registry>>);

impl Registries {
    /// `--upstream` values, each a preset or `NAME=URL`: at least one, no name twice.
    pub fn parse(specs: &[String]) -> Result<Registries, String> {
        let registries = specs
            .iter()
            .map(|u| Registry::parse(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        if registries.is_empty() {
            return Err("at least one --upstream is needed".into());
        }
        for (i, registry) in registries.iter().enumerate() {
            if registries[..i].iter().any(|u| u.name == registry.name) {
                return Err(format!("--upstream {:?} is given twice", &*registry.name));
            }
        }
        Ok(Registries(registries))
    }

    /// All of them, the default first.
    pub fn all(&self) -> &[Arc<Registry>] {
        &self.0
    }

    /// The default registry.
    pub fn default_registry(&self) -> &Arc<Registry> {
        &self.0[0]
    }

    /// The registry named `name`.
    pub fn named(&self, name: &str) -> Option<&Arc<Registry>> {
        self.0.iter().find(|u| &*u.name == name)
    }

    /// containerd's `?ns=<registry>`, when it names a configured registry. containerd
    /// form-encodes the value: `ns=registry.local%3A5000`.
    pub fn by_ns(&self, parts: &Parts) -> Option<Arc<Registry>> {
        let ns = parts
            .uri
            .query()?
            .split('&')
            .find_map(|p| p.strip_prefix("ns="))?;
        let ns = percent_encoding::percent_decode_str(ns)
            .decode_utf8()
            .ok()?;
        self.0
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(&ns))
            .cloned()
    }

    /// The registry for a `/v2/<rest>` path: `ns`, else a leading `<upstream-name>/` (a
    /// host-like name), else the default. Returns it, whether the path named it, and the
    /// rest of the path.
    fn select<'a>(&self, parts: &Parts, rest: &'a str) -> (Arc<Registry>, bool, &'a str) {
        if let Some(registry) = self.by_ns(parts) {
            return (registry, false, rest);
        }
        // As in Docker's reference grammar, a first component is a registry host only if
        // it looks like one; `e2e/image` stays a repository even with an upstream "e2e".
        if let Some((first, after)) = rest
            .split_once('/')
            .filter(|(f, _)| f.contains(['.', ':']) || *f == "localhost")
        {
            if let Some(registry) = self.named(first) {
                return (registry.clone(), true, after);
            }
        }
        (self.default_registry().clone(), false, rest)
    }

    /// The pull `/v2/<rest>` asks for, or why it is refused: only the distribution API's
    /// pull paths are forwarded.
    pub fn target<'a>(&self, parts: &Parts, rest: &'a str) -> Result<Target<'a>, Refused> {
        let (registry, prefixed, rest) = self.select(parts, rest);
        let api = path::parse(rest)?;
        let (name, tail) = rest.split_at(api.name.len());
        let library = registry.needs_library(name);
        // Only the parameters the endpoint defines go upstream (not containerd's `ns`, not
        // cache-busting noise): `n` and `last` for tags, `artifactType` for referrers.
        let allowed: &[&str] = match api.endpoint {
            Endpoint::TagsList => &["n", "last"],
            Endpoint::Referrers(_) => &["artifactType"],
            Endpoint::Manifest(_) | Endpoint::Blob(_) => &[],
        };
        let query = parts.uri.query().map(|q| keep_params(q, allowed));
        let path = match parts.uri.path_and_query() {
            // The usual case: the client's path and query are the upstream's, byte for byte.
            Some(same) if !prefixed && !library && query.as_deref() == parts.uri.query() => {
                same.clone()
            }
            _ => {
                let library = if library { "library/" } else { "" };
                let path = match query.filter(|q| !q.is_empty()) {
                    Some(q) => format!("/v2/{library}{name}{tail}?{q}"),
                    None => format!("/v2/{library}{name}{tail}"),
                };
                PathAndQuery::try_from(path).map_err(|_| Refused::NameInvalid)?
            }
        };
        let repository = match library {
            true => format!("library/{name}").into(),
            false => name.into(),
        };
        Ok(Target {
            uri: registry.uri(path),
            registry,
            endpoint: api.endpoint,
            repository,
        })
    }
}

impl Target<'_> {
    /// What the pull is for.
    pub fn route(&self) -> Route {
        self.endpoint.into()
    }
}

/// The answer to a request whose `ns` named a registry says so (`OCI-Namespace`, as the
/// OCI distribution spec's "Registry Proxying" asks of a proxy that honours `ns`).
pub fn with_namespace(
    mut res: Response<MirrorBody>,
    ns: Option<Arc<Registry>>,
) -> Response<MirrorBody> {
    if let Some(value) = ns.and_then(|u| HeaderValue::from_str(&u.name).ok()) {
        res.headers_mut()
            .insert(HeaderName::from_static("oci-namespace"), value);
    }
    res
}

/// The parameters of `query` named in `allowed`, in their order.
fn keep_params(query: &str, allowed: &[&str]) -> String {
    query
        .split('&')
        .filter(|p| allowed.contains(&p.split('=').next().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("&")
}
