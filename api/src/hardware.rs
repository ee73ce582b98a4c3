//! The hardware report an agent sends when it registers: what `recon` found on the machine.
//!
//! Every fact is optional or defaulted: a missing sysfs file is an absent fact, never an error.
//! Strings are raw as read (lossily decoded, trimmed); the server validates and bounds them
//! before it stores anything.

use serde::{Deserialize, Serialize};

use crate::Mac;

/// Everything the agent knows about the machine it runs on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HardwareReport {
    /// SMBIOS/DMI identity.
    pub dmi: Dmi,
    /// Network interfaces with a hardware address (loopback and virtual links excluded).
    pub nics: Vec<Nic>,
    /// Whole block devices (no partitions, no loop/ram/zram devices).
    pub disks: Vec<Disk>,
    /// Processors.
    pub cpu: Cpu,
    /// Memory.
    pub memory: Memory,
    /// How the machine booted.
    pub boot_mode: BootMode,
    /// The MAC of the NIC the machine netbooted from (`BOOTIF=`), when known.
    pub boot_mac: Option<Mac>,
    /// Baseboard management controller, when in-band IPMI shows it.
    pub bmc: Option<Bmc>,
    /// Agent version string, for the record.
    pub agent_version: Option<String>,
}

/// SMBIOS system identity (`/sys/class/dmi/id`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dmi {
    /// `product_serial`: the system serial number.
    pub system_serial: Option<String>,
    /// `product_uuid`: the SMBIOS system UUID, as Linux prints it.
    pub system_uuid: Option<String>,
    /// `chassis_serial`.
    pub chassis_serial: Option<String>,
    /// `board_serial`.
    pub board_serial: Option<String>,
    /// `sys_vendor`.
    pub vendor: Option<String>,
    /// `product_name`.
    pub product: Option<String>,
    /// `bios_version`.
    pub bios_version: Option<String>,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Kernel name, e.g. `eth0`, `enp1s0`.
    pub name: String,
    /// Permanent hardware address.
    pub mac: Mac,
    /// Kernel driver, e.g. `virtio_net`.
    #[serde(default)]
    pub driver: Option<String>,
    /// Carrier present.
    #[serde(default)]
    pub link_up: Option<bool>,
    /// Negotiated speed in Mbit/s.
    #[serde(default)]
    pub speed_mbps: Option<u32>,
    /// PCI address, e.g. `0000:00:02.0`.
    #[serde(default)]
    pub pci_address: Option<String>,
}

/// One whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name, e.g. `vda`, `nvme0n1`, `sda`.
    pub name: String,
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// Logical block size in bytes.
    #[serde(default)]
    pub logical_block_size: Option<u32>,
    /// Physical block size in bytes.
    #[serde(default)]
    pub physical_block_size: Option<u32>,
    /// Spinning disk.
    #[serde(default)]
    pub rotational: Option<bool>,
    /// Removable medium (USB sticks, card readers, optical).
    #[serde(default)]
    pub removable: Option<bool>,
    /// Read-only.
    #[serde(default)]
    pub read_only: Option<bool>,
    /// Model string.
    #[serde(default)]
    pub model: Option<String>,
    /// Disk serial number.
    #[serde(default)]
    pub serial: Option<String>,
    /// World-wide name.
    #[serde(default)]
    pub wwn: Option<String>,
    /// Transport: `nvme`, `sata`, `sas`, `virtio`, `usb`, `scsi`…
    #[serde(default)]
    pub transport: Option<String>,
    /// The device accepts discard (TRIM/UNMAP).
    #[serde(default)]
    pub discard: Option<bool>,
}

/// Processor summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    /// Model name.
    pub model: Option<String>,
    /// Physical packages.
    pub sockets: Option<u32>,
    /// Physical cores in total.
    pub cores: Option<u32>,
    /// Hardware threads in total.
    pub threads: Option<u32>,
}

/// Memory summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    /// Usable memory in bytes (`MemTotal`).
    pub total_bytes: Option<u64>,
    /// Memory devices from SMBIOS type 17, when the tables exist.
    pub dimms: Vec<Dimm>,
}

/// One memory device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dimm {
    /// Slot locator.
    pub locator: Option<String>,
    /// Size in bytes.
    pub size_bytes: Option<u64>,
    /// Memory type (DDR4…).
    pub kind: Option<String>,
    /// Speed in MT/s.
    pub speed_mts: Option<u32>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Serial.
    pub serial: Option<String>,
}

/// Firmware boot mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// Legacy BIOS.
    Bios,
    /// UEFI (`/sys/firmware/efi` exists).
    Uefi,
    /// Not determined.
    #[default]
    Unknown,
}

/// Baseboard management controller address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bmc {
    /// IPv4 address of the BMC's LAN channel.
    pub ip: Option<String>,
    /// MAC of the BMC's LAN channel.
    pub mac: Option<Mac>,
}

impl HardwareReport {
    /// All NIC MACs, sorted and deduplicated, plus the boot MAC.
    pub fn macs(&self) -> Vec<Mac> {
        let mut v: Vec<Mac> = self.nics.iter().map(|n| n.mac).collect();
        v.extend(self.boot_mac);
        v.retain(|m| !m.is_unusable());
        v.sort();
        v.dedup();
        v
    }
}
