//! SignedUrl: never panics; every credential-bearing value is redacted in Display and Debug,
//! and everything else is printed as it was.
#![no_main]

use http::Uri;
use libfuzzer_sys::fuzz_target;
use tower_signed_redirect::SignedUrl;

const SECRET: &[&str] = &[
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature", "awsaccesskeyid",
    "key-pair-id", "x-goog-signature", "x-goog-credential", "googleaccessid", "sig", "verify",
    "token", "access_token",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(uri) = format!("https://h.example/p?{text}").parse::<Uri>() else { return };
    let signed = SignedUrl::new(&uri);
    let _ = (signed.scheme(), signed.expires_at());
    let shown = signed.to_string();
    let debug = format!("{signed:?}");
    assert!(debug.contains(&shown), "Debug prints the redacted URL: {debug}");
    let Some(query) = uri.query() else { return };
    let (_, shown_query) = shown.split_once('?').expect("query kept");
    let pairs: Vec<&str> = query.split('&').collect();
    let shown_pairs: Vec<&str> = shown_query.split('&').collect();
    assert_eq!(pairs.len(), shown_pairs.len());
    for (raw, out) in pairs.iter().zip(&shown_pairs) {
        match raw.split_once('=') {
            Some((k, _)) => {
                let key = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
                if SECRET.iter().any(|s| key.eq_ignore_ascii_case(s)) {
                    assert_eq!(*out, format!("{k}=REDACTED"));
                } else {
                    assert_eq!(out, raw);
                }
            }
            None => assert_eq!(out, raw),
        }
    }
    // Every secret value quoted in a message is replaced.
    for (k, v) in pairs.iter().filter_map(|p| p.split_once('=')) {
        let key = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
        if v.len() >= 4 && !"<REDACTED>".contains(v) && SECRET.iter().any(|s| key.eq_ignore_ascii_case(s)) {
            let scrubbed = signed.scrub(&format!("<{v}>"));
            assert!(!scrubbed.contains(v), "{scrubbed}");
        }
    }
});
