//! Recycle: a machine whose two disks are full of a canary pattern is recycled with its
//! second disk kept out of the order (`keep_disks`, by that disk's serial); its agent wipes
//! the first disk, verifies it, and reports a wipe record and the kept disk as skipped; the
//! machine is `available` again, a host-side scan of the first disk image finds no canary
//! block, and the kept disk's image is byte-identical (sha256 before and after).

use pxe_api::MachineState;
use rackhand_tests::gate::{self, announce};
use rackhand_tests::{
    Appliance, ApplianceConfig, DiskFormat, Netns, Result, VmBuilder, WorkDir, test_mac,
};

use crate::support::{
    REGISTER_TIMEOUT, VM_NEEDS, canary_blocks, fill_with_canaries, recycle_to_available, sha256,
};

#[test]
fn recycled_machine_is_wiped_verified_and_available() -> Result<()> {
    let test = "recycled_machine_is_wiped_verified_and_available";
    if !gate::require(test, VM_NEEDS)? {
        return Ok(());
    }
    let serial = "RH-RECYCLE-0001";
    let kept_serial = "RHKEEPDISK";
    let size: u64 = 128 << 20;
    let kept_size: u64 = 64 << 20;
    let dir = WorkDir::new(test)?;
    let disk = dir.path().join("recycle.disk.img");
    fill_with_canaries(&disk, size)?;
    assert_eq!(canary_blocks(&disk)?, size / 4096);
    let kept = dir.path().join("recycle.kept.img");
    fill_with_canaries(&kept, kept_size)?;
    let kept_before = sha256(&kept)?;

    let ns = Netns::new(1)?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
    let machine = |name: &str| -> Result<VmBuilder> {
        Ok(VmBuilder::new(name)
            .nic(ns.tap(0)?, test_mac(0x60, 1))
            .existing_disk(&disk, DiskFormat::Raw, Some("RHRECYCLEDISK"))
            .existing_disk(&kept, DiskFormat::Raw, Some(kept_serial))
            .smbios_serial(serial)
            .fail_on("could not load the agent"))
    };

    let vm = machine("recycle-1")?.start(&ns, dir.path())?;
    let (m, _) =
        app.wait_for_machine(serial, MachineState::Available, REGISTER_TIMEOUT, Some(&vm))?;
    assert_eq!(
        canary_blocks(&disk)?,
        size / 4096,
        "registration touched the disk"
    );
    let disks = &m.hardware.as_ref().expect("hardware report").disks;
    assert!(
        disks
            .iter()
            .any(|d| d.serial.as_deref() == Some(kept_serial)),
        "the kept disk's serial is in the report: {disks:?}"
    );
    let (m, reply, took) = recycle_to_available(
        &app,
        &ns,
        dir.path(),
        vm,
        &m,
        &serde_json::json!({ "keep_disks": [kept_serial] }),
        machine("recycle-2")?,
    )?;
    assert!(reply.contains(kept_serial), "{reply}");

    let left = canary_blocks(&disk)?;
    assert_eq!(left, 0, "{left} canary blocks survived the wipe");
    assert_eq!(
        sha256(&kept)?,
        kept_before,
        "the disk the order kept was changed"
    );
    assert_eq!(
        m.keep_disks,
        Vec::<String>::new(),
        "the scope ends with the order"
    );
    let events = app.history(&m.id)?;
    let result = events
        .iter()
        .rev()
        .find(|e| e.kind == "transition" && e.to_state.as_deref() == Some("available"))
        .unwrap_or_else(|| panic!("no recycle-complete transition in {events:#?}"));
    let detail = &result.detail.as_ref().expect("detail")["detail"];
    let wipes = &detail["wipes"];
    assert_eq!(
        wipes.as_array().map(Vec::len),
        Some(1),
        "one disk wiped: {detail}"
    );
    let record = wipes
        .get(0)
        .unwrap_or_else(|| panic!("no wipe record in {result:?}"));
    assert_eq!(record["serial"], "RHRECYCLEDISK", "{record}");
    let skipped = detail["skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("no skipped list in {detail}"));
    assert!(
        skipped
            .iter()
            .any(|s| s["serial"] == kept_serial && s["reason"] == "kept_by_order"),
        "the kept disk is listed as skipped: {detail}"
    );
    assert_eq!(record["verified"], true, "{record}");
    assert!(record["method"].is_string(), "{record}");
    assert_eq!(record["nist_level"], "clear", "{record}");
    announce(&format!(
        "TIMING {test}: recycle boot -> wiped, verified, available in {:.1} s (method {})",
        took.as_secs_f64(),
        record["method"]
    ));
    Ok(())
}
