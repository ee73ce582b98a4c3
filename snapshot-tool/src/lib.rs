//! Builds, signs, inspects and verifies rackhand OS snapshots: raw disk images cut into
//! independently zstd-compressed chunks, with a signed manifest (layout and reasoning in
//! [`format`](mod@format)).
//!
//! - [`format`](mod@format): the pure, versioned format (manifest codec, keys and signatures, per-chunk and
//!   whole-image verification). No paths, no clock, no threads. This is what the installer
//!   uses, with `default-features = false`.
//! - [`build`]: raw image → snapshot directory, compressing on several threads; signing.
//! - [`verify`]: full verification of a snapshot directory with a report.
//! - [`inspect`]: text and JSON rendering of what a snapshot claims.
//! - `cli` (feature `cli`, on by default): the `snapshot-tool` command line.
//!
//! Every error type has a `code()` with a stable reason code (`bad_signature`,
//! `chunk_digest_mismatch`, `data_truncated`, ...).

pub mod build;
pub mod format;
mod fsutil;
pub mod inspect;
pub mod verify;

#[cfg(feature = "cli")]
pub mod cli;

pub use fsutil::IoError;
