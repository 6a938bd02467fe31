//! `WWW-Authenticate` challenges: read (the mirror answers a registry's challenge with its
//! own login, and learns a registry's token service from it) and rewritten (a `Bearer`
//! challenge pointed at the mirror's own `/token/` endpoint).

/// A `WWW-Authenticate` challenge the mirror can answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic`: answered with the credentials themselves.
    Basic,
    /// `Bearer`: a token is asked for at `realm`.
    Bearer {
        /// The token service's URL.
        realm: String,
        /// The `service` to ask the token for, if named.
        service: Option<String>,
        /// The `scope` the challenge names, if any.
        scope: Option<String>,
    },
}

impl Challenge {
    /// A `WWW-Authenticate` value's challenge: `None` for other schemes, or a `Bearer`
    /// without a realm.
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut realm = None;
        let (mut service, mut scope) = (None, None);
        for param in split_params(params) {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "service" => service = Some(value),
                "scope" => scope = Some(value),
                _ => {}
            }
        }
        Some(Challenge::Bearer {
            realm: realm?,
            service,
            scope,
        })
    }

    /// The `realm` of a `Bearer` challenge.
    pub fn bearer_realm(value: &str) -> Option<String> {
        match Challenge::parse(value)? {
            Challenge::Bearer { realm, .. } => Some(realm),
            Challenge::Basic => None,
        }
    }
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

/// A `Bearer` challenge with its realm replaced by `realm`; others unchanged.
pub fn with_realm(challenge: &str, realm: &str) -> String {
    let Some(params) = strip_prefix_ignore_case(challenge.trim_start(), "bearer ") else {
        return challenge.to_owned();
    };
    let params: Vec<String> = split_params(params)
        .into_iter()
        .map(|param| match param.split_once('=') {
            Some((key, _)) if key.trim().eq_ignore_ascii_case("realm") => {
                format!("realm=\"{realm}\"")
            }
            _ => param.trim().to_owned(),
        })
        .collect();
    format!("Bearer {}", params.join(","))
}

/// `s` without `prefix`, compared case-insensitively.
pub fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="e2e""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn bearer_challenges_are_pointed_at_the_mirror() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#;
        assert_eq!(
            Challenge::bearer_realm(hub).as_deref(),
            Some("https://auth.docker.io/token")
        );
        assert_eq!(
            with_realm(hub, "http://127.0.0.1:5000/token/docker.io"),
            r#"Bearer realm="http://127.0.0.1:5000/token/docker.io",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
        );
        assert_eq!(with_realm("Basic realm=\"r\"", "x"), "Basic realm=\"r\"");
        assert_eq!(Challenge::bearer_realm("Basic realm=\"r\""), None);
    }
}
