//! Helpers shared by the test files: a recording mock client, loopback servers, a real
//! signature-verifying S3 store and a registry-like upstream.
#![allow(dead_code, unreachable_pub)]

pub mod mock;
pub mod net;
pub mod registry;
pub mod s3;
