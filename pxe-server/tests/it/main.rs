#![allow(clippy::unwrap_used, clippy::expect_used)]
//! pxe-server integration tests: the real HTTP service on loopback sockets, a real SQLite store
//! in a temporary directory, and (for the crash test) the real binary.

mod api_matrix;
mod common;
mod concurrency;
mod crash;
mod docs;
mod injection;
mod paths;
mod registration;
mod retries;
