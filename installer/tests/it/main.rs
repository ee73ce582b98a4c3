//! The installer's public API, in-process: disk selection over recon reports captured from
//! real (virtual) machines, preflight refusals over fixture trees, signed snapshots written to
//! files, and (as root) to a loop device.

// Test helpers outside #[test] fns: a panic there is a test failure with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod loopdev;
mod preflight;
mod select;
mod wipe;
mod write;
