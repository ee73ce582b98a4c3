//! Network interfaces from `/sys/class/net`. Only interfaces backed by a device (a `device`
//! link) are reported: loopback, bridges, bonds, VLANs, veth, tun/tap and other virtual links
//! have none.

use std::path::Path;

use pxe_api::Mac;
use pxe_api::hardware::Nic;

use crate::layout::NET_DIR;
use crate::sources::{
    exists_no_follow, link_basename, list_dir, parse_flag, read_attr, resolve_under,
};

/// Parses an `address` attribute. Non-Ethernet addresses (InfiniBand's 20 bytes, etc.) are not
/// MACs and yield `None`.
pub fn parse_address(s: &str) -> Option<Mac> {
    s.trim().parse().ok()
}

/// Parses a `speed` attribute (Mbit/s). The kernel prints `-1` (or `4294967295` from old
/// drivers) when the speed is unknown; zero is also no speed.
pub fn parse_speed(s: &str) -> Option<u32> {
    let v: i64 = s.trim().parse().ok()?;
    if v <= 0 || v == i64::from(u32::MAX) {
        return None;
    }
    u32::try_from(v).ok()
}

/// True for a PCI function address `dddd:bb:dd.f` (hex digits).
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b':',
            10 => c == b'.',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The PCI address nearest to the device in a resolved sysfs device path (the last
/// `dddd:bb:dd.f` component): the function itself for a PCI NIC or disk, the parent function
/// for a virtio device, the host controller for USB.
pub fn pci_address_of(device_path: &str) -> Option<String> {
    device_path
        .split('/')
        .rev()
        .find(|c| is_pci_address(c))
        .map(str::to_owned)
}

/// Reads every device-backed interface under `sysfs`, sorted by name.
pub(crate) fn collect(sysfs: &Path) -> Vec<Nic> {
    let dir = sysfs.join(NET_DIR);
    list_dir(&dir)
        .into_iter()
        .filter(|name| name != "lo")
        .filter_map(|name| {
            let iface = dir.join(&name);
            let device = iface.join("device");
            if !exists_no_follow(&device) {
                return None;
            }
            let mac = read_attr(&iface.join("address")).and_then(|s| parse_address(&s))?;
            Some(Nic {
                mac,
                driver: link_basename(&device.join("driver")),
                link_up: read_attr(&iface.join("carrier")).and_then(|s| parse_flag(&s)),
                speed_mbps: read_attr(&iface.join("speed")).and_then(|s| parse_speed(&s)),
                pci_address: resolve_under(sysfs, &device).and_then(|p| pci_address_of(&p)),
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("52:54:00:12:34:56\n").map(|m| m.to_string()),
            Some("52:54:00:12:34:56".into())
        );
        let ib = "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:0b:0c";
        assert_eq!(parse_address(ib), None);
        assert_eq!(parse_address(""), None);
        assert_eq!(parse_address("zz:54:00:12:34:56"), None);
    }

    #[test]
    fn speeds() {
        assert_eq!(parse_speed("1000\n"), Some(1000));
        assert_eq!(parse_speed("-1"), None);
        assert_eq!(parse_speed("4294967295"), None);
        assert_eq!(parse_speed("0"), None);
        assert_eq!(parse_speed("fast"), None);
        assert_eq!(parse_speed("99999999999"), None);
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:00:1f.6"));
        assert!(!is_pci_address("0000:00:1g.6"));
        assert!(!is_pci_address("pci0000:00"));
        assert_eq!(
            pci_address_of("devices/pci0000:00/0000:00:03.0/virtio2").as_deref(),
            Some("0000:00:03.0")
        );
        assert_eq!(
            pci_address_of("devices/pci0000:00/0000:00:1c.0/0000:02:00.0").as_deref(),
            Some("0000:02:00.0")
        );
        assert_eq!(pci_address_of("devices/platform/soc/eth0"), None);
    }
}
