//! Upstream registries: presets, parsing, and the token realm each one advertises.

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

    pub fn realm(&self) -> Option<String> {
        self.realm.lock().unwrap().clone()
    }

    /// Rewrites a `Bearer realm="..."` challenge to point at the mirror's token endpoint,
    /// remembering the upstream realm. Other challenges (Basic) are returned unchanged.
    pub fn rewrite_challenge(&self, challenge: &str, token_endpoint: &str) -> String {
        let Some(rest) = strip_prefix_ignore_case(challenge.trim_start(), "bearer ") else {
            return challenge.to_owned();
        };
        let mut out = String::from("Bearer ");
        for (i, param) in split_params(rest).into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match param.split_once('=') {
                Some((key, value)) if key.trim().eq_ignore_ascii_case("realm") => {
                    *self.realm.lock().unwrap() = Some(value.trim().trim_matches('"').to_owned());
                    out.push_str(&format!("realm=\"{token_endpoint}\""));
                }
                _ => out.push_str(param.trim()),
            }
        }
        out
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits `a="x,y",b=z` on commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge_is_rewritten_and_learned() {
        let hub = Upstream::parse("docker.io").unwrap();
        let got = hub.rewrite_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
            "http://127.0.0.1:5000/token/docker.io",
        );
        assert_eq!(
            got,
            r#"Bearer realm="http://127.0.0.1:5000/token/docker.io",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
        );
        assert_eq!(hub.realm().as_deref(), Some("https://auth.docker.io/token"));
        assert_eq!(
            hub.rewrite_challenge("Basic realm=\"r\"", "x"),
            "Basic realm=\"r\""
        );
        assert_eq!(hub.repository("alpine"), "library/alpine");
        assert_eq!(hub.repository("user/app"), "user/app");
    }
}
