//! TFTP server (read-only): RFC 1350 with the option extensions of RFC 2347/2348/2349/7440.
//!
//! TFTP carries only the first boot stage (the iPXE binary); everything after it goes over
//! HTTP. The server is a small sans-IO core driven by a thin tokio service:
//!
//! | module | kind | what |
//! |---|---|---|
//! | [`packet`] | pure | codec for RRQ/WRQ/DATA/ACK/ERROR/OACK (RFC 1350 §5, RFC 2347 §2) |
//! | [`options`] | pure | option negotiation: blksize (RFC 2348), timeout and tsize (RFC 2349), windowsize (RFC 7440) |
//! | [`session`] | pure | one read transfer: windows, ACK handling, retransmission with an explicit clock |
//! | [`path`] | pure | request filename allow-list |
//! | [`fs`] | I/O | open beneath the root, symlinks resolved and checked; read-ahead reader |
//! | [`stats`] | I/O-free counters | per-reason counters and rate-limited logging |
//! | [`service`] | I/O | the listener, caps, one task and one socket (transfer ID) per transfer |
//!
//! Why not async-tftp (shared research, crates.md §2): it ignores client ERROR packets (its
//! issue #18, so an aborted `tsize` probe is retransmitted for minutes), defaults to 100
//! retries, and brings its own reactor beside tokio.
//!
//! Behaviour in brief (details and RFC references in each module):
//! - read-only: WRQ gets ERROR 2; octet mode only (netascii and mail get ERROR 4);
//! - unknown or out-of-range options are left out of the OACK, never refused;
//! - a client ERROR ends its transfer immediately, with nothing more sent;
//! - a packet from a foreign transfer ID gets ERROR 5 and leaves the transfer alone;
//! - malformed packets and requests over the session caps are dropped without a reply and
//!   counted under a stable reason ([`TftpStats`]);
//! - block numbers wrap from 65535 to 0, so files above 32 MiB at blksize 512 work.

pub mod fs;
pub mod options;
pub mod packet;
pub mod path;
pub mod service;
pub mod session;
pub mod stats;

pub use service::{TftpConfig, serve};
pub use stats::TftpStats;
