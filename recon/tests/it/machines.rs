//! Fixtures captured from real machines: a QEMU q35 VM, this build machine, and the QEMU VM
//! with its DMI removed.

use pxe_api::Mac;
use pxe_api::hardware::{BootMode, Disk, Nic};

use crate::fixture;

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

fn mac(s: &str) -> Mac {
    s.parse().unwrap_or(Mac([0; 6]))
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

fn q35_nics() -> Vec<Nic> {
    vec![
        Nic {
            name: "eth0".into(),
            mac: mac("52:54:00:12:34:02"),
            driver: some("e1000e"),
            link_up: Some(true),
            speed_mbps: Some(1000),
            pci_address: some("0000:00:04.0"),
        },
        Nic {
            name: "eth1".into(),
            mac: mac("52:54:00:12:34:01"),
            driver: some("virtio_net"),
            // the interface was down: the kernel refuses to read carrier/speed
            link_up: None,
            speed_mbps: None,
            pci_address: some("0000:00:03.0"),
        },
    ]
}

fn q35_disks() -> Vec<Disk> {
    vec![
        Disk {
            name: "nvme0n1".into(),
            size_bytes: 128 * MIB,
            logical_block_size: Some(4096),
            physical_block_size: Some(4096),
            rotational: Some(false),
            removable: Some(false),
            read_only: Some(false),
            model: some("QEMU NVMe Ctrl"),
            serial: some("NVME-SER-2"),
            wwn: some("nvme.1b36-4e564d452d5345522d32-51454d55204e564d65204374726c-00000001"),
            transport: some("nvme"),
            discard: Some(true),
        },
        Disk {
            name: "sda".into(),
            size_bytes: 96 * MIB,
            logical_block_size: Some(512),
            physical_block_size: Some(512),
            rotational: Some(true),
            removable: Some(false),
            read_only: Some(false),
            model: some("RH-SATA-DISK"),
            serial: some("SATA-SER-3"),
            wwn: some("naa.5000c50015ea71ad"),
            transport: some("sata"),
            discard: Some(true),
        },
        Disk {
            name: "vda".into(),
            size_bytes: 64 * MIB,
            logical_block_size: Some(512),
            physical_block_size: Some(512),
            rotational: Some(true),
            removable: Some(false),
            read_only: Some(false),
            model: None,
            serial: some("VIRTIO-SER-1"),
            wwn: None,
            transport: some("virtio"),
            discard: Some(true),
        },
    ]
}

#[test]
fn qemu_q35_identity() {
    let r = recon::collect(&fixture("qemu-q35"));
    let d = &r.dmi;
    let cases = [
        ("system_serial", &d.system_serial, "RH-QEMU-0001"),
        (
            "system_uuid",
            &d.system_uuid,
            "7ac0ffee-1234-4abc-8def-525400123401",
        ),
        ("chassis_serial", &d.chassis_serial, "CHASSIS-0042"),
        ("board_serial", &d.board_serial, "BOARD-0007"),
        ("vendor", &d.vendor, "Rackhand"),
        ("product", &d.product, "FixtureVM"),
        ("bios_version", &d.bios_version, "1.16.2-debian-1.16.2-1"),
    ];
    for (field, got, want) in cases {
        assert_eq!(got.as_deref(), Some(want), "{field}");
    }
    assert_eq!(r.boot_mode, BootMode::Bios);
    assert_eq!(r.boot_mac, Some(mac("52:54:00:12:34:01")));
    assert_eq!(r.bmc, None);
}

#[test]
fn qemu_q35_nics_skip_loopback() {
    let r = recon::collect(&fixture("qemu-q35"));
    assert_eq!(r.nics, q35_nics());
    assert_eq!(
        r.macs(),
        vec![mac("52:54:00:12:34:01"), mac("52:54:00:12:34:02")]
    );
}

#[test]
fn qemu_q35_disks_skip_optical() {
    let r = recon::collect(&fixture("qemu-q35"));
    // sr0 (the ide-cd) is in the fixture's /sys/block and must not be reported
    assert!(
        crate::fixture_dir("qemu-q35")
            .join("sys/block/sr0")
            .symlink_metadata()
            .is_ok()
    );
    assert_eq!(r.disks, q35_disks());
}

#[test]
fn qemu_q35_cpu_and_memory() {
    let r = recon::collect(&fixture("qemu-q35"));
    assert_eq!(
        r.cpu.model.as_deref(),
        Some("QEMU Virtual CPU version 2.5+")
    );
    // -smp 4,sockets=2,cores=2,threads=1
    assert_eq!(
        (r.cpu.sockets, r.cpu.cores, r.cpu.threads),
        (Some(2), Some(4), Some(4))
    );
    assert_eq!(r.memory.total_bytes, Some(982_952 * 1024));
    assert_eq!(r.memory.dimms.len(), 1);
    let dimm = &r.memory.dimms[0];
    assert_eq!(dimm.locator.as_deref(), Some("DIMM 0"));
    assert_eq!(dimm.size_bytes, Some(GIB));
    assert_eq!(dimm.kind.as_deref(), Some("RAM"));
    assert_eq!(dimm.speed_mts, Some(3200));
    assert_eq!(dimm.manufacturer.as_deref(), Some("Acme"));
    assert_eq!(dimm.serial.as_deref(), Some("DIMMSER-01"));
}

#[test]
fn qemu_q35_without_dmi_keeps_everything_else() {
    let full = recon::collect(&fixture("qemu-q35"));
    let r = recon::collect(&fixture("qemu-q35-no-dmi"));
    assert_eq!(r.dmi, Default::default());
    assert!(r.memory.dimms.is_empty(), "no SMBIOS table, no DIMMs");
    assert_eq!(r.memory.total_bytes, full.memory.total_bytes);
    assert_eq!(r.nics, full.nics);
    assert_eq!(r.disks, full.disks);
    assert_eq!(r.cpu, full.cpu);
    assert_eq!(r.boot_mode, BootMode::Bios);
    assert_eq!(r.boot_mac, full.boot_mac);
}

#[test]
fn build_host() {
    let r = recon::collect(&fixture("build-host"));
    // This build machine (a Firecracker microVM) has no DMI and no SMBIOS table.
    assert_eq!(r.dmi, Default::default());
    assert!(r.memory.dimms.is_empty());
    assert_eq!(r.memory.total_bytes, Some(24_684_084 * 1024));
    // lo and the two ifb devices (virtual, no device link) are skipped
    assert_eq!(
        r.nics,
        vec![Nic {
            name: "eth0".into(),
            mac: mac("02:fc:00:00:00:01"),
            driver: some("virtio_net"),
            link_up: Some(true),
            speed_mbps: None,
            pci_address: some("0000:00:03.0"),
        }]
    );
    // loop0..7 and zram0 are skipped
    assert_eq!(
        r.disks,
        vec![Disk {
            name: "vda".into(),
            size_bytes: 256 * GIB,
            logical_block_size: Some(512),
            physical_block_size: Some(4096),
            rotational: Some(true),
            removable: Some(false),
            read_only: Some(false),
            model: None,
            serial: some("overlayblk"),
            wwn: None,
            transport: some("virtio"),
            discard: Some(true),
        }]
    );
    assert_eq!(r.cpu.model.as_deref(), Some("Intel(R) Xeon(R) Processor"));
    assert_eq!(
        (r.cpu.sockets, r.cpu.cores, r.cpu.threads),
        (Some(1), Some(2), Some(2))
    );
    assert_eq!(r.boot_mode, BootMode::Bios);
    assert_eq!(r.boot_mac, None, "no /proc/cmdline captured");
}

#[test]
fn qemu_q35_uefi() {
    let r = recon::collect(&fixture("qemu-q35-uefi"));
    assert_eq!(r.boot_mode, BootMode::Uefi);
    assert_eq!(r.dmi.system_serial.as_deref(), Some("RH-QEMU-UEFI-0002"));
    assert_eq!(
        r.dmi.system_uuid.as_deref(),
        Some("7ac0ffee-1234-4abc-8def-525400123402")
    );
    assert_eq!(r.dmi.product.as_deref(), Some("FixtureVM-UEFI"));
    assert_eq!(
        r.dmi.bios_version.as_deref(),
        Some("0.0.0"),
        "OVMF's version string"
    );
    assert_eq!(
        (
            r.dmi.chassis_serial.as_deref(),
            r.dmi.board_serial.as_deref()
        ),
        (None, None)
    );
    assert_eq!(r.nics.len(), 1);
    assert_eq!(r.nics[0].mac, mac("52:54:00:12:34:11"));
    assert_eq!(r.nics[0].pci_address.as_deref(), Some("0000:00:02.0"));
    assert_eq!(r.disks.len(), 1);
    assert_eq!(r.disks[0].serial.as_deref(), Some("VIRTIO-UEFI-1"));
    assert_eq!(r.disks[0].size_bytes, 64 * MIB);
    // OVMF's SMBIOS 3.0 table: one 2 GiB device, no speed or serial given
    assert_eq!(r.memory.total_bytes, Some(2_008_028 * 1024));
    assert_eq!(r.memory.dimms.len(), 1);
    let dimm = &r.memory.dimms[0];
    assert_eq!(dimm.size_bytes, Some(2 * GIB));
    assert_eq!(dimm.manufacturer.as_deref(), Some("QEMU"));
    assert_eq!((dimm.speed_mts, dimm.serial.as_deref()), (None, None));
    assert_eq!(
        (r.cpu.sockets, r.cpu.cores, r.cpu.threads),
        (Some(1), Some(2), Some(2))
    );
    assert_eq!(r.boot_mac, None, "no BOOTIF= on this kernel command line");
}
