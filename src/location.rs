//! Resolving a `Location` header to the URI of the next hop.

use http::{HeaderValue, Uri};

/// Resolves a `Location` value against the URI of the request that got the redirect.
///
/// An absolute `Location` becomes a [`Uri`] from its exact bytes: nothing is decoded,
/// re-encoded or normalised, because storage signatures cover the raw string. A relative
/// one is resolved as RFC 3986 §5.2 says (which removes dot segments from the reference's
/// path), keeping every byte of the reference and of the base it uses. The fragment, which
/// is never sent, is dropped.
///
/// `None` when the value is not a URI reference, or is relative and `base` has no scheme and
/// authority to resolve it against.
pub(crate) fn resolve(base: &Uri, location: &HeaderValue) -> Option<Uri> {
    let bytes = location.as_bytes();
    if has_scheme(bytes) {
        // The URI parser checks every byte itself (no UTF-8 pass first) and drops a fragment.
        let uri = Uri::try_from(bytes).ok()?;
        return (uri.scheme().is_some() && uri.authority().is_some()).then_some(uri);
    }
    let reference = std::str::from_utf8(bytes).ok()?;
    let reference = reference.split_once('#').map_or(reference, |(r, _)| r);
    let (scheme, authority) = (base.scheme_str()?, base.authority()?.as_str());
    let resolved = if let Some(rest) = reference.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else {
        let (path, query) = match reference.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (reference, None),
        };
        let (path, query) = if path.is_empty() {
            (base.path().to_owned(), query.or(base.query()))
        } else if path.starts_with('/') {
            (remove_dot_segments(path), query)
        } else {
            let base_path = base.path();
            let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
            let dir = if dir.is_empty() { "/" } else { dir };
            (remove_dot_segments(&format!("{dir}{path}")), query)
        };
        match query {
            Some(q) => format!("{scheme}://{authority}{path}?{q}"),
            None => format!("{scheme}://{authority}{path}"),
        }
    };
    Uri::try_from(resolved).ok()
}

/// `scheme ":"` at the start, as RFC 3986 §3.1 defines a scheme.
fn has_scheme(reference: &[u8]) -> bool {
    let Some(colon) = reference.iter().position(|b| *b == b':') else {
        return false;
    };
    let mut scheme = reference[..colon].iter();
    scheme.next().is_some_and(u8::is_ascii_alphabetic)
        && scheme.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input
            .strip_prefix("../")
            .or_else(|| input.strip_prefix("./"))
        {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            output.truncate(output.rfind('/').unwrap_or(0));
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_str(base: &str, location: &str) -> Option<String> {
        resolve(
            &base.parse().unwrap(),
            &HeaderValue::from_str(location).unwrap(),
        )
        .map(|u| u.to_string())
    }

    #[test]
    fn the_fragment_of_an_absolute_location_is_dropped() {
        assert_eq!(
            resolve_str("http://r/", "https://s/a%2Fb?q=1#frag?x").unwrap(),
            "https://s/a%2Fb?q=1"
        );
    }

    #[test]
    fn absolute_location_bytes_are_kept() {
        let raw = "https://Bucket.S3.amazonaws.com:443/a/./b/../c%2Fd%2f+e'f?X-Amz-Signature=a+b%2F&x=%20";
        assert_eq!(resolve_str("http://registry/v2/x", raw).unwrap(), raw);
    }

    #[test]
    fn rfc3986_normal_examples() {
        // RFC 3986 §5.4.1, base http://a/b/c/d;p?q
        let base = "http://a/b/c/d;p?q";
        for (reference, want) in [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g/"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q"),
            ("g#s", "http://a/b/c/g"),
            (";x", "http://a/b/c/;x"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("./", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../g", "http://a/g"),
            ("../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("/../g", "http://a/g"),
            ("g.", "http://a/b/c/g."),
            ("..g", "http://a/b/c/..g"),
            ("./../g", "http://a/b/g"),
            ("g/./h", "http://a/b/c/g/h"),
            ("g/../h", "http://a/b/c/h"),
            ("g;x=1/../y", "http://a/b/c/y"),
        ] {
            assert_eq!(
                resolve_str(base, reference).as_deref(),
                Some(want),
                "{reference}"
            );
        }
    }

    #[test]
    fn relative_location_keeps_reference_bytes() {
        assert_eq!(
            resolve_str(
                "https://registry.example:8443/v2/x/blobs/sha256:1",
                "/storage/a%2Fb+c?sig=a%2B%2F"
            )
            .unwrap(),
            "https://registry.example:8443/storage/a%2Fb+c?sig=a%2B%2F"
        );
    }

    #[test]
    fn unresolvable_locations() {
        assert_eq!(
            resolve_str("/v2/x", "/blob"),
            None,
            "origin-form base has no authority"
        );
        assert_eq!(resolve_str("http://r/", "javascript:alert(1)"), None);
        assert_eq!(resolve_str("http://r/", "mailto:a@b"), None);
        assert_eq!(resolve_str("http://r/", "http://"), None);
        assert!(resolve(
            &"http://r/".parse().unwrap(),
            &HeaderValue::from_bytes(b"http://r/\xff").unwrap()
        )
        .is_none());
    }
}
