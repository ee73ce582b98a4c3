//! Integration tests of the `snapshot-tool` library and binary (one test binary, one module
//! per concern).

// Test helpers outside #[test] fns: a panic there is a test failure with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod golden;
mod hostile;
mod mutate;
mod roundtrip;

#[cfg(feature = "cli")]
mod cli;
