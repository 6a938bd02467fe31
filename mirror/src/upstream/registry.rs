//! Upstream registries: presets, parsing, `library/` names, and the token realm each one
//! advertises.

use http::uri::PathAndQuery;
use http::Uri;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// One upstream registry.
#[derive(Debug)]
pub struct Registry {
    /// How clients name it: `docker.io`, `ghcr.io`, or a configured name.
    pub name: Arc<str>,
    /// `scheme://authority` of its API.
    pub base: Uri,
    /// Docker Hub: one-segment names are `library/<name>`.
    pub library: bool,
    /// The token service URL from its last `WWW-Authenticate: Bearer realm=...`.
    realm: Mutex<Option<String>>,
    /// The token services credentials have gone to (`scheme://host`), each logged once.
    announced: Mutex<HashSet<String>>,
}

const PRESETS: &[(&str, &str)] = &[
    ("docker.io", "https://registry-1.docker.io"),
    ("ghcr.io", "https://ghcr.io"),
    ("quay.io", "https://quay.io"),
    ("gcr.io", "https://gcr.io"),
    ("registry.k8s.io", "https://registry.k8s.io"),
];

impl Registry {
    /// `docker.io` (a preset) or `name=http://host:port`.
    pub fn parse(spec: &str) -> Result<Registry, String> {
        let (name, url) = match spec.split_once('=') {
            Some((name, url)) => (name.trim(), url.trim()),
            None => {
                let preset = PRESETS.iter().find(|(n, _)| *n == spec.trim());
                let (name, url) = preset.ok_or_else(|| {
                    let names: Vec<_> = PRESETS.iter().map(|(n, _)| *n).collect();
                    format!("unknown upstream {spec:?}: use one of {names:?} or NAME=URL")
                })?;
                (*name, *url)
            }
        };
        let base: Uri = url
            .parse()
            .map_err(|e| format!("invalid upstream URL {url:?}: {e}"))?;
        if !matches!(base.scheme_str(), Some("http" | "https")) || base.authority().is_none() {
            return Err(format!(
                "upstream URL {url:?} must be http:// or https:// with a host"
            ));
        }
        if name.is_empty() || name.contains('/') {
            return Err(format!("invalid upstream name {name:?}"));
        }
        Ok(Registry {
            name: name.into(),
            base,
            library: name == "docker.io",
            realm: Mutex::new(None),
            announced: Mutex::default(),
        })
    }

    /// `https://registry-1.docker.io` + `path_and_query`. Only the scheme and host are
    /// this upstream's: both are shared, not copied.
    pub fn uri(&self, path_and_query: PathAndQuery) -> Uri {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).expect("an absolute base and a path make a URI")
    }

    /// The upstream's `/v2/`.
    pub fn api_root(&self) -> Uri {
        self.uri(PathAndQuery::from_static("/v2/"))
    }

    /// Whether `name` is a Docker Hub one-segment name, `library/<name>` upstream.
    pub fn needs_library(&self, name: &str) -> bool {
        self.library && !name.contains('/')
    }

    /// The hosts (`host[:port]`) its credentials may be listed under in a Docker config:
    /// its URL's authority (the name is only how clients call it: `--upstream
    /// ghcr.io=https://elsewhere` must not get ghcr.io's credentials), and Docker Hub's
    /// aliases when it is Docker Hub.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts = Vec::new();
        if let Some(authority) = self.base.authority() {
            hosts.push(authority.as_str().to_ascii_lowercase());
        }
        if hosts.iter().any(|h| h == "registry-1.docker.io") {
            // Docker Hub is keyed `https://index.docker.io/v1/` by `docker login`.
            hosts.extend(["index.docker.io", "docker.io"].map(String::from));
        }
        hosts
    }

    /// The token service URL this upstream's challenges name, once one was seen.
    pub fn realm(&self) -> Option<String> {
        self.realm.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Remembers the token service URL from a challenge **of this upstream's own** (never
    /// from storage's answers), if credentials may go there.
    pub fn set_realm(&self, realm: &str) {
        match self.check_realm(realm) {
            Ok(_) => *self.realm.lock().unwrap_or_else(|e| e.into_inner()) = Some(realm.to_owned()),
            Err(e) => tracing::warn!(upstream = %self.name, error = %e, "token service ignored"),
        }
    }

    /// Whether credentials for this upstream may go to the token service `realm` that its
    /// challenge named: an absolute http(s) URL, https when the upstream is https.
    pub fn check_realm(&self, realm: &str) -> Result<Uri, String> {
        let uri: Uri = realm.parse().map_err(|_| {
            format!(
                "upstream {} names a token service that is not a URL",
                self.name
            )
        })?;
        let host = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        match (self.base.scheme_str(), uri.scheme_str(), host.is_empty()) {
            (_, Some("https"), false) | (Some("http"), Some("http"), false) => Ok(uri),
            (Some("https"), Some("http"), false) => Err(format!(
                "upstream {} is https but names a plain-http token service (http://{host}): \
                 no credentials are sent there",
                self.name
            )),
            _ => Err(format!(
                "upstream {} names a token service that is not an http(s) URL",
                self.name
            )),
        }
    }

    /// Logs the token service's host the first time credentials go there.
    pub fn announce_realm(&self, realm: &Uri) {
        let place = format!(
            "{}://{}",
            realm.scheme_str().unwrap_or_default(),
            realm.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        if announced.len() < 64 && announced.insert(place.clone()) {
            tracing::info!(upstream = %self.name, token_service = %place, "sending credentials to the token service the upstream named");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_is_a_preset_with_library_names() {
        let hub = Registry::parse("docker.io").unwrap();
        assert_eq!(hub.api_root(), "https://registry-1.docker.io/v2/");
        assert!(hub.needs_library("alpine"));
        assert!(!hub.needs_library("user/app"));
        assert!(Registry::parse("nope").is_err());
        assert!(Registry::parse("x=ftp://h").is_err());
    }

    #[test]
    fn credentials_go_to_an_https_realm_of_an_https_upstream() {
        let hub = Registry::parse("docker.io").unwrap();
        assert!(hub.check_realm("https://auth.docker.io/token").is_ok());
        assert!(hub.check_realm("http://auth.docker.io/token").is_err());
        assert!(hub.check_realm("/token").is_err());
        assert!(hub.check_realm("ftp://auth/token").is_err());
        let local = Registry::parse("local=http://127.0.0.1:5000").unwrap();
        assert!(local.check_realm("http://127.0.0.1:5001/token").is_ok());
        assert!(local.check_realm("https://auth.example/token").is_ok());
        local.set_realm("ftp://x/");
        assert_eq!(local.realm(), None);
    }
}
