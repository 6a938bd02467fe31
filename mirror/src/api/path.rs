//! The distribution API's pull paths, as the OCI distribution spec's grammar writes them:
//! `<name>/manifests/<reference>`, `<name>/blobs/<digest>`, `<name>/tags/list` and
//! `<name>/referrers/<digest>`. The mirror forwards these and nothing else: a path with a
//! `.` or `..` segment (raw or percent-encoded), or any byte outside the grammar, is refused
//! before it could reach an upstream that normalises it into another API.

/// A pull path: the repository name and what is asked of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiPath<'a> {
    /// The repository name, e.g. `library/alpine`.
    pub name: &'a str,
    /// What is asked of the repository.
    pub endpoint: Endpoint<'a>,
}

/// One of the four pull endpoints, with its argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `manifests/<reference>`: a tag or a digest.
    Manifest(&'a str),
    /// `blobs/<digest>`.
    Blob(Digest<'a>),
    /// `tags/list`.
    TagsList,
    /// `referrers/<digest>`.
    Referrers(Digest<'a>),
}

/// `<algorithm>:<encoded>`, checked against the grammar (and, for `sha256` and `sha512`,
/// their length and lower-case hex).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest<'a> {
    /// The part before the `:`, e.g. `sha256`.
    pub algorithm: &'a str,
    /// The part after the `:`, e.g. the hex of a `sha256` digest.
    pub encoded: &'a str,
}

/// Why a path is refused: the registry error code the client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `NAME_INVALID` (400): a name component, or a dot segment anywhere.
    NameInvalid,
    /// `DIGEST_INVALID` (400): a blob or referrers digest, or a manifest digest.
    DigestInvalid,
    /// `NOT_FOUND` (404): not one of the four pull endpoints, or a malformed tag.
    NotFound,
}

impl Refused {
    /// The registry error code: `NAME_INVALID`, `DIGEST_INVALID` or `NOT_FOUND`.
    pub fn code(self) -> &'static str {
        match self {
            Refused::NameInvalid => "NAME_INVALID",
            Refused::DigestInvalid => "DIGEST_INVALID",
            Refused::NotFound => "NOT_FOUND",
        }
    }

    /// The HTTP status: 400, or 404 for [`Refused::NotFound`].
    pub fn status(self) -> http::StatusCode {
        match self {
            Refused::NameInvalid | Refused::DigestInvalid => http::StatusCode::BAD_REQUEST,
            Refused::NotFound => http::StatusCode::NOT_FOUND,
        }
    }

    /// The error's human-readable message.
    pub fn message(self) -> &'static str {
        match self {
            Refused::NameInvalid => "invalid repository name",
            Refused::DigestInvalid => "invalid digest",
            Refused::NotFound => "not a registry pull path",
        }
    }
}

/// The longest repository name distribution accepts.
const NAME_MAX: usize = 255;

/// Parses the part of a path after `/v2/` (and after an upstream prefix).
pub fn parse(rest: &str) -> Result<ApiPath<'_>, Refused> {
    if rest.split('/').any(is_dot_segment) {
        return Err(Refused::NameInvalid);
    }
    let mut parts = rest.rsplitn(3, '/');
    let (Some(arg), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Refused::NotFound);
    };
    if !["manifests", "blobs", "tags", "referrers"].contains(&kind) {
        return Err(Refused::NotFound);
    }
    if name.len() > NAME_MAX || !name.split('/').all(is_name_component) {
        return Err(Refused::NameInvalid);
    }
    let endpoint = match kind {
        "manifests" if arg.contains(':') => {
            digest(arg)?;
            Endpoint::Manifest(arg)
        }
        "manifests" if is_tag(arg) => Endpoint::Manifest(arg),
        "blobs" => Endpoint::Blob(digest(arg)?),
        "referrers" => Endpoint::Referrers(digest(arg)?),
        "tags" if arg == "list" => Endpoint::TagsList,
        _ => return Err(Refused::NotFound),
    };
    Ok(ApiPath { name, endpoint })
}

/// `.` or `..`, as written or percent-encoded (`%2e`, `%2E.`, ...).
fn is_dot_segment(segment: &str) -> bool {
    if !segment.contains('%') {
        return segment == "." || segment == "..";
    }
    let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
    decoded == b"." || decoded == b".."
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_name_component(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Each run of separators is `.`, `_`, `__`, or dashes.
    bytes
        .split(|&b| alnum(b))
        .filter(|run| !run.is_empty())
        .all(|run| matches!(run, b"." | b"_" | b"__") || run.iter().all(|&b| b == b'-'))
        && bytes
            .iter()
            .all(|&b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
}

/// `[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}`
fn is_tag(s: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `algorithm:encoded`, with `algorithm` = `[a-z0-9]+([+._-][a-z0-9]+)*` and `encoded` =
/// `[a-zA-Z0-9=_-]+`; `sha256` is 64 and `sha512` 128 lower-case hex digits.
pub fn digest(s: &str) -> Result<Digest<'_>, Refused> {
    // One pass over the bytes of each part: this runs for every blob request.
    let (algorithm, encoded) = s.split_once(':').ok_or(Refused::DigestInvalid)?;
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    // Components of `[a-z0-9]+` joined by single separators: no separator first, last or
    // next to another (`after_separator` starts true so that an empty algorithm fails).
    let mut after_separator = true;
    for &b in algorithm.as_bytes() {
        after_separator = match b {
            b'+' | b'.' | b'_' | b'-' if !after_separator => true,
            _ if alnum(b) => false,
            _ => return Err(Refused::DigestInvalid),
        };
    }
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    let encoded_ok = match algorithm {
        "sha256" => encoded.len() == 64 && encoded.bytes().all(hex),
        "sha512" => encoded.len() == 128 && encoded.bytes().all(hex),
        _ => {
            !encoded.is_empty()
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
        }
    };
    if !after_separator && encoded_ok {
        Ok(Digest { algorithm, encoded })
    } else {
        Err(Refused::DigestInvalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar() {
        let sha = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse(&format!("library/alpine/blobs/{sha}")).unwrap().name,
            "library/alpine"
        );
        assert_eq!(
            parse("a/b/manifests/v1").unwrap().endpoint,
            Endpoint::Manifest("v1")
        );
        assert_eq!(parse("a/tags/list").unwrap().endpoint, Endpoint::TagsList);
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "a1.b2-c3", "0"] {
            assert!(is_name_component(ok), "{ok}");
        }
        for bad in [
            "", "A", "a.", ".a", "a..b", "a___b", "a-.b", "a%2eb", "a b", "a:b",
        ] {
            assert!(!is_name_component(bad), "{bad}");
        }
        assert!(digest(&format!("sha512:{}", "0".repeat(128))).is_ok());
        assert!(digest(&format!("sha512:{}", "0".repeat(64))).is_err());
        assert!(digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(digest("blake3+x.y:abc=_-").is_ok());
        assert!(digest("blake3:").is_err() && digest(":abc").is_err() && digest("a/b:c").is_err());
        assert!(is_tag("latest") && is_tag("_x") && is_tag(&"a".repeat(128)));
        assert!(!is_tag("-x") && !is_tag(".x") && !is_tag(&"a".repeat(129)) && !is_tag("a%b"));
        assert_eq!(
            parse(&format!("{}/manifests/x", "a".repeat(256))),
            Err(Refused::NameInvalid)
        );
        assert_eq!(parse("a/b/%2E%2e/manifests/x"), Err(Refused::NameInvalid));
    }

    /// The grammar as the OCI spec writes it, one rule at a time (the first version of
    /// [`digest`]): the one-pass version must agree with it on every string.
    fn digest_as_written(s: &str) -> bool {
        let Some((algorithm, encoded)) = s.split_once(':') else {
            return false;
        };
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .split(['+', '.', '_', '-'])
                .all(|part| !part.is_empty() && part.bytes().all(alnum));
        let encoded_ok = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        let hex = |n: usize| {
            encoded.len() == n
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let registered_ok = match algorithm {
            "sha256" => hex(64),
            "sha512" => hex(128),
            _ => true,
        };
        algorithm_ok && encoded_ok && registered_ok
    }

    #[test]
    fn digest_agrees_with_the_grammar_as_written() {
        // Every string of up to 6 bytes over an alphabet with a byte of each class: every
        // way to place separators, colons and bytes outside the grammar.
        const ALPHABET: &[u8] = b"a0+._-A=:/";
        let mut checked = 0;
        for len in 0..=6u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                let s: String = (0..len)
                    .map(|_| {
                        let c = ALPHABET[n % ALPHABET.len()] as char;
                        n /= ALPHABET.len();
                        c
                    })
                    .collect();
                assert_eq!(digest(&s).is_ok(), digest_as_written(&s), "{s:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 1_111_111);
        // The registered algorithms, around their lengths and their hex.
        for algorithm in ["sha256", "sha512", "sha384", "sha256+b64u"] {
            for encoded in ["a", "A", "g", "0=", "-"] {
                for n in [63, 64, 65, 127, 128, 129] {
                    let hex = "0f".repeat(n / 2) + if n % 2 == 1 { "a" } else { "" };
                    for s in [
                        format!("{algorithm}:{hex}"),
                        format!("{algorithm}:{}{encoded}", &hex[1..]),
                    ] {
                        assert_eq!(digest(&s).is_ok(), digest_as_written(&s), "{s:?}");
                    }
                }
            }
        }
    }
}
