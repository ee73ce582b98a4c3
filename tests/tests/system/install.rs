//! Install: an available machine is told to install the signed test OS snapshot; it netboots the
//! agent, which verifies and writes the snapshot to its blank disk and reports; the machine is
//! `in-use`, and its next netboot boots the installed OS from its own disk.

use std::time::Duration;

use pxe_api::MachineState;
use rackhand_tests::gate::{self, announce};
use rackhand_tests::{Appliance, ApplianceConfig, DiskFormat, Netns, Result, VmBuilder, WorkDir};
use rackhand_tests::{paths, test_mac};

use crate::support::{REGISTER_TIMEOUT, VM_NEEDS};

/// The snapshot `cargo xtask test-os` builds into `target/dist/snapshots/`.
const SNAPSHOT: &str = "test-os";
/// What the installed test OS prints (see `xtask/testos/init.c`).
const MARKER: &str = "RACKHAND-TEST-OS booted";

#[test]
fn bios_machine_installs_the_test_os_and_boots_it() -> Result<()> {
    let test = "bios_machine_installs_the_test_os_and_boots_it";
    if !gate::require(test, VM_NEEDS)? {
        return Ok(());
    }
    let snapshot_dir = paths::dist_dir().join("snapshots").join(SNAPSHOT);
    if !snapshot_dir.join("manifest.bin").is_file() {
        let why = format!(
            "{} is missing: run `cargo xtask test-os` then `cargo xtask dist`",
            snapshot_dir.display()
        );
        assert!(!gate::strict(), "{test}: {why}");
        announce(&format!("SKIP {test}: {why}"));
        return Ok(());
    }
    let serial = "RH-INSTALL-0001";
    let mac = test_mac(0x50, 1);
    let dir = WorkDir::new(test)?;
    let disk = dir.path().join("install.disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(1 << 30))
        .map_err(|e| rackhand_tests::Error::io("creating", &disk, e))?;

    let ns = Netns::new(1)?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
    let machine = |name: &str| -> Result<VmBuilder> {
        Ok(VmBuilder::new(name)
            .nic(ns.tap(0)?, mac)
            .existing_disk(&disk, DiskFormat::Raw, Some("RHINSTALLDISK"))
            .smbios_serial(serial)
            .fail_on("could not load the agent"))
    };

    // Racked and powered on: it registers.
    let vm = machine("install-1")?.start(&ns, dir.path())?;
    let (m, _) =
        app.wait_for_machine(serial, MachineState::Available, REGISTER_TIMEOUT, Some(&vm))?;
    let reply = app.operator_post(
        &format!("/api/v1/machines/{}/install", m.id),
        &serde_json::json!({ "snapshot": SNAPSHOT }),
    )?;
    assert_eq!(reply.status, 200, "install: {}", reply.body);
    // The waiting agent's token dies with the state change; it reboots (QEMU exits: -no-reboot).
    vm.wait_exit(Duration::from_secs(180))?;
    drop(vm);

    // Second boot: the agent installs, verifies, reports, and ends the boot (QEMU exits).
    let vm = machine("install-2")?.start(&ns, dir.path())?;
    let installed = vm.wait_for("installed and verified", REGISTER_TIMEOUT)?;
    let console = vm.console().text();
    assert!(
        console.contains("manifest signed by a trusted key"),
        "{}",
        vm.report()
    );
    vm.wait_exit(Duration::from_secs(180))?;
    drop(vm);
    let (m, _) =
        app.wait_for_machine(serial, MachineState::InUse, Duration::from_secs(30), None)?;
    assert_eq!(m.snapshot.as_deref(), Some(SNAPSHOT), "{m:#?}");

    // Third boot: in use, so the appliance sends it to its disk, which boots the installed OS.
    let vm = machine("install-3")?.start(&ns, dir.path())?;
    let booted = vm.wait_for(MARKER, Duration::from_secs(300))?;
    let console = vm.console().text();
    assert!(
        console.contains("booting from the local disk"),
        "{}",
        vm.report()
    );
    assert!(
        console.contains(&format!("serial={serial}"))
            && console.contains(&format!("snapshot={SNAPSHOT}")),
        "{}",
        vm.report()
    );
    assert!(
        !console.contains("starting as PID 1"),
        "the agent ran on an in-use machine"
    );
    announce(&format!(
        "TIMING {test}: install boot -> in-use in {:.1} s; power-on -> installed OS marker in {:.1} s",
        installed.as_secs_f64(),
        booted.as_secs_f64()
    ));
    Ok(())
}
