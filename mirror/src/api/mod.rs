//! The distribution API's vocabulary, the ground floor every other room stands on: the pull
//! paths the mirror forwards, checked against the OCI grammar ([`path`]), and what a request
//! is for ([`Route`]).

pub mod path;
mod route;

pub use route::Route;
