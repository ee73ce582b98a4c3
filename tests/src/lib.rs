//! System-test framework for rackhand: private network namespaces, the real `pxe-server`
//! binary, and QEMU machines that netboot from it.
//!
//! A test reads like the scenario it checks:
//!
//! ```no_run
//! # fn main() -> rackhand_tests::Result<()> {
//! use std::time::Duration;
//! use rackhand_tests::{gate, Netns, Appliance, ApplianceConfig, VmBuilder, WorkDir, test_mac};
//! use pxe_api::MachineState;
//! if !gate::require("example", &[gate::Need::Root, gate::Need::Qemu, gate::Need::Dist])? {
//!     return Ok(());
//! }
//! let dir = WorkDir::new("example")?;
//! let ns = Netns::new(1)?;
//! let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
//! let vm = VmBuilder::new("vm1")
//!     .nic(ns.tap(0)?, test_mac(0, 1))
//!     .smbios_serial("RH-EXAMPLE")
//!     .start(&ns, dir.path())?;
//! let (machine, _) =
//!     app.wait_for_machine("RH-EXAMPLE", MachineState::Available, Duration::from_secs(300), Some(&vm))?;
//! # let _ = machine; Ok(()) }
//! ```
//!
//! Everything is torn down by `Drop`, in reverse order (VM, appliance, namespace), on success,
//! error and panic alike. Modules:
//! - [`netns`]: the namespace, bridge and taps, and processes started inside it.
//! - [`qemu`]: VMs (SeaBIOS or OVMF, TCG), blank disks, SMBIOS identity.
//! - [`serial`]: console logs and waiting for text on them.
//! - [`appliance`]: the `pxe-server` process and operator queries.
//! - [`gate`]: skip-or-fail gating on root, QEMU and `target/dist` (`RACKHAND_VM_TESTS`).
//! - [`leak`]: finding what tests left behind (the `leak-check` binary).
//! - [`slots`]: at most two VMs at once on the host.

pub mod appliance;
pub mod error;
pub mod gate;
pub mod leak;
pub mod netns;
pub mod paths;
pub mod proc;
pub mod qemu;
pub mod serial;
pub mod slots;
pub mod workdir;

pub use appliance::{Appliance, ApplianceConfig};
pub use error::{Error, Result};
pub use netns::{Netns, NsCommand};
pub use qemu::{DiskFormat, Firmware, Vm, VmBuilder, test_mac};
pub use serial::Console;
pub use workdir::WorkDir;
