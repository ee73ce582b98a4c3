//! At most [`MAX_VMS`] QEMU machines at once on this host, across test threads and test
//! processes (cargo test, nextest): each running VM holds an exclusive lock on one of the slot
//! files in `$TMPDIR/rackhand-vm-slots/`. The kernel drops the lock when the process dies, so
//! a crashed test cannot leave a slot taken.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::proc::poll_until;

/// VMs allowed at once (the build machine has 2 cores).
pub const MAX_VMS: usize = 2;
/// VMs one test may run at once while it holds every slot ([`reserve_host`]): one more than
/// [`MAX_VMS`], since nothing else on the host runs a VM meanwhile.
pub const MAX_VMS_RESERVED: usize = MAX_VMS + 1;

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

/// Every slot of the host, held by one test that starts several VMs "at once" (up to
/// [`MAX_VMS_RESERVED`]) while no other VM runs anywhere on the host. Released on drop.
#[derive(Debug)]
pub struct HostReservation {
    _slots: Vec<VmSlot>,
    waited: Duration,
    max_vms: usize,
    running: AtomicUsize,
}

impl HostReservation {
    /// How long taking every slot took.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Counts one more VM under this reservation; fails beyond its limit.
    pub fn enter(&self) -> Result<()> {
        let prev = self.running.fetch_add(1, Ordering::SeqCst);
        if prev >= self.max_vms {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Invalid(format!(
                "a host reservation allows {} VMs at once",
                self.max_vms
            )));
        }
        Ok(())
    }

    /// Counts one VM less (its QEMU has been stopped).
    pub fn leave(&self) {
        let _ = self
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

/// Takes every VM slot of the host, waiting at most `timeout` in all.
pub fn reserve_host(timeout: Duration) -> Result<HostReservation> {
    reserve_in(&slot_dir(), MAX_VMS, MAX_VMS_RESERVED, timeout)
}

/// Takes slots `0..slots` in `dir` in index order, so two reservations cannot each hold half
/// and wait for the other forever.
fn reserve_in(
    dir: &std::path::Path,
    slots: usize,
    max_vms: usize,
    timeout: Duration,
) -> Result<HostReservation> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let start = Instant::now();
    let mut held = Vec::with_capacity(slots);
    for i in 0..slots {
        let p = dir.join(format!("slot{i}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io("opening", &p, e))?;
        let left = timeout.saturating_sub(start.elapsed());
        let mut last_err = None;
        let got = poll_until(left, Duration::from_millis(250), || match f.try_lock() {
            Ok(()) => Some(()),
            Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Error(e)) => {
                last_err = Some(e.to_string());
                None
            }
        });
        if got.is_none() {
            return Err(Error::Timeout {
                what: format!("every one of {slots} VM slots in {}", dir.display()),
                after: timeout,
                detail: last_err.unwrap_or_else(|| format!("slot {i} stayed busy")),
            });
        }
        held.push(VmSlot {
            _lock: f,
            index: i,
            waited: start.elapsed(),
        });
    }
    Ok(HostReservation {
        _slots: held,
        waited: start.elapsed(),
        max_vms,
        running: AtomicUsize::new(0),
    })
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

    #[test]
    fn a_reservation_holds_every_slot_and_counts_its_vms() {
        let dir = tempfile::tempdir().unwrap();
        let one = acquire_in(dir.path(), 2, Duration::ZERO).unwrap();
        // Slot 0 or 1 is busy: the reservation must wait for it.
        let err = reserve_in(dir.path(), 2, 3, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        drop(one);
        let r = reserve_in(dir.path(), 2, 3, Duration::from_secs(5)).unwrap();
        let err = acquire_in(dir.path(), 2, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        for _ in 0..3 {
            r.enter().unwrap();
        }
        assert!(matches!(r.enter(), Err(Error::Invalid(_))));
        r.leave();
        r.enter().unwrap();
        drop(r);
        acquire_in(dir.path(), 2, Duration::ZERO).unwrap();
    }
}
