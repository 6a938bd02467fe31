//! Signed-URL recognition, expiry and redaction, on the providers' documented formats.

use http::Uri;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower_signed_redirect::{SignatureScheme, SignedUrl};

fn at(secs: u64) -> Option<SystemTime> {
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

struct Vector {
    url: &'static str,
    scheme: SignatureScheme,
    expires: Option<SystemTime>,
    secrets: &'static [&'static str],
    kept: &'static [&'static str],
}

fn vectors() -> Vec<Vector> {
    vec![
        // AWS, "Authenticating Requests: Using Query Parameters (SigV4)".
        Vector {
            url: "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
            scheme: SignatureScheme::AwsSigV4,
            expires: at(1_369_353_600 + 86_400),
            secrets: &["AKIAIOSFODNN7EXAMPLE", "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"],
            kept: &["X-Amz-Date=20130524T000000Z", "X-Amz-Expires=86400", "/test.txt"],
        },
        // SigV4 with a session token (STS credentials), as R2 and S3 issue them.
        Vector {
            url: "https://docker-images-prod.abc.r2.cloudflarestorage.com/registry-v2/data?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k%2F20240101%2Fauto%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=1200&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLETOKEN&X-Amz-SignedHeaders=host&X-Amz-Signature=f00d",
            scheme: SignatureScheme::AwsSigV4,
            expires: at(1_704_067_200 + 1_200),
            secrets: &["FwoGZXIvYXdzEXAMPLETOKEN", "f00d"],
            kept: &["X-Amz-Algorithm=AWS4-HMAC-SHA256"],
        },
        // AWS, "Signing and Authenticating REST Requests" (SigV2 query string).
        Vector {
            url: "https://awsexamplebucket1.s3.us-west-1.amazonaws.com/photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620",
            scheme: SignatureScheme::AwsSigV2,
            expires: at(1_175_139_620),
            secrets: &["AKIAIOSFODNN7EXAMPLE", "NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D"],
            kept: &["Expires=1175139620"],
        },
        // CloudFront, "Create a signed URL using a canned policy".
        Vector {
            url: "https://d111111abcdef8.cloudfront.net/image.jpg?color=red&size=medium&Expires=1357034400&Signature=nitfHRCrtziwO2HwPfWw~yYDhUF5EwRunQA-j19DzZrvDh6hQ73lDx~-ar3UocvvRQVw6EkC~GdpGQyyOSKQim-TxAnW7d8F5Kkai9HVx0FIu-5jcQb0UEmatEXAMPLE3ReXySpLSMj0yCd3ZAB4UcBCAqEijkytL6f3fVYNGQI6&Key-Pair-Id=K2JCJMDEHXQW5F",
            scheme: SignatureScheme::CloudFront,
            expires: at(1_357_034_400),
            secrets: &["nitfHRCrtziwO2HwPfWw~yYDhUF5EwRunQA", "K2JCJMDEHXQW5F"],
            kept: &["color=red", "Expires=1357034400"],
        },
        // CloudFront with a custom policy: no readable expiry.
        Vector {
            url: "https://d111111abcdef8.cloudfront.net/image.jpg?Policy=eyJTdGF0ZW1lbnQiOlt7fV19&Signature=abc~def&Key-Pair-Id=K2JCJMDEHXQW5F",
            scheme: SignatureScheme::CloudFront,
            expires: None,
            secrets: &["abc~def", "K2JCJMDEHXQW5F"],
            kept: &["Policy=eyJTdGF0ZW1lbnQiOlt7fV19"],
        },
        // Google Cloud Storage, "V4 signing process".
        Vector {
            url: "https://storage.googleapis.com/example-bucket/cat.jpeg?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=example%40example-project.iam.gserviceaccount.com%2F20181026%2Fus-central1%2Fstorage%2Fgoog4_request&X-Goog-Date=20181026T181309Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature=247a2aa45f169edf4d187d54e7cc46e4731b1e6273242c4f4c39a1d2507a0e58706e25e3a85a7dbb891d62afa8496def8e260c1db863d9ace85ff0a184b894b117404eab5e67f41ff7ddc1ba2d3a3a6b62d6dba8c76da54ad4d07b7a46ad6fc31bf1edf56f34bf1a7f8d0d4df27d1cce5ba3d20d5ee72c2c8d5d62aa8d6e7e1f1a",
            scheme: SignatureScheme::GoogleV4,
            expires: at(1_540_577_589 + 900),
            secrets: &["example%40example-project.iam.gserviceaccount.com", "247a2aa45f169edf4d187d54e7cc46e4"],
            kept: &["X-Goog-Date=20181026T181309Z"],
        },
        // Google Cloud Storage V2 signing.
        Vector {
            url: "https://storage.googleapis.com/example-bucket/cat.jpeg?GoogleAccessId=example%40example-project.iam.gserviceaccount.com&Expires=1577836800&Signature=dGhpcyBpcyBub3QgYSBzaWc%3D",
            scheme: SignatureScheme::GoogleV2,
            expires: at(1_577_836_800),
            secrets: &["example%40example-project", "dGhpcyBpcyBub3QgYSBzaWc%3D"],
            kept: &["Expires=1577836800"],
        },
        // Azure, "Create a service SAS" example.
        Vector {
            url: "https://myaccount.blob.core.windows.net/sascontainer/sasblob.txt?sv=2019-02-02&st=2019-04-29T22%3A18%3A26Z&se=2019-04-30T02%3A23%3A26Z&sr=b&sp=rw&sip=168.1.5.60-168.1.5.70&spr=https&sig=Z%2FRHIX5Xcg0Mq2rqI3OlWTjEg2tYkboXr1P9ZUXDtkk%3D",
            scheme: SignatureScheme::AzureSas,
            expires: at(1_556_591_006),
            secrets: &["Z%2FRHIX5Xcg0Mq2rqI3OlWTjEg2tYkboXr1P9ZUXDtkk%3D"],
            kept: &["sp=rw", "se=2019-04-30T02%3A23%3A26Z"],
        },
        // GHCR's blob storage (Azure SAS style), date-only expiry.
        Vector {
            url: "https://pkg-containers.githubusercontent.com/ghcr1/blobs/sha256:abc?se=2024-01-01&sig=s1gn%2Fature&sp=r&spr=https&sr=b&sv=2019-12-12",
            scheme: SignatureScheme::AzureSas,
            expires: at(1_704_067_200),
            secrets: &["s1gn%2Fature"],
            kept: &["sv=2019-12-12"],
        },
        // Cloudflare token authentication, as Docker Hub's CDN uses it.
        Vector {
            url: "https://production.cloudflare.docker.com/registry-v2/docker/registry/v2/blobs/sha256/ab/abc/data?verify=1700000000-4Xq1%2BAbCdEf%3D",
            scheme: SignatureScheme::CloudflareToken,
            expires: None,
            secrets: &["4Xq1%2BAbCdEf%3D"],
            kept: &["/registry-v2/docker/registry/v2/blobs/sha256/ab/abc/data"],
        },
        // Public, unsigned (registry.k8s.io's S3 buckets).
        Vector {
            url: "https://prod-registry-k8s-io-us-east-2.s3.dualstack.us-east-2.amazonaws.com/containers/images/sha256:abc",
            scheme: SignatureScheme::Unknown,
            expires: None,
            secrets: &[],
            kept: &["https://prod-registry-k8s-io-us-east-2.s3.dualstack.us-east-2.amazonaws.com/containers/images/sha256:abc"],
        },
    ]
}

#[test]
fn documented_formats() {
    for v in vectors() {
        let uri: Uri = v.url.parse().unwrap();
        let signed = SignedUrl::new(&uri);
        assert_eq!(signed.scheme(), v.scheme, "{}", v.url);
        assert_eq!(signed.expires_at(), v.expires, "{}", v.url);
        let shown = signed.to_string();
        let debug = format!("{signed:?}");
        for secret in v.secrets {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!debug.contains(secret), "{debug}");
        }
        for kept in v.kept {
            assert!(shown.contains(kept), "{kept} missing from {shown}");
        }
        let scrubbed = signed.scrub(&format!("GET {} failed", v.url));
        for secret in v.secrets {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
    }
}

#[test]
fn redaction_covers_userinfo_and_encoded_names() {
    let uri: Uri =
        "https://user:pa55@host.example/x?X%2DAmz%2DSignature=abcd1234&SIG=d%2Ff0&keep=1"
            .parse()
            .unwrap();
    let shown = SignedUrl::new(&uri).to_string();
    assert_eq!(
        shown,
        "https://REDACTED@host.example/x?X%2DAmz%2DSignature=REDACTED&SIG=REDACTED&keep=1"
    );
    // Raw and decoded forms; a secret containing another is replaced whole; text that the
    // replacement produces is not searched again.
    let scrubbed = SignedUrl::new(&uri).scrub("user:pa55 abcd1234 d/f0 d%2Ff0 abcd12345 keep=1");
    assert_eq!(
        scrubbed,
        "REDACTED REDACTED REDACTED REDACTED REDACTED5 keep=1"
    );
    // Values under 4 bytes are no credentials: a message is not mangled for them.
    let short: Uri = "https://h/x?sig=a&sv=1".parse().unwrap();
    assert_eq!(SignedUrl::new(&short).scrub("a cat"), "a cat");
}

#[test]
fn malformed_expiries_are_none() {
    for url in [
        "https://h/x?X-Amz-Signature=1&X-Amz-Date=2013-05-24&X-Amz-Expires=1",
        "https://h/x?X-Amz-Signature=1&X-Amz-Date=20131324T000000Z&X-Amz-Expires=1",
        "https://h/x?X-Amz-Signature=1&X-Amz-Date=20130524T000000Z&X-Amz-Expires=-1",
        "https://h/x?X-Amz-Signature=1&X-Amz-Date=20130524T000000Z&X-Amz-Expires=99999999999999999999999",
        "https://h/x?sig=1&sv=1&se=tomorrow",
        "https://h/x?sig=1&sv=1&se=2024-01-01T25:00:00Z",
        "https://h/x?AWSAccessKeyId=1&Expires=soon",
    ] {
        let uri: Uri = url.parse().unwrap();
        assert_eq!(SignedUrl::new(&uri).expires_at(), None, "{url}");
    }
}
