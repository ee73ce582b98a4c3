//! The sink the writer writes through: a private trait so tests can inject faults
//! ([`super::fault`]), its implementation over an open file or block device, and the loops
//! that turn `pwrite`/`pread` into "all or a clear error".

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::preflight::CheckedTarget;
use crate::sys;

/// Consecutive `Interrupted`/`WouldBlock` results tolerated without progress before an
/// operation gives up (a signal storm or a misbehaving target must not spin forever).
const MAX_RETRIES: u32 = 16;

/// Where an image is written. Offsets are absolute; implementations never grow past
/// [`WriteTarget::capacity`].
pub(crate) trait WriteTarget: std::fmt::Debug + Send {
    /// What to call the target in errors (a path).
    fn describe(&self) -> String;
    /// Bytes the target holds.
    fn capacity(&self) -> u64;
    /// The device's logical block size; `None` for a plain file.
    fn logical_block_size(&self) -> Option<u32>;
    /// One positional write; may be short.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// One positional read; may be short.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Data and metadata to stable storage (on a block device this also flushes the drive's
    /// volatile write cache).
    fn sync(&mut self) -> io::Result<()>;
    /// Forget cached pages so read-backs come from the medium.
    fn drop_cache(&mut self) -> io::Result<()>;
    /// Whether writes currently bypass the page cache.
    fn is_direct(&self) -> bool;
    /// Re-read the partition table; `None` when the target is not a block device.
    fn reread_partitions(&mut self) -> Option<io::Result<()>>;
    /// A second handle on the same target for positional writes from another thread, so two
    /// writes can be in flight at once (a device fed one O_DIRECT write at a time idles
    /// between them). `None` when the target cannot be shared (the writer then uses one).
    fn lane(&self) -> Option<Box<dyn WriteTarget>> {
        None
    }
}

/// A file or block device opened read-write, with `O_DIRECT` when the kernel allows it.
#[derive(Debug)]
pub(crate) struct FdTarget {
    file: File,
    path: PathBuf,
    capacity: u64,
    logical_block_size: Option<u32>,
    block_device: bool,
    direct: bool,
}

impl FdTarget {
    /// A disk that passed preflight (already open, exclusively).
    pub(crate) fn device(target: CheckedTarget) -> Self {
        let direct = sys::is_direct(&target.file).unwrap_or(false);
        Self {
            file: target.file,
            path: target.path,
            capacity: target.size,
            logical_block_size: Some(target.logical_block_size),
            block_device: true,
            direct,
        }
    }

    /// An existing regular file standing in for a disk: its length is the capacity.
    pub(crate) fn regular_file(path: &Path) -> io::Result<Self> {
        let open = |flags| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(flags)
                .open(path)
        };
        // tmpfs and some other filesystems refuse O_DIRECT with EINVAL at open.
        let (file, direct) = match open(sys::O_DIRECT) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => (open(0)?, false),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (disks go through preflight)",
            ));
        }
        Ok(Self {
            file,
            path: path.to_owned(),
            capacity: meta.len(),
            logical_block_size: None,
            block_device: false,
            direct,
        })
    }

    /// Drops `O_DIRECT` after the kernel refused an I/O with `EINVAL` (misaligned for this
    /// device or unsupported): buffered I/O plus the final sync gives the same durability.
    /// `BLKZEROOUT`/`BLKDISCARD`/`BLKSECDISCARD` over a byte range; `None` for a regular file.
    pub(crate) fn range(
        &mut self,
        op: sys::RangeOp,
        start: u64,
        len: u64,
    ) -> Option<io::Result<()>> {
        self.block_device
            .then(|| sys::range_op(&self.file, op, start, len))
    }

    /// The open block device, for the purge commands; `None` for a regular file.
    pub(crate) fn block_file(&self) -> Option<&File> {
        self.block_device.then_some(&self.file)
    }

    fn fall_back_to_buffered(&mut self) -> io::Result<()> {
        sys::set_direct(&self.file, false)?;
        self.direct = false;
        Ok(())
    }

    fn check_bounds(&self, len: usize, offset: u64) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "I/O past the end of the target",
            )),
        }
    }
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::EINVAL)
}

impl WriteTarget for FdTarget {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn logical_block_size(&self) -> Option<u32> {
        self.logical_block_size
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.check_bounds(buf.len(), offset)?;
        match self.file.write_at(buf, offset) {
            Err(e) if self.direct && is_einval(&e) => {
                self.fall_back_to_buffered()?;
                self.file.write_at(buf, offset)
            }
            other => other,
        }
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check_bounds(buf.len(), offset)?;
        match self.file.read_at(buf, offset) {
            Err(e) if self.direct && is_einval(&e) => {
                self.fall_back_to_buffered()?;
                self.file.read_at(buf, offset)
            }
            other => other,
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn drop_cache(&mut self) -> io::Result<()> {
        sys::drop_cache(&self.file)
    }

    fn is_direct(&self) -> bool {
        // Asked of the open file description, which a lane shares: a lane that fell back to
        // buffered I/O turned it off for this handle too.
        self.direct && sys::is_direct(&self.file).unwrap_or(true)
    }

    fn reread_partitions(&mut self) -> Option<io::Result<()>> {
        self.block_device
            .then(|| sys::reread_partitions(&self.file))
    }

    fn lane(&self) -> Option<Box<dyn WriteTarget>> {
        // A duplicate descriptor: same open file description (O_DIRECT included), and
        // pwrite on it is independent of this handle's.
        let file = self.file.try_clone().ok()?;
        Some(Box::new(Self {
            file,
            path: self.path.clone(),
            capacity: self.capacity,
            logical_block_size: self.logical_block_size,
            block_device: self.block_device,
            direct: self.direct,
        }))
    }
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    )
}

/// Writes all of `buf` at `offset`, continuing after short writes and retrying
/// `Interrupted`/`WouldBlock` a bounded number of times. A write that makes no progress is
/// `ErrorKind::WriteZero`.
pub(crate) fn write_all_at(
    target: &mut dyn WriteTarget,
    mut buf: &[u8],
    mut offset: u64,
) -> io::Result<()> {
    let mut retries = 0;
    while !buf.is_empty() {
        match target.write_at(buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the target accepted no bytes",
                ));
            }
            Ok(n) => {
                let n = n.min(buf.len());
                buf = buf.get(n..).unwrap_or_default();
                offset += n as u64;
                retries = 0;
            }
            Err(e) if retryable(&e) && retries < MAX_RETRIES => retries += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fills `buf` from `offset`, continuing after short reads; end of target is
/// `ErrorKind::UnexpectedEof`.
pub(crate) fn read_exact_at(
    target: &mut dyn WriteTarget,
    mut buf: &mut [u8],
    mut offset: u64,
) -> io::Result<()> {
    let mut retries = 0;
    while !buf.is_empty() {
        match target.read_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                let n = n.min(buf.len());
                buf = std::mem::take(&mut buf).get_mut(n..).unwrap_or_default();
                offset += n as u64;
                retries = 0;
            }
            Err(e) if retryable(&e) && retries < MAX_RETRIES => retries += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::aligned::AlignedBuf;
    use crate::io::fault::{Fault, FaultTarget, MemTarget};

    #[test]
    fn regular_file_roundtrip_and_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0xAAu8; 16384]).unwrap();
        let mut t = FdTarget::regular_file(&path).unwrap();
        assert_eq!(t.capacity(), 16384);
        assert_eq!(t.logical_block_size(), None);
        assert!(t.reread_partitions().is_none());
        let mut buf = AlignedBuf::zeroed(8192, 4096);
        buf.resize(8192).fill(7);
        write_all_at(&mut t, buf.as_slice(), 4096).unwrap();
        // Unaligned length: with O_DIRECT the kernel says EINVAL and the target falls back.
        write_all_at(&mut t, b"xyz", 100).unwrap();
        assert!(!t.is_direct(), "unaligned I/O must have left O_DIRECT mode");
        t.sync().unwrap();
        t.drop_cache().unwrap();
        let mut back = AlignedBuf::zeroed(16384, 4096);
        read_exact_at(&mut t, back.as_mut_slice(), 0).unwrap();
        let b = back.as_slice();
        assert_eq!(&b[100..103], b"xyz");
        assert!(b[..100].iter().all(|&x| x == 0xAA));
        assert!(b[4096..12288].iter().all(|&x| x == 7));
        assert!(b[12288..].iter().all(|&x| x == 0xAA));
        // Never grows the file.
        let err = write_all_at(&mut t, &[1; 4096], 16384 - 2048).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16384);
        let err = read_exact_at(&mut t, &mut [0; 10], u64::MAX - 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn directories_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FdTarget::regular_file(dir.path()).is_err());
        assert!(FdTarget::regular_file(&dir.path().join("nope")).is_err());
    }

    #[test]
    fn short_writes_and_interrupts_are_survived() {
        let mut t = FaultTarget::new(
            MemTarget::new(64),
            vec![
                Fault::Short(3),
                Fault::Interrupted,
                Fault::WouldBlock,
                Fault::Short(1),
            ],
        );
        let data: Vec<u8> = (1..=20).collect();
        write_all_at(&mut t, &data, 10).unwrap();
        assert_eq!(&t.inner().bytes()[10..30], &data[..]);
        let mut back = [0u8; 20];
        let mut t2 = FaultTarget::new(t.into_inner(), vec![Fault::Short(5), Fault::Interrupted]);
        read_exact_at(&mut t2, &mut back, 10).unwrap();
        assert_eq!(&back[..], &data[..]);
    }

    #[test]
    fn zero_progress_eio_and_endless_interrupts_fail() {
        let mut t = FaultTarget::new(MemTarget::new(64), vec![Fault::Short(2), Fault::Zero]);
        let err = write_all_at(&mut t, &[9; 8], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);

        let mut t = FaultTarget::new(MemTarget::new(64), vec![Fault::Eio]);
        let err = write_all_at(&mut t, &[9; 8], 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::EIO));

        let mut t = FaultTarget::new(MemTarget::new(64), vec![Fault::Interrupted; 100]);
        let err = write_all_at(&mut t, &[9; 8], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);

        let mut t = FaultTarget::new(MemTarget::new(8), vec![]);
        let err = read_exact_at(&mut t, &mut [0; 8], 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
