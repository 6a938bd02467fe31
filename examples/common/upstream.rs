//! Upstream registries: presets, parsing, `library/` names, and the token realm each one
//! advertises.

use http::Uri;
use std::sync::Mutex;

/// One upstream registry.
#[derive(Debug)]
pub struct Upstream {
    /// How clients name it: `docker.io`, `ghcr.io`, or a configured name.
    pub name: String,
    /// `scheme://authority` of its API.
    pub base: Uri,
    /// Docker Hub: one-segment names are `library/<name>`.
    pub library: bool,
    /// The token service URL from its last `WWW-Authenticate: Bearer realm=...`.
    realm: Mutex<Option<String>>,
}

const PRESETS: &[(&str, &str)] = &[
    ("docker.io", "https://registry-1.docker.io"),
    ("ghcr.io", "https://ghcr.io"),
    ("quay.io", "https://quay.io"),
    ("gcr.io", "https://gcr.io"),
    ("registry.k8s.io", "https://registry.k8s.io"),
];

impl Upstream {
    /// `docker.io` (a preset) or `name=http://host:port`.
    pub fn parse(spec: &str) -> Result<Upstream, String> {
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
        Ok(Upstream {
            name: name.to_owned(),
            base,
            library: name == "docker.io",
            realm: Mutex::new(None),
        })
    }

    /// `https://registry-1.docker.io/v2/<rest>` (with `?query` when given).
    pub fn url(&self, rest: &str, query: Option<&str>) -> String {
        let scheme = self.base.scheme_str().unwrap_or("https");
        let authority = self.base.authority().map_or("", |a| a.as_str());
        match query {
            Some(q) => format!("{scheme}://{authority}/v2/{rest}?{q}"),
            None => format!("{scheme}://{authority}/v2/{rest}"),
        }
    }

    /// The repository name upstream: `alpine` → `library/alpine` on Docker Hub.
    pub fn repository(&self, name: &str) -> String {
        if self.library && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_owned()
        }
    }

    /// The token service URL this upstream's challenges name, once one was seen.
    pub fn realm(&self) -> Option<String> {
        self.realm.lock().unwrap().clone()
    }

    /// Remembers the token service URL from a challenge.
    pub fn set_realm(&self, realm: &str) {
        *self.realm.lock().unwrap() = Some(realm.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_is_a_preset_with_library_names() {
        let hub = Upstream::parse("docker.io").unwrap();
        assert_eq!(hub.url("", None), "https://registry-1.docker.io/v2/");
        assert_eq!(hub.repository("alpine"), "library/alpine");
        assert_eq!(hub.repository("user/app"), "user/app");
        assert!(Upstream::parse("nope").is_err());
        assert!(Upstream::parse("x=ftp://h").is_err());
    }
}
