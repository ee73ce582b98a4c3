//! NVMe purge vocabulary (pure): parsers for the Identify data and the Sanitize Status log
//! page, and the command dwords of Format NVM and Sanitize. Nothing here opens a device;
//! [`crate::purge`] sends the commands through `NVME_IOCTL_ADMIN_CMD`.
//!
//! Field offsets are those of the NVM Express Base Specification (Identify Controller data
//! structure, CNS 01h; Identify Namespace, CNS 00h; Active Namespace ID list, CNS 02h;
//! Sanitize Status log page, 81h). Every parser takes any byte slice and answers an error,
//! never a panic, when it is too short or inconsistent.

use serde::{Deserialize, Serialize};

/// Size of every Identify data structure.
pub const IDENTIFY_LEN: usize = 4096;
/// Admin opcode: Get Log Page.
pub const OPC_GET_LOG_PAGE: u8 = 0x02;
/// Admin opcode: Identify.
pub const OPC_IDENTIFY: u8 = 0x06;
/// Admin opcode: Format NVM.
pub const OPC_FORMAT_NVM: u8 = 0x80;
/// Admin opcode: Sanitize.
pub const OPC_SANITIZE: u8 = 0x84;
/// Identify CNS: the namespace named by NSID.
pub const CNS_NAMESPACE: u32 = 0x00;
/// Identify CNS: the controller.
pub const CNS_CONTROLLER: u32 = 0x01;
/// Identify CNS: active namespace IDs above NSID.
pub const CNS_ACTIVE_NAMESPACES: u32 = 0x02;
/// Log page identifier of the Sanitize Status log.
pub const LOG_SANITIZE_STATUS: u8 = 0x81;
/// Bytes of the Sanitize Status log page read (the fields up to the crypto-erase estimate,
/// present since NVMe 1.3).
pub const SANITIZE_LOG_LEN: usize = 20;

/// Why identify data or a log page was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvmeParseError {
    /// Fewer bytes than the structure needs.
    #[error("{what}: {got} bytes, need {need}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes given.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The namespace's current LBA format index is past its format table.
    #[error("current LBA format {index} but only {count} formats")]
    BadLbaFormat {
        /// FLBAS index.
        index: u8,
        /// NLBAF + 1.
        count: u8,
    },
}

impl NvmeParseError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "nvme_identify_truncated",
            Self::BadLbaFormat { .. } => "nvme_bad_lba_format",
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_le_bytes([x, y]),
        _ => 0,
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, c, d, e]) => u32::from_le_bytes([a, c, d, e]),
        _ => 0,
    }
}

fn u8_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// An ASCII field, space padded: trimmed, non-printable bytes replaced.
fn ascii(b: &[u8], at: usize, len: usize) -> String {
    let raw = b.get(at..at + len).unwrap_or(&[]);
    let s: String = raw
        .iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                char::from(c)
            } else {
                '?'
            }
        })
        .collect();
    s.trim().to_owned()
}

fn need(what: &'static str, b: &[u8], need: usize) -> Result<(), NvmeParseError> {
    if b.len() < need {
        return Err(NvmeParseError::Truncated {
            what,
            got: b.len(),
            need,
        });
    }
    Ok(())
}

/// The purge-relevant fields of Identify Controller (CNS 01h).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerId {
    /// SN (bytes 4..24).
    pub serial: String,
    /// MN (bytes 24..64).
    pub model: String,
    /// FR (bytes 64..72).
    pub firmware: String,
    /// CMIC (byte 76): multi-path I/O and namespace sharing capabilities.
    pub cmic: u8,
    /// OACS (bytes 256..258): optional admin commands.
    pub oacs: u16,
    /// SANICAP (bytes 328..332): sanitize capabilities.
    pub sanicap: u32,
    /// NN (bytes 516..520): the largest namespace ID.
    pub nn: u32,
    /// FNA (byte 524): Format NVM attributes.
    pub fna: u8,
}

impl ControllerId {
    /// OACS bit 1: Format NVM is supported.
    pub fn format_nvm(&self) -> bool {
        self.oacs & (1 << 1) != 0
    }
    /// SANICAP bit 0: Sanitize crypto erase.
    pub fn sanitize_crypto(&self) -> bool {
        self.sanicap & 1 != 0
    }
    /// SANICAP bit 1: Sanitize block erase.
    pub fn sanitize_block(&self) -> bool {
        self.sanicap & (1 << 1) != 0
    }
    /// SANICAP bit 2: Sanitize overwrite.
    pub fn sanitize_overwrite(&self) -> bool {
        self.sanicap & (1 << 2) != 0
    }
    /// FNA bit 0: a format applies to every namespace of the controller.
    pub fn format_all_namespaces(&self) -> bool {
        self.fna & 1 != 0
    }
    /// FNA bit 1: a secure erase (SES > 0) applies to every namespace.
    pub fn secure_erase_all_namespaces(&self) -> bool {
        self.fna & (1 << 1) != 0
    }
    /// FNA bit 2: Format NVM supports cryptographic erase (SES = 2).
    pub fn format_crypto_erase(&self) -> bool {
        self.fna & (1 << 2) != 0
    }
    /// CMIC bit 0 or 1: the subsystem may have more than one port or controller, so other
    /// hosts may see namespaces this one does not.
    pub fn shared_subsystem(&self) -> bool {
        self.cmic & 0b11 != 0
    }
}

/// Parses Identify Controller data (exactly the 4096-byte structure, or longer).
pub fn parse_controller(b: &[u8]) -> Result<ControllerId, NvmeParseError> {
    need("identify controller", b, IDENTIFY_LEN)?;
    Ok(ControllerId {
        serial: ascii(b, 4, 20),
        model: ascii(b, 24, 40),
        firmware: ascii(b, 64, 8),
        cmic: u8_at(b, 76),
        oacs: u16_at(b, 256),
        sanicap: u32_at(b, 328),
        nn: u32_at(b, 516),
        fna: u8_at(b, 524),
    })
}

/// The current format of a namespace (Identify Namespace, CNS 00h): what a Format NVM must
/// repeat so that the namespace keeps its block size, metadata and protection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceFormat {
    /// NSZE: size in logical blocks.
    pub blocks: u64,
    /// Index of the current LBA format (FLBAS bits 3:0 and 6:5).
    pub lba_format: u8,
    /// Logical block size of that format in bytes (2^LBADS; 0 when LBADS is out of range).
    pub lba_bytes: u64,
    /// FLBAS bit 4: metadata transferred at the end of the data LBA.
    pub metadata_extended: bool,
    /// DPS bits 2:0: protection information type.
    pub protection_type: u8,
    /// DPS bit 3: protection information in the first bytes of metadata.
    pub protection_first: bool,
}

/// Parses Identify Namespace data.
pub fn parse_namespace(b: &[u8]) -> Result<NamespaceFormat, NvmeParseError> {
    need("identify namespace", b, IDENTIFY_LEN)?;
    let nsze = match b.get(0..8) {
        Some(s) => s
            .iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        None => 0,
    };
    let nlbaf = u8_at(b, 25);
    let flbas = u8_at(b, 26);
    let dps = u8_at(b, 29);
    let count = nlbaf.saturating_add(1).min(64);
    let upper = if count > 16 { (flbas >> 5) & 0x3 } else { 0 };
    let index = (flbas & 0x0f) | (upper << 4);
    if index >= count {
        return Err(NvmeParseError::BadLbaFormat { index, count });
    }
    let lbaf = u32_at(b, 128 + 4 * usize::from(index));
    let lbads = (lbaf >> 16) & 0xff;
    let lba_bytes = if (9..=31).contains(&lbads) {
        1u64 << lbads
    } else {
        0
    };
    Ok(NamespaceFormat {
        blocks: nsze,
        lba_format: index,
        lba_bytes,
        metadata_extended: flbas & (1 << 4) != 0,
        protection_type: dps & 0x7,
        protection_first: dps & (1 << 3) != 0,
    })
}

/// Parses an Active Namespace ID list: the non-zero IDs up to the first zero entry.
pub fn parse_namespace_list(b: &[u8]) -> Result<Vec<u32>, NvmeParseError> {
    need("active namespace list", b, IDENTIFY_LEN)?;
    Ok(b.chunks_exact(4)
        .take(IDENTIFY_LEN / 4)
        .map(|c| u32_at(c, 0))
        .take_while(|&id| id != 0)
        .collect())
}

/// Secure Erase Settings of Format NVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureErase {
    /// SES = 1: user data erase.
    UserData,
    /// SES = 2: cryptographic erase.
    Crypto,
}

/// CDW10 of a Format NVM that keeps `f` and erases with `ses`.
pub fn format_cdw10(f: &NamespaceFormat, ses: SecureErase) -> u32 {
    let ses = match ses {
        SecureErase::UserData => 1u32,
        SecureErase::Crypto => 2,
    };
    let lbaf = u32::from(f.lba_format);
    (lbaf & 0xf)
        | (u32::from(f.metadata_extended) << 4)
        | (u32::from(f.protection_type & 0x7) << 5)
        | (u32::from(f.protection_first) << 8)
        | (ses << 9)
        | (((lbaf >> 4) & 0x3) << 12)
}

/// Sanitize actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanitizeAction {
    /// SANACT 001b: leave the failure state of an earlier, failed sanitize.
    ExitFailureMode,
    /// SANACT 010b: block erase.
    BlockErase,
    /// SANACT 100b: crypto erase.
    CryptoErase,
}

/// CDW10 of a Sanitize command. AUSE (bit 3) is set so that a failed sanitize can be
/// exited and the wipe can fall back to another method; NDAS (bit 9) is clear, so the
/// media is deallocated afterwards.
pub fn sanitize_cdw10(action: SanitizeAction) -> u32 {
    let sanact = match action {
        SanitizeAction::ExitFailureMode => 1u32,
        SanitizeAction::BlockErase => 2,
        SanitizeAction::CryptoErase => 4,
    };
    sanact | (1 << 3)
}

/// CDW10 of a Get Log Page for `len` bytes (a multiple of 4, at least 4) of log `lid`.
pub fn get_log_cdw10(lid: u8, len: usize) -> u32 {
    let dwords = u32::try_from(len / 4).unwrap_or(u32::MAX).max(1);
    let numdl = (dwords - 1) & 0xffff;
    u32::from(lid) | (numdl << 16)
}

/// State of the most recent sanitize (SSTAT bits 2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SanitizeState {
    /// 000b: never sanitized.
    Never,
    /// 001b: completed successfully.
    Completed,
    /// 010b: in progress.
    InProgress,
    /// 011b: failed.
    Failed,
    /// 100b: completed successfully without deallocation.
    CompletedNoDeallocate,
    /// Reserved values.
    Reserved(u8),
}

/// The Sanitize Status log page (81h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SanitizeStatus {
    /// SPROG: progress of the running sanitize, in 1/65536 (65535 when none runs).
    pub progress: u16,
    /// SSTAT bits 2:0.
    pub state: SanitizeState,
    /// SSTAT bit 8: no user data has been written since the last sanitize (or ever).
    pub global_data_erased: bool,
    /// SCDW10: CDW10 of the sanitize the status is about.
    pub cdw10: u32,
    /// Estimated seconds for a block erase (`None`: no estimate).
    pub block_erase_secs: Option<u32>,
    /// Estimated seconds for a crypto erase (`None`: no estimate).
    pub crypto_erase_secs: Option<u32>,
}

impl SanitizeStatus {
    /// Whether the last sanitize ended well.
    pub fn succeeded(&self) -> bool {
        matches!(
            self.state,
            SanitizeState::Completed | SanitizeState::CompletedNoDeallocate
        )
    }
}

/// Parses the first [`SANITIZE_LOG_LEN`] bytes of the Sanitize Status log page.
pub fn parse_sanitize_status(b: &[u8]) -> Result<SanitizeStatus, NvmeParseError> {
    need("sanitize status log", b, SANITIZE_LOG_LEN)?;
    let sstat = u16_at(b, 2);
    let state = match sstat & 0x7 {
        0 => SanitizeState::Never,
        1 => SanitizeState::Completed,
        2 => SanitizeState::InProgress,
        3 => SanitizeState::Failed,
        4 => SanitizeState::CompletedNoDeallocate,
        other => SanitizeState::Reserved(other as u8),
    };
    let estimate = |at| Some(u32_at(b, at)).filter(|&v| v != u32::MAX);
    Ok(SanitizeStatus {
        progress: u16_at(b, 0),
        state,
        global_data_erased: sstat & (1 << 8) != 0,
        cdw10: u32_at(b, 4),
        block_erase_secs: estimate(12),
        crypto_erase_secs: estimate(16),
    })
}

/// A completion status returned by the admin passthrough ioctl (the kernel passes the
/// status field without its phase bit: SC in bits 7:0, SCT in 10:8, DNR in bit 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    /// Status code type.
    pub fn sct(self) -> u8 {
        ((self.0 >> 8) & 0x7) as u8
    }
    /// Status code.
    pub fn sc(self) -> u8 {
        (self.0 & 0xff) as u8
    }
    /// The controller does not implement what was asked: invalid opcode or field (generic),
    /// or an invalid format (command specific). The next method may be tried.
    pub fn unsupported(self) -> bool {
        matches!((self.sct(), self.sc()), (0, 0x01 | 0x02) | (1, 0x0a))
    }
    /// A short description for wipe records.
    pub fn describe(self) -> String {
        let what = match (self.sct(), self.sc()) {
            (0, 0x01) => "invalid command opcode",
            (0, 0x02) => "invalid field in command",
            (0, 0x04) => "data transfer error",
            (0, 0x06) => "internal error",
            (0, 0x07) => "command abort requested",
            (0, 0x0b) => "invalid namespace or format",
            (0, 0x1c) => "sanitize failed",
            (0, 0x1d) => "sanitize in progress",
            (0, 0x20) => "namespace is write protected",
            (1, 0x0a) => "invalid format",
            (1, 0x20) => "prohibited by sanitize configuration",
            _ => "error",
        };
        format!(
            "NVMe status SCT {:#x} SC {:#04x} ({what})",
            self.sct(),
            self.sc()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds an Identify Controller buffer with the given fields.
    pub(crate) fn controller(oacs: u16, sanicap: u32, fna: u8, cmic: u8) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        b[4..24].copy_from_slice(b"SN-0001             ");
        b[24..64].copy_from_slice(format!("{:<40}", "QEMU NVMe Ctrl").as_bytes());
        b[64..72].copy_from_slice(b"1.0     ");
        b[76] = cmic;
        b[256..258].copy_from_slice(&oacs.to_le_bytes());
        b[328..332].copy_from_slice(&sanicap.to_le_bytes());
        b[516..520].copy_from_slice(&256u32.to_le_bytes());
        b[524] = fna;
        b
    }

    fn namespace(nlbaf: u8, flbas: u8, dps: u8, lbads: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        b[0..8].copy_from_slice(&262_144u64.to_le_bytes());
        b[25] = nlbaf;
        b[26] = flbas;
        b[29] = dps;
        for (i, &d) in lbads.iter().enumerate() {
            let v = u32::from(d) << 16;
            b[128 + 4 * i..132 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn controller_fields_and_capabilities() {
        // (oacs, sanicap, fna, cmic) -> (format, s-crypto, s-block, s-overwrite, f-crypto,
        //                                  all-ns, se-all-ns, shared)
        let table = [
            (
                0x0000,
                0,
                0,
                0,
                [false, false, false, false, false, false, false, false],
            ),
            (
                0x0002,
                0,
                0,
                0,
                [true, false, false, false, false, false, false, false],
            ),
            (
                0x0002,
                0b111,
                0b100,
                0,
                [true, true, true, true, true, false, false, false],
            ),
            (
                0x0002,
                0b010,
                0b011,
                0,
                [true, false, true, false, false, true, true, false],
            ),
            (
                0x000a,
                0x2000_0001,
                0,
                0b10,
                [true, true, false, false, false, false, false, true],
            ),
            (
                0xfffd,
                0,
                0xff,
                0b01,
                [false, false, false, false, true, true, true, true],
            ),
        ];
        for (oacs, sanicap, fna, cmic, want) in table {
            let c = parse_controller(&controller(oacs, sanicap, fna, cmic)).unwrap();
            let got = [
                c.format_nvm(),
                c.sanitize_crypto(),
                c.sanitize_block(),
                c.sanitize_overwrite(),
                c.format_crypto_erase(),
                c.format_all_namespaces(),
                c.secure_erase_all_namespaces(),
                c.shared_subsystem(),
            ];
            assert_eq!(got, want, "{oacs:#x} {sanicap:#x} {fna:#x} {cmic:#x}");
            assert_eq!(c.serial, "SN-0001");
            assert_eq!(c.model, "QEMU NVMe Ctrl");
            assert_eq!(c.firmware, "1.0");
            assert_eq!(c.nn, 256);
        }
    }

    #[test]
    fn short_buffers_are_refused() {
        for len in [0, 1, 523, 525, 4095] {
            let e = parse_controller(&vec![0xff; len]).unwrap_err();
            assert_eq!(e.code(), "nvme_identify_truncated");
            assert!(parse_namespace(&vec![0; len]).is_err());
            assert!(parse_namespace_list(&vec![0; len]).is_err());
        }
        assert!(parse_sanitize_status(&[0; 19]).is_err());
        // Longer than the structure is fine.
        assert!(parse_controller(&vec![0; 8192]).is_ok());
    }

    #[test]
    fn non_ascii_strings_are_made_printable() {
        let mut b = controller(0, 0, 0, 0);
        b[4..8].copy_from_slice(&[0xff, b'A', 0x00, b'B']);
        assert_eq!(parse_controller(&b).unwrap().serial, "?A?B001");
    }

    #[test]
    fn namespace_format_is_kept_by_format_nvm() {
        // One 512-byte format, no metadata, no PI.
        let ns = parse_namespace(&namespace(0, 0, 0, &[9])).unwrap();
        assert_eq!(ns.blocks, 262_144);
        assert_eq!((ns.lba_format, ns.lba_bytes), (0, 512));
        assert_eq!(format_cdw10(&ns, SecureErase::UserData), 1 << 9);
        assert_eq!(format_cdw10(&ns, SecureErase::Crypto), 2 << 9);
        // Format 1 (4 KiB) of two, extended metadata, PI type 1 first.
        let ns = parse_namespace(&namespace(1, 0x11, 0x09, &[9, 12])).unwrap();
        assert_eq!((ns.lba_format, ns.lba_bytes), (1, 4096));
        assert!(ns.metadata_extended && ns.protection_first);
        assert_eq!(ns.protection_type, 1);
        assert_eq!(
            format_cdw10(&ns, SecureErase::UserData),
            1 | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9)
        );
        // More than 16 formats: FLBAS bits 6:5 are the upper index bits.
        let mut lbads = vec![9; 20];
        lbads[18] = 12;
        let ns = parse_namespace(&namespace(19, 0x22, 0, &lbads)).unwrap();
        assert_eq!((ns.lba_format, ns.lba_bytes), (18, 4096));
        assert_eq!(
            format_cdw10(&ns, SecureErase::Crypto),
            2 | (2 << 9) | (1 << 12)
        );
        // With 16 formats or fewer, bits 6:5 are not part of the index.
        let ns = parse_namespace(&namespace(1, 0x21, 0, &[9, 12])).unwrap();
        assert_eq!(ns.lba_format, 1);
        // An index past the table, and a nonsense LBADS.
        let e = parse_namespace(&namespace(0, 3, 0, &[9])).unwrap_err();
        assert_eq!(e, NvmeParseError::BadLbaFormat { index: 3, count: 1 });
        assert_eq!(e.code(), "nvme_bad_lba_format");
        let ns = parse_namespace(&namespace(0, 0, 0, &[200])).unwrap();
        assert_eq!(ns.lba_bytes, 0);
    }

    #[test]
    fn namespace_lists_stop_at_zero() {
        let mut b = vec![0u8; IDENTIFY_LEN];
        assert_eq!(parse_namespace_list(&b).unwrap(), Vec::<u32>::new());
        b[0..4].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(parse_namespace_list(&b).unwrap(), vec![1]);
        b[4..8].copy_from_slice(&7u32.to_le_bytes());
        b[12..16].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(parse_namespace_list(&b).unwrap(), vec![1, 7]);
        let full: Vec<u8> = (1..=1024u32).flat_map(u32::to_le_bytes).collect();
        assert_eq!(parse_namespace_list(&full).unwrap().len(), 1024);
    }

    #[test]
    fn sanitize_status_log() {
        let mut b = [0u8; SANITIZE_LOG_LEN];
        b[0..2].copy_from_slice(&0x8000u16.to_le_bytes());
        b[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        b[4..8].copy_from_slice(&sanitize_cdw10(SanitizeAction::CryptoErase).to_le_bytes());
        b[8..20].fill(0xff);
        b[16..20].copy_from_slice(&30u32.to_le_bytes());
        let s = parse_sanitize_status(&b).unwrap();
        assert_eq!(s.state, SanitizeState::InProgress);
        assert_eq!(s.progress, 0x8000);
        assert_eq!(s.cdw10, 4 | 8);
        assert_eq!((s.block_erase_secs, s.crypto_erase_secs), (None, Some(30)));
        assert!(!s.succeeded());
        for (sstat, state, ok) in [
            (0x0000, SanitizeState::Never, false),
            (0x0101, SanitizeState::Completed, true),
            (0x0003, SanitizeState::Failed, false),
            (0x0004, SanitizeState::CompletedNoDeallocate, true),
            (0x0007, SanitizeState::Reserved(7), false),
        ] {
            b[2..4].copy_from_slice(&u16::to_le_bytes(sstat));
            let s = parse_sanitize_status(&b).unwrap();
            assert_eq!((s.state, s.succeeded()), (state, ok), "{sstat:#x}");
            assert_eq!(s.global_data_erased, sstat & 0x100 != 0);
        }
    }

    #[test]
    fn command_dwords() {
        assert_eq!(sanitize_cdw10(SanitizeAction::BlockErase), 0b1010);
        assert_eq!(sanitize_cdw10(SanitizeAction::CryptoErase), 0b1100);
        assert_eq!(sanitize_cdw10(SanitizeAction::ExitFailureMode), 0b1001);
        assert_eq!(get_log_cdw10(0x81, 20), 0x81 | (4 << 16));
        assert_eq!(get_log_cdw10(0x81, 512), 0x81 | (127 << 16));
        assert_eq!(get_log_cdw10(0x81, 0), 0x81);
    }

    #[test]
    fn statuses() {
        assert!(Status(0x0001).unsupported());
        assert!(Status(0x0002).unsupported());
        assert!(Status(0x4002).unsupported(), "DNR set");
        assert!(Status(0x010a).unsupported());
        assert!(!Status(0x001d).unsupported());
        assert!(Status(0x001d).describe().contains("sanitize in progress"));
        assert!(Status(0x0777).describe().contains("SCT 0x7"));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = parse_controller(&bytes);
            let _ = parse_namespace(&bytes);
            let _ = parse_namespace_list(&bytes);
            let _ = parse_sanitize_status(&bytes);
        }

        #[test]
        fn random_namespaces_parse_or_refuse(nlbaf in any::<u8>(), flbas in any::<u8>(), dps in any::<u8>()) {
            let mut b = vec![0x5au8; IDENTIFY_LEN];
            b[25] = nlbaf;
            b[26] = flbas;
            b[29] = dps;
            if let Ok(ns) = parse_namespace(&b) {
                prop_assert!(u16::from(ns.lba_format) <= u16::from(nlbaf));
                let cdw10 = format_cdw10(&ns, SecureErase::Crypto);
                prop_assert_eq!((cdw10 >> 9) & 7, 2);
                prop_assert_eq!((cdw10 & 0xf) | (((cdw10 >> 12) & 3) << 4), u32::from(ns.lba_format));
            }
        }
    }
}
