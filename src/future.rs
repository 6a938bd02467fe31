//! The response future: wait for the upstream's answer; if it is a redirect to storage,
//! follow it hop by hop with fresh requests, then answer from storage. With a redirect
//! cache, a request whose storage URL is known starts at storage instead, and goes back to
//! the upstream if storage refuses that URL.

use crate::body::ResponseBody;
use crate::cache::{Entry, Lookup, Resumed, Ticket, Waiting};
use crate::config::Config;
use crate::drain::Drain;
use crate::error::{BoxError, Error};
use crate::extension::FollowedRedirect;
use crate::forward::{Extra, Forwarded};
use crate::head::{HeadAnswer, HeadPlan, PROBE_BODY_LIMIT};
use crate::redirect::Hops;
use crate::signed_url::{self, Redacted};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tower_service::Service;

/// How much of a redirect's own body is read (and discarded) so the upstream connection can
/// be reused. Past this the body is dropped, which closes that connection.
const REDIRECT_BODY_LIMIT: usize = 64 * 1024;

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
        state: State<S::Future, S, ReqBody, ResBody>,
        // The last redirect's body, drained while the next hop is in flight.
        #[pin]
        redirect_body: Drain<ResBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B, R>
    where
        S: Service<Request<B>>,
    {
        // Not a GET or HEAD: the answer passes through. The URI scrubs an error's message.
        PassThrough { #[pin] future: F, uri: Uri },
        // A GET or HEAD, waiting for the upstream's answer.
        Upstream { #[pin] future: F, asked: Asked<S> },
        // The caller's request, sent upstream from this future once the service is ready:
        // after storage refused a cached URL, or after waiting for another request's flight.
        // Not `Upstream` with an optional future: this state waits for readiness, that one
        // for an answer, and a request sent by `SignedRedirect::call` (nearly all of them)
        // never carries a request to resend.
        Resend { resending: Option<Box<Resending<S, B>>> },
        // Following a redirect: `None` while waiting for the service to be ready, then
        // storage's answer.
        Storage { #[pin] future: Option<F>, chain: Box<Chain<S, B>> },
        // With single-flight: another request with this one's key is asking the registry;
        // this one sends nothing until it is done.
        Waiting { parked: Box<Parked<S, B>> },
        // A HEAD's range probe was answered: its body is read (bounded) before the answer.
        ProbeBody { #[pin] body: Drain<R>, answer: Response<()> },
        Done,
    }
}

/// What every step of one caller's request needs: the service to send through, the
/// settings, the allowlisted headers captured from the request, and its place in the
/// redirect cache.
pub(crate) struct Origin<S> {
    service: S,
    config: Config,
    forwarded: Forwarded,
    /// Its place in the redirect cache, where the chain's end is remembered (boxed: a
    /// request without a cache carries one pointer, not the whole ticket).
    ticket: Option<Box<Ticket>>,
    /// The upstream is asked again because storage refused a cached URL.
    refreshed: bool,
}

impl<S> Origin<S> {
    /// What `req` carries through the layer; with a cache `ticket`, the chain's end is
    /// remembered through it.
    #[inline(always)]
    pub(crate) fn new<B>(
        service: S,
        config: Config,
        req: &Request<B>,
        ticket: Option<Ticket>,
    ) -> Self {
        let forwarded = config.settings().forward_headers.capture(req.headers());
        Origin {
            service,
            config,
            forwarded,
            ticket: ticket.map(Box::new),
            refreshed: false,
        }
    }
}

/// A request waiting for another's flight: what it needs to go on (boxed, so that the
/// rare wait does not make every future larger).
pub(crate) struct Parked<S, B> {
    waiting: Waiting,
    service: S,
    config: Config,
    request: Option<Box<Request<B>>>,
}

/// A `GET` or `HEAD` sent upstream, kept until its answer says whether there is a redirect
/// to follow.
pub(crate) struct Asked<S> {
    origin: Origin<S>,
    method: Method,
    uri: Uri,
}

/// The caller's request, to be sent upstream again from the future, and what is asked.
pub(crate) struct Resending<S, B> {
    asked: Asked<S>,
    request: Request<B>,
}

/// A redirect chain being followed.
pub(crate) struct Chain<S, B> {
    origin: Origin<S>,
    head: HeadPlan,
    hops: Hops,
    /// It starts from the URL another request's flight cached, after waiting for it.
    joined_flight: bool,
    /// Started from a cached URL: the caller's request, sent upstream if storage refuses it.
    retry: Option<Request<B>>,
}

/// What a step of the future leads to.
enum Next<S, B, R> {
    /// The caller's answer.
    Respond(Response<ResponseBody<R>>),
    /// The same state goes on (its next request is being made); this body is drained
    /// meanwhile.
    Drain(R),
    /// A chain to storage starts: after the upstream's redirect (whose body is drained), or
    /// from a cached URL.
    Follow(Option<R>, Box<Chain<S, B>>),
    /// The caller's request goes upstream (again, after storage refused a cached URL, whose
    /// answer is drained; or after waiting for another request's flight).
    Ask(Option<R>, Box<Resending<S, B>>),
    /// A range probe's body to read before the answer.
    ProbeBody(R, Response<()>),
}

/// An upstream failure, with `uri`'s secrets scrubbed from its message.
fn upstream_error<E: Into<BoxError>>(uri: &Uri) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::upstream(uri, e.into())
}

/// A storage hop's failure, with `uri`'s secrets scrubbed from its message.
fn storage_error<E: Into<BoxError>>(uri: &Uri) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::storage(uri, e.into())
}

impl<S> Asked<S> {
    /// `req`, as sent upstream by `origin`'s service.
    #[inline(always)]
    pub(crate) fn new<B>(origin: Origin<S>, req: &Request<B>) -> Self {
        Asked {
            origin,
            method: req.method().clone(),
            uri: req.uri().clone(),
        }
    }

    /// The upstream answered: passed on, or a redirect followed (the chain takes over what
    /// it needs of the request).
    fn answer<R, B>(&mut self, res: Response<R>) -> Result<Next<S, B, R>, Error>
    where
        S: Clone,
    {
        let rules = &self.origin.config.settings().rules;
        let Some(target) = rules.next_hop(&res, &self.uri, None)? else {
            return Ok(Next::Respond(res.map(ResponseBody::new)));
        };
        let status = res.status();
        log_follow(status, 1, &target);
        let head = HeadPlan::new(&self.method, self.origin.config.settings().head_strategy);
        // Built in place: the chain is moved once, into its box.
        let chain = Box::new(Chain {
            origin: Origin {
                service: self.origin.service.clone(),
                config: self.origin.config.clone(),
                forwarded: std::mem::take(&mut self.origin.forwarded),
                ticket: self.origin.ticket.take(),
                refreshed: self.origin.refreshed,
            },
            head,
            hops: Hops::start(std::mem::take(&mut self.uri), status, target),
            joined_flight: false,
            retry: None,
        });
        Ok(Next::Follow(Some(res.into_body()), chain))
    }
}

impl<S, B> Chain<S, B> {
    /// A chain that starts at the cached storage URL of `entry`, for `req` (kept, to be
    /// sent upstream if storage refuses the URL).
    pub(crate) fn from_cache(origin: Origin<S>, req: Request<B>, entry: Entry) -> Box<Self> {
        tracing::debug!(location = %Redacted(&entry.storage), "going to storage with a cached URL");
        let head = match HeadPlan::new(req.method(), origin.config.settings().head_strategy) {
            HeadPlan::RangeProbe if entry.head_fallback => HeadPlan::Head { after_probe: true },
            plan => plan,
        };
        let mut hops = Hops::start(req.uri().clone(), entry.redirect_status, entry.storage);
        hops.set_recorded(entry.hops);
        Box::new(Chain {
            origin,
            head,
            hops,
            joined_flight: false,
            retry: Some(req),
        })
    }

    /// A fresh request for the current hop: no body, no extensions, allowlisted headers only.
    pub(crate) fn request<Q: Default>(&self) -> Request<Q> {
        let settings = self.origin.config.settings();
        let mut req = Request::new(Q::default());
        *req.method_mut() = self.head.method();
        *req.uri_mut() = self.hops.current().clone();
        let extra = Extra {
            user_agent: settings.user_agent.as_ref(),
            range_probe: self.head.range_probe(),
        };
        self.origin
            .forwarded
            .write_to(&settings.forward_headers, extra, req.headers_mut());
        req
    }

    /// What happened, for the answer's extensions; a successful chain's end is remembered
    /// (from the record, so that the URL is read once for the cache and the caller).
    fn record(&mut self, status: StatusCode) -> FollowedRedirect {
        let from_cache = self.retry.is_some();
        let record = FollowedRedirect::new(self.hops.redirect_status(), self.hops.current())
            .with_hops(self.hops.recorded())
            .with_head_fallback(self.head.fell_back())
            .with_cache(from_cache, self.origin.refreshed)
            .with_joined_flight(self.joined_flight);
        if !from_cache && status.is_success() {
            if let Some(mut ticket) = self.origin.ticket.take() {
                ticket.store(&record, self.hops.earliest_expiry());
            }
        }
        tracing::debug!(
            status = status.as_u16(),
            hops = record.hops(),
            scheme = %record.scheme(),
            url = record.storage_url(),
            "storage answered"
        );
        record
    }
}

fn log_follow(status: StatusCode, hop: usize, target: &Uri) {
    tracing::debug!(status = status.as_u16(), hop, location = %Redacted(target), "following redirect to storage");
}

impl<S, B, R> ResponseFuture<S, B, R>
where
    S: Service<Request<B>>,
{
    /// The future of a request the layer never follows (not `GET` or `HEAD`).
    #[inline]
    pub(crate) fn pass_through(future: S::Future, uri: Uri) -> Self {
        ResponseFuture {
            state: State::PassThrough { future, uri },
            redirect_body: Drain::none(),
        }
    }

    /// The future of a `GET` or `HEAD` sent upstream, following its redirects to storage.
    #[inline]
    pub(crate) fn upstream(future: S::Future, asked: Asked<S>) -> Self {
        ResponseFuture {
            state: State::Upstream { future, asked },
            redirect_body: Drain::none(),
        }
    }

    /// The future of a `GET` or `HEAD` that waits for another request's flight.
    pub(crate) fn waiting(waiting: Waiting, service: S, config: Config, req: Request<B>) -> Self {
        ResponseFuture {
            state: State::Waiting {
                parked: Box::new(Parked {
                    waiting,
                    service,
                    config,
                    request: Some(Box::new(req)),
                }),
            },
            redirect_body: Drain::none(),
        }
    }

    /// The future of a `GET` or `HEAD` sent straight to a cached storage URL.
    pub(crate) fn from_cache(future: S::Future, chain: Box<Chain<S, B>>) -> Self {
        ResponseFuture {
            state: State::Storage {
                future: Some(future),
                chain,
            },
            redirect_body: Drain::none(),
        }
    }
}

/// The upstream's answer to a `GET` or `HEAD`.
#[inline]
fn poll_upstream<S, B, R>(
    future: Pin<&mut S::Future>,
    asked: &mut Asked<S>,
    cx: &mut Context<'_>,
) -> Poll<Result<Next<S, B, R>, Error>>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
{
    let res = ready!(future.poll(cx)).map_err(upstream_error(&asked.uri))?;
    Poll::Ready(asked.answer(res))
}

/// The caller's request sent upstream again, once the service is ready: its future, and
/// what was asked (for the `Upstream` state that waits for the answer).
#[allow(clippy::type_complexity)]
fn poll_resend<S, B>(
    resending: &mut Option<Box<Resending<S, B>>>,
    cx: &mut Context<'_>,
) -> Poll<Result<(S::Future, Asked<S>), Error>>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    let Some(pending) = resending.as_deref_mut() else {
        return Poll::Ready(Err(upstream_error(&Uri::default())("no request to send")));
    };
    let asked = &mut pending.asked;
    ready!(asked.origin.service.poll_ready(cx)).map_err(upstream_error(&asked.uri))?;
    let Some(ready) = resending.take() else {
        return Poll::Ready(Err(upstream_error(&Uri::default())("no request to send")));
    };
    let Resending { mut asked, request } = *ready;
    let future = asked.origin.service.call(request);
    Poll::Ready(Ok((future, asked)))
}

/// Storage's answer to the current hop: the caller's, another hop, the upstream asked
/// again (a refused cached URL), or a `HEAD`'s probe body to read.
fn poll_storage<S, B, R>(
    mut future: Pin<&mut Option<S::Future>>,
    chain: &mut Chain<S, B>,
    cx: &mut Context<'_>,
) -> Poll<Result<Next<S, B, R>, Error>>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Default,
{
    if future.is_none() {
        ready!(chain.origin.service.poll_ready(cx)).map_err(storage_error(chain.hops.current()))?;
        let request = chain.request();
        future.set(Some(chain.origin.service.call(request)));
    }
    let Some(pending) = future.as_mut().as_pin_mut() else {
        return Poll::Ready(Err(storage_error(chain.hops.current())(
            "no request to send",
        )));
    };
    let res = ready!(pending.poll(cx)).map_err(storage_error(chain.hops.current()))?;
    let rules = &chain.origin.config.settings().rules;
    if let Some(target) = rules.next_hop(&res, chain.hops.current(), Some(&chain.hops))? {
        log_follow(res.status(), chain.hops.count() + 1, &target);
        chain.hops.push(target);
        future.set(None);
        return Poll::Ready(Ok(Next::Drain(res.into_body())));
    }
    let status = res.status();
    if signed_url::refused(status) {
        if let Some(original) = chain.retry.take() {
            return Poll::Ready(Ok(ask_again(chain, original, res.into_body(), status)));
        }
    }
    let (parts, body) = res.into_parts();
    Poll::Ready(Ok(match chain.head.answer(parts, body) {
        HeadAnswer::Respond(mut parts, body) => {
            parts.extensions.insert(chain.record(status));
            let body = body.map_or_else(ResponseBody::empty, ResponseBody::new);
            Next::Respond(Response::from_parts(parts, body))
        }
        HeadAnswer::AfterProbeBody(mut parts, body) => {
            parts.extensions.insert(chain.record(status));
            Next::ProbeBody(body, Response::from_parts(parts, ()))
        }
        HeadAnswer::RetryAsHead(body) => {
            future.set(None);
            Next::Drain(body)
        }
    }))
}

/// The end of the flight this request waited for: storage with the URL it cached, or the
/// upstream (leading a new flight, or each waiter on its own after one that stored nothing).
fn poll_waiting<S, B, R>(
    parked: &mut Parked<S, B>,
    cx: &mut Context<'_>,
) -> Poll<Result<Next<S, B, R>, Error>>
where
    S: Clone,
{
    let Parked {
        waiting,
        service,
        config,
        request,
    } = parked;
    loop {
        let Some(req) = request.as_deref() else {
            return Poll::Ready(Err(upstream_error(&Uri::default())("no request to send")));
        };
        let ticket = match ready!(waiting.poll_resume(req, cx)) {
            Resumed::Lookup(Lookup::Wait(next)) => {
                *waiting = next;
                continue;
            }
            Resumed::Lookup(Lookup::Hit(entry, ticket)) => {
                let Some(req) = request.take() else { continue };
                let origin = Origin::new(service.clone(), config.clone(), &req, Some(ticket));
                let mut chain = Chain::from_cache(origin, *req, entry);
                chain.joined_flight = true;
                return Poll::Ready(Ok(Next::Follow(None, chain)));
            }
            Resumed::Lookup(Lookup::Miss(ticket)) | Resumed::OwnTry(ticket) => Some(ticket),
            Resumed::Lookup(Lookup::Bypass) => None,
        };
        let Some(req) = request.take() else { continue };
        let origin = Origin::new(service.clone(), config.clone(), &req, ticket);
        let asked = Asked::new(origin, &req);
        let request = *req;
        return Poll::Ready(Ok(Next::Ask(None, Box::new(Resending { asked, request }))));
    }
}

/// A body to drain, if there is one.
fn drain<R>(body: Option<R>) -> Drain<R> {
    body.map_or_else(Drain::none, |body| Drain::new(body, REDIRECT_BODY_LIMIT))
}

/// Storage refused the cached URL the chain started from: the entry is forgotten and the
/// caller's request goes upstream again, its answer remembered in the entry's place.
fn ask_again<S, B, R>(
    chain: &mut Chain<S, B>,
    original: Request<B>,
    refused: R,
    status: StatusCode,
) -> Next<S, B, R>
where
    S: Clone,
{
    tracing::debug!(
        status = status.as_u16(),
        "storage refused a cached URL; asking the upstream again"
    );
    let ticket = chain.origin.ticket.take().map(|ticket| *ticket);
    if let Some(ticket) = &ticket {
        ticket.forget();
    }
    let mut origin = Origin::new(
        chain.origin.service.clone(),
        chain.origin.config.clone(),
        &original,
        ticket,
    );
    origin.refreshed = true;
    let asked = Asked::new(origin, &original);
    let request = original;
    Next::Ask(Some(refused), Box::new(Resending { asked, request }))
}

impl<S, B, R> Future for ResponseFuture<S, B, R>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Default,
    R: Body,
{
    type Output = Result<Response<ResponseBody<R>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // Whatever has arrived of the last redirect's body, while the next hop is out.
            let _ = this.redirect_body.as_mut().poll_drain(cx);
            let step = match this.state.as_mut().project() {
                StateProj::PassThrough { future, uri } => ready!(future.poll(cx))
                    .map_err(upstream_error(uri))
                    .map(|res| {
                        if res.status().is_redirection() {
                            tracing::debug!(
                                status = res.status().as_u16(),
                                "passing redirect through: method is not GET or HEAD"
                            );
                        }
                        Next::Respond(res.map(ResponseBody::new))
                    }),
                StateProj::Upstream { future, asked } => ready!(poll_upstream(future, asked, cx)),
                StateProj::Resend { resending } => match ready!(poll_resend(resending, cx)) {
                    Ok((future, asked)) => {
                        this.state.set(State::Upstream { future, asked });
                        continue;
                    }
                    Err(e) => Err(e),
                },
                StateProj::Storage { future, chain } => ready!(poll_storage(future, chain, cx)),
                StateProj::Waiting { parked } => ready!(poll_waiting(parked, cx)),
                StateProj::ProbeBody { body, answer } => {
                    ready!(body.poll_drain(cx));
                    Ok(Next::Respond(
                        std::mem::take(answer).map(|()| ResponseBody::empty()),
                    ))
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            };
            // Done either way: what the state held (a cache ticket leading a flight, say) is
            // released now, not when the caller drops the future.
            let next = match step {
                Ok(next) => next,
                Err(e) => {
                    this.state.set(State::Done);
                    this.redirect_body.set(Drain::none());
                    return Poll::Ready(Err(e));
                }
            };
            match next {
                Next::Respond(res) => {
                    this.state.set(State::Done);
                    this.redirect_body.set(Drain::none());
                    return Poll::Ready(Ok(res));
                }
                Next::Drain(body) => this
                    .redirect_body
                    .set(Drain::new(body, REDIRECT_BODY_LIMIT)),
                Next::Follow(body, chain) => {
                    this.redirect_body.set(drain(body));
                    this.state.set(State::Storage {
                        future: None,
                        chain,
                    });
                }
                Next::Ask(body, resending) => {
                    this.redirect_body.set(drain(body));
                    this.state.set(State::Resend {
                        resending: Some(resending),
                    });
                }
                Next::ProbeBody(body, answer) => this.state.set(State::ProbeBody {
                    body: Drain::new(body, PROBE_BODY_LIMIT),
                    answer,
                }),
            }
        }
    }
}

impl<S, B, R> fmt::Debug for ResponseFuture<S, B, R>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (state, hops) = match &self.state {
            State::PassThrough { .. } => ("pass-through", 0),
            State::Upstream { .. } => ("upstream", 0),
            State::Resend { .. } => ("resending upstream", 0),
            State::Storage { chain, .. } => ("storage", chain.hops.count()),
            State::Waiting { .. } => ("waiting for another request's flight", 0),
            State::ProbeBody { .. } => ("range probe body", 0),
            State::Done => ("done", 0),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("hops", &hops)
            .finish()
    }
}
