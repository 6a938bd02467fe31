//! The runtime, socket and hyper settings the mirror runs with, in one place, so that the
//! macro benchmark's bare follower (`mirror/benches/macro/bare_follower.rs`) runs with the same
//! ones. Each was measured with `mirror/benches/macro/run.sh` (see mirror/README.md, "Performance").

use hyper_util::client::legacy::Builder as ClientBuilder;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The largest read buffer of a connection to a registry or storage. hyper grows it from
/// 8 KiB while reads fill it; past its default (~400 KiB) a 1 GiB stream takes fewer,
/// larger reads (1071 syscalls per GiB with 1 MiB against 2573 with the default), while
/// 16 parallel 64 MiB downloads in a fresh process peak at 20-24 MiB with 768 KiB (39 MiB
/// with 1 MiB). After other traffic glibc's heap holds more: see the README's
/// "Performance".
pub const CLIENT_MAX_BUF: usize = 768 * 1024;

/// How long a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The most HTTP/2 streams a client may have open on one connection (hyper's default is
/// 200; a pull opens a few).
pub const H2_MAX_STREAMS: u32 = 100;

/// The most a stream's answer may hold in hyper's HTTP/2 send buffer while its client's
/// window is shut (hyper's default is 400 KiB): with [`H2_MAX_STREAMS`], what one
/// connection whose client reads nothing can make the mirror hold, 25 MiB.
pub const H2_SEND_BUFFER: usize = 256 * 1024;

/// The server side of a connection: HTTP/1.1, or HTTP/2 where the client speaks it.
pub fn server_builder() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_send_buf_size(H2_SEND_BUFFER);
    builder
}

/// hyper-util's client builder: the read buffer above, and the pool's reaper (idle
/// connections are closed only with a timer to run it).
pub fn client_builder(executor: TokioExecutor) -> ClientBuilder {
    let mut builder = hyper_util::client::legacy::Client::builder(executor);
    builder
        .pool_timer(TokioTimer::new())
        .http1_max_buf_size(CLIENT_MAX_BUF);
    builder
}

/// How many workers to run by default: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `worker(i)` for `i` in `0..n`, each on a thread and current-thread runtime of its
/// own (a thread per core, like nginx's workers): no work stealing, no wake-ups across
/// threads. On 2 cores this served 24% more 64 KiB requests per second than one
/// work-stealing runtime. Returns when every worker has returned.
pub fn run_workers<F, Fut>(n: usize, worker: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()>,
{
    let worker = Arc::new(worker);
    let threads: Vec<_> = (0..n.max(1))
        .map(|i| {
            let worker = worker.clone();
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime")
                        .block_on(worker(i))
                })
                .expect("a worker thread")
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

/// A listener on `addr` that every worker binds (`SO_REUSEPORT`: the kernel spreads new
/// connections over them). Must be called inside a runtime.
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
