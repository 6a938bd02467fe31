//! A blob pull through the blob store (`cache/store/`): served from the store when it holds
//! the blob and the reader may read it there; otherwise downloaded once, into the store,
//! while every client that asks for it meanwhile is served from the download as it
//! arrives. Whatever the store cannot do, the pull does as without a store.
//!
//! Who may read a stored blob: a shared identity (the mirror's own login, anonymous) what
//! it fetched itself from that registry; a client's own login what the registry accepted it
//! for, in that repository, for that digest, until its token ends. Anyone else is sent
//! upstream first: a `HEAD` (not followed to storage) that the registry answers with the
//! content's redirect or `200` grants the read; anything else, and the pull goes upstream.

use super::answer::SentUpstream;
use super::blob_answer::{asked_part, blob_head, blob_response, content_length, empty};
use super::exchange::Exchange;
use super::store_access::may_read;
use crate::api::{Route, DOCKER_CONTENT_DIGEST};
use crate::cache::store::blobs::{BlobStore, Lookup};
use crate::cache::store::downloads::FillTicket;
use crate::cache::store::fill::{Fill, Resume};
use crate::cache::store::keys::{ContentDigest, ObjectKey, Reader};
use crate::cache::store::leases::LeaseGuard;
use crate::cache::store::replicas::DownloadTurn;
use crate::metrics::{Metrics, StoreEvent};
use crate::serve::body::{MirrorBody, UpstreamBody};
use crate::serve::log::{Metered, RequestLog};
use crate::upstream::request::{RangeAsked, RequestMarks};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use std::sync::Arc;
use std::time::Duration;
use tower_signed_redirect::CacheIdentity;

/// A blob pull, read: where it goes upstream, from which repository, for which digest.
pub struct BlobAsked<'a> {
    /// The upstream URI of the blob.
    pub uri: &'a Uri,
    /// The upstream repository.
    pub repository: &'a str,
    /// The blob's digest.
    pub digest: ContentDigest,
    /// The request's identity in the redirect cache.
    pub identity: Option<CacheIdentity>,
}

/// Blob pulls through the store.
pub struct BlobPull {
    store: Arc<BlobStore>,
    metrics: Arc<Metrics>,
    /// The longest a request waits for another to start the download it would join.
    wait: Duration,
}

impl BlobPull {
    /// Pulls through `store`; a request waits at most `wait` for another to start the
    /// download it would join (the time an upstream has to answer).
    pub fn new(store: Arc<BlobStore>, metrics: Arc<Metrics>, wait: Duration) -> BlobPull {
        BlobPull {
            store,
            metrics,
            wait,
        }
    }

    /// The blob `asked` for `reader`, through the store.
    pub async fn answer(
        &self,
        exchange: &Exchange<'_>,
        asked: BlobAsked<'_>,
        reader: Reader,
    ) -> Response<MirrorBody> {
        let key = ObjectKey::blob(asked.digest.clone());
        // A HEAD does not download: it goes upstream when the store does not hold the blob.
        let claim = exchange.parts.method != Method::HEAD;
        let (mut waits, mut discovered) = (0, false);
        loop {
            return match self.store.lookup(&key, claim) {
                Lookup::Stored(stored) => {
                    if may_read(&self.store, exchange, asked.uri, &key, &reader).await {
                        let stored_key = (&key, &reader);
                        if let Some(res) =
                            self.serve_stored(exchange, stored_key, stored.size).await
                        {
                            return res;
                        }
                    }
                    self.upstream(exchange, &asked, StoreEvent::Miss).await
                }
                Lookup::Filling(fill) => {
                    if !may_read(&self.store, exchange, asked.uri, &key, &reader).await {
                        return self.upstream(exchange, &asked, StoreEvent::Miss).await;
                    }
                    let log = self.log(exchange, 200, StoreEvent::Joined);
                    self.serve_download(exchange, &fill, log)
                }
                // Another request is asking the upstream for the blob: its download serves
                // this one too (twice at most: then this one asks on its own).
                Lookup::Starting(starting) if waits < 2 => {
                    waits += 1;
                    starting.wait(self.wait).await;
                    continue;
                }
                // Another replica may have stored it since this one listed the store.
                Lookup::Absent(ticket) if !discovered => {
                    discovered = true;
                    if self.store.discover(&key, &reader).await.is_some() {
                        continue;
                    }
                    match ticket {
                        Some(ticket) => self.claimed(exchange, asked, ticket, reader).await,
                        None => self.upstream(exchange, &asked, StoreEvent::Miss).await,
                    }
                }
                Lookup::Starting(_) | Lookup::Absent(None) => {
                    self.upstream(exchange, &asked, StoreEvent::Miss).await
                }
                Lookup::Absent(Some(ticket)) => self.claimed(exchange, asked, ticket, reader).await,
            };
        }
    }

    /// The download this request claimed on this replica, once the fleet's lease on it says
    /// so: this replica downloads it, or another replica's download, once stored, serves it.
    async fn claimed(
        &self,
        exchange: &Exchange<'_>,
        asked: BlobAsked<'_>,
        ticket: FillTicket,
        reader: Reader,
    ) -> Response<MirrorBody> {
        let key = ObjectKey::blob(asked.digest.clone());
        match self.store.download_turn(&key, &reader).await {
            DownloadTurn::Fetch(lease) => self.fill(exchange, asked, ticket, reader, lease).await,
            DownloadTurn::Stored => {
                drop(ticket);
                Box::pin(self.answer(exchange, asked, reader)).await
            }
        }
    }

    /// Downloads the blob into the store (under the fleet's `lease`, if this replica holds
    /// it) and serves it as it arrives; what the upstream answers otherwise goes to the
    /// client as it is.
    async fn fill(
        &self,
        exchange: &Exchange<'_>,
        asked: BlobAsked<'_>,
        ticket: FillTicket,
        reader: Reader,
        lease: Option<LeaseGuard>,
    ) -> Response<MirrorBody> {
        let key = ObjectKey::blob(asked.digest.clone());
        let marks = RequestMarks {
            identity: asked.identity.clone(),
            range: RangeAsked::Whole,
            ..RequestMarks::uncached(Route::Blob)
        };
        let answer = exchange.send_upstream(asked.uri, &Method::GET, marks).await;
        let size = answer
            .as_ref()
            .ok()
            .and_then(|res| storable_size(res, &asked.digest));
        // What was sent, for an answer the store does not keep (built only then).
        let sent = || self.sent(exchange, &asked, StoreEvent::Miss);
        let (res, size) = match (answer, size) {
            (Ok(res), Some(size)) => (res, size),
            (answer, _) => return exchange.answer_client(sent(), answer),
        };
        let (mut head, body) = res.into_parts();
        let media_type = head
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        let forget = exchange
            .answers
            .cached_redirect(asked.uri, asked.identity.clone());
        let resume = resume(exchange, asked.uri, asked.identity.clone());
        match self.store.start_fill(
            ticket,
            (size, media_type),
            (body, resume),
            &reader,
            (forget, lease),
        ) {
            Ok(fill) => {
                self.store.allow(&key, &reader);
                self.metrics.store(StoreEvent::Fill);
                let mut log = exchange.answers.log_upstream(
                    exchange.registry,
                    exchange.parts,
                    Route::Blob,
                    &mut head,
                );
                log.store = Some(StoreEvent::Fill);
                self.serve_download(exchange, &fill, log)
            }
            Err(body) => {
                self.metrics.store(StoreEvent::Miss);
                exchange.answer_client(sent(), Ok(Response::from_parts(head, body)))
            }
        }
    }

    /// The stored blob, whole or the client's range of it; `None` when the store cannot
    /// read it now.
    async fn serve_stored(
        &self,
        exchange: &Exchange<'_>,
        (key, reader): (&ObjectKey, &Reader),
        size: u64,
    ) -> Option<Response<MirrorBody>> {
        let Some((start, end)) = asked_part(exchange.parts, size) else {
            self.metrics.store(StoreEvent::Hit);
            return Some(self.unsatisfiable(exchange, size));
        };
        if exchange.parts.method == Method::GET {
            let until = match reader {
                Reader::Login(grant) => Some(grant.until),
                Reader::Shared(_) => None,
            };
            let url = self.store.signed_url(key, size, until).await;
            // A URL that is no header value (none S3 signs) is served as without it.
            if let Some(mut location) = url.and_then(|url| HeaderValue::from_str(&url).ok()) {
                location.set_sensitive(true);
                self.metrics.store(StoreEvent::Hit);
                return Some(self.to_bucket(exchange, key, location));
            }
        }
        let body = match exchange.parts.method {
            Method::HEAD => empty(),
            _ => self.store.read(key, (start, end, size)).await?,
        };
        self.metrics.store(StoreEvent::Hit);
        let head = blob_head(
            &key.digest,
            (start, end, size),
            HeaderValue::from_static("application/octet-stream"),
        );
        let log = self.log(exchange, head.status.as_u16(), StoreEvent::Hit);
        Some(blob_response(head, body, log, exchange))
    }

    /// The blob (or the client's range of it) from a download in flight, as it arrives.
    fn serve_download(
        &self,
        exchange: &Exchange<'_>,
        fill: &Fill,
        mut log: RequestLog,
    ) -> Response<MirrorBody> {
        if log.store == Some(StoreEvent::Joined) {
            self.metrics.store(StoreEvent::Joined);
            // Logged as a fill: the client was served by one.
            log.store = Some(StoreEvent::Fill);
        }
        let Some((start, end)) = asked_part(exchange.parts, fill.size) else {
            return self.unsatisfiable(exchange, fill.size);
        };
        let body = match exchange.parts.method {
            Method::HEAD => empty(),
            _ => fill.reader(start, end).into_body(),
        };
        let head = blob_head(
            &fill.key.digest,
            (start, end, fill.size),
            fill.media_type.clone(),
        );
        log.status = head.status.as_u16();
        blob_response(head, body, log, exchange)
    }

    /// `307` to the store's own `url` of the stored blob `key` (`--blob-store-redirect`):
    /// the client fetches it from the bucket (its `Range` with it). The URL is not logged.
    fn to_bucket(
        &self,
        exchange: &Exchange<'_>,
        key: &ObjectKey,
        location: HeaderValue,
    ) -> Response<MirrorBody> {
        let log = self.log(exchange, 307, StoreEvent::Hit);
        let mut res = Response::new(MirrorBody::Stored(Metered::new(
            empty(),
            log,
            exchange.started,
        )));
        *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        let headers = res.headers_mut();
        headers.insert(header::LOCATION, location);
        let digest = HeaderValue::from_str(&key.digest.to_string());
        headers.insert(
            DOCKER_CONTENT_DIGEST,
            digest.expect("a digest is a header value"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        // The URL is for this reader: no cache keeps it for another.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, private"),
        );
        res
    }

    /// `416`: the client's range starts past the blob's end.
    fn unsatisfiable(&self, exchange: &Exchange<'_>, size: u64) -> Response<MirrorBody> {
        let log = self.log(exchange, 416, StoreEvent::Hit);
        let mut res = Response::new(MirrorBody::Stored(Metered::new(
            empty(),
            log,
            exchange.started,
        )));
        *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
        let range =
            HeaderValue::from_str(&format!("bytes */{size}")).expect("a valid header value");
        res.headers_mut().insert(header::CONTENT_RANGE, range);
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        res
    }

    /// The pull as without a store, logged with `event`.
    async fn upstream(
        &self,
        exchange: &Exchange<'_>,
        asked: &BlobAsked<'_>,
        event: StoreEvent,
    ) -> Response<MirrorBody> {
        self.metrics.store(event);
        let marks = RequestMarks {
            identity: asked.identity.clone(),
            ..RequestMarks::uncached(Route::Blob)
        };
        let answer = exchange
            .send_upstream(asked.uri, &exchange.parts.method, marks)
            .await;
        exchange.answer_client(self.sent(exchange, asked, event), answer)
    }

    fn sent(
        &self,
        exchange: &Exchange<'_>,
        asked: &BlobAsked<'_>,
        event: StoreEvent,
    ) -> SentUpstream {
        SentUpstream {
            uri: asked.uri.clone(),
            identity: asked.identity.clone(),
            started: exchange.started,
            route: Route::Blob,
            store: Some(event),
        }
    }

    fn log(&self, exchange: &Exchange<'_>, status: u16, event: StoreEvent) -> RequestLog {
        let registry = exchange.registry.name.clone();
        let mut log = RequestLog::new(
            exchange.parts,
            registry,
            Route::Blob,
            status,
            self.metrics.clone(),
        );
        log.store = Some(event);
        log
    }
}

/// The size of the blob `digest` names in the upstream's answer, if the store can keep it:
/// a `200` of a known length (none, only for the digest of nothing: an empty body has no
/// last byte to hold back until it is verified). Any other answer goes to the client as
/// without the store.
fn storable_size(res: &Response<UpstreamBody>, digest: &ContentDigest) -> Option<u64> {
    if res.status() != StatusCode::OK {
        return None;
    }
    content_length(res).filter(|&size| size > 0 || digest.expected().is_of_nothing())
}

/// How the download asks the registry again, with the client's request, from where it
/// broke off.
fn resume(exchange: &Exchange<'_>, uri: &Uri, identity: Option<CacheIdentity>) -> Resume {
    let (logins, registry) = (exchange.logins.clone(), exchange.registry.clone());
    let (parts, uri) = (exchange.parts.clone(), uri.clone());
    Arc::new(move |offset| {
        let (logins, registry, parts, uri) =
            (logins.clone(), registry.clone(), parts.clone(), uri.clone());
        let identity = identity.clone();
        Box::pin(async move {
            let marks = RequestMarks {
                identity,
                range: RangeAsked::From(offset),
                ..RequestMarks::uncached(Route::Blob)
            };
            // Who chose the destination: the operator (`--upstream`), as for the request
            // this resumes; the credentials are that request's own.
            logins
                .send_as_login(&registry, &parts, &uri, &Method::GET, marks)
                .await
        })
    })
}
