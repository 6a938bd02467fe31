//! The upstream side: the registries the mirror pulls from ([`registry`]), the client it
//! sends with, `SignedRedirectLayer` included ([`client`], what this crate is for), where
//! that client may connect ([`guard`], the SSRF guard), and what crosses from a client's
//! request to the mirror's ([`request`]).

pub mod client;
pub mod guard;
pub mod registry;
pub mod request;
