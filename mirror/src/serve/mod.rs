//! What reaches the client: the workers and their accept loop ([`server`]), TLS
//! ([`tls`]), the runtime, socket and hyper settings ([`tuning`]), the one response body
//! type ([`body`]) with its digest check ([`verify`]) and its log line ([`log`]), and
//! registry-style errors ([`errors`]). The server loop takes any hyper service: nothing here
//! calls into the mirror's routes.

pub mod body;
pub mod errors;
pub mod log;
pub mod server;
pub mod tls;
pub mod tuning;
pub mod verify;
