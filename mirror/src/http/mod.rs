//! The mirror as an HTTP service, top to bottom: the hyper service ([`service`]), one
//! worker's mirror and the way a request takes through it ([`mirror`]), what each path asks
//! for and which registry it goes to ([`paths`]), the mirror's own endpoints ([`health`]),
//! a pull through the caches ([`pull`]): a manifest through the manifest cache
//! ([`manifest_pull`]) and its copy in the blob store ([`manifest_store`]), a blob through
//! the blob store ([`blob_pull`], who may read it: [`store_access`], its answer:
//! [`blob_answer`]); a pull's exchange with the registry ([`exchange`]) and the answer made
//! the client's ([`answer`]).

pub mod answer;
pub mod blob_answer;
pub mod blob_pull;
pub mod exchange;
pub mod health;
pub mod manifest_pull;
pub mod manifest_store;
pub mod mirror;
pub mod paths;
pub mod pull;
pub mod service;
pub mod store_access;

pub use mirror::{Mirror, Shared};
pub use service::MirrorService;
