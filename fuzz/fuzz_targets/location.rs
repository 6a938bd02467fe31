//! Location resolution: never panics; an absolute http(s) Location is kept byte for byte;
//! a resolved URI always has a scheme and an authority.
#![no_main]

use http::{HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;
use tower_signed_redirect::fuzzing::resolve_location;

const BASES: &[&str] = &[
    "https://registry-1.docker.io/v2/library/alpine/blobs/sha256:00",
    "http://127.0.0.1:5000/v2/a/b/c/blobs/x?y=z",
    "https://[::1]:8443/",
    "/v2/origin-form/only",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, location)) = data.split_first() else { return };
    let base: Uri = BASES[pick as usize % BASES.len()].parse().unwrap();
    let Ok(value) = HeaderValue::from_bytes(location) else { return };
    let Some(resolved) = resolve_location(&base, &value) else { return };
    assert!(resolved.scheme().is_some() && resolved.authority().is_some(), "{resolved}");
    if let Ok(text) = std::str::from_utf8(location) {
        let without_fragment = text.split_once('#').map_or(text, |(t, _)| t);
        // (http lower-cases the scheme, which is case-insensitive; compare lower-case ones.)
        if without_fragment.starts_with("http://") || without_fragment.starts_with("https://") {
            // Absolute: the bytes are kept, except that an empty path is sent as "/" (as
            // HTTP requires in a request target).
            let after_scheme = without_fragment.find("://").unwrap() + 3;
            let authority_end = without_fragment[after_scheme..]
                .find(['/', '?'])
                .map_or(without_fragment.len(), |i| i + after_scheme);
            let mut expected = without_fragment.to_owned();
            if !without_fragment[authority_end..].starts_with('/') {
                expected.insert(authority_end, '/');
            }
            assert_eq!(resolved.to_string(), expected);
        }
    }
});
