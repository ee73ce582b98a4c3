//! Hardware discovery for rackhand: DMI, NICs, disks, CPU and memory from sysfs/procfs under an
//! injectable root.
//!
//! (Interface fixed for the agent; implementation in progress.)

use std::path::PathBuf;

use pxe_api::HardwareReport;

/// Where every read comes from. Tests point these at fixture trees.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Normally `/sys`.
    pub sysfs: PathBuf,
    /// Normally `/proc`.
    pub procfs: PathBuf,
    /// Normally `/dev`.
    pub dev: PathBuf,
}

impl Sources {
    /// The running system's `/sys`, `/proc`, `/dev`.
    pub fn live() -> Self {
        Self::under(PathBuf::from("/"))
    }

    /// `root/sys`, `root/proc`, `root/dev` (a captured fixture tree).
    pub fn under(root: PathBuf) -> Self {
        Sources {
            sysfs: root.join("sys"),
            procfs: root.join("proc"),
            dev: root.join("dev"),
        }
    }
}

/// Collects a hardware report. Missing files are absent facts, never errors.
pub fn collect(_sources: &Sources) -> HardwareReport {
    HardwareReport::default()
}
