//! The blob store on S3 (or R2, MinIO, any S3-compatible store), through `object_store`'s
//! `AmazonS3`, whose HTTP client is the mirror's own: hyper-util with rustls on ring.

use crate::options::Options;
use crate::upstream::client::tls_config;
use object_store::aws::AmazonS3Builder;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest,
    HttpRequestBody, HttpResponse, HttpResponseBody, HttpService,
};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// What signs URLs of the store's objects for clients, and for how long.
pub type UrlSigner = (Arc<dyn Signer>, Duration);

/// An S3-compatible store, opened.
pub struct S3Store {
    /// Its objects.
    pub objects: Arc<dyn ObjectStore>,
    /// With `--blob-store-redirect`, the store as the signer of its own URLs, for as long
    /// as that says.
    pub signer: Option<UrlSigner>,
    /// Where the mirror's objects start (`s3://bucket/<prefix>`).
    pub prefix: Path,
}

/// An S3-compatible store, `bucket[/prefix]` at `--s3-endpoint` in `--s3-region`.
pub fn open(options: &Options, bucket_and_prefix: &str) -> Result<S3Store, String> {
    let (bucket, prefix) = bucket_and_prefix
        .split_once('/')
        .unwrap_or((bucket_and_prefix, ""));
    let name = format!("s3://{bucket_and_prefix}");
    if bucket.is_empty() {
        return Err(format!("--blob-store {name}: no bucket"));
    }
    let (key_id, secret) = keys(options).ok_or_else(|| {
        format!("--blob-store {name}: give --s3-access-key-id and --s3-secret-access-key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    })?;
    // Who chose the destination: the operator (`--blob-store`, `--s3-endpoint`); the
    // credentials are the store's own, and sign every request sent there.
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&options.s3_region)
        .with_access_key_id(key_id)
        .with_secret_access_key(secret)
        .with_virtual_hosted_style_request(options.s3_virtual_hosted_style)
        .with_retry(RetryConfig {
            // A store that does not answer must not hold a pull for minutes: two quick
            // retries, then the pull goes upstream.
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(5),
        })
        .with_http_connector(StoreConnector {
            tls: tls_config(options)?,
            connect_timeout: options.connect_timeout,
            response_timeout: options.response_timeout,
        });
    if let Ok(token) = std::env::var("AWS_SESSION_TOKEN") {
        builder = builder.with_token(token);
    }
    if let Some(endpoint) = &options.s3_endpoint {
        builder = builder.with_endpoint(endpoint).with_allow_http(true);
        if options.blob_store_redirect.is_some() && endpoint.starts_with("http://") {
            tracing::warn!("--blob-store-redirect with a plain-http --s3-endpoint: the URLs clients are sent to carry their signatures in clear");
        }
    }
    let objects = Arc::new(
        builder
            .build()
            .map_err(|e| format!("--blob-store {name}: {e}"))?,
    );
    let signer = options
        .blob_store_redirect
        .map(|lifetime| (objects.clone() as Arc<dyn Signer>, lifetime));
    Ok(S3Store {
        objects,
        signer,
        prefix: Path::from(prefix),
    })
}

/// The store's access key id and secret: the flags (or their `MIRROR_S3_*` variables),
/// else AWS's own variables.
fn keys(options: &Options) -> Option<(String, String)> {
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let key_id = options
        .s3_access_key_id
        .clone()
        .or_else(|| env("AWS_ACCESS_KEY_ID"))?;
    let secret = options
        .s3_secret_access_key
        .clone()
        .or_else(|| env("AWS_SECRET_ACCESS_KEY"))?;
    Some((key_id, secret))
}

/// The longest the store may take to answer a request that sends no content.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// `object_store`'s HTTP client for S3: hyper-util's, with rustls on ring and the mirror's
/// roots (`--upstream-ca` included), bounded by the mirror's connect and response timeouts.
#[derive(Debug)]
struct StoreConnector {
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl HttpConnector for StoreConnector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = crate::serve::tuning::client_builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(HttpClient::new(StoreHttp {
            client,
            response_timeout: self.response_timeout,
        }))
    }
}

type StoreClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    HttpRequestBody,
>;

#[derive(Debug, Clone)]
struct StoreHttp {
    client: StoreClient,
    response_timeout: Duration,
}

#[async_trait::async_trait]
impl HttpService for StoreHttp {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        use http_body_util::BodyExt;
        // A request that carries a part of a blob has the time an upstream has; one that
        // asks (a HEAD, a listing, a GET's head) has at most ANSWER_TIMEOUT: a store that
        // does not answer holds a pull that long, once (then it is left alone: DOWN_FOR).
        let timeout = match *req.method() {
            http::Method::PUT | http::Method::POST => self.response_timeout,
            _ => self.response_timeout.min(ANSWER_TIMEOUT),
        };
        let sent = tokio::time::timeout(timeout, self.client.request(req));
        let res = match sent.await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) if e.is_connect() => return Err(HttpError::new(HttpErrorKind::Connect, e)),
            Ok(Err(e)) => return Err(HttpError::new(HttpErrorKind::Request, e)),
            Err(elapsed) => return Err(HttpError::new(HttpErrorKind::Timeout, elapsed)),
        };
        Ok(res.map(|body| {
            HttpResponseBody::new(body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e)))
        }))
    }
}
