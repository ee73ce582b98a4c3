//! QEMU smoke tests: real firmware on a tap in a private namespace, with no server at all.
//! They prove the VM plumbing (firmware choice, NIC on the tap, fixed MAC, serial console)
//! before any appliance is involved.

use std::time::Duration;

use rackhand_tests::gate::{self, Need, announce};
use rackhand_tests::proc::pid_alive;
use rackhand_tests::{DiskFormat, Firmware, Netns, Result, VmBuilder, WorkDir, leak, test_mac};

/// Generous: TCG on a loaded 2-core machine; the quiet case is 1-5 s.
const FIRMWARE_TIMEOUT: Duration = Duration::from_secs(180);

/// Boots `fw` with one NIC and waits for each of `milestones` in order; returns their times.
fn boot_until(test: &str, fw: Firmware, mac_byte: u8, milestones: &[&str]) -> Result<()> {
    let dir = WorkDir::new(test)?;
    let ns = Netns::new(1)?;
    let name = ns.name().to_owned();
    let mac = test_mac(0x10, mac_byte);
    let vm = VmBuilder::new(test)
        .firmware(fw)
        .memory_mib(256)
        .nic(ns.tap(0)?, mac)
        .disk(64 << 20, DiskFormat::Raw, None)
        .smbios_serial("RH-SMOKE-0001")
        .start(&ns, dir.path())?;
    let pid = vm.pid().expect("qemu pid");
    let mut times = Vec::new();
    for m in milestones {
        let m = m.replace("{mac}", &mac.to_string());
        let t = vm.wait_for(&m, FIRMWARE_TIMEOUT)?;
        times.push(format!("{m:?} at {:.1} s", t.as_secs_f64()));
    }
    announce(&format!(
        "TIMING {test}: {} (waited {:.1} s for a VM slot)",
        times.join(", "),
        vm.slot_wait().as_secs_f64()
    ));
    drop(vm);
    assert!(!pid_alive(pid), "QEMU {pid} survived the VM's drop");
    drop(ns);
    assert!(!Netns::exists(&name));
    assert_eq!(leak::scan_netns(&name), vec![]);
    Ok(())
}

#[test]
fn seabios_ipxe_starts_dhcp_on_the_tap() -> Result<()> {
    let test = "seabios_ipxe_starts_dhcp_on_the_tap";
    if !gate::require(test, &[Need::Root, Need::Iproute, Need::Qemu])? {
        return Ok(());
    }
    // SeaBIOS runs the NIC's iPXE ROM; iPXE names the NIC with our MAC, then DHCPs.
    boot_until(
        test,
        Firmware::Bios,
        1,
        &["iPXE", "net0: {mac}", "Configuring (net0 {mac})"],
    )
}

#[test]
fn seabios_without_a_server_is_reported_as_a_dead_end() -> Result<()> {
    let test = "seabios_without_a_server_is_reported_as_a_dead_end";
    if !gate::require(test, &[Need::Root, Need::Iproute, Need::Qemu])? {
        return Ok(());
    }
    // Nobody answers DHCP: iPXE gives up, SeaBIOS halts with "No bootable device.", and a
    // wait for something that will never come must fail at that point, not at its timeout.
    let dir = WorkDir::new(test)?;
    let ns = Netns::new(1)?;
    let vm = VmBuilder::new("deadend")
        .memory_mib(256)
        .nic(ns.tap(0)?, test_mac(0x10, 3))
        .start(&ns, dir.path())?;
    let timeout = Duration::from_secs(600);
    let err = vm.wait_for("text no firmware prints", timeout).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, rackhand_tests::Error::ExitedEarly { .. }),
        "expected a dead end, got: {msg}"
    );
    assert!(msg.contains("No bootable device"), "{msg}");
    assert!(msg.contains("No configuration methods"), "{msg}");
    announce(&format!(
        "TIMING {test}: dead end detected after {:.1} s",
        vm.uptime().as_secs_f64()
    ));
    assert!(vm.uptime() < timeout);
    Ok(())
}

#[test]
fn ovmf_pxe_starts_on_the_tap() -> Result<()> {
    let test = "ovmf_pxe_starts_on_the_tap";
    if !gate::require(test, &[Need::Root, Need::Iproute, Need::Qemu, Need::Ovmf])? {
        return Ok(());
    }
    // No option ROM: OVMF's own PXE client must be the one that starts.
    boot_until(test, Firmware::UefiPxe, 2, &["Start PXE over IPv4"])
}
