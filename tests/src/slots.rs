//! At most [`MAX_VMS`] QEMU machines at once on this host, across test threads and test
//! processes (cargo test, nextest): each running VM holds an exclusive lock on one of the slot
//! files in `$TMPDIR/rackhand-vm-slots/`. The kernel drops the lock when the process dies, so
//! a crashed test cannot leave a slot taken.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::proc::poll_until;

/// VMs allowed at once (the build machine has 2 cores).
pub const MAX_VMS: usize = 2;

/// A held VM slot; released on drop.
#[derive(Debug)]
pub struct VmSlot {
    _lock: File,
    index: usize,
    waited: Duration,
}

impl VmSlot {
    /// Which slot (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// How long acquiring it took.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

fn slot_dir() -> PathBuf {
    std::env::temp_dir().join("rackhand-vm-slots")
}

/// Takes a free slot, waiting at most `timeout` for one.
pub fn acquire(timeout: Duration) -> Result<VmSlot> {
    acquire_in(&slot_dir(), MAX_VMS, timeout)
}

/// Takes one of `slots` slots in `dir`, waiting at most `timeout`.
fn acquire_in(dir: &std::path::Path, slots: usize, timeout: Duration) -> Result<VmSlot> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let mut files = Vec::with_capacity(slots);
    for i in 0..slots {
        let p = dir.join(format!("slot{i}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io("opening", &p, e))?;
        files.push(f);
    }
    let start = Instant::now();
    let mut last_err = None;
    let got = poll_until(timeout, Duration::from_millis(250), || {
        for (i, f) in files.iter().enumerate() {
            match f.try_lock() {
                Ok(()) => return Some(i),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => last_err = Some(e.to_string()),
            }
        }
        None
    });
    match got {
        Some(i) => Ok(VmSlot {
            _lock: files.swap_remove(i),
            index: i,
            waited: start.elapsed(),
        }),
        None => Err(Error::Timeout {
            what: format!("one of {slots} VM slots in {}", dir.display()),
            after: timeout,
            detail: last_err.unwrap_or_else(|| "all slots busy".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = acquire_in(dir.path(), 2, Duration::ZERO).unwrap();
        let b = acquire_in(dir.path(), 2, Duration::ZERO).unwrap();
        assert_ne!(a.index(), b.index());
        let t0 = Instant::now();
        let err = acquire_in(dir.path(), 2, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(t0.elapsed() >= Duration::from_millis(200));
        let freed = b.index();
        drop(b);
        let c = acquire_in(dir.path(), 2, Duration::from_secs(5)).unwrap();
        assert_eq!(c.index(), freed);
        drop(a);
        drop(c);
    }
}
