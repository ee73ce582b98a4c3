//! pxeimage's integration tests: one binary, one module per boundary.

// Test helpers outside #[test] fns: a panic there is a test failure with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_http;
mod cmdline_fixtures;
mod install_http;
mod modules_fixture;
mod netlink_netns;
