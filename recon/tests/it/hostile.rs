//! The hand-made `hostile` fixture (`tests/fixtures/make-hostile.sh`) and missing trees: no
//! panic, and every bad value becomes an absent fact rather than a wrong one.

use std::path::PathBuf;

use pxe_api::hardware::{BootMode, Memory};

use crate::fixture;

#[test]
fn dmi_values_are_lossy_trimmed_and_bounded() {
    let d = recon::collect(&fixture("hostile")).dmi;
    assert_eq!(d.system_serial.as_deref(), Some("SER\u{fffd}\u{fffd}-01"));
    assert_eq!(d.product.as_deref(), Some("Caf\u{fffd} Server"));
    // 70,000 bytes: over the 64 KiB cap, so absent rather than truncated
    assert_eq!(d.system_uuid, None);
    // exactly 64 KiB (65,535 'B' + newline): read whole, trimmed
    let board = d.board_serial.unwrap_or_default();
    assert_eq!(board.len(), 65_535);
    assert!(board.bytes().all(|b| b == b'B'));
    assert_eq!(d.chassis_serial, None, "blank");
    assert_eq!(d.vendor, None, "NUL padding only");
    assert_eq!(d.bios_version, None, "a directory, not a file");
}

#[test]
fn nics_with_bad_addresses_or_links() {
    let nics = recon::collect(&fixture("hostile")).nics;
    let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
    // eth0: garbage address; br0: no device link; ib0: 20-byte address
    assert_eq!(names, ["eth1", "eth2", "eth3"]);
    let eth1 = &nics[0];
    assert_eq!(eth1.mac.to_string(), "52:54:00:ab:cd:01");
    assert_eq!(eth1.driver.as_deref(), Some("e1000e"));
    assert_eq!(eth1.pci_address.as_deref(), Some("0000:00:19.0"));
    assert_eq!(
        (eth1.link_up, eth1.speed_mbps),
        (None, None),
        "carrier 2, speed 'fast'"
    );
    // eth2: device link loops on itself; speed is the "unknown" sentinel
    assert_eq!(
        (nics[1].pci_address.as_deref(), nics[1].driver.as_deref()),
        (None, None)
    );
    assert_eq!(nics[1].speed_mbps, None);
    // eth3: device link escapes the root: no PCI address from outside the tree
    assert_eq!(nics[2].pci_address, None);
}

#[test]
fn disks_with_garbage_attributes() {
    let disks = recon::collect(&fixture("hostile")).disks;
    // sda: size not a number; sdc: 64 KiB+1 size file; sdd: dangling link;
    // loop0: loop device; nvme0c0n1: hidden multipath node
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["sdb"]);
    let sdb = &disks[0];
    assert_eq!(sdb.size_bytes, 1_953_525_168 * 512);
    assert_eq!(sdb.logical_block_size, Some(4096));
    assert_eq!(sdb.physical_block_size, None, "garbage");
    assert_eq!(sdb.rotational, Some(true));
    assert_eq!(sdb.removable, None, "missing file");
    assert_eq!(sdb.read_only, None, "'7' is not a flag");
    assert_eq!(sdb.model.as_deref(), Some("\u{fffd}\u{fffd}Model"));
    assert_eq!(
        sdb.serial.as_deref(),
        Some("SHORT"),
        "VPD page length beyond the data"
    );
    assert_eq!((sdb.wwn.as_deref(), sdb.transport.as_deref()), (None, None));
    assert_eq!(sdb.discard, None);
}

#[test]
fn cpu_memory_and_cmdline() {
    let r = recon::collect(&fixture("hostile"));
    assert_eq!(r.cpu.model.as_deref(), Some("Weird\u{fffd}CPU"));
    assert_eq!(r.cpu.threads, Some(2));
    // no physical id in cpuinfo and no sysfs topology directory
    assert_eq!((r.cpu.sockets, r.cpu.cores), (None, None));
    assert_eq!(r.memory.total_bytes, None, "negative MemTotal");
    // the one good type 17 before the truncated structure is kept
    assert_eq!(r.memory.dimms.len(), 1);
    let dimm = &r.memory.dimms[0];
    assert_eq!(dimm.locator.as_deref(), Some("DIMM\u{fffd}0"));
    assert_eq!(dimm.size_bytes, Some(8 * 1024 * 1024 * 1024));
    assert_eq!(dimm.kind.as_deref(), Some("DDR4"));
    assert_eq!(dimm.speed_mts, Some(2933));
    assert_eq!(dimm.serial.as_deref(), Some("S\u{fffd}rial"));
    assert_eq!(r.boot_mode, BootMode::Uefi);
    assert_eq!(r.boot_mac, None, "BOOTIF with a bad octet");
}

#[test]
fn missing_tree_is_all_absent() {
    let r = recon::collect(&recon::Sources::under(PathBuf::from(
        "/nonexistent/recon-test-root",
    )));
    assert_eq!(r, Default::default());
    assert_eq!(r.boot_mode, BootMode::Unknown);
    assert_eq!(r.memory, Memory::default());
}

#[test]
fn sources_split_is_kept() {
    let s = recon::Sources::under(PathBuf::from("/x"));
    assert_eq!(
        (s.sysfs, s.procfs, s.dev),
        ("/x/sys".into(), "/x/proc".into(), "/x/dev".into())
    );
    let live = recon::Sources::live();
    assert_eq!(live.sysfs, PathBuf::from("/sys"));
}
