//! Disk wiping for recycled machines (NIST SP 800-88 **Clear**), with verification.
//!
//! - [`plan`] (pure): per disk, the method by capability. `BLKZEROOUT` is the generic Clear
//!   on a block device; `BLKDISCARD` is chosen only when the caller proves the device reads
//!   discarded blocks back as zeros (the kernel no longer says so: `discard_zeroes_data` is
//!   gone), and even then the result is verified and a non-zero read falls back to zero
//!   writes; a plain file (tests) gets an `O_DIRECT` zero overwrite. Whatever the method,
//!   the first and last MiB (partition tables, the GPT backup, filesystem and RAID
//!   signatures) are overwritten with zeros first, so an interrupted wipe leaves no
//!   recognisable layout. NVMe sanitize/format and ATA secure erase (NIST **Purge**) are not
//!   attempted by this version; every plan records them as `not_attempted`.
//! - [`execute`] / [`execute_file`]: run a [`DiskPlan`] on a [`CheckedTarget`] (or a file),
//!   then verify with `O_DIRECT` reads of the first and last 16 MiB plus random blocks
//!   ([`sample_offsets`], pure, seeded from the disk serial and a time value the caller
//!   passes in). Every outcome is a serialisable [`WipeRecord`] with a stable reason code on
//!   failure (`verify_nonzero`, `io_error`, `short_write`, `device_gone`).

use std::io;

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::io::DIRECT_ALIGN;
use crate::io::aligned::AlignedBuf;
use crate::io::target::{FdTarget, WriteTarget, read_exact_at, write_all_at};
use crate::preflight::CheckedTarget;
use crate::sys::RangeOp;

const MIB: u64 = 1 << 20;
/// Bytes cleared at each end of the disk before anything else.
pub const EDGE_BYTES: u64 = MIB;
/// Bytes read back at each end of the disk.
pub const VERIFY_EDGE_BYTES: u64 = 16 * MIB;
/// Size of one randomly sampled block read back.
pub const VERIFY_BLOCK: u64 = 4096;
/// Random blocks sampled by default.
pub const DEFAULT_SAMPLES: u32 = 256;
/// Overwrite / read buffer size.
const IO_CHUNK: u64 = 4 * MIB;
/// Largest range given to one `BLKZEROOUT`/`BLKDISCARD` (progress granularity).
const RANGE_CHUNK: u64 = 1 << 30;
/// Methods of NIST Purge this version never attempts.
pub const NOT_ATTEMPTED: [&str; 2] = ["nvme_sanitize", "ata_secure_erase"];

/// What the caller knows about a disk (from the hardware report and preflight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFacts {
    /// Kernel name.
    pub name: String,
    /// Serial, when known.
    pub serial: Option<String>,
    /// WWN, when known.
    pub wwn: Option<String>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// A block device (so the range ioctls exist); `false` for an image file.
    pub block_device: bool,
    /// The device accepts discard.
    pub discard: bool,
    /// The caller proved discarded blocks read back as zeros (e.g. a device known to
    /// guarantee it). Never inferred by this module.
    pub discard_zeroes_proven: bool,
}

impl DiskFacts {
    /// Facts for a disk from the hardware report; discard is not trusted to zero.
    pub fn from_report(disk: &pxe_api::hardware::Disk) -> Self {
        Self {
            name: disk.name.clone(),
            serial: disk.serial.clone(),
            wwn: disk.wwn.clone(),
            size_bytes: disk.size_bytes,
            block_device: true,
            discard: disk.discard.unwrap_or(false),
            discard_zeroes_proven: false,
        }
    }
}

/// How the bulk of a disk is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `BLKZEROOUT` over the whole device.
    Blkzeroout,
    /// `BLKDISCARD` over the whole device (only when zeros after discard are proven).
    Blkdiscard,
    /// Zeros written through `O_DIRECT`.
    Overwrite,
}

/// NIST SP 800-88 sanitisation level reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NistLevel {
    /// Logical techniques over all user-addressable storage.
    Clear,
    /// Device-level techniques (sanitize, secure erase); none implemented yet.
    Purge,
}

impl Method {
    /// The level this method reaches: every method here is a logical overwrite or its
    /// in-device equivalent, so Clear.
    pub fn nist_level(self) -> NistLevel {
        NistLevel::Clear
    }
}

/// A byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Length.
    pub len: u64,
}

/// What will be done to one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    /// The facts it was planned from.
    pub facts: DiskFacts,
    /// First choice for the bulk.
    pub method: Method,
    /// Methods tried in order when the previous one is unsupported or fails verification.
    pub fallbacks: Vec<Method>,
    /// Ranges zero-overwritten before the bulk (first and last MiB, clamped, merged).
    pub edges: Vec<ByteRange>,
    /// Purge methods recorded as not attempted.
    pub not_attempted: Vec<String>,
}

/// The plan for every disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WipePlan {
    /// One entry per disk, in the order given.
    pub disks: Vec<DiskPlan>,
}

/// The edge ranges for a disk of `size` bytes: the first and the last [`EDGE_BYTES`]
/// (which hold the MBR, the primary GPT, the backup GPT at the last LBAs, and the
/// signatures of filesystems, LVM, MD RAID and ZFS labels), merged when they overlap.
pub fn edge_ranges(size: u64) -> Vec<ByteRange> {
    if size == 0 {
        return Vec::new();
    }
    let head = size.min(EDGE_BYTES);
    let tail_start = size.saturating_sub(EDGE_BYTES).max(head);
    let mut out = vec![ByteRange {
        start: 0,
        len: head,
    }];
    if tail_start < size {
        out.push(ByteRange {
            start: tail_start,
            len: size - tail_start,
        });
    }
    out
}

/// Plans one disk (pure).
pub fn plan_disk(facts: &DiskFacts) -> DiskPlan {
    let (method, fallbacks) = if !facts.block_device {
        (Method::Overwrite, vec![])
    } else if facts.discard && facts.discard_zeroes_proven {
        (
            Method::Blkdiscard,
            vec![Method::Blkzeroout, Method::Overwrite],
        )
    } else {
        (Method::Blkzeroout, vec![Method::Overwrite])
    };
    DiskPlan {
        facts: facts.clone(),
        method,
        fallbacks,
        edges: edge_ranges(facts.size_bytes),
        not_attempted: NOT_ATTEMPTED.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Plans every disk (pure).
pub fn plan(disks: &[DiskFacts]) -> WipePlan {
    WipePlan {
        disks: disks.iter().map(plan_disk).collect(),
    }
}

/// FNV-1a, for turning a serial into seed bits (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64 step.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed for sampling: the disk serial mixed with a time value from the caller.
pub fn sample_seed(serial: Option<&str>, time_seed: u64) -> u64 {
    fnv1a(serial.unwrap_or("").as_bytes()) ^ time_seed.rotate_left(17)
}

/// `n` offsets of [`VERIFY_BLOCK`]-sized, [`VERIFY_BLOCK`]-aligned blocks spread at random
/// over a disk of `size` bytes (pure, deterministic for a seed). Empty when the disk holds
/// no whole block.
pub fn sample_offsets(size: u64, n: u32, seed: u64) -> Vec<u64> {
    let blocks = size / VERIFY_BLOCK;
    if blocks == 0 {
        return Vec::new();
    }
    let mut state = seed;
    (0..n)
        .map(|_| (splitmix(&mut state) % blocks) * VERIFY_BLOCK)
        .collect()
}

/// How verification is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Random blocks read besides the two ends.
    pub samples: u32,
    /// A time value (e.g. seconds since the epoch) mixed into the sample seed.
    pub time_seed: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            samples: DEFAULT_SAMPLES,
            time_seed: 0,
        }
    }
}

/// Where a wipe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WipePhase {
    /// Zeroing the first and last MiB.
    Edges,
    /// Clearing the bulk.
    Bulk,
    /// Reading back.
    Verify,
}

/// A progress update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WipeProgress {
    /// Phase.
    pub phase: WipePhase,
    /// Bytes done in this phase.
    pub done: u64,
    /// Bytes in this phase.
    pub total: u64,
}

/// How a wipe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WipeOutcome {
    /// Cleared and verified.
    Success,
    /// Not cleared or not verified; see `code`.
    Failure,
}

/// What was done to one disk; stored with the machine's history by the appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeRecord {
    /// Kernel name.
    pub disk: String,
    /// Serial.
    pub serial: Option<String>,
    /// WWN.
    pub wwn: Option<String>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// The method that cleared the bulk (the last one tried on failure).
    pub method: Method,
    /// Methods tried before it that were unsupported or did not verify.
    pub methods_failed: Vec<Method>,
    /// NIST SP 800-88 level reached (meaningful on success).
    pub nist_level: NistLevel,
    /// Purge methods not attempted.
    pub not_attempted: Vec<String>,
    /// Zero bytes written by this process.
    pub bytes_written: u64,
    /// Bytes cleared with `BLKZEROOUT`.
    pub bytes_zeroed: u64,
    /// Bytes discarded with `BLKDISCARD`.
    pub bytes_discarded: u64,
    /// [`VERIFY_BLOCK`]-sized blocks read back and found zero.
    pub blocks_verified: u64,
    /// Whether verification passed.
    pub verified: bool,
    /// Wall time.
    pub duration_ms: u64,
    /// Outcome.
    pub outcome: WipeOutcome,
    /// Stable reason code on failure.
    pub code: Option<String>,
    /// Human-readable detail on failure.
    pub message: Option<String>,
}

impl WipeRecord {
    fn new(plan: &DiskPlan) -> Self {
        let f = &plan.facts;
        Self {
            disk: f.name.clone(),
            serial: f.serial.clone(),
            wwn: f.wwn.clone(),
            size_bytes: f.size_bytes,
            method: plan.method,
            methods_failed: Vec::new(),
            nist_level: plan.method.nist_level(),
            not_attempted: plan.not_attempted.clone(),
            bytes_written: 0,
            bytes_zeroed: 0,
            bytes_discarded: 0,
            blocks_verified: 0,
            verified: false,
            duration_ms: 0,
            outcome: WipeOutcome::Failure,
            code: None,
            message: None,
        }
    }

    /// A failed record for a disk that could not even be opened (preflight refused it).
    pub fn refused(plan: &DiskPlan, code: &str, message: String) -> Self {
        Self {
            code: Some(code.to_owned()),
            message: Some(message),
            ..Self::new(plan)
        }
    }
}

/// A wipe failure with its stable reason code.
#[derive(Debug)]
struct Failure {
    code: &'static str,
    message: String,
}

fn io_failure(what: &str, at: u64, e: &io::Error) -> Failure {
    let code = match e.raw_os_error() {
        Some(nix::libc::ENODEV | nix::libc::ENXIO | nix::libc::ENOENT | nix::libc::ENOMEDIUM) => {
            "device_gone"
        }
        _ if e.kind() == io::ErrorKind::WriteZero => "short_write",
        _ => "io_error",
    };
    Failure {
        code,
        message: format!("{what} at byte {at}: {e}"),
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EOPNOTSUPP | nix::libc::ENOTTY | nix::libc::EINVAL)
    )
}

/// The disk as the wiper sees it: positional I/O plus the range ioctls.
trait WipeTarget: WriteTarget {
    /// `BLKZEROOUT`/`BLKDISCARD`; `None` when the target is not a block device.
    fn range(&mut self, op: RangeOp, start: u64, len: u64) -> Option<io::Result<()>>;
}

impl WipeTarget for FdTarget {
    fn range(&mut self, op: RangeOp, start: u64, len: u64) -> Option<io::Result<()>> {
        FdTarget::range(self, op, start, len)
    }
}

/// Wipes and verifies a disk that passed preflight (opened exclusively). `plan.facts` must
/// describe this disk; a size mismatch is refused (`identity_changed`) without writing.
pub fn execute(
    target: CheckedTarget,
    plan: &DiskPlan,
    verify: &VerifyOptions,
    progress: &mut dyn FnMut(WipeProgress),
) -> WipeRecord {
    if target.size != plan.facts.size_bytes || target.name != plan.facts.name {
        return WipeRecord::refused(
            plan,
            "identity_changed",
            format!(
                "planned {} ({} bytes), opened {} ({} bytes)",
                plan.facts.name, plan.facts.size_bytes, target.name, target.size
            ),
        );
    }
    let mut t = FdTarget::device(target);
    run(&mut t, plan, verify, progress)
}

/// Wipes and verifies an existing regular file standing in for a disk (tests, images).
/// Its length must equal `plan.facts.size_bytes`.
pub fn execute_file(
    path: &Path,
    plan: &DiskPlan,
    verify: &VerifyOptions,
    progress: &mut dyn FnMut(WipeProgress),
) -> WipeRecord {
    let mut t = match FdTarget::regular_file(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return WipeRecord::refused(plan, "not_regular_file", path.display().to_string());
        }
        Err(e) => {
            let f = io_failure("open", 0, &e);
            return WipeRecord::refused(plan, f.code, f.message);
        }
    };
    let capacity = t.capacity();
    if capacity != plan.facts.size_bytes {
        return WipeRecord::refused(
            plan,
            "identity_changed",
            format!(
                "planned {} bytes, {} has {capacity}",
                plan.facts.size_bytes,
                path.display()
            ),
        );
    }
    run(&mut t, plan, verify, progress)
}

fn run(
    t: &mut dyn WipeTarget,
    plan: &DiskPlan,
    verify: &VerifyOptions,
    progress: &mut dyn FnMut(WipeProgress),
) -> WipeRecord {
    let started = Instant::now();
    let mut rec = WipeRecord::new(plan);
    let result = wipe(t, plan, verify, progress, &mut rec);
    rec.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(()) => {
            rec.outcome = WipeOutcome::Success;
            rec.verified = true;
            rec.nist_level = rec.method.nist_level();
        }
        Err(f) => {
            rec.outcome = WipeOutcome::Failure;
            rec.code = Some(f.code.to_owned());
            rec.message = Some(f.message);
        }
    }
    rec
}

fn wipe(
    t: &mut dyn WipeTarget,
    plan: &DiskPlan,
    verify: &VerifyOptions,
    progress: &mut dyn FnMut(WipeProgress),
    rec: &mut WipeRecord,
) -> Result<(), Failure> {
    let size = t.capacity();
    let mut buf = AlignedBuf::zeroed(IO_CHUNK as usize, DIRECT_ALIGN);
    // 1. The edges, so an interrupted wipe leaves no partition table or signature.
    let edge_total: u64 = plan.edges.iter().map(|r| r.len).sum();
    let mut edge_done = 0;
    for r in &plan.edges {
        zero_range(t, &mut buf, r.start, r.len, rec, &mut |n| {
            edge_done += n;
            progress(WipeProgress {
                phase: WipePhase::Edges,
                done: edge_done,
                total: edge_total,
            });
        })?;
    }
    sync(t)?;
    // 2. The bulk, method by method until one verifies.
    let methods: Vec<Method> = std::iter::once(plan.method)
        .chain(plan.fallbacks.iter().copied())
        .collect();
    let mut last = None;
    for (i, &method) in methods.iter().enumerate() {
        if i > 0 {
            rec.methods_failed.push(rec.method);
        }
        rec.method = method;
        let has_next = i + 1 < methods.len();
        match bulk(t, &mut buf, method, size, rec, progress) {
            Ok(()) => {}
            Err(BulkError::Unsupported(e)) if has_next => {
                last = Some(Failure {
                    code: "wipe_unsupported",
                    message: format!("{method:?} is not supported by the device: {e}"),
                });
                continue;
            }
            Err(BulkError::Unsupported(e)) => {
                return Err(Failure {
                    code: "wipe_unsupported",
                    message: format!("{method:?} is not supported by the device: {e}"),
                });
            }
            Err(BulkError::Failed(f)) => return Err(f),
        }
        sync(t)?;
        rec.blocks_verified = 0;
        match verify_zero(t, &mut buf, plan, verify, rec, progress) {
            Ok(()) => return Ok(()),
            // A discard that did not read back as zeros: fall back to writing zeros.
            Err(f) if f.code == "verify_nonzero" && method == Method::Blkdiscard && has_next => {
                last = Some(f);
            }
            Err(f) => return Err(f),
        }
    }
    Err(last.unwrap_or(Failure {
        code: "io_error",
        message: "no wipe method".to_owned(),
    }))
}

fn sync(t: &mut dyn WipeTarget) -> Result<(), Failure> {
    t.sync().map_err(|e| io_failure("sync", 0, &e))?;
    t.drop_cache().map_err(|e| io_failure("drop cache", 0, &e))
}

/// Writes zeros over `len` bytes from `start`.
fn zero_range(
    t: &mut dyn WipeTarget,
    buf: &mut AlignedBuf,
    start: u64,
    len: u64,
    rec: &mut WipeRecord,
    on_chunk: &mut dyn FnMut(u64),
) -> Result<(), Failure> {
    let end = start.saturating_add(len);
    let mut at = start;
    while at < end {
        let n = (end - at).min(IO_CHUNK);
        let zeros = buf.fill_zero(n as usize);
        write_all_at(t, zeros, at).map_err(|e| io_failure("write", at, &e))?;
        rec.bytes_written += n;
        at += n;
        on_chunk(n);
    }
    Ok(())
}

/// Why a bulk clear stopped.
enum BulkError {
    /// The device does not support the method (try the next one).
    Unsupported(io::Error),
    /// A real failure.
    Failed(Failure),
}

/// Clears the whole device with `method`.
fn bulk(
    t: &mut dyn WipeTarget,
    buf: &mut AlignedBuf,
    method: Method,
    size: u64,
    rec: &mut WipeRecord,
    progress: &mut dyn FnMut(WipeProgress),
) -> Result<(), BulkError> {
    let mut report = |done| {
        progress(WipeProgress {
            phase: WipePhase::Bulk,
            done,
            total: size,
        });
    };
    let op = match method {
        Method::Overwrite => {
            let mut done = 0;
            return zero_range(t, buf, 0, size, rec, &mut |n| {
                done += n;
                report(done);
            })
            .map_err(BulkError::Failed);
        }
        Method::Blkzeroout => RangeOp::ZeroOut,
        Method::Blkdiscard => RangeOp::Discard,
    };
    let mut at = 0;
    while at < size {
        let n = (size - at).min(RANGE_CHUNK);
        match t.range(op, at, n) {
            None => {
                return Err(BulkError::Unsupported(io::Error::from_raw_os_error(
                    nix::libc::ENOTTY,
                )));
            }
            Some(Ok(())) => {}
            Some(Err(e)) if at == 0 && unsupported(&e) => return Err(BulkError::Unsupported(e)),
            Some(Err(e)) => return Err(BulkError::Failed(io_failure("clear", at, &e))),
        }
        match method {
            Method::Blkdiscard => rec.bytes_discarded += n,
            _ => rec.bytes_zeroed += n,
        }
        at += n;
        report(at);
    }
    Ok(())
}

/// Reads back the first and last [`VERIFY_EDGE_BYTES`] and the sampled blocks with
/// `O_DIRECT`; any non-zero byte is `verify_nonzero`.
fn verify_zero(
    t: &mut dyn WipeTarget,
    buf: &mut AlignedBuf,
    plan: &DiskPlan,
    verify: &VerifyOptions,
    rec: &mut WipeRecord,
    progress: &mut dyn FnMut(WipeProgress),
) -> Result<(), Failure> {
    let size = t.capacity();
    let head = size.min(VERIFY_EDGE_BYTES);
    let tail_start = size.saturating_sub(VERIFY_EDGE_BYTES).max(head);
    let mut ranges = vec![(0, head)];
    if tail_start < size {
        ranges.push((tail_start, size - tail_start));
    }
    let seed = sample_seed(plan.facts.serial.as_deref(), verify.time_seed);
    ranges.extend(
        sample_offsets(size, verify.samples, seed)
            .into_iter()
            .map(|o| (o, VERIFY_BLOCK)),
    );
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let mut done = 0;
    for (start, len) in ranges {
        let end = start + len;
        let mut at = start;
        while at < end {
            let n = (end - at).min(IO_CHUNK);
            let chunk = buf.resize(n as usize);
            read_exact_at(t, chunk, at).map_err(|e| io_failure("read back", at, &e))?;
            if let Some(pos) = chunk.iter().position(|&b| b != 0) {
                return Err(Failure {
                    code: "verify_nonzero",
                    message: format!(
                        "byte {} reads back non-zero after {:?}",
                        at + pos as u64,
                        rec.method
                    ),
                });
            }
            rec.blocks_verified += n.div_ceil(VERIFY_BLOCK);
            at += n;
            done += n;
            progress(WipeProgress {
                phase: WipePhase::Verify,
                done,
                total,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::fault::MemTarget;

    fn facts(size: u64, block_device: bool, discard: bool, proven: bool) -> DiskFacts {
        DiskFacts {
            name: "vda".into(),
            serial: Some("S1".into()),
            wwn: None,
            size_bytes: size,
            block_device,
            discard,
            discard_zeroes_proven: proven,
        }
    }

    #[test]
    fn methods_by_capability() {
        use Method::*;
        let table = [
            (false, false, false, Overwrite, vec![]),
            (false, true, true, Overwrite, vec![]),
            (true, false, false, Blkzeroout, vec![Overwrite]),
            (true, true, false, Blkzeroout, vec![Overwrite]),
            (true, false, true, Blkzeroout, vec![Overwrite]),
            (true, true, true, Blkdiscard, vec![Blkzeroout, Overwrite]),
        ];
        for (bd, discard, proven, method, fallbacks) in table {
            let p = plan_disk(&facts(8 * MIB, bd, discard, proven));
            assert_eq!(p.method, method, "{bd} {discard} {proven}");
            assert_eq!(p.fallbacks, fallbacks, "{bd} {discard} {proven}");
            assert_eq!(p.not_attempted, ["nvme_sanitize", "ata_secure_erase"]);
            assert_eq!(p.method.nist_level(), NistLevel::Clear);
        }
        let w = plan(&[
            facts(MIB, true, false, false),
            facts(MIB, false, false, false),
        ]);
        assert_eq!(w.disks.len(), 2);
        assert_eq!(w.disks[1].method, Overwrite);
    }

    #[test]
    fn edges_cover_both_ends_and_merge() {
        let r = |start, len| ByteRange { start, len };
        assert_eq!(edge_ranges(0), vec![]);
        assert_eq!(edge_ranges(4096), vec![r(0, 4096)]);
        assert_eq!(edge_ranges(MIB), vec![r(0, MIB)]);
        assert_eq!(edge_ranges(MIB + 512), vec![r(0, MIB), r(MIB, 512)]);
        assert_eq!(edge_ranges(10 * MIB), vec![r(0, MIB), r(9 * MIB, MIB)]);
        // The GPT backup (last 33 LBAs of 4 KiB) lies inside the tail range.
        let size = 100 * MIB;
        let tail = edge_ranges(size)[1];
        assert!(tail.start <= size - 33 * 4096 && tail.start + tail.len == size);
    }

    #[test]
    fn samples_are_aligned_in_range_and_seeded() {
        let size = 64 * MIB + 512;
        let a = sample_offsets(size, 500, sample_seed(Some("S1"), 7));
        assert_eq!(a.len(), 500);
        assert!(
            a.iter()
                .all(|o| o % VERIFY_BLOCK == 0 && o + VERIFY_BLOCK <= size)
        );
        assert_eq!(a, sample_offsets(size, 500, sample_seed(Some("S1"), 7)));
        assert_ne!(a, sample_offsets(size, 500, sample_seed(Some("S2"), 7)));
        assert_ne!(a, sample_offsets(size, 500, sample_seed(Some("S1"), 8)));
        // Spread: both halves of the disk are sampled.
        assert!(a.iter().any(|&o| o < size / 2) && a.iter().any(|&o| o >= size / 2));
        assert!(sample_offsets(100, 10, 1).is_empty());
    }

    /// A memory disk that accepts writes past `keep_until` and silently drops them, and
    /// may claim range-ioctl support.
    #[derive(Debug)]
    struct Lossy {
        mem: MemTarget,
        keep_until: u64,
        range: Option<fn(RangeOp) -> io::Result<()>>,
    }

    impl WriteTarget for Lossy {
        fn describe(&self) -> String {
            "lossy".into()
        }
        fn capacity(&self) -> u64 {
            self.mem.capacity()
        }
        fn logical_block_size(&self) -> Option<u32> {
            Some(512)
        }
        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
            if offset >= self.keep_until {
                return Ok(buf.len());
            }
            self.mem.write_at(buf, offset)
        }
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.mem.read_at(buf, offset)
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn drop_cache(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn is_direct(&self) -> bool {
            true
        }
        fn reread_partitions(&mut self) -> Option<io::Result<()>> {
            None
        }
    }

    impl WipeTarget for Lossy {
        fn range(&mut self, op: RangeOp, _start: u64, _len: u64) -> Option<io::Result<()>> {
            self.range.map(|f| f(op))
        }
    }

    fn lossy(size: usize, keep_until: u64, range: Option<fn(RangeOp) -> io::Result<()>>) -> Lossy {
        Lossy {
            mem: MemTarget::new(size),
            keep_until,
            range,
        }
    }

    #[test]
    fn dropped_writes_are_caught_by_verification() {
        let size = 48 * MIB as usize;
        // Writes past 40 MiB vanish: the tail read-back finds the old 0xEE bytes.
        let mut t = lossy(size, 40 * MIB, None);
        let p = plan_disk(&facts(size as u64, false, false, false));
        let rec = run(&mut t, &p, &VerifyOptions::default(), &mut |_| {});
        assert_eq!(rec.outcome, WipeOutcome::Failure);
        assert_eq!(rec.code.as_deref(), Some("verify_nonzero"));
        assert!(!rec.verified);
        // The same disk without the fault verifies.
        let mut t = lossy(size, u64::MAX, None);
        let rec = run(&mut t, &p, &VerifyOptions::default(), &mut |_| {});
        assert_eq!(rec.outcome, WipeOutcome::Success, "{rec:?}");
        assert!(rec.verified);
        assert_eq!(rec.bytes_written, size as u64 + 2 * MIB);
        assert!(t.mem.bytes().iter().all(|&b| b == 0));
        // 16 MiB at each end plus 256 random blocks.
        assert_eq!(rec.blocks_verified, 2 * 16 * MIB / VERIFY_BLOCK + 256);
    }

    #[test]
    fn a_discard_that_does_not_zero_falls_back_and_unsupported_zeroout_too() {
        let size = 40 * MIB as usize;
        // Discard "succeeds" but leaves data; zeroout is unsupported; overwrite clears.
        let mut t = lossy(
            size,
            u64::MAX,
            Some(|op| match op {
                RangeOp::ZeroOut => Err(io::Error::from_raw_os_error(nix::libc::EOPNOTSUPP)),
                _ => Ok(()),
            }),
        );
        let p = plan_disk(&facts(size as u64, true, true, true));
        let rec = run(&mut t, &p, &VerifyOptions::default(), &mut |_| {});
        assert_eq!(rec.outcome, WipeOutcome::Success, "{rec:?}");
        assert_eq!(rec.method, Method::Overwrite);
        assert_eq!(
            rec.methods_failed,
            vec![Method::Blkdiscard, Method::Blkzeroout]
        );
        assert_eq!(rec.bytes_discarded, size as u64);
        assert!(t.mem.bytes().iter().all(|&b| b == 0));
    }

    #[test]
    fn io_errors_and_vanished_devices_have_codes() {
        let size = 8 * MIB as usize;
        let mut t = lossy(
            size,
            u64::MAX,
            Some(|_| Err(io::Error::from_raw_os_error(nix::libc::ENODEV))),
        );
        let p = plan_disk(&facts(size as u64, true, false, false));
        let rec = run(&mut t, &p, &VerifyOptions::default(), &mut |_| {});
        assert_eq!(rec.code.as_deref(), Some("device_gone"));
        let mut t = lossy(
            size,
            u64::MAX,
            Some(|_| Err(io::Error::from_raw_os_error(nix::libc::EIO))),
        );
        let rec = run(&mut t, &p, &VerifyOptions::default(), &mut |_| {});
        assert_eq!(rec.code.as_deref(), Some("io_error"));
        assert_eq!(rec.outcome, WipeOutcome::Failure);
    }
}
