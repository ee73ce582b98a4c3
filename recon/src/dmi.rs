//! SMBIOS system identity from `/sys/class/dmi/id` and the boot mode from `/sys/firmware`.

use std::path::Path;

use pxe_api::hardware::{BootMode, Dmi};

use crate::layout::{DMI_FIELDS, DMI_ID_DIR, EFI_DIR};
use crate::sources::{ATTR_CAP, clean_bytes, exists_no_follow, read_bounded};

/// Builds the identity from a lookup of raw attribute bytes by DMI file name (pure: the
/// lookup is the only source). Each value is decoded lossily and trimmed; empty is absent.
pub fn parse_dmi(lookup: impl Fn(&str) -> Option<Vec<u8>>) -> Dmi {
    let get = |name: &str| lookup(name).and_then(|raw| clean_bytes(&raw));
    Dmi {
        system_serial: get("product_serial"),
        system_uuid: get("product_uuid"),
        chassis_serial: get("chassis_serial"),
        board_serial: get("board_serial"),
        vendor: get("sys_vendor"),
        product: get("product_name"),
        bios_version: get("bios_version"),
    }
}

/// Reads the DMI identity under `sysfs`. A machine without DMI yields all-`None`.
pub(crate) fn collect(sysfs: &Path) -> Dmi {
    let dir = sysfs.join(DMI_ID_DIR);
    parse_dmi(|name| {
        if DMI_FIELDS.contains(&name) {
            read_bounded(&dir.join(name), ATTR_CAP)
        } else {
            None
        }
    })
}

/// The boot-mode rule: `firmware/efi` present → UEFI; sysfs `firmware/` present without it →
/// legacy BIOS; no `firmware/` at all (sysfs not mounted or not captured) → unknown.
pub fn boot_mode(firmware_dir_exists: bool, efi_dir_exists: bool) -> BootMode {
    match (firmware_dir_exists, efi_dir_exists) {
        (_, true) => BootMode::Uefi,
        (true, false) => BootMode::Bios,
        (false, false) => BootMode::Unknown,
    }
}

/// Reads the boot mode under `sysfs`.
pub(crate) fn collect_boot_mode(sysfs: &Path) -> BootMode {
    boot_mode(
        exists_no_follow(&sysfs.join("firmware")),
        exists_no_follow(&sysfs.join(EFI_DIR)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dmi_fields_are_cleaned() {
        let d = parse_dmi(|n| match n {
            "product_serial" => Some(b"  SER123 \n".to_vec()),
            "product_uuid" => Some(b"\n".to_vec()),
            "sys_vendor" => Some(b"Ven\xffdor\n".to_vec()),
            _ => None,
        });
        assert_eq!(d.system_serial.as_deref(), Some("SER123"));
        assert_eq!(d.system_uuid, None);
        assert_eq!(d.vendor.as_deref(), Some("Ven\u{fffd}dor"));
        assert_eq!(d.product, None);
    }

    #[test]
    fn boot_mode_table() {
        assert_eq!(boot_mode(true, true), BootMode::Uefi);
        assert_eq!(boot_mode(true, false), BootMode::Bios);
        assert_eq!(boot_mode(false, false), BootMode::Unknown);
        assert_eq!(boot_mode(false, true), BootMode::Uefi);
    }
}
