//! Hardware discovery for rackhand: DMI, NICs, disks, CPU and memory from sysfs/procfs under an
//! injectable root.
//!
//! Every probe is a pure parser (`parse_*`, tested on its own) plus a thin reader that fetches
//! files through [`Sources`]. Reads are bounded (64 KiB per sysfs attribute; larger caps for
//! `/proc/cpuinfo` and the SMBIOS table), bytes are decoded lossily, strings are trimmed and
//! empty strings are absent. A missing or unreadable file is an absent fact, never an error.
//! `recon` never writes anything and never touches the network.
//!
//! The BMC is not reported: in-band sysfs shows that an IPMI BMC exists (`ipmi_bmc.N`) but not
//! its LAN address, which needs IPMI commands over `/dev/ipmi0` (ioctls).

pub mod block;
pub mod cpu;
pub mod dmi;
pub mod layout;
pub mod mem;
pub mod net;
pub mod sources;

use std::path::PathBuf;

use pxe_api::{HardwareReport, Mac};

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

/// The MAC in a `BOOTIF=` kernel argument (`01-aa-bb-cc-dd-ee-ff`, as PXELINUX and iPXE pass
/// it: ARP hardware type 01 then the address; a bare address is accepted too). The last
/// `BOOTIF=` wins, as with any kernel argument.
pub fn parse_bootif(cmdline: &str) -> Option<Mac> {
    let value = cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix("BOOTIF="))
        .next_back()?;
    let addr = value.strip_prefix("01-").unwrap_or(value);
    addr.parse().ok()
}

/// Collects a hardware report. Missing files are absent facts, never errors.
pub fn collect(sources: &Sources) -> HardwareReport {
    let sysfs = &sources.sysfs;
    let procfs = &sources.procfs;
    HardwareReport {
        dmi: dmi::collect(sysfs),
        nics: net::collect(sysfs),
        disks: block::collect(sysfs),
        cpu: cpu::collect(sysfs, procfs),
        memory: mem::collect(sysfs, procfs),
        boot_mode: dmi::collect_boot_mode(sysfs),
        boot_mac: sources::read_attr(&procfs.join("cmdline")).and_then(|c| parse_bootif(&c)),
        bmc: None,
        agent_version: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootif() {
        let m = |s: &str| parse_bootif(s).map(|m| m.to_string());
        assert_eq!(
            m("console=ttyS0 BOOTIF=01-52-54-00-aa-bb-cc quiet").as_deref(),
            Some("52:54:00:aa:bb:cc")
        );
        assert_eq!(
            m("BOOTIF=52:54:00:aa:bb:cc").as_deref(),
            Some("52:54:00:aa:bb:cc")
        );
        assert_eq!(
            m("BOOTIF=01-00-00-00-00-00-01 BOOTIF=01-52-54-00-aa-bb-cd").as_deref(),
            Some("52:54:00:aa:bb:cd")
        );
        assert_eq!(m("BOOTIF=garbage"), None);
        assert_eq!(m("quiet"), None);
    }
}
