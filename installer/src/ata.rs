//! ATA Security feature set vocabulary (pure): the IDENTIFY DEVICE parser, the
//! ATA PASS-THROUGH(16) command blocks that carry the security commands over SG_IO, the
//! 512-byte password blocks, and the decoding of what comes back. [`crate::purge`] sends
//! them.
//!
//! IDENTIFY DEVICE words used (ACS-3): 0 (general configuration: ATAPI bit), 10..=19
//! (serial), 27..=46 (model), 82 bit 1 (security feature set supported), 85 bit 1 (security
//! enabled), 89 and 90 (normal and enhanced erase time), 128 (security status: supported,
//! enabled, locked, frozen, count expired, enhanced erase supported), 217 (rotation rate),
//! 255 (integrity word: signature A5h and checksum).

use serde::{Deserialize, Serialize};

/// Bytes of IDENTIFY DEVICE data and of every security command's data block.
pub const SECTOR: usize = 512;
/// SCSI opcode of ATA PASS-THROUGH(16).
pub const ATA_16: u8 = 0x85;
/// ATA command: IDENTIFY DEVICE.
pub const CMD_IDENTIFY: u8 = 0xec;
/// ATA command: SECURITY SET PASSWORD.
pub const CMD_SECURITY_SET_PASSWORD: u8 = 0xf1;
/// ATA command: SECURITY UNLOCK.
pub const CMD_SECURITY_UNLOCK: u8 = 0xf2;
/// ATA command: SECURITY ERASE PREPARE.
pub const CMD_SECURITY_ERASE_PREPARE: u8 = 0xf3;
/// ATA command: SECURITY ERASE UNIT.
pub const CMD_SECURITY_ERASE_UNIT: u8 = 0xf4;
/// ATA command: SECURITY DISABLE PASSWORD.
pub const CMD_SECURITY_DISABLE_PASSWORD: u8 = 0xf6;

/// The temporary user password set for the duration of a secure erase: fixed and
/// documented, so that a disk left locked by a power loss mid-erase can be unlocked by an
/// operator (`hdparm --user-master u --security-unlock rackhand-wipe /dev/sdX`).
pub const TEMP_PASSWORD: &[u8] = b"rackhand-wipe";

/// Why IDENTIFY DEVICE data was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtaParseError {
    /// Fewer than 512 bytes.
    #[error("IDENTIFY DEVICE data of {0} bytes, need 512")]
    Truncated(usize),
    /// Word 255 carries the signature but the checksum does not add up.
    #[error("IDENTIFY DEVICE checksum mismatch")]
    Checksum,
    /// A packet (ATAPI) device, not a disk.
    #[error("ATAPI device")]
    Atapi,
}

impl AtaParseError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Truncated(_) => "ata_identify_truncated",
            Self::Checksum => "ata_identify_checksum",
            Self::Atapi => "ata_atapi",
        }
    }
}

/// The security state and erase capabilities of an ATA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtaSecurity {
    /// Serial (words 10..=19).
    pub serial: String,
    /// Model (words 27..=46).
    pub model: String,
    /// The security feature set is supported (word 82 bit 1 and word 128 bit 0).
    pub supported: bool,
    /// A user password is set (word 85 bit 1 / word 128 bit 1).
    pub enabled: bool,
    /// The device is locked (word 128 bit 2).
    pub locked: bool,
    /// Security commands are refused until the next power cycle (word 128 bit 3).
    pub frozen: bool,
    /// The password attempt counter is exhausted (word 128 bit 4).
    pub count_expired: bool,
    /// SECURITY ERASE UNIT supports the enhanced mode (word 128 bit 5).
    pub enhanced_supported: bool,
    /// Time a normal erase takes, in minutes (`None`: not reported).
    pub erase_minutes: Option<u32>,
    /// Time an enhanced erase takes, in minutes (`None`: not reported).
    pub enhanced_erase_minutes: Option<u32>,
    /// Word 217: `Some(false)` for non-rotating media (SSD), `Some(true)` with a rotation
    /// rate, `None` when not reported.
    pub rotational: Option<bool>,
}

fn word(b: &[u8], w: usize) -> u16 {
    match b.get(2 * w..2 * w + 2) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => 0,
    }
}

/// An ATA string: each word holds two characters, high byte first.
fn ata_string(b: &[u8], first: usize, last: usize) -> String {
    let s: String = (first..=last)
        .flat_map(|w| word(b, w).to_be_bytes())
        .map(|c| {
            if (0x20..0x7f).contains(&c) {
                char::from(c)
            } else {
                '?'
            }
        })
        .collect();
    s.trim().to_owned()
}

/// An erase-time word: bit 15 selects the extended format (bits 14:0), else bits 7:0;
/// the value is in units of 2 minutes, 0 means not reported, and the largest value of
/// the format means "more than that".
fn erase_minutes(w: u16) -> Option<u32> {
    let units = if w & 0x8000 != 0 {
        u32::from(w & 0x7fff)
    } else {
        u32::from(w & 0xff)
    };
    (units != 0).then_some(units * 2)
}

impl AtaSecurity {
    /// Why the drive's security state forbids a secure erase now, as a reason code (`None`:
    /// it allows one). Pure; the planner and the executor's re-check both use it.
    pub fn erase_refusal(&self) -> Option<&'static str> {
        if !self.supported {
            Some("ata_security_unsupported")
        } else if self.frozen {
            Some("ata_frozen")
        } else if self.locked {
            Some("ata_locked")
        } else if self.enabled {
            Some("ata_security_enabled")
        } else if self.count_expired {
            Some("ata_count_expired")
        } else {
            None
        }
    }
}

/// Parses IDENTIFY DEVICE data.
pub fn parse_identify(b: &[u8]) -> Result<AtaSecurity, AtaParseError> {
    let b = b.get(..SECTOR).ok_or(AtaParseError::Truncated(b.len()))?;
    let w255 = word(b, 255);
    if w255 & 0xff == 0xa5 && b.iter().fold(0u8, |s, &x| s.wrapping_add(x)) != 0 {
        return Err(AtaParseError::Checksum);
    }
    if word(b, 0) & 0x8000 != 0 {
        return Err(AtaParseError::Atapi);
    }
    // Words 82..=87 are valid only when neither 0000h nor FFFFh.
    let valid = |w: u16| w != 0 && w != 0xffff;
    let w82 = word(b, 82);
    let w85 = word(b, 85);
    let w128 = word(b, 128);
    let supported = valid(w82) && w82 & 0b10 != 0 && w128 & 1 != 0;
    let rotation = word(b, 217);
    Ok(AtaSecurity {
        serial: ata_string(b, 10, 19),
        model: ata_string(b, 27, 46),
        supported,
        enabled: supported && ((valid(w85) && w85 & 0b10 != 0) || w128 & 0b10 != 0),
        locked: supported && w128 & 0b100 != 0,
        frozen: supported && w128 & 0b1000 != 0,
        count_expired: supported && w128 & 0b1_0000 != 0,
        enhanced_supported: supported && w128 & 0b10_0000 != 0,
        erase_minutes: erase_minutes(word(b, 89)),
        enhanced_erase_minutes: erase_minutes(word(b, 90)),
        rotational: match rotation {
            1 => Some(false),
            0x0401..=0xfffe => Some(true),
            _ => None,
        },
    })
}

/// Whether a disk's resolved sysfs device path (e.g.
/// `/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0`) shows a libata
/// port with nothing between it and the disk that could filter or misroute security
/// commands: no USB bridge, no SAS port, expander or end device (libsas), no FC or iSCSI
/// session. Anything else, including an unknown layout, is not direct.
pub fn direct_path(path: &str) -> bool {
    let numbered = |c: &str, prefix: &str| {
        c.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let has_ata = comps.iter().any(|c| numbered(c, "ata"));
    let indirect = comps.iter().any(|c| {
        numbered(c, "usb")
            || [
                "port-",
                "end_device-",
                "expander-",
                "rport-",
                "session",
                "vhost",
            ]
            .iter()
            .any(|p| c.starts_with(p))
    });
    has_ata && !indirect
}

/// Data direction of a pass-through command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// No data.
    None,
    /// 512 bytes from the device (PIO data-in).
    In,
    /// 512 bytes to the device (PIO data-out).
    Out,
}

/// The ATA PASS-THROUGH(16) CDB for a 28-bit `command` with `features`, moving at most
/// one 512-byte block in `dir`.
pub fn ata16_cdb(command: u8, features: u8, dir: Direction) -> [u8; 16] {
    // PROTOCOL (byte 1 bits 4:1): 3 non-data, 4 PIO data-in, 5 PIO data-out.
    // Byte 2: T_DIR (bit 3, 1 = from the device), BYTE_BLOCK (bit 2, count in blocks),
    // T_LENGTH (bits 1:0, 2 = the length is in the SECTOR COUNT field).
    let (protocol, flags, count) = match dir {
        Direction::None => (3u8, 0u8, 0u8),
        Direction::In => (4, 0b1110, 1),
        Direction::Out => (5, 0b0110, 1),
    };
    let mut cdb = [0u8; 16];
    cdb[0] = ATA_16;
    cdb[1] = protocol << 1;
    cdb[2] = flags;
    cdb[4] = features;
    cdb[6] = count;
    cdb[13] = 0x40; // DEVICE: LBA mode bit, as libata sets it.
    cdb[14] = command;
    cdb
}

/// Which password a security command carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseMode {
    /// SECURITY ERASE UNIT, normal mode.
    Normal,
    /// SECURITY ERASE UNIT, enhanced mode.
    Enhanced,
}

/// The 512-byte data block of SECURITY SET PASSWORD / UNLOCK / DISABLE PASSWORD /
/// ERASE UNIT for the user password `password` (at most 32 bytes, zero padded; longer is
/// cut). Word 0 bit 0 = 0 selects the user password; for ERASE UNIT, bit 1 selects the
/// enhanced mode; for SET PASSWORD, bit 8 = 0 keeps the master password capability High.
pub fn password_block(password: &[u8], erase: Option<EraseMode>) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    if erase == Some(EraseMode::Enhanced) {
        b[0] = 0b10;
    }
    for (dst, src) in b[2..34].iter_mut().zip(password) {
        *dst = *src;
    }
    b
}

/// How a pass-through command ended, from the SG_IO header and the sense data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtaOutcome {
    /// Completed without error.
    Ok,
    /// The device aborted the command (ERR with ABRT): not permitted in this state.
    Aborted {
        /// ATA status register.
        status: u8,
        /// ATA error register.
        error: u8,
    },
    /// The device or the transport failed in another way.
    Failed(String),
}

/// Finds the ATA Status Return descriptor (code 09h) in descriptor-format sense data.
fn ata_descriptor(sense: &[u8]) -> Option<(u8, u8)> {
    let code = sense.first()? & 0x7f;
    if code != 0x72 && code != 0x73 {
        return None;
    }
    let total = 8 + usize::from(*sense.get(7)?);
    let body = sense.get(8..total.min(sense.len()))?;
    let mut at = 0;
    // Bounded: every step advances by at least 2 bytes.
    while let (Some(&kind), Some(&len)) = (body.get(at), body.get(at + 1)) {
        if kind == 0x09 && len >= 0x0c {
            let error = *body.get(at + 3)?;
            let status = *body.get(at + 13)?;
            return Some((status, error));
        }
        at += 2 + usize::from(len);
    }
    None
}

/// Classifies a finished SG_IO: SCSI `status`, `host_status`, `driver_status`, and the
/// sense bytes the kernel wrote.
pub fn classify(status: u8, host: u16, driver: u16, sense: &[u8]) -> AtaOutcome {
    if let Some((st, err)) = ata_descriptor(sense)
        && st & 0x01 != 0
    {
        return if err & 0x04 != 0 {
            AtaOutcome::Aborted {
                status: st,
                error: err,
            }
        } else {
            AtaOutcome::Failed(format!("ATA status {st:#04x} error {err:#04x}"))
        };
    }
    if status == 0 && host == 0 && driver & 0x0f == 0 {
        return AtaOutcome::Ok;
    }
    let key = match sense.first().map(|c| c & 0x7f) {
        Some(0x72 | 0x73) => sense.get(1).map(|k| k & 0x0f),
        Some(0x70 | 0x71) => sense.get(2).map(|k| k & 0x0f),
        _ => None,
    };
    AtaOutcome::Failed(format!(
        "SCSI status {status:#04x}, host {host:#06x}, driver {driver:#06x}, sense key {}",
        key.map_or_else(|| "none".to_owned(), |k| format!("{k:#x}"))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// IDENTIFY data with the given security words, a valid checksum when `sign`.
    pub(crate) fn identify(
        w82: u16,
        w85: u16,
        w128: u16,
        w89: u16,
        w90: u16,
        sign: bool,
    ) -> Vec<u8> {
        let mut w = [0u16; 256];
        w[0] = 0x0040;
        let serial = b"WD-WCC4E0000001      ";
        for (i, pair) in serial.chunks(2).take(10).enumerate() {
            w[10 + i] = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(b' ')]);
        }
        let model = format!("{:<40}", "WDC WD10EZEX-00BN5A0");
        for (i, pair) in model.as_bytes().chunks(2).enumerate() {
            w[27 + i] = u16::from_be_bytes([pair[0], pair[1]]);
        }
        w[82] = w82;
        w[85] = w85;
        w[89] = w89;
        w[90] = w90;
        w[128] = w128;
        w[217] = 7200;
        let mut b: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        if sign {
            b[510] = 0xa5;
            let sum = b[..511].iter().fold(0u8, |s, &x| s.wrapping_add(x));
            b[511] = 0u8.wrapping_sub(sum);
        }
        b
    }

    #[test]
    fn security_words() {
        // (w82, w85, w128) -> (supported, enabled, locked, frozen, expired, enhanced)
        let table = [
            (0x0000, 0x0000, 0x0000, [false; 6]),
            (
                0x746b,
                0x7469,
                0x0021,
                [true, false, false, false, false, true],
            ),
            (
                0x746b,
                0x7469,
                0x0029,
                [true, false, false, true, false, true],
            ),
            (
                0x746b,
                0x746b,
                0x0007,
                [true, true, true, false, false, false],
            ),
            (
                0x746b,
                0x7469,
                0x0011,
                [true, false, false, false, true, false],
            ),
            // Word 82 says no security set: word 128 is not trusted.
            (0x7469, 0x7469, 0x003f, [false; 6]),
            // Word 82 invalid (FFFFh).
            (0xffff, 0xffff, 0x003f, [false; 6]),
            // Word 128 bit 0 clear although word 82 claims support.
            (0x746b, 0x7469, 0x0000, [false; 6]),
        ];
        for (w82, w85, w128, want) in table {
            let s = parse_identify(&identify(w82, w85, w128, 0, 0, true)).unwrap();
            let got = [
                s.supported,
                s.enabled,
                s.locked,
                s.frozen,
                s.count_expired,
                s.enhanced_supported,
            ];
            assert_eq!(got, want, "{w82:#x} {w85:#x} {w128:#x}");
            assert_eq!(s.serial, "WD-WCC4E0000001");
            assert_eq!(s.model, "WDC WD10EZEX-00BN5A0");
            assert_eq!(s.rotational, Some(true));
        }
    }

    #[test]
    fn erase_times() {
        for (w, want) in [
            (0, None),
            (1, Some(2)),
            (0x00ff, Some(510)),
            (0x8000, None),
            (0x8000 | 300, Some(600)),
            (0x7f0a, Some(20)),
        ] {
            let s = parse_identify(&identify(0x746b, 0x7469, 0x21, w, w, false)).unwrap();
            assert_eq!(s.erase_minutes, want, "{w:#x}");
            assert_eq!(s.enhanced_erase_minutes, want, "{w:#x}");
        }
    }

    #[test]
    fn bad_identify_data_is_refused() {
        assert_eq!(
            parse_identify(&[0; 511]).unwrap_err(),
            AtaParseError::Truncated(511)
        );
        let mut b = identify(0x746b, 0x7469, 0x21, 0, 0, true);
        b[256] ^= 1;
        assert_eq!(
            parse_identify(&b).unwrap_err().code(),
            "ata_identify_checksum"
        );
        // No signature: no checksum to check.
        let mut b = identify(0x746b, 0x7469, 0x21, 0, 0, false);
        b[256] ^= 1;
        assert!(parse_identify(&b).is_ok());
        let mut b = identify(0, 0, 0, 0, 0, false);
        b[1] = 0x85;
        assert_eq!(parse_identify(&b).unwrap_err(), AtaParseError::Atapi);
        let mut b = identify(0, 0, 0, 0, 0, false);
        b[434] = 1;
        b[435] = 0;
        assert_eq!(parse_identify(&b).unwrap().rotational, Some(false));
    }

    #[test]
    fn cdbs_and_password_blocks() {
        let c = ata16_cdb(CMD_IDENTIFY, 0, Direction::In);
        assert_eq!(
            c,
            [0x85, 8, 0x0e, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0xec, 0]
        );
        let c = ata16_cdb(CMD_SECURITY_ERASE_UNIT, 0, Direction::Out);
        assert_eq!((c[1], c[2], c[6], c[14]), (10, 0x06, 1, 0xf4));
        let c = ata16_cdb(CMD_SECURITY_ERASE_PREPARE, 0, Direction::None);
        assert_eq!((c[1], c[2], c[6], c[14]), (6, 0, 0, 0xf3));

        let p = password_block(TEMP_PASSWORD, None);
        assert_eq!(&p[2..2 + TEMP_PASSWORD.len()], TEMP_PASSWORD);
        assert!(p[2 + TEMP_PASSWORD.len()..].iter().all(|&b| b == 0));
        assert_eq!(p[0..2], [0, 0]);
        assert_eq!(password_block(b"x", Some(EraseMode::Enhanced))[0], 2);
        assert_eq!(password_block(b"x", Some(EraseMode::Normal))[0], 0);
        let long = [b'a'; 40];
        let p = password_block(&long, None);
        assert!(p[2..34].iter().all(|&b| b == b'a'));
        assert_eq!(p[34], 0);
    }

    fn sense_with(status: u8, error: u8) -> Vec<u8> {
        let mut s = vec![0x72, 0x0b, 0, 0, 0, 0, 0, 14];
        let mut d = vec![0u8; 14];
        d[0] = 0x09;
        d[1] = 0x0c;
        d[3] = error;
        d[13] = status;
        s.extend(d);
        s
    }

    #[test]
    fn outcomes() {
        assert_eq!(classify(0, 0, 0, &[]), AtaOutcome::Ok);
        assert_eq!(
            classify(2, 0, 8, &sense_with(0x51, 0x04)),
            AtaOutcome::Aborted {
                status: 0x51,
                error: 0x04
            }
        );
        assert!(matches!(
            classify(2, 0, 8, &sense_with(0x51, 0x40)),
            AtaOutcome::Failed(m) if m.contains("error 0x40")
        ));
        // A descriptor without ERR and a clean status is success (CK_COND style).
        assert_eq!(classify(0, 0, 0, &sense_with(0x50, 0)), AtaOutcome::Ok);
        assert!(matches!(
            classify(0, 0x0001, 0, &[]),
            AtaOutcome::Failed(m) if m.contains("host 0x0001")
        ));
        assert!(matches!(
            classify(2, 0, 8, &[0x70, 0, 0x05, 0, 0, 0, 0, 0]),
            AtaOutcome::Failed(m) if m.contains("sense key 0x5")
        ));
        // Truncated or looping descriptors are not trusted.
        assert!(matches!(
            classify(2, 0, 8, &[0x72, 0, 0, 0, 0, 0, 0, 200, 9]),
            AtaOutcome::Failed(_)
        ));
        assert!(matches!(
            classify(2, 0, 8, &[0x72, 0, 0, 0, 0, 0, 0, 4, 1, 0, 1, 0]),
            AtaOutcome::Failed(_)
        ));
    }

    #[test]
    fn only_plain_libata_paths_are_direct() {
        for (path, want) in [
            (
                "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
                true,
            ),
            (
                "devices/pci0000:00/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0",
                true,
            ),
            (
                "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0",
                false,
            ),
            (
                "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/ata9/host6/target6:0:0/6:0:0:0",
                false,
            ),
            (
                "/sys/devices/pci0000:80/0000:80:01.0/0000:81:00.0/host7/port-7:0/end_device-7:0/ata4/target7:0:0/7:0:0:0",
                false,
            ),
            (
                "/sys/devices/pci0000:80/0000:81:00.0/host7/port-7:0/expander-7:0/port-7:0:1/end_device-7:0:1/target7:0:1/7:0:1:0",
                false,
            ),
            (
                "/sys/devices/pci0000:00/0000:00:05.0/virtio3/host2/target2:0:0/2:0:0:0",
                false,
            ),
            (
                "/sys/devices/platform/host3/session1/target3:0:0/3:0:0:0",
                false,
            ),
            ("", false),
            ("ata", false),
        ] {
            assert_eq!(direct_path(path), want, "{path}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700), st in any::<u8>(), h in any::<u16>(), d in any::<u16>()) {
            let _ = parse_identify(&bytes);
            let _ = classify(st, h, d, &bytes);
            let _ = direct_path(&String::from_utf8_lossy(&bytes));
        }
    }
}
