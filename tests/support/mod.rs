//! Helpers shared by the test files: a recording mock HTTP client, and loopback servers.
#![allow(dead_code, unreachable_pub)]

pub mod mock;
