//! Storage matchers and host patterns: never panic; a match implies the label boundary.
#![no_main]

use http::Uri;
use libfuzzer_sys::fuzz_target;
use tower_signed_redirect::matcher::{HostPatterns, StorageMatcher, WellKnownStorage};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, host) = text.split_once('\n').unwrap_or((text, text));
    // Arbitrary patterns: a typed error or a matcher, never a panic.
    let custom = HostPatterns::new([pattern]);
    let Ok(uri) = format!("https://{host}/x").parse::<Uri>() else { return };
    let well_known = WellKnownStorage::new().matches(&uri);
    let r2 = HostPatterns::new(["*.r2.cloudflarestorage.com"]).unwrap().matches(&uri);
    if let Ok(custom) = custom {
        let _ = custom.matches(&uri);
    }
    let h = uri.host().unwrap_or("").trim_end_matches('.').to_ascii_lowercase();
    if r2 {
        assert!(h.ends_with(".r2.cloudflarestorage.com") && h.len() > ".r2.cloudflarestorage.com".len(), "{h}");
        assert!(well_known, "{h}");
    }
    if well_known {
        assert!(!h.is_empty() && !h.starts_with('[') && h.parse::<std::net::Ipv4Addr>().is_err(), "{h}");
        assert!(
            [".r2.cloudflarestorage.com", ".cloudfront.net", ".amazonaws.com", ".amazonaws.com.cn", ".blob.core.windows.net",
             ".data.azurecr.io", ".storage.googleapis.com", "storage.googleapis.com", ".docker.com", ".githubusercontent.com", ".quay.io"]
                .iter()
                .any(|s| h.ends_with(s)),
            "{h}"
        );
    }
});
