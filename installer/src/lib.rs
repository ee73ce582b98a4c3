//! Writes verified OS snapshots to disks, safe by default. Synchronous `std::io`; the agent
//! (`pxeimage`) runs it on a blocking thread.
//!
//! The install path, one module per step:
//!
//! 1. [`select`] (pure): pick the disk from the agent's [`pxe_api::HardwareReport`] with a
//!    [`DiskRule`] (smallest eligible disk by default, or pinned by serial, WWN, size range
//!    or name). Ambiguity and unusable pins are refused with a reason, never guessed.
//! 2. [`preflight`]: re-resolve that disk on the live system and refuse it if it changed, is
//!    mounted, swap, held by dm/md, read-only or not a block device; open it exclusively.
//!    A [`CheckedTarget`] is the only way to get a writable disk handle.
//! 3. [`write`]: stream a signed snapshot (`snapshot_tool::format`) onto it, verifying every
//!    chunk, clearing both ends of the disk just before the first write, holding the first
//!    MiB back until every chunk verified, resuming after a dropped connection, reading back
//!    a sample, and re-reading the partition table.
//!
//! The caller checks the manifest's signature (`format::verify_signature_any`) and parses it
//! (`Manifest::parse`) before any of this; the writer takes a parsed [`Manifest`].
//!
//! Wiping (recycling a machine) is [`wipe`]: plan per disk (device purge where the disk
//! offers it, zero-out otherwise), clear, verify, record. [`nvme`] and [`ata`] are the pure
//! parsers of the identify data the purge plan is made from; `purge` sends the commands.
//!
//! Every error type has a `code()` with a stable reason code (`no_disk_fits`, `ambiguous`,
//! `disk_mounted`, `device_too_small`, `chunk_digest_mismatch`, `data_truncated`, ...).
//!
//! Invariant: the writer never leaves the first MiB of a target holding anything but zeros
//! unless the whole image verified, so a failed or interrupted install is never bootable.
//!
//! [`Manifest`]: snapshot_tool::format::Manifest

pub mod ata;
mod io;
pub mod nvme;
pub mod preflight;
mod purge;
pub mod select;
mod sys;
pub mod wipe;
pub mod write;

pub use preflight::{CheckedTarget, ExistingPartitions, PreflightError, SystemPaths};
pub use select::{DiskRule, SelectError, TargetDisk, select};
pub use wipe::{
    AtaFacts, DiskFacts, DiskPlan, Method, NistLevel, NvmeFacts, PurgeFacts, VerifyOptions,
    WipeOutcome, WipePlan, WipeRecord,
};
pub use write::{
    ImageWriter, PartitionReread, Phase, Progress, ResumePoint, WriteError, WriteOptions,
    WriteReport, ZeroPolicy, write_image,
};
