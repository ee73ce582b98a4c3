//! Small I/O pieces the writer is built from, one concern per file:
//!
//! - [`aligned`]: a heap buffer whose start is aligned for `O_DIRECT`.
//! - [`target`]: the private [`WriteTarget`](target::WriteTarget) seam (a disk, an image file,
//!   or a test double), the file/device implementation with its `O_DIRECT` fallback, and the
//!   `write_all_at`/`read_exact_at` loops that survive short writes and `EINTR`.
//! - `fault` (tests only): a target that injects short writes, `Interrupted`, `WouldBlock`,
//!   `EIO` and `EINVAL` from a deterministic table.

pub(crate) mod aligned;
#[cfg(test)]
pub(crate) mod fault;
pub(crate) mod target;

/// Buffer alignment for `O_DIRECT`. The kernel requires the buffer address, the file offset
/// and the length to be multiples of the device's logical block size; 4096 is the largest
/// logical block size in use (4Kn disks) and the page size, so one constant serves every
/// device. Offsets and lengths are aligned by the format: chunk boundaries are multiples of
/// 4096 and the image size is a multiple of its sector size, which must equal the device's.
pub(crate) const DIRECT_ALIGN: usize = 4096;
