//! The few Linux calls the installer needs beyond `std`: block-device ioctls, toggling
//! `O_DIRECT`, and dropping cached pages before a read-back. This is the only module of the
//! crate allowed to use `unsafe`, and only to call the ioctl wrappers that `nix` generates.
//!
//! Request numbers are those of `<linux/fs.h>`: `_IO(0x12, n)` for the legacy block ioctls
//! (which nevertheless take a pointer argument, hence the `_bad` macros) and
//! `_IOR(0x12, 114, size_t)` for `BLKGETSIZE64`; of `<linux/nvme_ioctl.h>` for the NVMe
//! admin passthrough (`_IO('N', 0x40)` NVME_IOCTL_ID, `_IOWR('N', 0x41, struct
//! nvme_passthru_cmd)` NVME_IOCTL_ADMIN_CMD); and of `<scsi/sg.h>` for `SG_IO` (0x2285).
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
    // NVME_IOCTL_ID: the namespace ID of a namespace block device (the return value).
    ioctl_none!(nvme_ioctl_id, b'N', 0x40);
    // NVME_IOCTL_ADMIN_CMD: one admin command; returns the NVMe status (0 = success).
    nix::ioctl_readwrite!(nvme_admin_cmd, b'N', 0x41, super::NvmePassthru);
    // SG_IO: one SCSI command (here ATA PASS-THROUGH(16)) described by an sg_io_hdr.
    nix::ioctl_readwrite_bad!(sg_io, 0x2285, super::SgIoHdr);
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

/// `struct nvme_passthru_cmd` of `<linux/nvme_ioctl.h>` (72 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NvmePassthru {
    pub(crate) opcode: u8,
    pub(crate) flags: u8,
    pub(crate) rsvd1: u16,
    pub(crate) nsid: u32,
    pub(crate) cdw2: u32,
    pub(crate) cdw3: u32,
    pub(crate) metadata: u64,
    pub(crate) addr: u64,
    pub(crate) metadata_len: u32,
    pub(crate) data_len: u32,
    pub(crate) cdw10: u32,
    pub(crate) cdw11: u32,
    pub(crate) cdw12: u32,
    pub(crate) cdw13: u32,
    pub(crate) cdw14: u32,
    pub(crate) cdw15: u32,
    pub(crate) timeout_ms: u32,
    pub(crate) result: u32,
}

const _: () = assert!(std::mem::size_of::<NvmePassthru>() == 72);

/// One NVMe admin command through `NVME_IOCTL_ADMIN_CMD` on a controller character device
/// or a namespace block device. `data`, when given, is the command's data buffer (read by
/// the device for host-to-controller commands, written for controller-to-host ones);
/// `cmd.addr` and `cmd.data_len` are set from it. Returns the NVMe status field (0 =
/// success); an `Err` is a failure of the ioctl itself (e.g. `ENOTTY` on a non-NVMe device).
pub(crate) fn nvme_admin(
    file: &File,
    cmd: &mut NvmePassthru,
    data: Option<&mut [u8]>,
) -> io::Result<u16> {
    match data {
        Some(buf) => {
            cmd.addr = buf.as_mut_ptr() as u64;
            cmd.data_len = u32::try_from(buf.len())
                .map_err(|_| io::Error::other("NVMe data buffer too large"))?;
        }
        None => {
            cmd.addr = 0;
            cmd.data_len = 0;
        }
    }
    // SAFETY: `file` is open for the call; `cmd` is a valid, writable nvme_passthru_cmd;
    // its `addr`/`data_len` describe either nothing or the live, exclusively borrowed
    // `data` buffer, which outlives the (synchronous) ioctl; `metadata` is left 0.
    let status = unsafe { ioctls::nvme_admin_cmd(file.as_raw_fd(), cmd) }.map_err(errno)?;
    Ok(u16::try_from(status).unwrap_or(u16::MAX))
}

/// The namespace ID of an NVMe namespace block device (`NVME_IOCTL_ID`).
pub(crate) fn nvme_namespace_id(file: &File) -> io::Result<u32> {
    // SAFETY: valid descriptor; NVME_IOCTL_ID takes no argument and touches no user memory.
    let id = unsafe { ioctls::nvme_ioctl_id(file.as_raw_fd()) }.map_err(errno)?;
    u32::try_from(id).map_err(|_| io::Error::other("negative namespace id"))
}

/// `sg_io_hdr_t` of `<scsi/sg.h>`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SgIoHdr {
    interface_id: c_int,
    dxfer_direction: c_int,
    cmd_len: u8,
    mx_sb_len: u8,
    iovec_count: u16,
    dxfer_len: u32,
    dxferp: *mut nix::libc::c_void,
    cmdp: *mut u8,
    sbp: *mut u8,
    timeout: u32,
    flags: u32,
    pack_id: c_int,
    usr_ptr: *mut nix::libc::c_void,
    status: u8,
    masked_status: u8,
    msg_status: u8,
    sb_len_wr: u8,
    host_status: u16,
    driver_status: u16,
    resid: c_int,
    duration: u32,
    info: u32,
}

/// Data direction of an SG_IO command.
#[derive(Debug)]
pub(crate) enum SgData<'a> {
    /// No data phase.
    None,
    /// The device fills the buffer.
    FromDevice(&'a mut [u8]),
    /// The device reads the buffer.
    ToDevice(&'a [u8]),
}

/// What an SG_IO command returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SgResult {
    /// SCSI status.
    pub(crate) status: u8,
    /// Host adapter status.
    pub(crate) host_status: u16,
    /// Driver status.
    pub(crate) driver_status: u16,
    /// The sense bytes written.
    pub(crate) sense: Vec<u8>,
}

/// Sends one SCSI command block (`cdb`, e.g. ATA PASS-THROUGH(16)) with `SG_IO`, waiting up
/// to `timeout_ms`. An `Err` is a failure of the ioctl itself; the command's own outcome is
/// in the result.
pub(crate) fn sg_io(
    file: &File,
    cdb: &[u8; 16],
    data: SgData<'_>,
    timeout_ms: u32,
) -> io::Result<SgResult> {
    let mut cdb = *cdb;
    let mut sense = [0u8; 64];
    let (direction, ptr, len) = match data {
        SgData::None => (-1, std::ptr::null_mut(), 0usize),
        SgData::FromDevice(b) => (-3, b.as_mut_ptr().cast(), b.len()),
        // The kernel only reads a to-device buffer; the header field is not const.
        SgData::ToDevice(b) => (-2, b.as_ptr().cast_mut().cast(), b.len()),
    };
    let mut hdr = SgIoHdr {
        interface_id: c_int::from(b'S'),
        dxfer_direction: direction,
        cmd_len: 16,
        mx_sb_len: 64,
        iovec_count: 0,
        dxfer_len: u32::try_from(len).map_err(|_| io::Error::other("SG_IO buffer too large"))?,
        dxferp: ptr,
        cmdp: cdb.as_mut_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms,
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: `file` is open for the call; `hdr` is a valid sg_io_hdr whose pointers name
    // `cdb` (16 bytes), `sense` (64 bytes, `mx_sb_len`) and the data buffer (`dxfer_len`
    // bytes, written only for FromDevice, where it is exclusively borrowed), all of which
    // outlive the synchronous ioctl.
    unsafe { ioctls::sg_io(file.as_raw_fd(), &mut hdr) }.map_err(errno)?;
    let written = usize::from(hdr.sb_len_wr).min(sense.len());
    Ok(SgResult {
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status: hdr.driver_status,
        sense: sense.get(..written).unwrap_or(&[]).to_vec(),
    })
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
