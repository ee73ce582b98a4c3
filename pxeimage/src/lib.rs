//! `pxeimage`: rackhand's netbooted agent.
//!
//! It runs as PID 1 in the initramfs the appliance serves. It mounts the kernel filesystems,
//! loads drivers for the hardware it finds ([`modules`]), configures the boot NIC from the
//! kernel command line ([`cmdline`], [`net`]), inventories the machine (`recon`), registers with
//! the appliance and polls for orders ([`agent`], [`client`]), and ends every boot with an
//! explicit reboot or power-off ([`init`]). It is blocking (no async runtime) and static.
//!
//! Pure modules — [`cmdline`], [`backoff`], [`netlink`], [`modules::glob`], [`modules::index`],
//! and the decisions in [`agent`] — open no file or socket and read no clock; [`init`], [`net`],
//! [`client`], [`install`], [`recycle`], [`modules`] and [`boot`] are the thin layers that
//! touch the system.

pub mod console;

pub mod agent;
pub mod backoff;
pub mod boot;
pub mod client;
pub mod cmdline;
pub mod init;
pub mod install;
pub mod modules;
pub mod net;
pub mod netlink;
pub mod recycle;
