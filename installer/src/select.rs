//! Choosing the disk to install to, from a [`HardwareReport`] and a [`DiskRule`]. PURE: no
//! files, no clock; the live re-check happens later in [`crate::preflight`].
//!
//! # Rules
//!
//! | rule text           | meaning                                                          |
//! |---------------------|------------------------------------------------------------------|
//! | `smallest` (default)| the smallest eligible disk that fits the image                   |
//! | `serial=S`          | the one disk whose serial is exactly `S`                         |
//! | `wwn=W`             | the one disk whose WWN is `W` (`0x5000…`, `naa.5000…`, any case) |
//! | `size=LO-HI`        | the one disk whose size is in `[LO, HI]`; either end may be empty |
//! | `name=nvme0n1`      | the one disk with that kernel name (unstable across boots)       |
//! | `path=/dev/nvme0n1` | the same, written as a device path                               |
//!
//! Sizes take `K M G T` / `KiB MiB GiB TiB` (powers of 1024), `KB MB GB TB` (powers of 1000)
//! or no suffix (bytes).
//!
//! *Eligible* means: not removable, not read-only, not attached over USB, a usable kernel
//! name, and at least as large as the image. The default rule never guesses: if two eligible
//! disks tie for smallest, selection fails as `ambiguous` (device names are not stable across
//! boots, so "the first one" could be a different disk next time; reliability R5). A pin that
//! matches several disks is `ambiguous` too, even if only one of them is eligible. A pinned
//! disk that is unusable is refused with the reason, never replaced by another disk, and a
//! rule that does not parse is an error, never "any disk".

use std::fmt;
use std::str::FromStr;

use pxe_api::HardwareReport;
use pxe_api::hardware::Disk;

/// Longest rule value accepted (a serial or a WWN is far shorter).
const MAX_RULE_LEN: usize = 256;

/// How to pick the install disk. Parse it with [`str::parse`] or serde (the same text form).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DiskRule {
    /// The smallest eligible disk that fits the image; a tie is refused.
    #[default]
    Smallest,
    /// The disk with exactly this serial number.
    Serial(String),
    /// The disk with this world-wide name (stored normalised: lower case, no `0x`/`naa.`).
    Wwn(String),
    /// The disk whose size lies in this range.
    Size(SizeRange),
    /// The disk with this kernel name (`sda`, `nvme0n1`). Names can change between boots.
    Name(String),
}

/// An inclusive byte range; `min <= max` is guaranteed by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    min: u64,
    max: u64,
}

impl SizeRange {
    /// `[min, max]`; `None` if `min > max`.
    pub fn new(min: u64, max: u64) -> Option<Self> {
        (min <= max).then_some(Self { min, max })
    }

    /// Lower bound, inclusive.
    pub fn min(&self) -> u64 {
        self.min
    }

    /// Upper bound, inclusive.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Whether `size` lies in the range.
    pub fn contains(&self, size: u64) -> bool {
        (self.min..=self.max).contains(&size)
    }
}

/// The rule text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid disk rule {rule:?}: {what}")]
pub struct RuleError {
    /// The text given (truncated to a sane length).
    pub rule: String,
    /// What is wrong.
    pub what: &'static str,
}

impl RuleError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        "invalid_rule"
    }
}

impl FromStr for DiskRule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |what| RuleError {
            rule: text.chars().take(MAX_RULE_LEN).collect(),
            what,
        };
        if text.len() > MAX_RULE_LEN {
            return Err(bad("longer than 256 bytes"));
        }
        let text = text.trim();
        if text == "smallest" {
            return Ok(Self::Smallest);
        }
        let Some((key, value)) = text.split_once('=') else {
            return Err(bad(
                "expected `smallest` or one of serial=, wwn=, size=, name=, path=",
            ));
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(bad("empty value"));
        }
        if value.chars().any(char::is_control) {
            return Err(bad("control characters in value"));
        }
        match key.trim() {
            "serial" => Ok(Self::Serial(value.to_owned())),
            "wwn" => {
                let wwn = normalize_wwn(value);
                if wwn.is_empty() || wwn.chars().any(char::is_whitespace) {
                    return Err(bad("WWN must be a single non-empty word"));
                }
                Ok(Self::Wwn(wwn))
            }
            "size" => parse_range(value).map(Self::Size).map_err(bad),
            "name" => {
                if !is_kernel_name(value) {
                    return Err(bad("not a kernel block device name"));
                }
                Ok(Self::Name(value.to_owned()))
            }
            "path" => match value.strip_prefix("/dev/") {
                Some(name) if is_kernel_name(name) => Ok(Self::Name(name.to_owned())),
                _ => Err(bad(
                    "path must be /dev/NAME (no udev symlinks in the agent)",
                )),
            },
            _ => Err(bad("unknown key (serial, wwn, size, name, path)")),
        }
    }
}

impl fmt::Display for DiskRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Smallest => f.write_str("smallest"),
            Self::Serial(s) => write!(f, "serial={s}"),
            Self::Wwn(w) => write!(f, "wwn={w}"),
            Self::Size(r) => {
                write!(f, "size={}-", r.min)?;
                if r.max < u64::MAX {
                    write!(f, "{}", r.max)?;
                }
                Ok(())
            }
            Self::Name(n) => write!(f, "name={n}"),
        }
    }
}

impl TryFrom<String> for DiskRule {
    type Error = RuleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DiskRule> for String {
    fn from(rule: DiskRule) -> Self {
        rule.to_string()
    }
}

/// True for a plausible kernel block device name: one path component of `[A-Za-z0-9_.:-]`,
/// not `.`/`..`. Anything else could not be joined safely onto `/sys/block` or `/dev`.
pub fn is_kernel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Lower case, without a `0x`, `naa.` or `eui.` prefix, so `0x5000C500…` and the kernel's
/// `naa.5000c500…` compare equal. Other designators (`t10.`, `nvme.`) are kept whole.
fn normalize_wwn(w: &str) -> String {
    let w = w.trim().to_ascii_lowercase();
    for prefix in ["0x", "naa.", "eui."] {
        if let Some(rest) = w.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    w
}

fn parse_range(value: &str) -> Result<SizeRange, &'static str> {
    let (lo, hi) = value
        .split_once('-')
        .ok_or("size must be LO-HI (either end may be empty)")?;
    let lo = lo.trim();
    let hi = hi.trim();
    if lo.is_empty() && hi.is_empty() {
        return Err("size range has no bound");
    }
    let min = if lo.is_empty() { 0 } else { parse_size(lo)? };
    let max = if hi.is_empty() {
        u64::MAX
    } else {
        parse_size(hi)?
    };
    SizeRange::new(min, max).ok_or("size range is empty (LO > HI)")
}

/// `123`, `100G`, `1.5T`? No: integers only, so a rule means exactly one byte count.
fn parse_size(s: &str) -> Result<u64, &'static str> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err("size must start with a whole number");
    }
    let n: u64 = digits.parse().map_err(|_| "size number too large")?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err("unknown size unit (K M G T, KiB.., KB..)"),
    };
    n.checked_mul(mult).ok_or("size too large")
}

/// The chosen disk, as the report described it. [`crate::preflight`] re-resolves it on the
/// live system (size, serial and WWN must still match) before anything is opened for writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDisk {
    /// Kernel name (validated by [`is_kernel_name`]).
    pub name: String,
    /// Capacity in bytes, as reported.
    pub size_bytes: u64,
    /// Logical block size, as reported.
    pub logical_block_size: Option<u32>,
    /// Serial, as reported.
    pub serial: Option<String>,
    /// WWN, as reported.
    pub wwn: Option<String>,
    /// Model, as reported (for humans).
    pub model: Option<String>,
    /// The rule that chose it.
    pub rule: DiskRule,
}

/// Why a disk was not eligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// Removable medium.
    Removable,
    /// Attached over USB (a boot stick or an external disk).
    Usb,
    /// Read-only.
    ReadOnly,
    /// Smaller than the image.
    TooSmall,
    /// The report's name is not a safe kernel name.
    BadName,
}

impl Ineligible {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Removable => "disk_removable",
            Self::Usb => "disk_usb",
            Self::ReadOnly => "disk_read_only",
            Self::TooSmall => "disk_too_small",
            Self::BadName => "invalid_disk_name",
        }
    }
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why no disk was selected. [`SelectError::code`] gives the stable reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// The rule does not parse.
    #[error(transparent)]
    InvalidRule(#[from] RuleError),
    /// No eligible disk is large enough (each disk's reason is listed).
    #[error("no eligible disk fits an image of {image_size} bytes (rejected: {})", list_rejected(.rejected))]
    NoDiskFits {
        /// Image size.
        image_size: u64,
        /// Every disk with why it was rejected.
        rejected: Vec<(String, Ineligible)>,
    },
    /// Several disks match and nothing says which one is meant.
    #[error("rule {rule} matches several disks: {}", .candidates.join(", "))]
    Ambiguous {
        /// The rule.
        rule: DiskRule,
        /// Names of the matching disks.
        candidates: Vec<String>,
    },
    /// The pinned disk is not in the report.
    #[error("no disk matches rule {rule}")]
    PinnedDiskMissing {
        /// The rule.
        rule: DiskRule,
    },
    /// The pinned disk is read-only.
    #[error("disk {name} is read-only")]
    DiskReadOnly {
        /// Kernel name.
        name: String,
    },
    /// The pinned disk is removable or on USB.
    #[error("disk {name} is removable or attached over USB")]
    DiskRemovable {
        /// Kernel name.
        name: String,
    },
    /// The pinned disk is smaller than the image.
    #[error("disk {name} has {size} bytes, the image needs {image_size}")]
    DiskTooSmall {
        /// Kernel name.
        name: String,
        /// Disk size.
        size: u64,
        /// Image size.
        image_size: u64,
    },
    /// The pinned disk's name in the report is not a usable kernel name.
    #[error("disk name {name:?} is not a usable kernel device name")]
    InvalidDiskName {
        /// The name as reported.
        name: String,
    },
}

fn list_rejected(rejected: &[(String, Ineligible)]) -> String {
    if rejected.is_empty() {
        return "no disks at all".to_owned();
    }
    rejected
        .iter()
        .map(|(n, why)| format!("{n}: {why}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SelectError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRule(e) => e.code(),
            Self::NoDiskFits { .. } => "no_disk_fits",
            Self::Ambiguous { .. } => "ambiguous",
            Self::PinnedDiskMissing { .. } => "pinned_disk_missing",
            Self::DiskReadOnly { .. } => "disk_read_only",
            Self::DiskRemovable { .. } => "disk_removable",
            Self::DiskTooSmall { .. } => "disk_too_small",
            Self::InvalidDiskName { .. } => "invalid_disk_name",
        }
    }
}

/// Why `disk` cannot hold an image of `image_size` bytes, if it cannot. Unknown flags count
/// as "no" (recon reports what sysfs says; preflight re-reads the live values).
fn ineligible(disk: &Disk, image_size: u64) -> Option<Ineligible> {
    if !is_kernel_name(&disk.name) {
        Some(Ineligible::BadName)
    } else if disk.removable == Some(true) {
        Some(Ineligible::Removable)
    } else if disk.transport.as_deref() == Some("usb") {
        Some(Ineligible::Usb)
    } else if disk.read_only == Some(true) {
        Some(Ineligible::ReadOnly)
    } else if disk.size_bytes < image_size || disk.size_bytes == 0 {
        Some(Ineligible::TooSmall)
    } else {
        None
    }
}

fn matches(rule: &DiskRule, disk: &Disk) -> bool {
    match rule {
        DiskRule::Smallest => true,
        DiskRule::Serial(s) => disk.serial.as_deref().map(str::trim) == Some(s.as_str()),
        DiskRule::Wwn(w) => disk.wwn.as_deref().map(normalize_wwn).as_deref() == Some(w.as_str()),
        DiskRule::Size(r) => r.contains(disk.size_bytes),
        DiskRule::Name(n) => disk.name == *n,
    }
}

fn target(disk: &Disk, rule: &DiskRule) -> TargetDisk {
    TargetDisk {
        name: disk.name.clone(),
        size_bytes: disk.size_bytes,
        logical_block_size: disk.logical_block_size,
        serial: disk.serial.clone(),
        wwn: disk.wwn.clone(),
        model: disk.model.clone(),
        rule: rule.clone(),
    }
}

/// Picks the disk for an image of `image_size` bytes. See the module docs for the rules.
pub fn select(
    report: &HardwareReport,
    rule: &DiskRule,
    image_size: u64,
) -> Result<TargetDisk, SelectError> {
    if *rule == DiskRule::Smallest {
        return select_smallest(report, image_size);
    }
    let found: Vec<&Disk> = report.disks.iter().filter(|d| matches(rule, d)).collect();
    let disk = match found.as_slice() {
        [] => {
            return Err(SelectError::PinnedDiskMissing { rule: rule.clone() });
        }
        [one] => *one,
        many => {
            return Err(SelectError::Ambiguous {
                rule: rule.clone(),
                candidates: many.iter().map(|d| d.name.clone()).collect(),
            });
        }
    };
    match ineligible(disk, image_size) {
        None => Ok(target(disk, rule)),
        Some(Ineligible::BadName) => Err(SelectError::InvalidDiskName {
            name: disk.name.clone(),
        }),
        Some(Ineligible::Removable | Ineligible::Usb) => Err(SelectError::DiskRemovable {
            name: disk.name.clone(),
        }),
        Some(Ineligible::ReadOnly) => Err(SelectError::DiskReadOnly {
            name: disk.name.clone(),
        }),
        Some(Ineligible::TooSmall) => Err(SelectError::DiskTooSmall {
            name: disk.name.clone(),
            size: disk.size_bytes,
            image_size,
        }),
    }
}

fn select_smallest(report: &HardwareReport, image_size: u64) -> Result<TargetDisk, SelectError> {
    let mut rejected = Vec::new();
    let mut eligible: Vec<&Disk> = Vec::new();
    for disk in &report.disks {
        match ineligible(disk, image_size) {
            Some(why) => rejected.push((disk.name.clone(), why)),
            None => eligible.push(disk),
        }
    }
    let Some(smallest) = eligible.iter().map(|d| d.size_bytes).min() else {
        return Err(SelectError::NoDiskFits {
            image_size,
            rejected,
        });
    };
    let tied: Vec<&Disk> = eligible
        .into_iter()
        .filter(|d| d.size_bytes == smallest)
        .collect();
    match tied.as_slice() {
        [one] => Ok(target(one, &DiskRule::Smallest)),
        many => Err(SelectError::Ambiguous {
            rule: DiskRule::Smallest,
            candidates: many.iter().map(|d| d.name.clone()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    fn disk(name: &str, size: u64) -> Disk {
        Disk {
            name: name.to_owned(),
            size_bytes: size,
            logical_block_size: Some(512),
            physical_block_size: Some(512),
            rotational: Some(false),
            removable: Some(false),
            read_only: Some(false),
            model: Some("Model X".to_owned()),
            serial: Some(format!("SER-{name}")),
            wwn: None,
            transport: Some("sata".to_owned()),
            discard: None,
        }
    }

    fn report(disks: Vec<Disk>) -> HardwareReport {
        HardwareReport {
            disks,
            ..HardwareReport::default()
        }
    }

    fn rule(s: &str) -> DiskRule {
        s.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_print() {
        let table: &[(&str, DiskRule, &str)] = &[
            ("smallest", DiskRule::Smallest, "smallest"),
            (" smallest ", DiskRule::Smallest, "smallest"),
            (
                "serial=ABC 1",
                DiskRule::Serial("ABC 1".into()),
                "serial=ABC 1",
            ),
            (
                "wwn=0x5000C50015EA71AD",
                DiskRule::Wwn("5000c50015ea71ad".into()),
                "wwn=5000c50015ea71ad",
            ),
            (
                "wwn=naa.5000c50015ea71ad",
                DiskRule::Wwn("5000c50015ea71ad".into()),
                "wwn=5000c50015ea71ad",
            ),
            (
                "size=100G-200G",
                DiskRule::Size(SizeRange::new(100 * G, 200 * G).unwrap()),
                "size=107374182400-214748364800",
            ),
            (
                "size=1TB-",
                DiskRule::Size(SizeRange::new(1_000_000_000_000, u64::MAX).unwrap()),
                "size=1000000000000-",
            ),
            (
                "size=-512MiB",
                DiskRule::Size(SizeRange::new(0, 512 << 20).unwrap()),
                "size=0-536870912",
            ),
            (
                "name=nvme0n1",
                DiskRule::Name("nvme0n1".into()),
                "name=nvme0n1",
            ),
            ("path=/dev/sda", DiskRule::Name("sda".into()), "name=sda"),
        ];
        for (text, want, shown) in table {
            let got: DiskRule = text.parse().unwrap();
            assert_eq!(&got, want, "{text}");
            assert_eq!(got.to_string(), *shown, "{text}");
            // Display output parses back to the same rule.
            assert_eq!(&shown.parse::<DiskRule>().unwrap(), want, "{shown}");
        }
    }

    #[test]
    fn bad_rules_are_invalid_rule() {
        let long = format!("serial={}", "x".repeat(300));
        for text in [
            "",
            "any",
            "largest",
            "serial=",
            "serial",
            "colour=red",
            "size=",
            "size=-",
            "size=200G-100G",
            "size=100Q-",
            "size=G-",
            "size=99999999999999999999-",
            "size=20000000T-",
            "size=1.5T-",
            "name=../sda",
            "name=a/b",
            "path=sda",
            "path=/dev/disk/by-id/x",
            "serial=a\nb",
            "wwn=0x",
            long.as_str(),
        ] {
            let err = text.parse::<DiskRule>().unwrap_err();
            assert_eq!(err.code(), "invalid_rule", "{text:?}");
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let r: DiskRule = serde_json::from_str("\"serial=XYZ\"").unwrap();
        assert_eq!(r, DiskRule::Serial("XYZ".into()));
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"serial=XYZ\"");
        assert!(serde_json::from_str::<DiskRule>("\"anything\"").is_err());
    }

    fn code(r: Result<TargetDisk, SelectError>) -> String {
        match r {
            Ok(t) => format!("ok:{}", t.name),
            Err(e) => e.code().to_owned(),
        }
    }

    #[test]
    fn selection_table() {
        let usb_stick = Disk {
            removable: Some(true),
            transport: Some("usb".into()),
            ..disk("sdz", 16 * G)
        };
        let usb_hdd = Disk {
            removable: Some(false),
            transport: Some("usb".into()),
            ..disk("sdy", 20 * G)
        };
        let ro = Disk {
            read_only: Some(true),
            ..disk("sdr", 30 * G)
        };
        let nvme = Disk {
            transport: Some("nvme".into()),
            serial: Some("SAME-MODEL-1".into()),
            wwn: Some("eui.0025385b71b0a1c2".into()),
            ..disk("nvme0n1", 512 * G)
        };
        let sata = Disk {
            serial: Some("SAME-MODEL-2".into()),
            wwn: Some("naa.5000c50015ea71ad".into()),
            ..disk("sda", 512 * G)
        };
        let twin_a = disk("sdb", 100 * G);
        let twin_b = disk("sdc", 100 * G);
        let dup_serial = Disk {
            serial: Some("SER-sdb".into()),
            ..disk("sdd", 200 * G)
        };
        let weird = disk("../etc", 8 * G);

        let cases: Vec<(&str, Vec<Disk>, &str, u64, &str)> = vec![
            (
                "one disk",
                vec![disk("vda", 64 * G)],
                "smallest",
                G,
                "ok:vda",
            ),
            (
                "smallest of several sizes",
                vec![
                    disk("sda", 200 * G),
                    disk("sdb", 100 * G),
                    disk("sdc", 300 * G),
                ],
                "smallest",
                G,
                "ok:sdb",
            ),
            (
                "smallest that fits, not smallest overall",
                vec![disk("sda", 200 * G), disk("sdb", 10 * G)],
                "smallest",
                50 * G,
                "ok:sda",
            ),
            (
                "several equal disks: refuse to guess",
                vec![twin_a.clone(), twin_b.clone(), disk("sde", 900 * G)],
                "smallest",
                G,
                "ambiguous",
            ),
            (
                "several equal disks: serial pin picks one",
                vec![twin_a.clone(), twin_b.clone()],
                "serial=SER-sdc",
                G,
                "ok:sdc",
            ),
            (
                "USB stick present is never the default",
                vec![usb_stick.clone(), disk("sda", 100 * G)],
                "smallest",
                G,
                "ok:sda",
            ),
            (
                "USB disk present is never the default",
                vec![usb_hdd.clone(), disk("sda", 100 * G)],
                "smallest",
                G,
                "ok:sda",
            ),
            (
                "only a USB stick",
                vec![usb_stick.clone()],
                "smallest",
                G,
                "no_disk_fits",
            ),
            (
                "pinning the USB stick is refused",
                vec![usb_stick.clone(), disk("sda", 100 * G)],
                "name=sdz",
                G,
                "disk_removable",
            ),
            (
                "NVMe + SATA same model, same size: default refuses",
                vec![nvme.clone(), sata.clone()],
                "smallest",
                G,
                "ambiguous",
            ),
            (
                "NVMe + SATA same model: pin by serial",
                vec![nvme.clone(), sata.clone()],
                "serial=SAME-MODEL-2",
                G,
                "ok:sda",
            ),
            (
                "NVMe + SATA same model: pin by WWN (0x form)",
                vec![nvme.clone(), sata.clone()],
                "wwn=0x5000C50015EA71AD",
                G,
                "ok:sda",
            ),
            (
                "NVMe + SATA same model: pin by EUI",
                vec![nvme.clone(), sata.clone()],
                "wwn=eui.0025385B71B0A1C2",
                G,
                "ok:nvme0n1",
            ),
            (
                "pinned serial absent",
                vec![twin_a.clone(), twin_b.clone()],
                "serial=NOPE",
                G,
                "pinned_disk_missing",
            ),
            (
                "pinned WWN absent (disk has none)",
                vec![twin_a.clone()],
                "wwn=0x5000",
                G,
                "pinned_disk_missing",
            ),
            (
                "two disks claim one serial",
                vec![twin_a.clone(), dup_serial.clone()],
                "serial=SER-sdb",
                G,
                "ambiguous",
            ),
            (
                "disk too small (default)",
                vec![disk("sda", G)],
                "smallest",
                2 * G,
                "no_disk_fits",
            ),
            (
                "disk too small (pinned)",
                vec![disk("sda", G)],
                "name=sda",
                2 * G,
                "disk_too_small",
            ),
            (
                "image exactly the disk size fits",
                vec![disk("sda", G)],
                "smallest",
                G,
                "ok:sda",
            ),
            (
                "read-only disk skipped by default",
                vec![ro.clone(), disk("sdb", 100 * G)],
                "smallest",
                G,
                "ok:sdb",
            ),
            (
                "read-only disk pinned",
                vec![ro.clone(), disk("sdb", 100 * G)],
                "serial=SER-sdr",
                G,
                "disk_read_only",
            ),
            (
                "only a read-only disk",
                vec![ro.clone()],
                "smallest",
                G,
                "no_disk_fits",
            ),
            ("no disks", vec![], "smallest", G, "no_disk_fits"),
            (
                "size range picks one",
                vec![
                    disk("sda", 50 * G),
                    disk("sdb", 150 * G),
                    disk("sdc", 250 * G),
                ],
                "size=100G-200G",
                G,
                "ok:sdb",
            ),
            (
                "size range matches two",
                vec![disk("sda", 150 * G), disk("sdb", 160 * G)],
                "size=100G-200G",
                G,
                "ambiguous",
            ),
            (
                "size range matches none",
                vec![disk("sda", 50 * G)],
                "size=100G-200G",
                G,
                "pinned_disk_missing",
            ),
            (
                "size range matching an eligible and a read-only disk is still ambiguous",
                vec![ro.clone(), disk("sdb", 31 * G)],
                "size=29G-32G",
                G,
                "ambiguous",
            ),
            (
                "hostile name in report is never chosen",
                vec![weird.clone()],
                "smallest",
                G,
                "no_disk_fits",
            ),
            (
                "hostile name pinned by serial",
                vec![weird.clone()],
                "serial=SER-../etc",
                G,
                "invalid_disk_name",
            ),
            (
                "zero-size disk never fits",
                vec![disk("sda", 0)],
                "smallest",
                0,
                "no_disk_fits",
            ),
        ];
        for (what, disks, r, image, want) in cases {
            let got = code(select(&report(disks), &rule(r), image));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn errors_carry_the_details() {
        let err = select(
            &report(vec![disk("sdb", 100 * G), disk("sdc", 100 * G)]),
            &DiskRule::Smallest,
            G,
        )
        .unwrap_err();
        assert_eq!(
            err,
            SelectError::Ambiguous {
                rule: DiskRule::Smallest,
                candidates: vec!["sdb".into(), "sdc".into()],
            }
        );
        let err = select(&report(vec![disk("sda", G)]), &DiskRule::Smallest, 2 * G).unwrap_err();
        assert_eq!(
            err,
            SelectError::NoDiskFits {
                image_size: 2 * G,
                rejected: vec![("sda".into(), Ineligible::TooSmall)],
            }
        );
        assert!(err.to_string().contains("sda: disk_too_small"), "{err}");
    }

    #[test]
    fn the_target_records_identity() {
        let d = Disk {
            wwn: Some("naa.5000c50015ea71ad".into()),
            ..disk("sda", 100 * G)
        };
        let t = select(&report(vec![d]), &rule("wwn=0x5000c50015ea71ad"), G).unwrap();
        assert_eq!(t.name, "sda");
        assert_eq!(t.size_bytes, 100 * G);
        assert_eq!(t.serial.as_deref(), Some("SER-sda"));
        assert_eq!(t.wwn.as_deref(), Some("naa.5000c50015ea71ad"));
        assert_eq!(t.rule, DiskRule::Wwn("5000c50015ea71ad".into()));
    }
}
