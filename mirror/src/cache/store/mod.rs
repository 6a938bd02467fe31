//! The blob store: blobs and manifests kept by digest, on a local directory or any
//! S3-compatible store, filled while they are served, and read only by those the registry
//! served them to.

pub mod access;
pub mod backend;
pub mod blobs;
pub mod commit;
pub mod downloads;
pub mod fill;
pub mod grants;
pub mod hot;
pub mod index;
pub mod keys;
pub mod leases;
pub mod leftovers;
pub mod pieces;
pub mod read;
pub mod replicas;
pub mod s3;
pub mod seal;
pub mod shared_state;
pub mod spool;
pub mod tag_store;
pub mod tags;
