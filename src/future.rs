//! The response future: wait for the upstream's answer; if it is a redirect to storage,
//! follow it hop by hop with fresh requests, then answer from storage. With a redirect
//! cache, a request whose storage URL is known starts at storage instead, and goes back to
//! the upstream if storage refuses that URL.

use crate::body::ResponseBody;
use crate::cache::{Entry, Ticket};
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
use tower::util::Oneshot;
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
        Upstream { #[pin] future: F, follow: Follow<S> },
        // The same, sent again after storage refused a cached URL.
        Retry { future: Pin<Box<Oneshot<S, Request<B>>>>, follow: Follow<S> },
        // Following a redirect: `None` while waiting for the service to be ready, then
        // storage's answer.
        Storage { #[pin] future: Option<F>, chain: Box<Chain<S, B>> },
        // A HEAD's range probe was answered: its body is read (bounded) before the answer.
        ProbeBody { #[pin] body: Drain<R>, answer: Response<()> },
        Done,
    }
}

/// What a `GET` or `HEAD` keeps in case its answer is a redirect to follow.
pub(crate) struct Follow<S> {
    service: S,
    config: Config,
    method: Method,
    uri: Uri,
    forwarded: Forwarded,
    /// Where the chain's end is remembered, with a redirect cache.
    cache: Option<Ticket>,
    /// This is the second try, after storage refused a cached URL.
    refreshed: bool,
}

/// What the upstream's answer leads to.
enum Answered<S, B, R> {
    /// The caller's answer: not a redirect the layer follows.
    Done(Response<ResponseBody<R>>),
    /// A redirect to follow: its body, to drain, and the chain.
    Follow(R, Box<Chain<S, B>>),
}

/// A redirect chain being followed.
pub(crate) struct Chain<S, B> {
    service: S,
    config: Config,
    forwarded: Forwarded,
    head: HeadPlan,
    hops: Hops,
    cache: Option<Ticket>,
    refreshed: bool,
    /// Started from a cached URL: the caller's request, sent upstream if storage refuses it.
    retry: Option<Request<B>>,
}

impl<S> Follow<S> {
    /// What `req` keeps; with a cache `ticket`, the chain's end is remembered through it.
    #[inline]
    pub(crate) fn new<B>(
        service: S,
        config: Config,
        req: &Request<B>,
        cache: Option<Ticket>,
    ) -> Self {
        let forwarded = config.settings().forward_headers.capture(req.headers());
        Follow {
            service,
            config,
            method: req.method().clone(),
            uri: req.uri().clone(),
            forwarded,
            cache,
            refreshed: false,
        }
    }

    /// The upstream answered: passed on, or a redirect followed.
    fn answer<R, B>(&mut self, res: Response<R>) -> Result<Answered<S, B, R>, Error>
    where
        S: Clone,
    {
        let rules = &self.config.settings().rules;
        match rules.next_hop(&res, &self.uri, None)? {
            None => Ok(Answered::Done(res.map(ResponseBody::new))),
            Some(target) => {
                let chain = self.start_chain(res.status(), target);
                Ok(Answered::Follow(res.into_body(), chain))
            }
        }
    }

    /// The upstream's redirect to `target` is followed: the chain takes over what it needs.
    fn start_chain<B>(&mut self, redirect_status: StatusCode, target: Uri) -> Box<Chain<S, B>>
    where
        S: Clone,
    {
        log_follow(redirect_status, 1, &target);
        let settings = self.config.settings();
        Box::new(Chain {
            service: self.service.clone(),
            config: self.config.clone(),
            forwarded: std::mem::take(&mut self.forwarded),
            head: HeadPlan::new(&self.method, settings.head_strategy),
            hops: Hops::start(std::mem::take(&mut self.uri), redirect_status, target),
            cache: self.cache.take(),
            refreshed: self.refreshed,
            retry: None,
        })
    }
}

impl<S, B> Chain<S, B> {
    /// A chain that starts at the cached storage URL of `entry`, for `req` (kept, to be
    /// sent upstream if storage refuses the URL).
    pub(crate) fn from_cache(
        service: S,
        config: Config,
        req: &Request<B>,
        ticket: Ticket,
        entry: Entry,
    ) -> Box<Self> {
        tracing::debug!(location = %Redacted(&entry.storage), "going to storage with a cached URL");
        let settings = config.settings();
        let head = match HeadPlan::new(req.method(), settings.head_strategy) {
            HeadPlan::RangeProbe if entry.head_fallback => HeadPlan::Head { after_probe: true },
            plan => plan,
        };
        let forwarded = settings.forward_headers.capture(req.headers());
        let mut hops = Hops::start(req.uri().clone(), entry.redirect_status, entry.storage);
        hops.set_recorded(entry.hops);
        Box::new(Chain {
            service,
            config,
            forwarded,
            head,
            hops,
            cache: Some(ticket),
            refreshed: false,
            retry: None,
        })
    }

    /// Keeps the caller's request, to send upstream if storage refuses the cached URL.
    pub(crate) fn keep_for_retry(&mut self, req: Request<B>) {
        self.retry = Some(req);
    }

    /// A fresh request for the current hop: no body, no extensions, allowlisted headers only.
    pub(crate) fn request<Q: Default>(&self) -> Request<Q> {
        let settings = self.config.settings();
        let mut req = Request::new(Q::default());
        *req.method_mut() = self.head.method();
        *req.uri_mut() = self.hops.current().clone();
        let extra = Extra {
            user_agent: settings.user_agent.as_ref(),
            range_probe: self.head.range_probe(),
        };
        self.forwarded
            .write_to(&settings.forward_headers, extra, req.headers_mut());
        req
    }

    /// Storage redirected again, to `target`.
    fn follow(&mut self, status: StatusCode, target: Uri) {
        log_follow(status, self.hops.count() + 1, &target);
        self.hops.push(target);
    }

    /// What happened, for the answer's extensions; a successful chain's end is remembered
    /// (from the record, so that the URL is read once for the cache and the caller).
    fn record(&self, status: StatusCode) -> FollowedRedirect {
        let from_cache = self.retry.is_some();
        let record = FollowedRedirect::new(self.hops.redirect_status(), self.hops.current())
            .with_hops(self.hops.recorded())
            .with_head_fallback(self.head.fell_back())
            .with_cache(from_cache, self.refreshed);
        if let (Some(ticket), false, true) = (&self.cache, from_cache, status.is_success()) {
            ticket.store(&record, self.hops.earliest_expiry());
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

    /// The future of a `GET` or `HEAD`, following its redirects to storage.
    #[inline]
    pub(crate) fn follow(future: S::Future, follow: Follow<S>) -> Self {
        ResponseFuture {
            state: State::Upstream { future, follow },
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
            let answered = match this.state.as_mut().project() {
                StateProj::PassThrough { future, uri } => {
                    let res =
                        ready!(future.poll(cx)).map_err(|e| Error::upstream(uri, e.into()))?;
                    if res.status().is_redirection() {
                        tracing::debug!(
                            status = res.status().as_u16(),
                            "passing redirect through: method is not GET or HEAD"
                        );
                    }
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(res.map(ResponseBody::new)));
                }
                StateProj::Upstream { future, follow } => {
                    let res = ready!(future.poll(cx))
                        .map_err(|e| Error::upstream(&follow.uri, e.into()))?;
                    follow.answer(res)?
                }
                StateProj::Retry { future, follow } => {
                    let res = ready!(future.as_mut().poll(cx))
                        .map_err(|e| Error::upstream(&follow.uri, e.into()))?;
                    follow.answer(res)?
                }
                StateProj::Storage { mut future, chain } => {
                    let Some(pending) = future.as_mut().as_pin_mut() else {
                        ready!(chain.service.poll_ready(cx))
                            .map_err(|e| Error::storage(chain.hops.current(), e.into()))?;
                        let request = chain.request();
                        future.set(Some(chain.service.call(request)));
                        continue;
                    };
                    let res = ready!(pending.poll(cx))
                        .map_err(|e| Error::storage(chain.hops.current(), e.into()))?;
                    let rules = &chain.config.settings().rules;
                    let from = chain.hops.current();
                    if let Some(target) = rules.next_hop(&res, from, Some(&chain.hops))? {
                        chain.follow(res.status(), target);
                        this.redirect_body
                            .set(Drain::new(res.into_body(), REDIRECT_BODY_LIMIT));
                        future.set(None);
                        continue;
                    }
                    let status = res.status();
                    if signed_url::refused(status) {
                        if let Some(original) = chain.retry.take() {
                            tracing::debug!(
                                status = status.as_u16(),
                                "storage refused a cached URL; asking the upstream again"
                            );
                            if let Some(ticket) = &chain.cache {
                                ticket.forget();
                            }
                            let mut follow = Follow::new(
                                chain.service.clone(),
                                chain.config.clone(),
                                &original,
                                chain.cache.take(),
                            );
                            follow.refreshed = true;
                            let retry = Oneshot::new(chain.service.clone(), original);
                            this.redirect_body
                                .set(Drain::new(res.into_body(), REDIRECT_BODY_LIMIT));
                            this.state.set(State::Retry {
                                future: Box::pin(retry),
                                follow,
                            });
                            continue;
                        }
                    }
                    let (parts, body) = res.into_parts();
                    match chain.head.answer(parts, body) {
                        HeadAnswer::Respond(mut parts, body) => {
                            parts.extensions.insert(chain.record(status));
                            let body = body.map_or_else(ResponseBody::empty, ResponseBody::new);
                            this.state.set(State::Done);
                            this.redirect_body.set(Drain::none());
                            return Poll::Ready(Ok(Response::from_parts(parts, body)));
                        }
                        HeadAnswer::AfterProbeBody(mut parts, body) => {
                            parts.extensions.insert(chain.record(status));
                            this.state.set(State::ProbeBody {
                                body: Drain::new(body, PROBE_BODY_LIMIT),
                                answer: Response::from_parts(parts, ()),
                            });
                        }
                        HeadAnswer::RetryAsHead(body) => {
                            this.redirect_body
                                .set(Drain::new(body, REDIRECT_BODY_LIMIT));
                            future.set(None);
                        }
                    }
                    continue;
                }
                StateProj::ProbeBody { body, answer } => {
                    ready!(body.poll_drain(cx));
                    let answer = std::mem::take(answer).map(|()| ResponseBody::empty());
                    this.state.set(State::Done);
                    this.redirect_body.set(Drain::none());
                    return Poll::Ready(Ok(answer));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            };
            match answered {
                Answered::Done(res) => {
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(res));
                }
                Answered::Follow(body, chain) => {
                    this.redirect_body
                        .set(Drain::new(body, REDIRECT_BODY_LIMIT));
                    this.state.set(State::Storage {
                        future: None,
                        chain,
                    });
                }
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
            State::Upstream { .. } | State::Retry { .. } => ("upstream", 0),
            State::Storage { chain, .. } => ("storage", chain.hops.count()),
            State::ProbeBody { .. } => ("range probe body", 0),
            State::Done => ("done", 0),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("hops", &hops)
            .finish()
    }
}
