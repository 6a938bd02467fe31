use super::{
    effective_port, ip_literal, is_strict_subdomain, normalized_host, IpLiteral, StorageMatcher,
};
use http::Uri;
use std::fmt;
use std::net::IpAddr;

/// Exact hosts and `*.suffix` wildcards, optionally with a port.
///
/// Pattern syntax, one host per pattern:
///
/// | pattern | matches |
/// |---|---|
/// | `production.cloudflare.docker.com` | that host, on any port |
/// | `*.r2.cloudflarestorage.com` | any subdomain, at any depth; not the bare suffix |
/// | `minio.internal:9000` | that host on port 9000 only (a URI without a port uses its scheme's default) |
/// | `127.0.0.1`, `[::1]:9000` | that IP literal: IP literals match only an exact pattern |
///
/// Hosts compare case-insensitively and ignore one trailing dot. Matching is on the URI's
/// parsed host, so userinfo (`s3.amazonaws.com@evil.net`) and look-alike hosts
/// (`amazonaws.com.evil.net`, `evilamazonaws.com`) never match. Internationalised names
/// must be given in their ASCII (`xn--`) form.
///
/// ```
/// use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher};
///
/// let m = HostPatterns::new(["*.r2.cloudflarestorage.com", "minio.internal:9000"]).unwrap();
/// assert!(m.matches(&"https://a.b.R2.cloudflarestorage.com./x".parse().unwrap()));
/// assert!(!m.matches(&"https://r2.cloudflarestorage.com/x".parse().unwrap()));
/// assert!(!m.matches(&"http://minio.internal/x".parse().unwrap()));
/// assert!(HostPatterns::new(["*.example.*"]).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HostPatterns {
    patterns: Vec<HostPattern>,
}

#[derive(Clone, PartialEq, Eq)]
struct HostPattern {
    host: PatternHost,
    port: Option<u16>,
}

#[derive(Clone, PartialEq, Eq)]
enum PatternHost {
    Exact(Box<str>),
    Subdomains(Box<str>),
    Ip(IpAddr),
}

impl HostPatterns {
    /// Parses every pattern; fails on the first invalid one.
    pub fn new<I>(patterns: I) -> Result<Self, InvalidHostPattern>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .map(|p| HostPattern::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(HostPatterns { patterns })
    }

    /// Adds one more pattern.
    pub fn with(mut self, pattern: &str) -> Result<Self, InvalidHostPattern> {
        self.patterns.push(HostPattern::parse(pattern)?);
        Ok(self)
    }

    /// `true` when there are no patterns (nothing matches).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

impl StorageMatcher for HostPatterns {
    fn matches(&self, uri: &Uri) -> bool {
        let Some(host) = normalized_host(uri) else {
            return false;
        };
        let ip = match ip_literal(host) {
            IpLiteral::Ip(ip) => Some(ip),
            IpLiteral::Invalid => return false,
            IpLiteral::Name => None,
        };
        let port = effective_port(uri);
        self.patterns.iter().any(|p| {
            let host_ok = match (&p.host, ip) {
                (PatternHost::Ip(want), Some(got)) => *want == got,
                (PatternHost::Exact(want), None) => host.eq_ignore_ascii_case(want),
                (PatternHost::Subdomains(suffix), None) => is_strict_subdomain(host, suffix),
                _ => false,
            };
            host_ok && p.port.is_none_or(|want| port == Some(want))
        })
    }
}

impl HostPattern {
    fn parse(raw: &str) -> Result<Self, InvalidHostPattern> {
        let err = |reason| InvalidHostPattern {
            pattern: raw.into(),
            reason,
        };
        if !raw.is_ascii() {
            return Err(err(
                "not ASCII: give internationalised names in their xn-- form",
            ));
        }
        let (host, port) = split_port(raw).ok_or_else(|| err("invalid port"))?;
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            PatternHost::Ip(v6.parse().map_err(|_| err("invalid IPv6 literal"))?)
        } else if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
            PatternHost::Ip(v4.into())
        } else if let Some(suffix) = host.strip_prefix("*.") {
            check_hostname(suffix).map_err(err)?;
            PatternHost::Subdomains(suffix.into())
        } else {
            check_hostname(&host).map_err(err)?;
            PatternHost::Exact(host.into())
        };
        Ok(HostPattern { host, port })
    }
}

/// Splits `host[:port]` / `[v6][:port]`; `None` when a port is present but invalid.
fn split_port(raw: &str) -> Option<(&str, Option<u16>)> {
    let colon = if raw.starts_with('[') {
        raw.find(']').map(|end| end + 1).filter(|&i| i < raw.len())
    } else {
        raw.rfind(':')
    };
    match colon {
        None => Some((raw, None)),
        Some(i) if raw.as_bytes()[i] == b':' => Some((&raw[..i], Some(raw[i + 1..].parse().ok()?))),
        Some(_) => None,
    }
}

fn check_hostname(host: &str) -> Result<(), &'static str> {
    if host.is_empty() || host.len() > 253 {
        return Err("empty or too long host");
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("empty or too long label");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' are allowed in a label; '*' only as a leading '*.'");
        }
    }
    if host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("numeric last label: write IP literals in full, without a wildcard");
    }
    Ok(())
}

impl fmt::Debug for HostPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.patterns.iter()).finish()
    }
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            PatternHost::Exact(h) => f.write_str(h)?,
            PatternHost::Subdomains(s) => write!(f, "*.{s}")?,
            PatternHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            PatternHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// A host pattern that [`HostPatterns::new`] could not parse.
///
/// ```
/// use tower_signed_redirect::matcher::HostPatterns;
///
/// let err = HostPatterns::new(["*.s3.*.amazonaws.com"]).unwrap_err();
/// assert!(err.to_string().starts_with("invalid storage host pattern \"*.s3.*.amazonaws.com\""));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidHostPattern {
    pattern: String,
    reason: &'static str,
}

impl fmt::Display for InvalidHostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid storage host pattern {:?}: {}",
            self.pattern, self.reason
        )
    }
}

impl std::error::Error for InvalidHostPattern {}
