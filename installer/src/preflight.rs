//! The last check before a disk is opened for writing: re-resolve the selected disk on the live
//! system and refuse anything that is in use. The only way to get a [`CheckedTarget`], which
//! is the only way to get a writable handle on a disk.
//!
//! Every read goes through [`SystemPaths`], so the refusals are tested against fixture trees
//! without root. In order, [`check`]:
//!
//! 1. finds `SYSFS/block/NAME` and its `dev` number;
//! 2. re-reads size, serial and WWN and refuses if they differ from the report
//!    (`identity_changed`: device names are not stable across boots);
//! 3. refuses a read-only or removable disk;
//! 4. lists partitions (`SYSFS/block/NAME/NAME*/partition`) and refuses if the disk or any
//!    partition has holders (device-mapper, MD RAID, bcache: `holders/*`), is mounted
//!    (`PROC/self/mountinfo`, by device number and by source path) or is active swap
//!    (`PROC/swaps`);
//! 5. refuses existing partitions unless the caller allows overwriting them;
//! 6. checks that `DEV/NAME` is a block device with the same device number as sysfs says;
//! 7. opens it `O_RDWR | O_EXCL` (the kernel then refuses mounts and holders while we hold
//!    it, and refuses us if anything claimed it since step 4), with `O_DIRECT` when possible;
//! 8. asks the device itself for size, block sizes and read-only flag.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::select::{TargetDisk, is_kernel_name};
use crate::sys;

/// Largest sysfs attribute read (they are a few bytes; this bounds a hostile tree).
const ATTR_CAP: u64 = 4096;
/// Largest `/proc/self/mountinfo` or `/proc/swaps` read. A machine with thousands of mounts
/// stays far below this; the agent's ramdisk has a dozen.
const TABLE_CAP: u64 = 16 << 20;
/// Most partitions looked at per disk (GPT allows 128 by default; the kernel caps minors).
const MAX_PARTITIONS: usize = 1024;

/// Where the live system is. Tests point these at fixture trees.
#[derive(Debug, Clone)]
pub struct SystemPaths {
    /// Normally `/sys`.
    pub sysfs: PathBuf,
    /// Normally `/proc`.
    pub procfs: PathBuf,
    /// Normally `/dev`.
    pub dev: PathBuf,
}

impl SystemPaths {
    /// The running system.
    pub fn live() -> Self {
        Self::under(Path::new("/"))
    }

    /// `root/sys`, `root/proc`, `root/dev`.
    pub fn under(root: &Path) -> Self {
        Self {
            sysfs: root.join("sys"),
            procfs: root.join("proc"),
            dev: root.join("dev"),
        }
    }
}

/// What to do about partitions already on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingPartitions {
    /// Refuse a disk that has partitions (the safe default).
    #[default]
    Refuse,
    /// The plan says the disk may be overwritten (recycling a machine). Partitions that are
    /// mounted, swap or held are still refused.
    Overwrite,
}

/// A block device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNum {
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// Parses a `MAJOR:MINOR` string (sysfs `dev`, mountinfo field 3).
pub fn parse_devnum(s: &str) -> Option<DevNum> {
    let (major, minor) = s.trim().split_once(':')?;
    Some(DevNum {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
    })
}

/// One line of `/proc/self/mountinfo`, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Field 3: the device number of the mounted filesystem.
    pub dev: DevNum,
    /// Field 5: where it is mounted (octal escapes decoded).
    pub mount_point: String,
    /// The source after the ` - fstype ` separator (octal escapes decoded).
    pub source: String,
}

/// Decodes the kernel's `\ooo` octal escapes (space, tab, newline, backslash) in
/// mountinfo and swaps fields; anything else is kept as is.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && oct.iter().all(|d| (b'0'..=b'7').contains(d))
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(oct).unwrap_or("x"), 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo`. Malformed lines are skipped (the kernel writes this file;
/// a line we cannot read cannot name our disk by number, and the `O_EXCL` open still guards).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut fields = left.split(' ');
            let dev = parse_devnum(fields.nth(2)?)?;
            let mount_point = unescape(fields.nth(1)?);
            let source = unescape(right.split(' ').nth(1)?);
            Some(MountEntry {
                dev,
                mount_point,
                source,
            })
        })
        .collect()
}

/// Parses `/proc/swaps`: the `Filename` column of every active swap area.
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next().map(unescape))
        .collect()
}

/// Serial number from a SCSI VPD page 0x80 (byte 1 = page code, bytes 2..4 = big-endian
/// length, then ASCII), trimmed of spaces and NULs.
pub fn parse_vpd80(raw: &[u8]) -> Option<String> {
    let (&[_, page, hi, lo], body) = raw.split_first_chunk::<4>()?;
    if page != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    clean(&String::from_utf8_lossy(body.get(..len).unwrap_or(body)))
}

fn clean(s: &str) -> Option<String> {
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!t.is_empty()).then(|| t.to_owned())
}

/// A disk that passed every check, opened read-write and exclusively. Only [`check`] makes
/// one; the writer takes it by value.
#[derive(Debug)]
pub struct CheckedTarget {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) size: u64,
    pub(crate) logical_block_size: u32,
    pub(crate) physical_block_size: u32,
}

impl CheckedTarget {
    /// Kernel name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The device node opened.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Size in bytes, from the device.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Logical block size, from the device.
    pub fn logical_block_size(&self) -> u32 {
        self.logical_block_size
    }
    /// Physical block size, from the device.
    pub fn physical_block_size(&self) -> u32 {
        self.physical_block_size
    }
}

/// Why a disk may not be written. [`PreflightError::code`] gives the stable reason code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreflightError {
    /// The target's name cannot be a kernel device name.
    #[error("disk name {name:?} is not a usable kernel device name")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// The disk is not in sysfs any more.
    #[error("disk {name} is not present ({})", path.display())]
    Missing {
        /// Kernel name.
        name: String,
        /// The sysfs path looked at.
        path: PathBuf,
    },
    /// The disk now answers to a different size, serial or WWN than the report said.
    #[error("disk {name}: {field} is now {found:?}, the report said {expected:?}")]
    IdentityChanged {
        /// Kernel name.
        name: String,
        /// `size`, `serial` or `wwn`.
        field: &'static str,
        /// From the report.
        expected: String,
        /// On the live system.
        found: String,
    },
    /// The disk is read-only.
    #[error("disk {name} is read-only")]
    ReadOnly {
        /// Kernel name.
        name: String,
    },
    /// The disk is removable.
    #[error("disk {name} is removable")]
    Removable {
        /// Kernel name.
        name: String,
    },
    /// The disk or one of its partitions is mounted.
    #[error("{device} is mounted on {mount_point}")]
    Mounted {
        /// Disk or partition name.
        device: String,
        /// Mount point.
        mount_point: String,
    },
    /// The disk or one of its partitions is active swap.
    #[error("{device} is in use as swap")]
    Swap {
        /// Disk or partition name.
        device: String,
    },
    /// The disk or one of its partitions is held by another block device (dm, md, bcache).
    #[error("{device} is held by {}", holders.join(", "))]
    Held {
        /// Disk or partition name.
        device: String,
        /// Holder names.
        holders: Vec<String>,
    },
    /// The disk has partitions and the caller did not allow overwriting them.
    #[error("disk {name} has partitions ({}) and overwriting was not allowed", partitions.join(", "))]
    HasPartitions {
        /// Kernel name.
        name: String,
        /// Partition names.
        partitions: Vec<String>,
    },
    /// The device node is not a block device.
    #[error("{} is not a block device", path.display())]
    NotBlockDevice {
        /// The node.
        path: PathBuf,
    },
    /// The device node's number differs from sysfs (a stale or forged node).
    #[error("{} is device {found}, sysfs says {expected}", path.display())]
    NodeMismatch {
        /// The node.
        path: PathBuf,
        /// From sysfs.
        expected: DevNum,
        /// From the node.
        found: DevNum,
    },
    /// Something else holds the device exclusively (EBUSY on the `O_EXCL` open).
    #[error("{} is busy (claimed by a mount, a holder or another program)", path.display())]
    Busy {
        /// The node.
        path: PathBuf,
    },
    /// The device is smaller than the image.
    #[error("disk {name} has {size} bytes, the image needs {image_size}")]
    TooSmall {
        /// Kernel name.
        name: String,
        /// Device size.
        size: u64,
        /// Image size.
        image_size: u64,
    },
    /// A read or a system call failed.
    #[error("{op} {} failed", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl PreflightError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "invalid_disk_name",
            Self::Missing { .. } => "disk_missing",
            Self::IdentityChanged { .. } => "identity_changed",
            Self::ReadOnly { .. } => "disk_read_only",
            Self::Removable { .. } => "disk_removable",
            Self::Mounted { .. } => "disk_mounted",
            Self::Swap { .. } => "disk_swap",
            Self::Held { .. } => "disk_held",
            Self::HasPartitions { .. } => "disk_has_partitions",
            Self::NotBlockDevice { .. } => "not_block_device",
            Self::NodeMismatch { .. } => "device_node_mismatch",
            Self::Busy { .. } => "disk_busy",
            Self::TooSmall { .. } => "device_too_small",
            Self::Io { .. } => "io_error",
        }
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PreflightError + use<> {
    let path = path.to_owned();
    move |source| PreflightError::Io { op, path, source }
}

/// Reads at most `cap` bytes; a missing file is `None`.
fn read_capped(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, PreflightError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let mut buf = Vec::new();
    file.take(cap)
        .read_to_end(&mut buf)
        .map_err(io_err("read", path))?;
    Ok(Some(buf))
}

fn read_attr(path: &Path) -> Result<Option<String>, PreflightError> {
    Ok(read_capped(path, ATTR_CAP)?.and_then(|b| clean(&String::from_utf8_lossy(&b))))
}

/// A sysfs flag (`0`/`1`); an unreadable or garbled flag is treated as set, because every
/// flag we read (`ro`, `removable`) is a reason to refuse.
fn read_flag(path: &Path) -> Result<bool, PreflightError> {
    Ok(read_attr(path)?.is_none_or(|v| v != "0"))
}

fn read_devnum(dir: &Path) -> Result<DevNum, PreflightError> {
    let path = dir.join("dev");
    read_attr(&path)?
        .as_deref()
        .and_then(parse_devnum)
        .ok_or_else(|| PreflightError::Io {
            op: "parse device number",
            path,
            source: io::ErrorKind::InvalidData.into(),
        })
}

fn list_holders(dir: &Path) -> Result<Vec<String>, PreflightError> {
    let path = dir.join("holders");
    let entries = match fs::read_dir(&path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", &path)(e)),
    };
    let mut holders = Vec::new();
    for entry in entries.take(MAX_PARTITIONS) {
        let entry = entry.map_err(io_err("list", &path))?;
        holders.push(entry.file_name().to_string_lossy().into_owned());
    }
    holders.sort();
    Ok(holders)
}

/// A whole disk or one of its partitions, as found in sysfs.
struct Part {
    name: String,
    dir: PathBuf,
    dev: DevNum,
}

fn list_partitions(disk_dir: &Path, disk: &str) -> Result<Vec<Part>, PreflightError> {
    let entries = fs::read_dir(disk_dir).map_err(io_err("list", disk_dir))?;
    let mut parts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", disk_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if !name.starts_with(disk) || !dir.join("partition").is_file() {
            continue;
        }
        if parts.len() >= MAX_PARTITIONS {
            break;
        }
        let dev = read_devnum(&dir)?;
        parts.push(Part { name, dir, dev });
    }
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(parts)
}

fn live_serial(disk_dir: &Path) -> Result<Option<String>, PreflightError> {
    if let Some(s) = read_attr(&disk_dir.join("serial"))? {
        return Ok(Some(s));
    }
    if let Some(s) = read_attr(&disk_dir.join("device/serial"))? {
        return Ok(Some(s));
    }
    Ok(read_capped(&disk_dir.join("device/vpd_pg80"), ATTR_CAP)?.and_then(|b| parse_vpd80(&b)))
}

fn live_wwn(disk_dir: &Path) -> Result<Option<String>, PreflightError> {
    if let Some(s) = read_attr(&disk_dir.join("wwid"))? {
        return Ok(Some(s));
    }
    read_attr(&disk_dir.join("device/wwid"))
}

fn same_identity(
    name: &str,
    field: &'static str,
    expected: Option<&str>,
    found: Option<&str>,
) -> Result<(), PreflightError> {
    let Some(expected) = expected.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    if found.map(str::trim) == Some(expected) {
        return Ok(());
    }
    Err(PreflightError::IdentityChanged {
        name: name.to_owned(),
        field,
        expected: expected.to_owned(),
        found: found.unwrap_or("(none)").to_owned(),
    })
}

/// Re-checks `target` on the live system (see the module docs) and opens it for writing an
/// image of `image_size` bytes.
pub fn check(
    target: &TargetDisk,
    paths: &SystemPaths,
    image_size: u64,
    existing: ExistingPartitions,
) -> Result<CheckedTarget, PreflightError> {
    let name = target.name.as_str();
    if !is_kernel_name(name) {
        return Err(PreflightError::InvalidName {
            name: name.to_owned(),
        });
    }
    let disk_dir = paths.sysfs.join("block").join(name);
    if !disk_dir.is_dir() {
        return Err(PreflightError::Missing {
            name: name.to_owned(),
            path: disk_dir,
        });
    }
    let disk_dev = read_devnum(&disk_dir)?;

    // 2. Identity.
    let size_path = disk_dir.join("size");
    let sectors = read_attr(&size_path)?
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| PreflightError::Io {
            op: "parse size",
            path: size_path,
            source: io::ErrorKind::InvalidData.into(),
        })?;
    // sysfs `size` counts 512-byte sectors whatever the logical block size.
    let live_size = sectors.saturating_mul(512);
    if live_size != target.size_bytes {
        return Err(PreflightError::IdentityChanged {
            name: name.to_owned(),
            field: "size",
            expected: target.size_bytes.to_string(),
            found: live_size.to_string(),
        });
    }
    same_identity(
        name,
        "serial",
        target.serial.as_deref(),
        live_serial(&disk_dir)?.as_deref(),
    )?;
    same_identity(
        name,
        "wwn",
        target.wwn.as_deref(),
        live_wwn(&disk_dir)?.as_deref(),
    )?;

    // 3. Flags.
    if read_flag(&disk_dir.join("ro"))? {
        return Err(PreflightError::ReadOnly {
            name: name.to_owned(),
        });
    }
    if read_flag(&disk_dir.join("removable"))? {
        return Err(PreflightError::Removable {
            name: name.to_owned(),
        });
    }

    // 4. In use: holders, mounts, swap, for the disk and every partition.
    let partitions = list_partitions(&disk_dir, name)?;
    let mut all = vec![Part {
        name: name.to_owned(),
        dir: disk_dir.clone(),
        dev: disk_dev,
    }];
    all.extend(partitions.iter().map(|p| Part {
        name: p.name.clone(),
        dir: p.dir.clone(),
        dev: p.dev,
    }));
    for part in &all {
        let holders = list_holders(&part.dir)?;
        if !holders.is_empty() {
            return Err(PreflightError::Held {
                device: part.name.clone(),
                holders,
            });
        }
    }
    let mountinfo_path = paths.procfs.join("self/mountinfo");
    let mountinfo = read_capped(&mountinfo_path, TABLE_CAP)?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    for mount in parse_mountinfo(&mountinfo) {
        let by_source = mount.source.strip_prefix("/dev/");
        if let Some(part) = all
            .iter()
            .find(|p| p.dev == mount.dev || by_source == Some(p.name.as_str()))
        {
            return Err(PreflightError::Mounted {
                device: part.name.clone(),
                mount_point: mount.mount_point,
            });
        }
    }
    let swaps_path = paths.procfs.join("swaps");
    let swaps = read_capped(&swaps_path, TABLE_CAP)?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    for swap in parse_swaps(&swaps) {
        let by_name = swap.strip_prefix("/dev/");
        if let Some(part) = all.iter().find(|p| by_name == Some(p.name.as_str())) {
            return Err(PreflightError::Swap {
                device: part.name.clone(),
            });
        }
    }

    // 5. Existing partitions.
    if !partitions.is_empty() && existing == ExistingPartitions::Refuse {
        return Err(PreflightError::HasPartitions {
            name: name.to_owned(),
            partitions: partitions.into_iter().map(|p| p.name).collect(),
        });
    }
    if live_size < image_size {
        return Err(PreflightError::TooSmall {
            name: name.to_owned(),
            size: live_size,
            image_size,
        });
    }

    // 6. The node.
    let path = paths.dev.join(name);
    let meta = fs::metadata(&path).map_err(io_err("stat", &path))?;
    if !meta.file_type().is_block_device() {
        return Err(PreflightError::NotBlockDevice { path });
    }
    let found = DevNum {
        major: nix::sys::stat::major(meta.rdev()),
        minor: nix::sys::stat::minor(meta.rdev()),
    };
    if found != disk_dev {
        return Err(PreflightError::NodeMismatch {
            path,
            expected: disk_dev,
            found,
        });
    }

    // 7. Open exclusively.
    let file = open_exclusive(&path)?;

    // 8. Ask the device.
    let size = sys::device_size(&file).map_err(io_err("BLKGETSIZE64", &path))?;
    let logical_block_size = sys::logical_block_size(&file).map_err(io_err("BLKSSZGET", &path))?;
    let physical_block_size =
        sys::physical_block_size(&file).map_err(io_err("BLKPBSZGET", &path))?;
    if sys::read_only(&file).map_err(io_err("BLKROGET", &path))? {
        return Err(PreflightError::ReadOnly {
            name: name.to_owned(),
        });
    }
    if size != live_size {
        return Err(PreflightError::IdentityChanged {
            name: name.to_owned(),
            field: "size",
            expected: live_size.to_string(),
            found: size.to_string(),
        });
    }
    Ok(CheckedTarget {
        name: name.to_owned(),
        path,
        file,
        size,
        logical_block_size,
        physical_block_size,
    })
}

/// Opens `O_RDWR | O_EXCL | O_CLOEXEC`, with `O_DIRECT` unless the device refuses it.
fn open_exclusive(path: &Path) -> Result<File, PreflightError> {
    let open = |direct: bool| {
        let mut flags = nix::libc::O_EXCL;
        if direct {
            flags |= sys::O_DIRECT;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(path)
    };
    let result = match open(true) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => open(false),
        other => other,
    };
    result.map_err(|e| {
        if e.raw_os_error() == Some(nix::libc::EBUSY) {
            PreflightError::Busy {
                path: path.to_owned(),
            }
        } else {
            io_err("open", path)(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
23 22 0:21 / /proc rw shared:2 - proc proc rw
24 22 259:1 / /mnt/my\\040disk rw - xfs /dev/nvme0n1p1 rw
garbage line
25 22 x:y / /bad rw - ext4 /dev/sdb rw
26 22 0:45 / /data rw shared:9 master:3 - btrfs /dev/sdc1 rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].dev, DevNum { major: 8, minor: 2 });
        assert_eq!(m[0].mount_point, "/");
        assert_eq!(m[0].source, "/dev/sda2");
        assert_eq!(m[2].mount_point, "/mnt/my disk");
        assert_eq!(m[2].source, "/dev/nvme0n1p1");
        // Optional fields (shared:, master:) do not shift the source.
        assert_eq!(m[3].source, "/dev/sdc1");
        assert_eq!(
            m[3].dev,
            DevNum {
                major: 0,
                minor: 45
            }
        );
    }

    #[test]
    fn swaps_lines() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/sda3                               partition\t8388604\t\t0\t\t-2\n\
                    /swap\\040file                          file\t\t1048572\t\t0\t\t-3\n";
        assert_eq!(parse_swaps(text), vec!["/dev/sda3", "/swap file"]);
        assert!(parse_swaps("Filename Type Size Used Priority\n").is_empty());
        assert!(parse_swaps("").is_empty());
    }

    #[test]
    fn devnums_and_vpd() {
        assert_eq!(
            parse_devnum("259:0\n"),
            Some(DevNum {
                major: 259,
                minor: 0
            })
        );
        for bad in ["", "8", "8:", ":1", "a:b", "8:1:2"] {
            assert_eq!(parse_devnum(bad), None, "{bad:?}");
        }
        let mut raw = vec![0, 0x80, 0, 8];
        raw.extend_from_slice(b"QM00001 ");
        assert_eq!(parse_vpd80(&raw).as_deref(), Some("QM00001"));
        assert_eq!(parse_vpd80(&[0, 0x80, 0, 200, b'A']).as_deref(), Some("A"));
        assert_eq!(parse_vpd80(&[0, 0x83, 0, 1, b'A']), None);
        assert_eq!(parse_vpd80(&[0, 0x80]), None);
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\999"), "\\999");
    }
}
