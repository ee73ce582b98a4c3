//! Test doubles: an in-memory disk and a wrapper that injects faults from a deterministic
//! table, one entry per `write_at`/`read_at` call (in call order; calls past the end of the
//! table pass through).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use super::target::WriteTarget;

/// What one I/O call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// No fault.
    Pass,
    /// Transfer at most this many bytes.
    Short(usize),
    /// Transfer nothing, return `Ok(0)`.
    Zero,
    /// `EINTR`.
    Interrupted,
    /// `EAGAIN`.
    WouldBlock,
    /// `EIO`.
    Eio,
    /// `EINVAL` (what `O_DIRECT` says about misalignment).
    Einval,
    /// Silent corruption: the write succeeds but its first byte lands inverted.
    Corrupt,
}

/// A disk in memory. Clones share the bytes, so a test keeps a handle on what a writer that
/// took the target by value left behind.
#[derive(Debug, Clone)]
pub(crate) struct MemTarget {
    bytes: Arc<Mutex<Vec<u8>>>,
    len: u64,
    lbs: Option<u32>,
    /// Writes that cover this byte fail with `EIO` (on every handle and lane).
    bad_byte: Option<u64>,
}

impl MemTarget {
    /// `len` bytes of 0xEE (so "was zeroed" is visible).
    pub(crate) fn new(len: usize) -> Self {
        Self {
            bytes: Arc::new(Mutex::new(vec![0xEE; len])),
            len: len as u64,
            lbs: None,
            bad_byte: None,
        }
    }

    /// Same, but every write that covers byte `offset` fails with `EIO`, on whichever handle
    /// or lane it happens.
    pub(crate) fn failing_at(len: usize, offset: u64) -> Self {
        Self {
            bad_byte: Some(offset),
            ..Self::new(len)
        }
    }

    /// Same, reporting a logical block size like a block device.
    pub(crate) fn with_block_size(len: usize, lbs: u32) -> Self {
        Self {
            lbs: Some(lbs),
            ..Self::new(len)
        }
    }

    /// A copy of the contents.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl WriteTarget for MemTarget {
    fn describe(&self) -> String {
        "memory".to_owned()
    }
    fn capacity(&self) -> u64 {
        self.len
    }
    fn logical_block_size(&self) -> Option<u32> {
        self.lbs
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        if self
            .bad_byte
            .is_some_and(|bad| (offset..offset + buf.len() as u64).contains(&bad))
        {
            return Err(os(nix::libc::EIO));
        }
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let dst = bytes
            .get_mut(start..start.saturating_add(buf.len()))
            .ok_or(io::ErrorKind::InvalidInput)?;
        dst.copy_from_slice(buf);
        Ok(buf.len())
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let src = bytes.get(start..).unwrap_or_default();
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn drop_cache(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn is_direct(&self) -> bool {
        false
    }
    fn reread_partitions(&mut self) -> Option<io::Result<()>> {
        self.lbs.map(|_| Ok(()))
    }
    fn lane(&self) -> Option<Box<dyn WriteTarget>> {
        Some(Box::new(self.clone()))
    }
}

/// Wraps a target and applies the fault table.
#[derive(Debug)]
pub(crate) struct FaultTarget<T> {
    inner: T,
    faults: VecDeque<Fault>,
    pub(crate) calls: u64,
}

impl<T: WriteTarget> FaultTarget<T> {
    pub(crate) fn new(inner: T, faults: Vec<Fault>) -> Self {
        Self {
            inner,
            faults: faults.into(),
            calls: 0,
        }
    }

    pub(crate) fn inner(&self) -> &T {
        &self.inner
    }

    pub(crate) fn into_inner(self) -> T {
        self.inner
    }

    fn next(&mut self) -> Fault {
        self.calls += 1;
        self.faults.pop_front().unwrap_or(Fault::Pass)
    }
}

fn os(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl<T: WriteTarget> WriteTarget for FaultTarget<T> {
    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn logical_block_size(&self) -> Option<u32> {
        self.inner.logical_block_size()
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        match self.next() {
            Fault::Pass => self.inner.write_at(buf, offset),
            Fault::Short(n) => self.inner.write_at(&buf[..n.min(buf.len())], offset),
            Fault::Zero => Ok(0),
            Fault::Interrupted => Err(io::ErrorKind::Interrupted.into()),
            Fault::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
            Fault::Eio => Err(os(nix::libc::EIO)),
            Fault::Einval => Err(os(nix::libc::EINVAL)),
            Fault::Corrupt => {
                let mut bad = buf.to_vec();
                if let Some(b) = bad.first_mut() {
                    *b = !*b;
                }
                self.inner.write_at(&bad, offset)
            }
        }
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self.next() {
            Fault::Pass | Fault::Corrupt => self.inner.read_at(buf, offset),
            Fault::Short(n) => {
                let n = n.min(buf.len());
                self.inner.read_at(&mut buf[..n], offset)
            }
            Fault::Zero => Ok(0),
            Fault::Interrupted => Err(io::ErrorKind::Interrupted.into()),
            Fault::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
            Fault::Eio => Err(os(nix::libc::EIO)),
            Fault::Einval => Err(os(nix::libc::EINVAL)),
        }
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
    fn drop_cache(&mut self) -> io::Result<()> {
        self.inner.drop_cache()
    }
    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }
    fn reread_partitions(&mut self) -> Option<io::Result<()>> {
        self.inner.reread_partitions()
    }
}
