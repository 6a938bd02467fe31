//! A registry stand-in for the macro benchmarks (`run.sh`, `manifests.sh`): answers
//! `GET|HEAD /v2/<name>/blobs/sha256:<hex>` carrying `Authorization: Bearer benchtoken` with
//! an empty `307` (as Docker Hub's is) to a pre-signed-looking URL on the storage stand-in,
//! dated when the stand-in started and valid for seven days (so that the mirror's redirect
//! cache keeps it, as it keeps a real one); `GET|HEAD /v2/<name>/manifests/<tag or digest>`
//! with one OCI index, counting what a Docker-Hub-like pull limit counts (manifest `GET`s,
//! and the free `HEAD`s beside them) and blob requests: `GET /counts` says how many so far.
//! With `public`, requests without `Authorization` are answered too (an anonymous pull).
//!
//! usage: bench_registry_stand_in LISTEN_ADDR STORAGE_BASE_URL [public]

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use sha2::Digest;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const TOKEN: &[u8] = b"Bearer benchtoken";

/// The manifest every tag and digest names: an OCI index of about 1.5 KiB, as
/// `library/alpine`'s is.
fn manifest() -> String {
    let entry = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1234,"platform":{"architecture":"amd64","os":"linux"}}"#;
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        [entry; 7].join(",")
    )
}

/// Manifest `GET`s and `HEAD`s answered.
static MANIFEST_GETS: AtomicU64 = AtomicU64::new(0);
static MANIFEST_HEADS: AtomicU64 = AtomicU64::new(0);
/// Blob `GET`s and `HEAD`s answered.
static BLOB_GETS: AtomicU64 = AtomicU64::new(0);
static BLOB_HEADS: AtomicU64 = AtomicU64::new(0);

/// `20240101T000000Z`: the SigV4 basic format of `now`.
fn amz_date(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, time) = (secs / 86_400, secs % 86_400);
    // Days since 1970 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

/// Everything of the `Location` after the blob's name.
fn signed_query(now: SystemTime) -> String {
    let date = amz_date(now);
    format!(
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDBENCH%2F{day}%2Fauto%2Fs3%2Faws4_request\
         &X-Amz-Date={date}&X-Amz-Expires=604800&X-Amz-SignedHeaders=host\
         &X-Amz-Signature=8f1c0d9e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e",
        day = &date[..8]
    )
}

fn answer(
    req: &Request<hyper::body::Incoming>,
    (storage, query): (&str, &str),
    manifest: &Manifest,
    public: bool,
) -> Response<Full<Bytes>> {
    let status = |s| {
        Response::builder()
            .status(s)
            .header("content-length", "0")
            .body(Full::default())
            .unwrap()
    };
    if req.uri().path() == "/counts" {
        let counts = format!(
            "manifest_gets {}\nmanifest_heads {}\nblob_gets {}\nblob_heads {}\n",
            MANIFEST_GETS.load(Ordering::Relaxed),
            MANIFEST_HEADS.load(Ordering::Relaxed),
            BLOB_GETS.load(Ordering::Relaxed),
            BLOB_HEADS.load(Ordering::Relaxed)
        );
        return Response::new(Full::new(Bytes::from(counts)));
    }
    let auth = req.headers().get("authorization").map(|v| v.as_bytes());
    if auth != Some(TOKEN) && !(public && auth.is_none()) {
        return status(StatusCode::UNAUTHORIZED);
    }
    if req.uri().path().contains("/manifests/") {
        let head = req.method() == Method::HEAD;
        let counter = if head {
            &MANIFEST_HEADS
        } else {
            &MANIFEST_GETS
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let body = if head {
            Bytes::new()
        } else {
            manifest.body.clone()
        };
        return Response::builder()
            .header("content-type", "application/vnd.oci.image.index.v1+json")
            .header("docker-content-digest", &*manifest.digest)
            .header("content-length", manifest.body.len())
            .body(Full::new(body))
            .unwrap();
    }
    let hex = req
        .uri()
        .path()
        .rsplit_once("/blobs/sha256:")
        .map(|(_, h)| h);
    match (req.method(), hex) {
        (&Method::GET | &Method::HEAD, Some(hex)) if !hex.is_empty() => {
            let counter = match req.method() == Method::HEAD {
                true => &BLOB_HEADS,
                false => &BLOB_GETS,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", format!("{storage}/blobs/{hex}{query}"))
                .header("content-length", "0")
                .body(Full::default())
                .unwrap()
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// The manifest served, and its digest.
struct Manifest {
    body: Bytes,
    digest: String,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(storage)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_registry_stand_in LISTEN_ADDR STORAGE_BASE_URL [public]");
        std::process::exit(2);
    };
    let public = args.next().as_deref() == Some("public");
    let storage: Arc<str> = storage.trim_end_matches('/').into();
    let query: Arc<str> = signed_query(SystemTime::now()).into();
    let body = manifest();
    let manifest = Arc::new(Manifest {
        digest: format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(body.as_bytes()))
        ),
        body: Bytes::from(body),
    });
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (storage, query, manifest) = (storage.clone(), query.clone(), manifest.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let res = answer(&req, (&storage, &query), &manifest, public);
                async move { Ok::<_, Infallible>(res) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_sigv4_basic_format() {
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        // 2024-02-29 23:59:59 UTC, a leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(amz_date(t), "20240229T235959Z");
        assert!(signed_query(t).contains("AKIDBENCH%2F20240229%2F"));
    }
}
