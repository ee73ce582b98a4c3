//! The few Linux calls the installer needs beyond `std`: block-device ioctls, toggling
//! `O_DIRECT`, and dropping cached pages before a read-back. This is the only module of the
//! crate allowed to use `unsafe`, and only to call the ioctl wrappers that `nix` generates.
//!
//! Request numbers are those of `<linux/fs.h>`: `_IO(0x12, n)` for the legacy block ioctls
//! (which nevertheless take a pointer argument, hence the `_bad` macros) and
//! `_IOR(0x12, 114, size_t)` for `BLKGETSIZE64`.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use nix::fcntl::{FcntlArg, OFlag, PosixFadviseAdvice, fcntl, posix_fadvise};
use nix::libc::c_int;

mod ioctls {
    use nix::libc::{c_int, c_uint};
    use nix::{ioctl_none, ioctl_read, ioctl_read_bad, ioctl_write_ptr_bad, request_code_none};

    // BLKGETSIZE64: device size in bytes (u64; the kernel declares it with size_t, 8 bytes on
    // 64-bit targets, which are the only ones the agent ships for).
    ioctl_read!(blkgetsize64, 0x12, 114, u64);
    // BLKSSZGET: logical block size (int).
    ioctl_read_bad!(blksszget, request_code_none!(0x12, 104), c_int);
    // BLKPBSZGET: physical block size (unsigned int).
    ioctl_read_bad!(blkpbszget, request_code_none!(0x12, 123), c_uint);
    // BLKROGET: read-only flag (int).
    ioctl_read_bad!(blkroget, request_code_none!(0x12, 94), c_int);
    // BLKRRPART: re-read the partition table (no argument).
    ioctl_none!(blkrrpart, 0x12, 95);
    // BLKDISCARD: discard a byte range (`uint64_t range[2]` = {start, length}).
    ioctl_write_ptr_bad!(blkdiscard, request_code_none!(0x12, 119), [u64; 2]);
    // BLKSECDISCARD: securely discard a byte range (same argument).
    ioctl_write_ptr_bad!(blksecdiscard, request_code_none!(0x12, 125), [u64; 2]);
    // BLKZEROOUT: make a byte range read back as zeros (same argument); the kernel uses
    // WRITE ZEROES / WRITE SAME when the device has it and writes zero pages otherwise.
    ioctl_write_ptr_bad!(blkzeroout, request_code_none!(0x12, 127), [u64; 2]);
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Size of the block device in bytes (`BLKGETSIZE64`).
pub(crate) fn device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: `file` is an open descriptor for the duration of the call, and `size` is a
    // valid, aligned, writable u64 that outlives it; BLKGETSIZE64 writes exactly one u64.
    unsafe { ioctls::blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(errno)?;
    Ok(size)
}

/// Logical block size in bytes (`BLKSSZGET`).
pub(crate) fn logical_block_size(file: &File) -> io::Result<u32> {
    let mut lbs: c_int = 0;
    // SAFETY: valid descriptor; `lbs` is a writable int that outlives the call, and BLKSSZGET
    // writes exactly one int.
    unsafe { ioctls::blksszget(file.as_raw_fd(), &mut lbs) }.map_err(errno)?;
    u32::try_from(lbs).map_err(|_| io::Error::other("negative logical block size"))
}

/// Physical block size in bytes (`BLKPBSZGET`).
pub(crate) fn physical_block_size(file: &File) -> io::Result<u32> {
    let mut pbs: nix::libc::c_uint = 0;
    // SAFETY: valid descriptor; `pbs` is a writable unsigned int that outlives the call, and
    // BLKPBSZGET writes exactly one unsigned int.
    unsafe { ioctls::blkpbszget(file.as_raw_fd(), &mut pbs) }.map_err(errno)?;
    Ok(pbs)
}

/// Whether the kernel marks the device read-only (`BLKROGET`).
pub(crate) fn read_only(file: &File) -> io::Result<bool> {
    let mut ro: c_int = 0;
    // SAFETY: valid descriptor; `ro` is a writable int that outlives the call, and BLKROGET
    // writes exactly one int.
    unsafe { ioctls::blkroget(file.as_raw_fd(), &mut ro) }.map_err(errno)?;
    Ok(ro != 0)
}

/// Asks the kernel to re-read the partition table (`BLKRRPART`). Fails with `EBUSY` while a
/// partition is in use, and with `EINVAL` on devices without partitions (loop devices
/// without `LO_FLAGS_PARTSCAN`).
pub(crate) fn reread_partitions(file: &File) -> io::Result<()> {
    // SAFETY: valid descriptor; BLKRRPART takes no argument and touches no user memory.
    unsafe { ioctls::blkrrpart(file.as_raw_fd()) }.map_err(errno)?;
    Ok(())
}

/// Which range ioctl [`range_op`] issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeOp {
    /// `BLKZEROOUT`.
    ZeroOut,
    /// `BLKDISCARD`.
    Discard,
    /// `BLKSECDISCARD`.
    #[expect(
        dead_code,
        reason = "no plan chooses secure discard yet; kept with its SAFETY argument for the Purge pass"
    )]
    SecureDiscard,
}

/// Issues `BLKZEROOUT`, `BLKDISCARD` or `BLKSECDISCARD` over `len` bytes from `start`. Both
/// must be multiples of the logical block size (else `EINVAL`); devices without the
/// capability answer `EOPNOTSUPP`.
pub(crate) fn range_op(file: &File, op: RangeOp, start: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [start, len];
    let fd = file.as_raw_fd();
    let res = match op {
        // SAFETY: `fd` is an open descriptor for the duration of the call, and `range` is a
        // valid, aligned `[u64; 2]` that outlives it; the ioctl only reads the two u64
        // values (start, length) from it.
        RangeOp::ZeroOut => unsafe { ioctls::blkzeroout(fd, &range) },
        // SAFETY: as above.
        RangeOp::Discard => unsafe { ioctls::blkdiscard(fd, &range) },
        // SAFETY: as above.
        RangeOp::SecureDiscard => unsafe { ioctls::blksecdiscard(fd, &range) },
    };
    res.map_err(errno)?;
    Ok(())
}

/// Turns `O_DIRECT` on or off for an open file (Linux allows changing it with `F_SETFL`).
pub(crate) fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(errno)?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_DIRECT, on);
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(errno)?;
    Ok(())
}

/// Whether `O_DIRECT` is set on an open file.
pub(crate) fn is_direct(file: &File) -> io::Result<bool> {
    let flags = fcntl(file.as_raw_fd(), FcntlArg::F_GETFL).map_err(errno)?;
    Ok(OFlag::from_bits_truncate(flags).contains(OFlag::O_DIRECT))
}

/// Drops the page cache for the whole file so the next read comes from the device (call
/// after a data sync; dirty pages are not dropped).
pub(crate) fn drop_cache(file: &File) -> io::Result<()> {
    posix_fadvise(
        file.as_raw_fd(),
        0,
        0,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(errno)
}

/// The `O_DIRECT` open flag, for `OpenOptionsExt::custom_flags`.
pub(crate) const O_DIRECT: c_int = nix::libc::O_DIRECT;
