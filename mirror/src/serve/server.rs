//! The process around the mirror: one worker per core, each with its own runtime, service
//! (client and connection pool) and listener on the shared port; the accept loop the
//! binary and the test harness serve through; graceful shutdown on Ctrl-C or SIGTERM.
//!
//! Nothing here knows what the mirror does: [`run`] and [`serve`] take any hyper service.

use super::tls;
use super::tuning;
use crate::options::Options;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower_signed_redirect::BoxError;

/// A hyper service that connections can be served with: cloned for each connection, its
/// futures and bodies sent to the connection's task.
pub trait ConnectionService:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The body of its responses.
    type Body: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> ConnectionService for S
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
}

/// How long connections in flight get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(30);

/// How long a client has for its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Runs until Ctrl-C or SIGTERM on `options.listen` (over TLS with `--tls-cert`), with
/// `options.workers` workers, each serving the service `make_service` makes for it on the
/// worker's own runtime. `make_service` is called once on this thread first, so that a
/// configuration it refuses exits the process (2) before the port is taken; a port that
/// cannot be taken exits it (1).
pub fn run<F, S>(options: &Options, make_service: F)
where
    F: Fn() -> Result<S, String> + Send + Sync + 'static,
    S: ConnectionService,
{
    let tls = match make_service().and_then(|_| tls::acceptor(options)) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let first = match bind(options.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", options.listen);
            std::process::exit(1);
        }
    };
    let addr = first.local_addr().unwrap_or(options.listen);
    let first = Mutex::new(Some(first));
    let workers = options.workers.unwrap_or_else(tuning::default_workers);
    tracing::info!(listen = %addr, tls = tls.is_some(), workers, upstreams = ?options.upstreams, redirects = ?options.redirects, "registry mirror ready");
    let stopped = stop_on_signal();
    let make_service = Arc::new(make_service);
    tuning::run_workers(workers, move |i| {
        let listener = first.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (make_service, tls, stopped) = (make_service.clone(), tls.clone(), stopped.clone());
        async move {
            let listener = match listener {
                Some(std) => TcpListener::from_std(std),
                None => tuning::listen(addr),
            };
            match (listener, make_service()) {
                (Ok(listener), Ok(service)) => serve(listener, service, tls, stopped).await,
                (Err(e), _) => tracing::error!(worker = i, error = %e, "cannot listen"),
                (_, Err(e)) => tracing::error!(worker = i, error = %e, "cannot build the mirror"),
            }
        }
    });
    tracing::info!("stopped");
}

/// A receiver that turns true on Ctrl-C or SIGTERM, watched by a thread of its own.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop, stopped) = watch::channel(false);
    std::thread::spawn(move || {
        let signals = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = signals {
            runtime.block_on(shutdown_signal());
            let _ = stop.send(true);
        }
    });
    stopped
}

/// The first listener, bound in the main thread so a busy port (or port 0's choice) is
/// known before the workers start; the others bind the same address.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let listener = runtime
        .block_on(async { tuning::listen(addr) })?
        .into_std()?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `service` on `listener` (over TLS with `tls`) until `stop` turns true, then waits
/// for the connections in flight (at most 30 s).
pub async fn serve<S: ConnectionService>(
    listener: TcpListener,
    service: S,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = tuning::server_builder();
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let service = WithClient { inner: service.clone(), client: ClientAddr(peer) };
                    spawn_connection(stream, service, tls.as_ref(), &builder, &graceful);
                }
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stopping(&mut stop) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {GRACE:?}; closing them");
    }
}

/// Serves one accepted connection on a task of its own (after its TLS handshake, with
/// `tls`), watched by `graceful`.
fn spawn_connection<S: ConnectionService>(
    stream: tokio::net::TcpStream,
    service: WithClient<S>,
    tls: Option<&TlsAcceptor>,
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    graceful: &GracefulShutdown,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
        return;
    };
    let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
    tokio::spawn(async move {
        let stream = match tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake timed out"),
        };
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// The address a request came from (the TCP peer: behind a proxy, the proxy's), as a
/// request extension. Failed logins are counted per address.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// A connection's service: `inner`, with the connection's [`ClientAddr`] on each request.
#[derive(Clone)]
struct WithClient<S> {
    inner: S,
    client: ClientAddr,
}

impl<S, B> hyper::service::Service<Request<B>> for WithClient<S>
where
    S: hyper::service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.client);
        self.inner.call(req)
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
