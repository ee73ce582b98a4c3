//! Memory: `MemTotal` from `/proc/meminfo`, and memory devices (DIMMs) from SMBIOS type 17
//! structures in the raw table `/sys/firmware/dmi/tables/DMI`.

use std::path::Path;

use pxe_api::hardware::{Dimm, Memory};

use crate::layout::SMBIOS_TABLE;
use crate::sources::{ATTR_CAP, SMBIOS_CAP, clean_bytes, read_bounded};

/// Parses `MemTotal` (in kB) from `/proc/meminfo` and returns bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut words = line.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    let factor = match words.next() {
        Some("kB") | None => 1024,
        Some(_) => return None,
    };
    value.checked_mul(factor)
}

/// Why the SMBIOS table could not be walked to its end. DIMMs found before the problem are
/// still returned (see [`SmbiosScan`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmbiosError {
    /// Fewer than 4 bytes left where a structure header should start.
    #[error("SMBIOS structure header truncated at offset {offset}")]
    TruncatedHeader {
        /// Byte offset of the structure in the table.
        offset: usize,
    },
    /// A structure declares a formatted length shorter than its own header.
    #[error("SMBIOS structure at offset {offset} declares length {length} (< 4)")]
    BadLength {
        /// Byte offset of the structure in the table.
        offset: usize,
        /// The declared formatted-area length.
        length: u8,
    },
    /// A structure's formatted area runs past the end of the table.
    #[error("SMBIOS structure at offset {offset} runs past the end of the table")]
    TruncatedStructure {
        /// Byte offset of the structure in the table.
        offset: usize,
    },
    /// A structure's string set has no double-NUL terminator before the end of the table.
    #[error("SMBIOS string set of the structure at offset {offset} is not terminated")]
    UnterminatedStrings {
        /// Byte offset of the structure in the table.
        offset: usize,
    },
    /// More structures than any real table has: the walk stops.
    #[error("SMBIOS table holds more than {limit} structures")]
    TooManyStructures {
        /// The structure limit.
        limit: usize,
    },
}

impl SmbiosError {
    /// Stable, machine-readable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            SmbiosError::TruncatedHeader { .. } => "smbios_truncated_header",
            SmbiosError::BadLength { .. } => "smbios_bad_length",
            SmbiosError::TruncatedStructure { .. } => "smbios_truncated_structure",
            SmbiosError::UnterminatedStrings { .. } => "smbios_unterminated_strings",
            SmbiosError::TooManyStructures { .. } => "smbios_too_many_structures",
        }
    }
}

/// The result of walking an SMBIOS table: the populated memory devices found, and the error
/// that stopped the walk early, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmbiosScan {
    /// Installed memory devices (type 17 with a non-zero size), in table order.
    pub dimms: Vec<Dimm>,
    /// Why the walk stopped before the end-of-table structure, if it did.
    pub error: Option<SmbiosError>,
}

/// Upper bound on structures walked (real tables have a few hundred).
const MAX_STRUCTURES: usize = 16 * 1024;

/// SMBIOS structure type of a memory device.
const TYPE_MEMORY_DEVICE: u8 = 17;
/// SMBIOS end-of-table structure type.
const TYPE_END_OF_TABLE: u8 = 127;

/// Walks a raw SMBIOS structure table (the contents of `/sys/firmware/dmi/tables/DMI`) and
/// returns its populated memory devices. Every access is bounds-checked; a malformed table
/// stops the walk and is reported in [`SmbiosScan::error`].
pub fn parse_smbios_memory_devices(table: &[u8]) -> SmbiosScan {
    let mut scan = SmbiosScan::default();
    let mut offset = 0usize;
    let mut count = 0usize;
    while offset < table.len() {
        if count >= MAX_STRUCTURES {
            scan.error = Some(SmbiosError::TooManyStructures {
                limit: MAX_STRUCTURES,
            });
            break;
        }
        count += 1;
        let Some(&[kind, length, ..]) = table.get(offset..offset.saturating_add(4)) else {
            scan.error = Some(SmbiosError::TruncatedHeader { offset });
            break;
        };
        if length < 4 {
            scan.error = Some(SmbiosError::BadLength { offset, length });
            break;
        }
        let strings_at = offset.saturating_add(usize::from(length));
        let Some(formatted) = table.get(offset..strings_at) else {
            scan.error = Some(SmbiosError::TruncatedStructure { offset });
            break;
        };
        let rest = table.get(strings_at..).unwrap_or_default();
        let Some(end) = rest.windows(2).position(|w| w == [0, 0]) else {
            scan.error = Some(SmbiosError::UnterminatedStrings { offset });
            break;
        };
        let string_area = rest.get(..end).unwrap_or_default();
        if kind == TYPE_END_OF_TABLE {
            break;
        }
        if kind == TYPE_MEMORY_DEVICE {
            let strings: Vec<&[u8]> = if string_area.is_empty() {
                Vec::new()
            } else {
                string_area.split(|&b| b == 0).collect()
            };
            if let Some(dimm) = parse_memory_device(formatted, &strings) {
                scan.dimms.push(dimm);
            }
        }
        offset = strings_at.saturating_add(end).saturating_add(2);
    }
    scan
}

fn byte_at(f: &[u8], at: usize) -> Option<u8> {
    f.get(at).copied()
}

fn word_at(f: &[u8], at: usize) -> Option<u16> {
    let b: [u8; 2] = f.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_le_bytes(b))
}

fn dword_at(f: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = f.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// String number `at` of the formatted area (1-based into `strings`; 0 means "none").
fn string_at(f: &[u8], at: usize, strings: &[&[u8]]) -> Option<String> {
    let idx = usize::from(byte_at(f, at)?);
    let s = strings.get(idx.checked_sub(1)?)?;
    clean_bytes(s)
}

const MIB: u64 = 1024 * 1024;

/// Device size in bytes. `Err(())` means "no module installed" (size 0): the slot is skipped.
fn memory_device_size(f: &[u8]) -> Result<Option<u64>, ()> {
    match word_at(f, 0x0C) {
        None | Some(0xFFFF) => Ok(None),
        Some(0) => Err(()),
        Some(0x7FFF) => Ok(dword_at(f, 0x1C).map(|ext| u64::from(ext & 0x7FFF_FFFF) * MIB)),
        Some(v) if v & 0x8000 != 0 => Ok(Some(u64::from(v & 0x7FFF) * 1024)),
        Some(v) => Ok(Some(u64::from(v) * MIB)),
    }
}

/// Speed in MT/s (0 is unknown; 0xFFFF defers to the 32-bit extended speed at 0x54).
fn memory_device_speed(f: &[u8]) -> Option<u32> {
    match word_at(f, 0x15)? {
        0 => None,
        0xFFFF => dword_at(f, 0x54).filter(|&s| s != 0),
        v => Some(u32::from(v)),
    }
}

/// SMBIOS memory type (offset 0x12) name, per DSP0134 table "Memory Device — Type".
pub fn memory_type_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x01 => "Other",
        0x03 => "DRAM",
        0x04 => "EDRAM",
        0x05 => "VRAM",
        0x06 => "SRAM",
        0x07 => "RAM",
        0x08 => "ROM",
        0x09 => "Flash",
        0x0A => "EEPROM",
        0x0B => "FEPROM",
        0x0C => "EPROM",
        0x0D => "CDRAM",
        0x0E => "3DRAM",
        0x0F => "SDRAM",
        0x10 => "SGRAM",
        0x11 => "RDRAM",
        0x12 => "DDR",
        0x13 => "DDR2",
        0x14 => "DDR2 FB-DIMM",
        0x18 => "DDR3",
        0x19 => "FBD2",
        0x1A => "DDR4",
        0x1B => "LPDDR",
        0x1C => "LPDDR2",
        0x1D => "LPDDR3",
        0x1E => "LPDDR4",
        0x1F => "Logical non-volatile device",
        0x20 => "HBM",
        0x21 => "HBM2",
        0x22 => "DDR5",
        0x23 => "LPDDR5",
        0x24 => "HBM3",
        _ => return None,
    })
}

/// One type 17 structure (formatted area incl. header, plus its strings). `None` for an empty
/// slot. Fields beyond the structure's declared length are absent (older SMBIOS versions).
pub fn parse_memory_device(formatted: &[u8], strings: &[&[u8]]) -> Option<Dimm> {
    let size_bytes = memory_device_size(formatted).ok()?;
    Some(Dimm {
        locator: string_at(formatted, 0x10, strings),
        size_bytes,
        kind: byte_at(formatted, 0x12)
            .and_then(memory_type_name)
            .map(str::to_owned),
        speed_mts: memory_device_speed(formatted),
        manufacturer: string_at(formatted, 0x17, strings),
        serial: string_at(formatted, 0x18, strings),
    })
}

/// Reads memory facts: `MemTotal` under `procfs`, DIMMs from the SMBIOS table under `sysfs`.
pub(crate) fn collect(sysfs: &Path, procfs: &Path) -> Memory {
    let total_bytes = read_bounded(&procfs.join("meminfo"), ATTR_CAP)
        .and_then(|b| parse_meminfo(&String::from_utf8_lossy(&b)));
    let dimms = read_bounded(&sysfs.join(SMBIOS_TABLE), SMBIOS_CAP)
        .map(|t| parse_smbios_memory_devices(&t).dimms)
        .unwrap_or_default();
    Memory { total_bytes, dimms }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds one SMBIOS structure: header (type, length, handle), body, strings.
    fn structure(kind: u8, body: &[u8], strings: &[&str]) -> Vec<u8> {
        let mut v = vec![kind, u8::try_from(4 + body.len()).unwrap_or(0), 0x00, 0x11];
        v.extend_from_slice(body);
        if strings.is_empty() {
            v.extend_from_slice(&[0, 0]);
        } else {
            for s in strings {
                v.extend_from_slice(s.as_bytes());
                v.push(0);
            }
            v.push(0);
        }
        v
    }

    /// A type 17 body (from offset 4) of SMBIOS 3.3 length 0x54+4 bytes.
    fn type17_body(size: u16, ext_size: u32, kind: u8, speed: u16, ext_speed: u32) -> Vec<u8> {
        let mut f = vec![0u8; 0x58];
        f[0x0C..0x0E].copy_from_slice(&size.to_le_bytes());
        f[0x10] = 1; // locator: string 1
        f[0x12] = kind;
        f[0x15..0x17].copy_from_slice(&speed.to_le_bytes());
        f[0x17] = 2; // manufacturer: string 2
        f[0x18] = 3; // serial: string 3
        f[0x1C..0x20].copy_from_slice(&ext_size.to_le_bytes());
        f[0x54..0x58].copy_from_slice(&ext_speed.to_le_bytes());
        f.split_off(4)
    }

    #[test]
    fn meminfo_total() {
        let t = "MemTotal:       24578160 kB\nMemFree:         1 kB\n";
        assert_eq!(parse_meminfo(t), Some(24_578_160 * 1024));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: 5 MB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: 18446744073709551615 kB\n"), None);
    }

    #[test]
    fn type17_sizes_speeds_and_strings() {
        let mut table = structure(0, &[0; 20], &["SeaBIOS"]);
        table.extend(structure(
            17,
            &type17_body(16384, 0, 0x1A, 3200, 0),
            &["DIMM A1", "Acme", "SN-1"],
        ));
        // empty slot: skipped
        table.extend(structure(17, &type17_body(0, 0, 0x02, 0, 0), &["DIMM A2"]));
        // extended size (64 GiB) and extended speed
        table.extend(structure(
            17,
            &type17_body(0x7FFF, 65536, 0x22, 0xFFFF, 8800),
            &["DIMM B1", "Acme", "SN-2"],
        ));
        // KiB granularity, unknown type and speed, no strings
        let mut kib = type17_body(0x8000 | 512, 0, 0x02, 0, 0);
        kib[0x10 - 4] = 0;
        kib[0x17 - 4] = 0;
        kib[0x18 - 4] = 0;
        table.extend(structure(17, &kib, &[]));
        table.extend(structure(127, &[], &[]));
        table.extend(structure(17, &type17_body(1, 0, 0, 0, 0), &["after end"]));

        let scan = parse_smbios_memory_devices(&table);
        assert_eq!(scan.error, None);
        assert_eq!(scan.dimms.len(), 3);
        let a = &scan.dimms[0];
        assert_eq!(a.locator.as_deref(), Some("DIMM A1"));
        assert_eq!(a.size_bytes, Some(16 * 1024 * MIB));
        assert_eq!(a.kind.as_deref(), Some("DDR4"));
        assert_eq!(a.speed_mts, Some(3200));
        assert_eq!(a.manufacturer.as_deref(), Some("Acme"));
        assert_eq!(a.serial.as_deref(), Some("SN-1"));
        let b = &scan.dimms[1];
        assert_eq!(b.size_bytes, Some(64 * 1024 * MIB));
        assert_eq!(b.kind.as_deref(), Some("DDR5"));
        assert_eq!(b.speed_mts, Some(8800));
        let c = &scan.dimms[2];
        assert_eq!(c.size_bytes, Some(512 * 1024));
        assert_eq!(
            (c.kind.clone(), c.speed_mts, c.locator.clone()),
            (None, None, None)
        );
    }

    #[test]
    fn short_old_structure_has_absent_fields() {
        // SMBIOS 2.1 length 0x15: no speed, manufacturer or serial fields.
        let body = type17_body(2048, 0, 0x12, 400, 0);
        let table = structure(17, body.get(..0x11).unwrap_or_default(), &["slot"]);
        let scan = parse_smbios_memory_devices(&table);
        assert_eq!(scan.error, None);
        assert_eq!(scan.dimms.len(), 1);
        assert_eq!(scan.dimms[0].size_bytes, Some(2048 * MIB));
        assert_eq!(scan.dimms[0].kind.as_deref(), Some("DDR"));
        assert_eq!(scan.dimms[0].speed_mts, None);
        assert_eq!(scan.dimms[0].manufacturer, None);
    }

    #[test]
    fn out_of_range_string_index_is_absent() {
        let table = structure(17, &type17_body(1024, 0, 0x1A, 0, 0), &["only one"]);
        let scan = parse_smbios_memory_devices(&table);
        assert_eq!(scan.dimms[0].locator.as_deref(), Some("only one"));
        assert_eq!(scan.dimms[0].manufacturer, None);
        assert_eq!(scan.dimms[0].serial, None);
    }

    #[test]
    fn malformed_tables_stop_with_a_reason() {
        let good = structure(17, &type17_body(1024, 0, 0x1A, 0, 0), &["A"]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                [good.clone(), vec![17, 0x20]].concat(),
                "smbios_truncated_header",
            ),
            (
                [good.clone(), vec![17, 2, 0, 0, 0, 0]].concat(),
                "smbios_bad_length",
            ),
            (
                [good.clone(), vec![17, 0x40, 0, 0, 1, 2]].concat(),
                "smbios_truncated_structure",
            ),
            (
                [good.clone(), vec![1, 4, 0, 0, b'x', 0]].concat(),
                "smbios_unterminated_strings",
            ),
        ];
        for (table, reason) in cases {
            let scan = parse_smbios_memory_devices(&table);
            assert_eq!(scan.error.as_ref().map(SmbiosError::reason), Some(reason));
            assert_eq!(
                scan.dimms.len(),
                1,
                "{reason}: DIMMs before the fault are kept"
            );
        }
        assert_eq!(parse_smbios_memory_devices(&[]), SmbiosScan::default());
    }

    #[test]
    fn structure_count_is_bounded() {
        let table: Vec<u8> = std::iter::repeat_n([1u8, 4, 0, 0, 0, 0], MAX_STRUCTURES + 1)
            .flatten()
            .collect();
        let scan = parse_smbios_memory_devices(&table);
        assert_eq!(
            scan.error.as_ref().map(SmbiosError::reason),
            Some("smbios_too_many_structures")
        );
    }

    #[test]
    fn fuzzish_prefixes_never_panic() {
        let mut table = structure(
            17,
            &type17_body(0x7FFF, 3, 0x1A, 0xFFFF, 7),
            &["a", "b", "c"],
        );
        table.extend(structure(127, &[], &[]));
        for n in 0..=table.len() {
            let _ = parse_smbios_memory_devices(table.get(..n).unwrap_or_default());
        }
        for i in 0..table.len() {
            let mut t = table.clone();
            t[i] ^= 0xFF;
            let _ = parse_smbios_memory_devices(&t);
        }
    }
}
