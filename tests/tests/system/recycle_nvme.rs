//! Recycle on NVMe: a machine whose only disk is the namespace of an emulated NVMe
//! controller, full of a canary pattern, is recycled. The agent probes the controller
//! (Identify), plans a device-level method (QEMU 7.2's controller offers Format NVM and no
//! Sanitize, so `nvme-format-user-data-erase`), runs it, zeroes both ends, verifies and
//! reports; the wipe record names the NVMe method, a host-side scan of the image finds no
//! canary block, and the machine is `available`.

use pxe_api::MachineState;
use rackhand_tests::gate::{self, announce};
use rackhand_tests::{
    Appliance, ApplianceConfig, DiskFormat, Netns, Result, VmBuilder, WorkDir, test_mac,
};

use crate::support::{
    REGISTER_TIMEOUT, VM_NEEDS, canary_blocks, fill_with_canaries, recycle_to_available,
};

/// The NVMe methods a wipe record may name, with the NIST level each must be recorded at.
const NVME_METHODS: &[(&str, &str)] = &[
    ("nvme-sanitize-crypto", "purge"),
    ("nvme-sanitize-block", "purge"),
    ("nvme-format-crypto-erase", "purge"),
    ("nvme-format-user-data-erase", "clear"),
];

#[test]
fn recycled_nvme_machine_is_purged_verified_and_available() -> Result<()> {
    let test = "recycled_nvme_machine_is_purged_verified_and_available";
    if !gate::require(test, VM_NEEDS)? {
        return Ok(());
    }
    let serial = "RH-RECYCLE-NVME-1";
    let size: u64 = 128 << 20;
    let dir = WorkDir::new(test)?;
    let disk = dir.path().join("recycle-nvme.disk.img");
    fill_with_canaries(&disk, size)?;
    assert_eq!(canary_blocks(&disk)?, size / 4096);

    let ns = Netns::new(1)?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
    let machine = |name: &str| -> Result<VmBuilder> {
        Ok(VmBuilder::new(name)
            .nic(ns.tap(0)?, test_mac(0x61, 1))
            .existing_nvme_disk(&disk, DiskFormat::Raw, "RHNVMEDISK01")
            .smbios_serial(serial)
            .fail_on("could not load the agent"))
    };

    let vm = machine("recycle-nvme-1")?.start(&ns, dir.path())?;
    let (m, _) =
        app.wait_for_machine(serial, MachineState::Available, REGISTER_TIMEOUT, Some(&vm))?;
    let hw = m
        .hardware
        .as_ref()
        .unwrap_or_else(|| panic!("no hardware report: {m:?}"));
    let nvme = hw
        .disks
        .iter()
        .find(|d| d.name == "nvme0n1")
        .unwrap_or_else(|| panic!("the agent did not see nvme0n1: {:?}", hw.disks));
    assert_eq!(nvme.size_bytes, size, "{nvme:?}");
    assert_eq!(nvme.transport.as_deref(), Some("nvme"), "{nvme:?}");
    assert_eq!(
        canary_blocks(&disk)?,
        size / 4096,
        "registration touched the disk"
    );
    // The agent boots for the recycle order, purges, verifies, reports, and reboots.
    let (m, _, took) = recycle_to_available(
        &app,
        &ns,
        dir.path(),
        vm,
        &m,
        &serde_json::json!({}),
        machine("recycle-nvme-2")?,
    )?;

    let left = canary_blocks(&disk)?;
    assert_eq!(left, 0, "{left} canary blocks survived the wipe");
    let events = app.history(&m.id)?;
    let result = events
        .iter()
        .rev()
        .find(|e| e.kind == "transition" && e.to_state.as_deref() == Some("available"))
        .unwrap_or_else(|| panic!("no recycle-complete transition in {events:#?}"));
    let wipes = &result.detail.as_ref().expect("detail")["detail"]["wipes"];
    let record = wipes
        .get(0)
        .unwrap_or_else(|| panic!("no wipe record in {result:?}"));
    assert_eq!(record["disk"], "nvme0n1", "{record}");
    assert_eq!(record["verified"], true, "{record}");
    assert_eq!(record["outcome"], "success", "{record}");
    let method = record["method"].as_str().unwrap_or("");
    let purge = record["purge"].as_str().unwrap_or("");
    let level = NVME_METHODS
        .iter()
        .find(|(m, _)| *m == purge)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("no NVMe purge in the wipe record: {record}"));
    assert_eq!(method, purge, "the purge left data to zero: {record}");
    // The controller cleared the bulk: the agent wrote only the two 1 MiB ends, twice
    // (before and after the purge), and issued no BLKZEROOUT.
    assert_eq!(record["bytes_written"], 4 << 20, "{record}");
    assert_eq!(record["bytes_zeroed"], 0, "{record}");
    assert_eq!(record["nist_level"], level, "{record}");
    let not_attempted = record["not_attempted"].to_string();
    assert!(
        !not_attempted.contains("nvme_format") || !purge.starts_with("nvme-format"),
        "{record}"
    );
    announce(&format!(
        "TIMING {test}: recycle boot -> purged, verified, available in {:.1} s (method {method}, \
         level {level}, skipped {})",
        took.as_secs_f64(),
        record["purge_skipped"]
    ));
    Ok(())
}
