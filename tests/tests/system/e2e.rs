//! End-to-end scenarios: real firmware netboots from the real appliance built by
//! `cargo xtask dist`, runs the real `pxeimage` agent, and the appliance's state changes.

use std::time::Duration;

use pxe_api::MachineState;
use rackhand_tests::gate::{self, Need, announce};
use rackhand_tests::{
    Appliance, ApplianceConfig, DiskFormat, Firmware, Netns, Result, VmBuilder, WorkDir, test_mac,
};

/// Power-on to registration: ~10 s in the quiet case; TCG on a busy 2-core host is slower.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn bios_unknown_machine_registers() -> Result<()> {
    let test = "bios_unknown_machine_registers";
    let needs = [
        Need::Root,
        Need::Iproute,
        Need::Qemu,
        Need::Curl,
        Need::Dist,
    ];
    if !gate::require(test, &needs)? {
        return Ok(());
    }
    let serial = "RH-E2E-0001";
    let uuid = "5e1ec7ed-0000-4000-8000-525400992001";
    let (mac0, mac1) = (test_mac(0x20, 1), test_mac(0x20, 2));
    let disk_bytes: u64 = 4 << 30;
    let mem_mib: u32 = 1024;

    let dir = WorkDir::new(test)?;
    let ns = Netns::new(2)?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
    let vm = VmBuilder::new("e2e-bios")
        .firmware(Firmware::Bios)
        .memory_mib(mem_mib)
        .nic(ns.tap(0)?, mac0)
        .nic(ns.tap(1)?, mac1)
        .disk(disk_bytes, DiskFormat::Qcow2, Some("RHE2EDISK0"))
        .smbios_serial(serial)
        .uuid(uuid)
        // The boot script retries forever; in this closed network one failure is a bug.
        .fail_on("could not load the agent")
        .start(&ns, dir.path())?;

    let (m, _) =
        app.wait_for_machine(serial, MachineState::Available, REGISTER_TIMEOUT, Some(&vm))?;
    let registered = vm.uptime();
    announce(&format!(
        "TIMING {test}: power-on -> registered as available in {:.1} s (poll interval 1 s)",
        registered.as_secs_f64()
    ));

    let want = crate::support::Expect {
        serial,
        uuid: Some(uuid),
        macs: &[mac0, mac1],
        disk_bytes,
        disk_serial: Some("RHE2EDISK0"),
        mem_mib,
    };
    crate::support::assert_registered_by_serial(&m, &want, &vm.report());
    Ok(())
}
