//! Install: an available machine is told to install the signed test OS snapshot; it netboots the
//! agent, which verifies and writes the snapshot to its blank disk and reports; the machine is
//! `in-use`, and its next netboot sends it to its own disk, which boots the installed OS. Once
//! with SeaBIOS (the MBR code and syslinux boot the disk) and once with OVMF (the firmware's
//! removable-media path `\EFI\BOOT\BOOTX64.EFI`, systemd-boot, boots it): the same disk
//! image serves both: the BIOS machine installs it as the default SHA-256 snapshot, the UEFI
//! machine as the BLAKE3 one (`snapshot-tool build --digest blake3`, format version 2).

use std::time::Duration;

use pxe_api::MachineState;
use rackhand_tests::gate::{self, Need, announce};
use rackhand_tests::{
    Appliance, ApplianceConfig, DiskFormat, Firmware, Netns, Result, VmBuilder, WorkDir,
};
use rackhand_tests::{paths, test_mac};

use crate::support::{REGISTER_TIMEOUT, VM_NEEDS};

/// The test OS's name, which its marker repeats (`rackhand.snapshot=` on its kernel command
/// line); `cargo xtask test-os` builds it into `target/dist/snapshots/` under this name with
/// SHA-256 digests, and as [`SNAPSHOT_BLAKE3`] with BLAKE3 digests.
const OS_NAME: &str = "test-os";
/// The same image as a BLAKE3 snapshot (format version 2).
const SNAPSHOT_BLAKE3: &str = "test-os-blake3";
/// What the installed test OS prints (see `xtask/testos/init.c`).
const MARKER: &str = "RACKHAND-TEST-OS booted";
/// The appliance's script line for a machine in use (see `pxe-server/src/boot.rs`).
const LOCAL_DISK_LINE: &str = "in use, booting from the local disk";
/// The boot script retries forever; in this closed network one failure is a bug.
const AGENT_LOAD_FAILED: &str = "could not load the agent";
/// What only the agent prints (pxeimage's first line as PID 1).
const AGENT_STARTED: &str = "starting as PID 1";

/// One machine of an install scenario: its firmware and identity, and what its console must
/// show when the installed disk boots.
struct Machine<'a> {
    /// The firmware path.
    firmware: Firmware,
    /// The snapshot it is told to install, and the digest algorithm the agent names.
    snapshot: (&'a str, &'a str),
    /// SMBIOS serial (the marker repeats it).
    serial: &'a str,
    /// Byte 5 of its MAC (tests use distinct ones).
    mac_tag: u8,
    /// Printed on the way to the installed OS by this firmware's boot path only, proving
    /// which loader on the disk ran.
    boot_path_line: &'a str,
    /// Power-on to the installed OS's marker, at most.
    boot_timeout: Duration,
}

#[test]
fn bios_machine_installs_the_test_os_and_boots_it() -> Result<()> {
    installs_the_test_os_and_boots_it(
        "bios_machine_installs_the_test_os_and_boots_it",
        &Machine {
            firmware: Firmware::Bios,
            snapshot: (OS_NAME, "sha256 digests"),
            serial: "RH-INSTALL-0001",
            mac_tag: 0x50,
            // syslinux's banner (the BIOS path of the test OS disk).
            boot_path_line: "SYSLINUX",
            boot_timeout: Duration::from_secs(300),
        },
    )
}

#[test]
fn uefi_machine_installs_the_test_os_and_boots_it() -> Result<()> {
    installs_the_test_os_and_boots_it(
        "uefi_machine_installs_the_test_os_and_boots_it",
        &Machine {
            firmware: Firmware::UefiPxe,
            snapshot: (SNAPSHOT_BLAKE3, "blake3 digests"),
            serial: "RH-INSTALL-0002",
            mac_tag: 0x51,
            // The kernel's EFI stub, started by systemd-boot, takes the initrd from it.
            boot_path_line: "EFI stub: Loaded initrd",
            // OVMF start-up, its PXE, iPXE, back to OVMF's boot manager, which then tries the
            // NIC's HTTPv4 option (the same script again: `exit 1`), then the disk. About
            // 37 s under TCG on a quiet host.
            boot_timeout: Duration::from_secs(480),
        },
    )
}

/// The scenario: register, install order, install boot, `in-use`, local-disk boot.
fn installs_the_test_os_and_boots_it(test: &str, machine: &Machine<'_>) -> Result<()> {
    let mut needs = VM_NEEDS.to_vec();
    if machine.firmware.is_uefi() {
        needs.push(Need::Ovmf);
    }
    if !gate::require(test, &needs)? {
        return Ok(());
    }
    let (snapshot, digests) = machine.snapshot;
    let snapshot_dir = paths::dist_dir().join("snapshots").join(snapshot);
    if !snapshot_dir.join("manifest.bin").is_file() {
        let why = format!(
            "{} is missing: run `cargo xtask test-os` then `cargo xtask dist`",
            snapshot_dir.display()
        );
        assert!(!gate::strict(), "{test}: {why}");
        announce(&format!("SKIP {test}: {why}"));
        return Ok(());
    }
    let serial = machine.serial;
    let mac = test_mac(machine.mac_tag, 1);
    let dir = WorkDir::new(test)?;
    let disk = dir.path().join("install.disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(1 << 30))
        .map_err(|e| rackhand_tests::Error::io("creating", &disk, e))?;

    let ns = Netns::new(1)?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
    // The same machine at every power-on: firmware, MAC, serial, disk. Its boot order is the
    // network first, then the disk (explicit for OVMF, which otherwise tries a bootable disk
    // first).
    let power_on = |name: &str| -> Result<VmBuilder> {
        Ok(VmBuilder::new(name)
            .firmware(machine.firmware)
            .boot_index(true)
            .nic(ns.tap(0)?, mac)
            .existing_disk(&disk, DiskFormat::Raw, Some("RHINSTALLDISK"))
            .smbios_serial(serial)
            .fail_on(AGENT_LOAD_FAILED))
    };

    // Racked and powered on: it registers.
    let vm = power_on("install-1")?.start(&ns, dir.path())?;
    let (m, _) =
        app.wait_for_machine(serial, MachineState::Available, REGISTER_TIMEOUT, Some(&vm))?;
    let registered = vm.uptime();
    let reply = app.operator_post(
        &format!("/api/v1/machines/{}/install", m.id),
        &serde_json::json!({ "snapshot": snapshot }),
    )?;
    assert_eq!(reply.status, 200, "install: {}", reply.body);
    // The waiting agent's token dies with the state change; it reboots (QEMU exits: -no-reboot).
    vm.wait_end_of_boot(Duration::from_secs(180))?;
    drop(vm);

    // Second boot: the agent installs, verifies, reports, and ends the boot (QEMU exits).
    let vm = power_on("install-2")?.start(&ns, dir.path())?;
    let installed = vm.wait_for("installed and verified", REGISTER_TIMEOUT)?;
    let console = vm.console().text();
    assert!(
        console.contains("manifest signed by a trusted key") && console.contains(digests),
        "{}",
        vm.report()
    );
    vm.wait_end_of_boot(Duration::from_secs(120))?;
    drop(vm);
    let (m, _) =
        app.wait_for_machine(serial, MachineState::InUse, Duration::from_secs(30), None)?;
    assert_eq!(m.snapshot.as_deref(), Some(snapshot), "{m:#?}");

    // Third boot: in use, so the appliance sends it to its disk, which boots the installed OS.
    let vm = power_on("install-3")?.start(&ns, dir.path())?;
    let to_disk = vm.wait_for(LOCAL_DISK_LINE, REGISTER_TIMEOUT)?;
    let booted = vm.wait_for(MARKER, machine.boot_timeout)?;
    let console = vm.console().text();
    let want = format!("{MARKER} serial={serial} snapshot={OS_NAME}");
    assert!(console.contains(&want), "no {want:?}:\n{}", vm.report());
    // The marker comes after the appliance's local-disk decision and through this firmware's
    // boot path of the disk.
    let after_decision = console
        .find(LOCAL_DISK_LINE)
        .and_then(|at| console.get(at..))
        .unwrap_or_default();
    assert!(
        after_decision.contains(machine.boot_path_line) && after_decision.contains(&want),
        "expected {:?} and then the marker after {LOCAL_DISK_LINE:?}:\n{}",
        machine.boot_path_line,
        vm.report()
    );
    assert!(
        !console.contains(AGENT_STARTED),
        "the agent ran on an in-use machine:\n{}",
        vm.report()
    );
    // The test OS powers off after its marker.
    vm.wait_exit(Duration::from_secs(60))?;
    drop(vm);
    let m = app.machine(&m.id)?;
    assert_eq!(m.state, MachineState::InUse, "{m:#?}");
    announce(&format!(
        "TIMING {test}: power-on -> registered in {:.1} s; install boot -> installed in {:.1} s; \
         in-use power-on -> local-disk script in {:.1} s -> installed OS marker in {:.1} s",
        registered.as_secs_f64(),
        installed.as_secs_f64(),
        to_disk.as_secs_f64(),
        booted.as_secs_f64()
    ));
    Ok(())
}
