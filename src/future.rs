use crate::body::ResponseBody;
use crate::config::{Config, Forwarded, HeadStrategy};
use crate::error::{BoxError, Error, ErrorKind};
use crate::extension::FollowedRedirect;
use crate::location;
use crate::signed_url::{Redacted, SignedUrl};
use bytes::Buf;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tower_service::Service;

/// How much of a redirect's own body is read (and discarded) so the upstream connection can
/// be reused. Past this the body is dropped, which closes that connection.
const DRAIN_LIMIT: usize = 64 * 1024;

pin_project! {
    /// Response future of [`SignedRedirect`](crate::SignedRedirect).
    ///
    /// Named when a service's future type must be spelled out:
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Empty;
    /// use hyper_util::client::legacy::{connect::HttpConnector, Client};
    /// use hyper::body::Incoming;
    /// use tower_signed_redirect::ResponseFuture;
    ///
    /// type BlobFuture = ResponseFuture<Client<HttpConnector, Empty<Bytes>>, Empty<Bytes>, Incoming>;
    /// ```
    pub struct ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S::Future, ResBody, ReqBody>,
        // The body of the last redirect, read while the next hop is in flight.
        #[pin]
        drain: Option<ResBody>,
        // `None` for requests the layer never follows (not GET or HEAD).
        follow: Option<Follow<S>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R, B> {
        // Waiting for the original request's response.
        Upstream { #[pin] future: F },
        // Waiting for the inner service to be ready for the next hop's request.
        Ready { request: Option<Request<B>> },
        // Waiting for a storage response.
        Storage { #[pin] future: F },
        // Reading the one byte of a HEAD's range probe before answering it.
        ProbeBody { #[pin] body: R },
        Done,
    }
}

/// What a GET or HEAD request needs to follow its redirects.
pub(crate) struct Follow<S> {
    service: S,
    config: Config,
    method: Method,
    /// The URI of the current hop's request.
    uri: Uri,
    forwarded: Forwarded,
    drained: usize,
    /// Allocated when the first redirect is followed.
    chain: Option<Box<Chain>>,
}

struct Chain {
    redirect_status: StatusCode,
    hops: usize,
    visited: Vec<Uri>,
    probe: Probe,
    head_answer: Option<http::response::Parts>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Not a HEAD answered by a range probe.
    No,
    /// The current hop is a `GET` with `Range: bytes=0-0` standing in for a `HEAD`.
    Probing,
    /// The probe was rejected; the current hop is a real `HEAD`.
    FellBack,
}

enum Step<R, B> {
    Return(Response<ResponseBody<R>>),
    /// Send this request; drain this body meanwhile.
    Next(R, Request<B>),
    /// Read this probe body, then answer with `Chain::head_answer`.
    ProbeBody(R),
}

impl<S> Follow<S> {
    #[inline]
    pub(crate) fn new<B>(service: S, config: Config, req: &Request<B>) -> Self {
        let forwarded = config.get().capture(req.headers());
        Follow {
            service,
            config,
            method: req.method().clone(),
            uri: req.uri().clone(),
            forwarded,
            drained: 0,
            chain: None,
        }
    }
}

impl<S, B, R> ResponseFuture<S, B, R>
where
    S: Service<Request<B>>,
{
    #[inline]
    pub(crate) fn new(future: S::Future, follow: Option<Follow<S>>) -> Self {
        ResponseFuture {
            state: State::Upstream { future },
            drain: None,
            follow,
        }
    }
}

impl<S, B, R> Future for ResponseFuture<S, B, R>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    B: Default,
    R: Body,
{
    type Output = Result<Response<ResponseBody<R>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Some(follow) = this.follow.as_mut() {
                drain(this.drain.as_mut(), &mut follow.drained, cx);
            }
            let step = match this.state.as_mut().project() {
                StateProj::Upstream { future } => {
                    let res = ready!(future.poll(cx)).map_err(|e| Error::upstream(e.into()))?;
                    let Some(follow) = this.follow.as_mut() else {
                        if res.status().is_redirection() {
                            tracing::debug!(
                                status = res.status().as_u16(),
                                "passing redirect through: method is not GET or HEAD"
                            );
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(res.map(ResponseBody::new)));
                    };
                    follow.on_response(res)?
                }
                StateProj::Ready { request } => {
                    let follow = this
                        .follow
                        .as_mut()
                        .expect("Ready state without a redirect to follow");
                    ready!(follow.service.poll_ready(cx))
                        .map_err(|e| Error::storage(&follow.uri, e.into()))?;
                    let req = request.take().expect("Ready state without a request");
                    let future = follow.service.call(req);
                    this.state.set(State::Storage { future });
                    continue;
                }
                StateProj::Storage { future } => {
                    let follow = this
                        .follow
                        .as_mut()
                        .expect("Storage state without a redirect to follow");
                    let res = ready!(future.poll(cx))
                        .map_err(|e| Error::storage(&follow.uri, e.into()))?;
                    follow.on_response(res)?
                }
                StateProj::ProbeBody { body } => {
                    let follow = this
                        .follow
                        .as_mut()
                        .expect("ProbeBody state without a redirect to follow");
                    let mut probe_body = Some(body);
                    // One byte was asked for; stop early at a misbehaving storage.
                    let mut read = 0;
                    while let Some(body) = probe_body.as_mut() {
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                read += frame.data_ref().map_or(0, Buf::remaining);
                                if read > 1024 {
                                    probe_body = None;
                                }
                            }
                            Some(Err(_)) | None => probe_body = None,
                        }
                    }
                    let parts = follow
                        .chain
                        .as_mut()
                        .and_then(|c| c.head_answer.take())
                        .expect("ProbeBody state without an answer");
                    Step::Return(Response::from_parts(parts, ResponseBody::empty()))
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            };
            match step {
                Step::Return(res) => {
                    this.state.set(State::Done);
                    this.drain.set(None);
                    return Poll::Ready(Ok(res));
                }
                Step::Next(body, request) => {
                    this.drain.set(Some(body));
                    if let Some(follow) = this.follow.as_mut() {
                        follow.drained = 0;
                    }
                    this.state.set(State::Ready {
                        request: Some(request),
                    });
                }
                Step::ProbeBody(body) => this.state.set(State::ProbeBody { body }),
            }
        }
    }
}

/// Reads and discards what has arrived of `body`, up to [`DRAIN_LIMIT`] bytes in all.
fn drain<R: Body>(mut body: Pin<&mut Option<R>>, drained: &mut usize, cx: &mut Context<'_>) {
    while let Some(b) = body.as_mut().as_pin_mut() {
        match b.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *drained += frame.data_ref().map_or(0, Buf::remaining);
                if *drained > DRAIN_LIMIT {
                    body.set(None);
                }
            }
            Poll::Ready(Some(Err(_)) | None) => body.set(None),
            Poll::Pending => return,
        }
    }
}

impl<S> Follow<S> {
    fn hops(&self) -> usize {
        self.chain.as_ref().map_or(0, |c| c.hops)
    }

    #[inline]
    fn on_response<R, B: Default>(&mut self, res: Response<R>) -> Result<Step<R, B>, Error> {
        if self.config.get().is_redirect(res.status()) {
            if let Some(target) = self.next_hop(&res)? {
                let request = self.follow_to(target, res.status());
                return Ok(Step::Next(res.into_body(), request));
            }
        }
        if self.chain.is_none() {
            return Ok(Step::Return(res.map(ResponseBody::new)));
        }
        self.finish(res)
    }

    /// The URI to follow `res` to, `None` to pass it on as it is.
    fn next_hop<R>(&self, res: &Response<R>) -> Result<Option<Uri>, Error> {
        let (hop, status) = (self.hops(), res.status().as_u16());
        let config = self.config.get();
        let mut locations = res.headers().get_all(LOCATION).iter();
        let target = match (locations.next(), locations.next()) {
            (Some(location), None) => location::resolve(&self.uri, location),
            _ => None,
        };
        let Some(target) = target.filter(|t| matches!(t.scheme_str(), Some("http" | "https")))
        else {
            if hop == 0 {
                tracing::debug!(
                    status,
                    "passing redirect through: no usable http(s) Location"
                );
                return Ok(None);
            }
            return Err(Error::new(ErrorKind::InvalidLocation, &self.uri));
        };
        if !config.matcher.matches(&target) {
            tracing::debug!(status, hop, location = %Redacted(&target), "passing redirect through: not a storage host");
            return Ok(None);
        }
        if self.uri.scheme_str() == Some("https")
            && target.scheme_str() == Some("http")
            && !config.allow_downgrade
        {
            return Err(Error::new(ErrorKind::Downgrade, &target));
        }
        if hop >= config.max_redirects {
            return Err(Error::new(ErrorKind::TooManyRedirects, &target)
                .with_detail(format!("limit {}", config.max_redirects)));
        }
        let seen = match &self.chain {
            Some(chain) => chain.visited.contains(&target),
            None => target == self.uri,
        };
        if seen {
            return Err(Error::new(ErrorKind::RedirectLoop, &target));
        }
        Ok(Some(target))
    }

    fn follow_to<B: Default>(&mut self, target: Uri, status: StatusCode) -> Request<B> {
        let probe =
            if self.method == Method::HEAD && self.config.get().head == HeadStrategy::RangeProbe {
                Probe::Probing
            } else {
                Probe::No
            };
        let chain = self.chain.get_or_insert_with(|| {
            Box::new(Chain {
                redirect_status: status,
                hops: 0,
                visited: vec![self.uri.clone()],
                probe,
                head_answer: None,
            })
        });
        chain.hops += 1;
        chain.visited.push(target.clone());
        tracing::debug!(status = status.as_u16(), hop = chain.hops, location = %Redacted(&target), "following redirect to storage");
        self.uri = target;
        self.storage_request()
    }

    /// A fresh request for the current hop: no body, no extensions, allowlisted headers only.
    fn storage_request<B: Default>(&self) -> Request<B> {
        let config = self.config.get();
        let probe = self.chain.as_ref().map_or(Probe::No, |c| c.probe);
        let (method, range_probe) = match (self.method == Method::HEAD, config.head, probe) {
            (false, _, _) => (Method::GET, false),
            (true, _, Probe::FellBack) | (true, HeadStrategy::Head, _) => (Method::HEAD, false),
            (true, HeadStrategy::RangeProbe, _) => (Method::GET, true),
            (true, HeadStrategy::Get, _) => (Method::GET, false),
        };
        let mut req = Request::new(B::default());
        *req.method_mut() = method;
        *req.uri_mut() = self.uri.clone();
        self.forwarded
            .write_to(config, req.headers_mut(), range_probe);
        req
    }

    /// Storage's final answer, after at least one followed redirect.
    fn finish<R, B: Default>(&mut self, res: Response<R>) -> Result<Step<R, B>, Error> {
        let head = self.config.get().head;
        let Some(chain) = self.chain.as_mut() else {
            return Ok(Step::Return(res.map(ResponseBody::new)));
        };
        let signed = SignedUrl::new(&self.uri);
        let record = FollowedRedirect {
            redirect_status: chain.redirect_status,
            storage_url: signed.to_string(),
            hops: chain.hops,
            scheme: signed.scheme(),
            expires_at: signed.expires_at(),
            head_fallback: chain.probe == Probe::FellBack,
        };
        tracing::debug!(
            status = res.status().as_u16(),
            hops = chain.hops,
            scheme = %record.scheme,
            url = %record.storage_url,
            "storage answered"
        );
        let (mut parts, body) = res.into_parts();
        parts.extensions.insert(record);
        if self.method != Method::HEAD
            || chain.probe == Probe::FellBack
            || head == HeadStrategy::Head
        {
            return Ok(Step::Return(Response::from_parts(
                parts,
                ResponseBody::new(body),
            )));
        }
        if chain.probe != Probe::Probing {
            // HeadStrategy::Get: answer from the GET's headers, stop the download.
            return Ok(Step::Return(Response::from_parts(
                parts,
                ResponseBody::empty(),
            )));
        }
        match parts.status {
            StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
                if let Some(total) = content_range_total(&parts.headers) {
                    parts.status = StatusCode::OK;
                    parts.headers.remove(CONTENT_RANGE);
                    parts
                        .headers
                        .insert(CONTENT_LENGTH, HeaderValue::from(total));
                    chain.head_answer = Some(parts);
                    return Ok(Step::ProbeBody(body));
                }
            }
            // Storage ignored the range: its Content-Length is the blob's.
            StatusCode::OK => {
                return Ok(Step::Return(Response::from_parts(
                    parts,
                    ResponseBody::empty(),
                )));
            }
            StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::METHOD_NOT_ALLOWED => {}
            _ => {
                return Ok(Step::Return(Response::from_parts(
                    parts,
                    ResponseBody::empty(),
                )))
            }
        }
        // The ranged GET was rejected (a URL signed for HEAD) or told no size: ask with HEAD.
        tracing::debug!(
            status = parts.status.as_u16(),
            "range probe rejected; retrying the storage hop with HEAD"
        );
        chain.probe = Probe::FellBack;
        Ok(Step::Next(body, self.storage_request()))
    }
}

/// The complete length from `Content-Range: bytes 0-0/1234` or `bytes */1234`.
fn content_range_total(headers: &http::HeaderMap) -> Option<u64> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let (unit, rest) = value.trim().split_once(' ')?;
    let (_, total) = rest.rsplit_once('/')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    total.trim().parse().ok()
}
