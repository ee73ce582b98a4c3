//! rackhand system tests: network namespaces, QEMU and the real `pxe-server`.
//!
//! Each test is gated (see `rackhand_tests::gate`): without root, QEMU or `target/dist` it
//! prints a SKIP line and passes, unless `RACKHAND_VM_TESTS=1`, which makes it fail.
//! Timings are printed to stderr past the output capture.

mod agent_boot;
mod appliance;
mod e2e;
mod framework;
mod install;
mod install_faults;
mod recycle;
mod recycle_nvme;
mod scenarios;
mod smoke;
mod support;
