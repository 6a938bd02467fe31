//! The process around the mirror: start-up (build it, bind, or exit with a reason) and
//! graceful shutdown on Ctrl-C or SIGTERM.

use super::options::Options;
use super::Mirror;
use std::sync::Arc;

/// Builds the mirror and binds its listener; on failure prints the reason and exits (2 for
/// configuration, 1 for the socket).
pub async fn start(options: &Options) -> (Arc<Mirror>, tokio::net::TcpListener) {
    let mirror = match Mirror::from_options(options) {
        Ok(mirror) => Arc::new(mirror),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    match tokio::net::TcpListener::bind(options.listen).await {
        Ok(listener) => (mirror, listener),
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", options.listen);
            std::process::exit(1);
        }
    }
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
