//! Whole disks from `/sys/block`: size, block sizes, flags, model/serial/WWN and transport.
//!
//! `/sys/block` lists whole devices only (no partitions). Software devices are skipped by name
//! (loop, ram, zram, device-mapper, md, optical, floppy, network block devices), as are hidden
//! devices (the per-path `nvmeXcYnZ` nodes under native NVMe multipath).

use std::path::Path;

use pxe_api::hardware::Disk;

use crate::layout::BLOCK_DIR;
use crate::sources::{
    ATTR_CAP, clean_bytes, list_dir, parse_flag, parse_u32, parse_u64, read_attr, read_bounded,
    resolve_under,
};

/// Name prefixes of block devices that are not disks to report.
const SKIPPED_PREFIXES: &[&str] = &[
    "loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd", "rbd", "drbd", "zd",
];

/// True when `name` is a whole disk worth reporting (by name alone).
pub fn is_reported_disk(name: &str) -> bool {
    !name.is_empty() && !SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `size` is in 512-byte sectors whatever the logical block size; returns bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    parse_u64(s)?.checked_mul(512)
}

/// Serial number from a SCSI VPD page 0x80 (Unit Serial Number): a 4-byte header whose byte 1
/// is the page code and bytes 2..4 the big-endian page length, then the serial in ASCII.
pub fn parse_vpd_pg80(raw: &[u8]) -> Option<String> {
    let (&[_, page, hi, lo], body) = raw.split_first_chunk::<4>()?;
    if page != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    clean_bytes(body.get(..len).unwrap_or(body))
}

/// The transport a disk is attached by, from its kernel name and resolved sysfs device path
/// (relative to the sysfs root, e.g. `devices/pci0000:00/0000:00:1f.2/ata1/host0/...`).
pub fn transport(name: &str, device_path: &str) -> Option<String> {
    let comps: Vec<&str> = device_path.split('/').collect();
    let has = |pred: &dyn Fn(&str) -> bool| comps.iter().any(|c| pred(c));
    let numbered = |c: &str, prefix: &str| {
        c.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let t = if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if has(&|c| numbered(c, "usb")) {
        "usb"
    } else if has(&|c| numbered(c, "ata")) {
        "sata"
    } else if has(&|c| c.starts_with("end_device-") || c.starts_with("expander-")) {
        "sas"
    } else if has(&|c| numbered(c, "host")) {
        "scsi"
    } else if has(&|c| numbered(c, "virtio")) {
        "virtio"
    } else {
        return None;
    };
    Some(t.to_owned())
}

/// Parses `queue/discard_max_bytes`: non-zero means the device accepts discard.
pub fn parse_discard(s: &str) -> Option<bool> {
    parse_u64(s).map(|n| n > 0)
}

/// Reads every reported whole disk under `sysfs`, sorted by name.
pub(crate) fn collect(sysfs: &Path) -> Vec<Disk> {
    let dir = sysfs.join(BLOCK_DIR);
    list_dir(&dir)
        .into_iter()
        .filter(|name| is_reported_disk(name))
        .filter_map(|name| {
            let disk = dir.join(&name);
            let attr = |rel: &str| read_attr(&disk.join(rel));
            if attr("hidden").and_then(|s| parse_flag(&s)) == Some(true) {
                return None;
            }
            let size_bytes = attr("size").and_then(|s| parse_size(&s))?;
            let device = disk.join("device");
            let dev_attr = |rel: &str| read_attr(&device.join(rel));
            let device_path = resolve_under(sysfs, &device).unwrap_or_default();
            let vpd_serial = || {
                read_bounded(&device.join("vpd_pg80"), ATTR_CAP).and_then(|b| parse_vpd_pg80(&b))
            };
            Some(Disk {
                size_bytes,
                logical_block_size: attr("queue/logical_block_size").and_then(|s| parse_u32(&s)),
                physical_block_size: attr("queue/physical_block_size").and_then(|s| parse_u32(&s)),
                rotational: attr("queue/rotational").and_then(|s| parse_flag(&s)),
                removable: attr("removable").and_then(|s| parse_flag(&s)),
                read_only: attr("ro").and_then(|s| parse_flag(&s)),
                model: dev_attr("model"),
                serial: attr("serial")
                    .or_else(|| dev_attr("serial"))
                    .or_else(vpd_serial),
                wwn: attr("wwid").or_else(|| dev_attr("wwid")),
                transport: transport(&name, &device_path),
                discard: attr("queue/discard_max_bytes").and_then(|s| parse_discard(&s)),
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for n in ["sda", "vda", "nvme0n1", "mmcblk0", "xvda", "hda"] {
            assert!(is_reported_disk(n), "{n}");
        }
        for n in [
            "loop0", "ram1", "zram0", "dm-0", "md127", "sr0", "fd0", "nbd3", "",
        ] {
            assert!(!is_reported_disk(n), "{n}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2097152\n"), Some(1024 * 1024 * 1024));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("18446744073709551615"), None);
        assert_eq!(parse_size("-5"), None);
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn vpd80() {
        let mut raw = vec![0x00, 0x80, 0x00, 0x08];
        raw.extend_from_slice(b"QM00001 ");
        assert_eq!(parse_vpd_pg80(&raw).as_deref(), Some("QM00001"));
        // length longer than the data: use what is there
        assert_eq!(
            parse_vpd_pg80(&[0, 0x80, 0, 0xff, b'A']).as_deref(),
            Some("A")
        );
        assert_eq!(parse_vpd_pg80(&[0, 0x83, 0, 1, b'A']), None);
        assert_eq!(parse_vpd_pg80(&[0, 0x80]), None);
        assert_eq!(parse_vpd_pg80(&[0, 0x80, 0, 0]), None);
    }

    #[test]
    fn transports() {
        let cases = [
            (
                "nvme0n1",
                "devices/pci0000:00/0000:00:04.0/nvme/nvme0",
                Some("nvme"),
            ),
            (
                "vda",
                "devices/pci0000:00/0000:00:02.0/virtio1",
                Some("virtio"),
            ),
            (
                "sda",
                "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
                Some("sata"),
            ),
            (
                "sdb",
                "devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0",
                Some("usb"),
            ),
            (
                "sdc",
                "devices/pci0000:00/0000:00:05.0/virtio3/host2/target2:0:0/2:0:0:0",
                Some("scsi"),
            ),
            (
                "sdd",
                "devices/pci0000:80/0000:80:01.0/0000:81:00.0/host7/port-7:0/end_device-7:0/target7:0:0/7:0:0:0",
                Some("sas"),
            ),
            (
                "mmcblk0",
                "devices/platform/mmc0/mmc_host/mmc0/mmc0:0001",
                Some("mmc"),
            ),
            ("xvda", "", None),
        ];
        for (name, path, want) in cases {
            assert_eq!(transport(name, path).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn discard() {
        assert_eq!(parse_discard("2147483136"), Some(true));
        assert_eq!(parse_discard("0\n"), Some(false));
        assert_eq!(parse_discard("x"), None);
    }
}
