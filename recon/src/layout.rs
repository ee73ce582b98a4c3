//! Every path `recon` reads, relative to the sysfs or procfs root.
//!
//! The probes and the fixture capture tool (`examples/capture_fixture.rs`) both use these lists,
//! so a fixture holds exactly the files the probes consult.

/// Directory of the DMI identity attributes (a symlink into `devices/virtual/dmi/id`).
pub const DMI_ID_DIR: &str = "class/dmi/id";

/// DMI attributes read from [`DMI_ID_DIR`].
pub const DMI_FIELDS: &[&str] = &[
    "product_serial",
    "product_uuid",
    "chassis_serial",
    "board_serial",
    "sys_vendor",
    "product_name",
    "bios_version",
];

/// The raw SMBIOS structure table.
pub const SMBIOS_TABLE: &str = "firmware/dmi/tables/DMI";

/// Present only when the kernel was started by UEFI firmware.
pub const EFI_DIR: &str = "firmware/efi";

/// A file inside [`EFI_DIR`] the capture tool copies so the directory survives in git.
pub const EFI_MARKER: &str = "firmware/efi/fw_platform_size";

/// Network interfaces (symlinks into `devices/...`).
pub const NET_DIR: &str = "class/net";

/// Attributes read in each interface directory. `device` and `device/driver` are links.
pub const NET_ATTRS: &[&str] = &["address", "carrier", "speed"];

/// Whole block devices (symlinks into `devices/...`).
pub const BLOCK_DIR: &str = "block";

/// Attributes read in each block device directory.
pub const BLOCK_ATTRS: &[&str] = &[
    "size",
    "removable",
    "ro",
    "hidden",
    "serial",
    "wwid",
    "queue/logical_block_size",
    "queue/physical_block_size",
    "queue/rotational",
    "queue/discard_max_bytes",
];

/// Attributes read under each block device's `device` link (SCSI/ATA, NVMe controller or
/// subsystem).
pub const BLOCK_DEVICE_ATTRS: &[&str] = &["model", "serial", "wwid", "vpd_pg80"];

/// CPU topology directory root (`cpuN/topology/...` below it).
pub const CPU_DIR: &str = "devices/system/cpu";

/// Topology attributes read for each `cpuN`.
pub const CPU_TOPOLOGY_ATTRS: &[&str] = &["topology/physical_package_id", "topology/core_id"];

/// procfs files read.
pub const PROC_FILES: &[&str] = &["cpuinfo", "meminfo", "cmdline"];
