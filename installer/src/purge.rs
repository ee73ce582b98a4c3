//! Device-level purge on a live disk (thin I/O): gathers the identify-derived facts the
//! planner needs ([`probe`]) and runs one purge method ([`run`]): NVMe Sanitize and Format
//! NVM through `NVME_IOCTL_ADMIN_CMD`, ATA SECURITY ERASE UNIT through `SG_IO`. Parsing is
//! in [`crate::nvme`] and [`crate::ata`], decisions in [`crate::wipe::plan_disk`]; this
//! module only sends commands, waits (bounded) and reports.
//!
//! ATA secure erase is the dangerous one: it sets a temporary user password
//! ([`ata::TEMP_PASSWORD`]), and a drive left with a password set locks itself at the next
//! power cycle. Every failure after the password was set runs the cleanup (unlock if
//! locked, disable the password, check with IDENTIFY); a cleanup that fails is reported as
//! `ata_password_cleanup_failed` with the password in the message and stops the wipe.
//! QEMU's IDE/AHCI emulation has no security feature set, so this path is exercised only by
//! its pure parts' tests.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::ata::{self, AtaOutcome, Direction, EraseMode};
use crate::nvme::{self, SanitizeAction, SecureErase};
use crate::sys::{self, NvmePassthru, SgData};
use crate::wipe::{AtaFacts, DiskFacts, Method, NvmeFacts, PurgeFacts};

/// Admin timeout for identify and log pages.
const ADMIN_TIMEOUT_MS: u32 = 30_000;
/// Format NVM waits for the command; a crypto or user-data erase of even a large drive ends
/// well within this.
const FORMAT_TIMEOUT_MS: u32 = 2 * 3600 * 1000;
/// Sanitize polling interval.
const SANITIZE_POLL: Duration = Duration::from_secs(1);
/// Bounds of the sanitize wait: the device's estimate times three plus two minutes,
/// clamped to these; without an estimate, the maximum.
const SANITIZE_MIN_WAIT: Duration = Duration::from_secs(120);
const SANITIZE_MAX_WAIT: Duration = Duration::from_secs(6 * 3600);
/// Timeout of the non-data and password ATA commands.
const ATA_SHORT_TIMEOUT_MS: u32 = 30_000;
/// SECURITY ERASE UNIT timeout when the drive reports no estimate, and the cap otherwise.
const ATA_ERASE_MAX_MS: u32 = 24 * 3600 * 1000;

/// Why a purge did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PurgeError {
    /// Stable reason code.
    pub(crate) code: &'static str,
    /// Detail.
    pub(crate) message: String,
    /// The disk is in a state where the next method may be tried (nothing was started,
    /// or what was started has been undone).
    pub(crate) fallback_ok: bool,
}

fn soft(code: &'static str, message: String) -> PurgeError {
    PurgeError {
        code,
        message,
        fallback_ok: true,
    }
}

fn hard(code: &'static str, message: String) -> PurgeError {
    PurgeError {
        code,
        message,
        fallback_ok: false,
    }
}

/// Learns what purge methods the opened disk `file` offers. Never writes: NVMe Identify
/// and ATA IDENTIFY DEVICE only, and the latter only on a directly attached SATA disk.
/// Failures become `notes` (a disk whose probe failed is planned without purge).
pub(crate) fn probe(file: &File, facts: &DiskFacts, sysfs: &Path) -> PurgeFacts {
    let mut out = PurgeFacts::default();
    let transport = facts.transport.as_deref().unwrap_or("");
    if facts.name.starts_with("nvme") || transport.eq_ignore_ascii_case("nvme") {
        match probe_nvme(file, &facts.name, sysfs) {
            Ok(n) => out.nvme = Some(n),
            Err(e) => out.notes.push(format!("nvme_probe_failed: {e}")),
        }
    } else if facts.name.starts_with("sd") {
        let dev = sysfs.join("block").join(&facts.name).join("device");
        let path = std::fs::canonicalize(&dev)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let direct = ata::direct_path(&path);
        if !direct {
            out.notes.push(format!("ata_not_direct: {path}"));
        } else {
            match ata_identify(file) {
                Ok(security) => out.ata = Some(AtaFacts { security, direct }),
                Err(e) => out.notes.push(format!("ata_probe_failed: {}", e.message)),
            }
        }
    }
    out
}

fn admin(file: &File, cmd: &mut NvmePassthru, data: Option<&mut [u8]>) -> Result<(), String> {
    match sys::nvme_admin(file, cmd, data) {
        Ok(0) => Ok(()),
        Ok(st) => Err(nvme::Status(st).describe()),
        Err(e) => Err(format!("admin command {:#04x}: {e}", cmd.opcode)),
    }
}

fn identify(file: &File, nsid: u32, cns: u32) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; nvme::IDENTIFY_LEN];
    let mut cmd = NvmePassthru {
        opcode: nvme::OPC_IDENTIFY,
        nsid,
        cdw10: cns,
        timeout_ms: ADMIN_TIMEOUT_MS,
        ..NvmePassthru::default()
    };
    admin(file, &mut cmd, Some(&mut buf))?;
    Ok(buf)
}

/// The transports of the NVMe controllers behind namespace `name`: its own controller
/// (`device/transport`), or every controller of its subsystem when the namespace is a
/// multipath head whose `device` is the subsystem.
fn nvme_transports(sysfs: &Path, name: &str) -> Vec<String> {
    let dev = sysfs.join("block").join(name).join("device");
    let read = |p: &Path| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    if let Some(t) = read(&dev.join("transport")) {
        return vec![t];
    }
    let Ok(entries) = std::fs::read_dir(&dev) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .take(256)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.strip_prefix("nvme")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| read(&e.path().join("transport")))
        .collect();
    out.sort();
    out
}

fn probe_nvme(file: &File, name: &str, sysfs: &Path) -> Result<NvmeFacts, String> {
    let nsid = sys::nvme_namespace_id(file).map_err(|e| format!("NVME_IOCTL_ID: {e}"))?;
    let controller = nvme::parse_controller(&identify(file, 0, nvme::CNS_CONTROLLER)?)
        .map_err(|e| e.to_string())?;
    let format = identify(file, nsid, nvme::CNS_NAMESPACE)
        .and_then(|b| nvme::parse_namespace(&b).map_err(|e| e.to_string()));
    let active = identify(file, 0, nvme::CNS_ACTIVE_NAMESPACES)
        .and_then(|b| nvme::parse_namespace_list(&b).map_err(|e| e.to_string()));
    let mut notes = Vec::new();
    if let Err(e) = &format {
        notes.push(format!("identify namespace: {e}"));
    }
    if let Err(e) = &active {
        notes.push(format!("active namespace list: {e}"));
    }
    Ok(NvmeFacts {
        controller,
        nsid,
        format: format.ok(),
        active_namespaces: active.ok(),
        transports: nvme_transports(sysfs, name),
        notes,
    })
}

/// Runs purge `method` on the opened disk. `progress(done, total)` reports in units of
/// 1/65536 while a sanitize runs.
pub(crate) fn run(
    file: &File,
    method: Method,
    facts: &DiskFacts,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), PurgeError> {
    let nvme_facts = || {
        facts
            .purge
            .as_ref()
            .and_then(|p| p.nvme.as_ref())
            .ok_or_else(|| soft("purge_not_planned", "no NVMe facts".to_owned()))
    };
    match method {
        Method::NvmeSanitizeCrypto => sanitize(file, SanitizeAction::CryptoErase, progress),
        Method::NvmeSanitizeBlock => sanitize(file, SanitizeAction::BlockErase, progress),
        Method::NvmeFormatCrypto => format(file, nvme_facts()?, SecureErase::Crypto),
        Method::NvmeFormatUserData => format(file, nvme_facts()?, SecureErase::UserData),
        Method::AtaSecureEraseEnhanced => ata_erase(file, EraseMode::Enhanced),
        Method::AtaSecureErase => ata_erase(file, EraseMode::Normal),
        Method::Blkzeroout | Method::Blkdiscard | Method::Overwrite => Err(soft(
            "purge_not_planned",
            format!("{} is not a purge method", method.as_str()),
        )),
    }
}

fn format(file: &File, n: &NvmeFacts, ses: SecureErase) -> Result<(), PurgeError> {
    let f = n.format.as_ref().ok_or_else(|| {
        soft(
            "nvme_format_unknown",
            "the namespace's current format is unknown".to_owned(),
        )
    })?;
    let mut cmd = NvmePassthru {
        opcode: nvme::OPC_FORMAT_NVM,
        nsid: n.nsid,
        cdw10: nvme::format_cdw10(f, ses),
        timeout_ms: FORMAT_TIMEOUT_MS,
        ..NvmePassthru::default()
    };
    match sys::nvme_admin(file, &mut cmd, None) {
        Ok(0) => Ok(()),
        Ok(st) if nvme::Status(st).unsupported() => {
            Err(soft("nvme_format_unsupported", nvme::Status(st).describe()))
        }
        // A format that failed midway leaves the namespace's data undefined but usable:
        // the zero-out methods that follow make it readable as zeros.
        Ok(st) => Err(soft("nvme_format_failed", nvme::Status(st).describe())),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTTY) => {
            Err(soft("nvme_format_unsupported", e.to_string()))
        }
        Err(e) => Err(soft("nvme_format_failed", e.to_string())),
    }
}

fn sanitize_status(file: &File) -> Result<nvme::SanitizeStatus, String> {
    let mut buf = vec![0u8; nvme::SANITIZE_LOG_LEN];
    let mut cmd = NvmePassthru {
        opcode: nvme::OPC_GET_LOG_PAGE,
        nsid: 0xffff_ffff,
        cdw10: nvme::get_log_cdw10(nvme::LOG_SANITIZE_STATUS, nvme::SANITIZE_LOG_LEN),
        timeout_ms: ADMIN_TIMEOUT_MS,
        ..NvmePassthru::default()
    };
    admin(file, &mut cmd, Some(&mut buf))?;
    nvme::parse_sanitize_status(&buf).map_err(|e| e.to_string())
}

fn send_sanitize(file: &File, action: SanitizeAction) -> Result<(), nvme::Status> {
    let mut cmd = NvmePassthru {
        opcode: nvme::OPC_SANITIZE,
        nsid: 0,
        cdw10: nvme::sanitize_cdw10(action),
        timeout_ms: ADMIN_TIMEOUT_MS,
        ..NvmePassthru::default()
    };
    match sys::nvme_admin(file, &mut cmd, None) {
        Ok(0) => Ok(()),
        Ok(st) => Err(nvme::Status(st)),
        Err(_) => Err(nvme::Status(0x0006)),
    }
}

fn sanitize(
    file: &File,
    action: SanitizeAction,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), PurgeError> {
    let sanact = nvme::sanitize_cdw10(action) & 0x7;
    if let Err(st) = send_sanitize(file, action) {
        let code = if st.unsupported() {
            "nvme_sanitize_unsupported"
        } else {
            "nvme_sanitize_failed"
        };
        return Err(soft(code, st.describe()));
    }
    let started = Instant::now();
    let mut limit = SANITIZE_MAX_WAIT;
    let mut estimated = false;
    // Bounded: at most SANITIZE_MAX_WAIT / SANITIZE_POLL iterations plus the final one.
    loop {
        let status = sanitize_status(file)
            .map_err(|e| hard("nvme_sanitize_status", format!("sanitize status log: {e}")))?;
        if !estimated {
            estimated = true;
            let est = match action {
                SanitizeAction::CryptoErase => status.crypto_erase_secs,
                _ => status.block_erase_secs,
            };
            if let Some(s) = est {
                limit = (Duration::from_secs(u64::from(s)) * 3 + SANITIZE_MIN_WAIT)
                    .clamp(SANITIZE_MIN_WAIT, SANITIZE_MAX_WAIT);
            }
        }
        match status.state {
            nvme::SanitizeState::InProgress => {
                progress(u64::from(status.progress), 65_536);
            }
            _ if status.succeeded() && status.cdw10 & 0x7 == sanact => return Ok(()),
            _ if status.succeeded() => {
                return Err(hard(
                    "nvme_sanitize_unconfirmed",
                    format!(
                        "the status log reports a sanitize with CDW10 {:#x}, not ours",
                        status.cdw10
                    ),
                ));
            }
            nvme::SanitizeState::Failed => {
                // AUSE was set: leave the failure state so zero-out can follow.
                return match send_sanitize(file, SanitizeAction::ExitFailureMode) {
                    Ok(()) => Err(soft(
                        "nvme_sanitize_failed",
                        "the sanitize operation failed".to_owned(),
                    )),
                    Err(st) => Err(hard(
                        "nvme_sanitize_failed",
                        format!(
                            "the sanitize operation failed and exiting failure mode failed: {}",
                            st.describe()
                        ),
                    )),
                };
            }
            other => {
                return Err(hard(
                    "nvme_sanitize_unconfirmed",
                    format!("sanitize state {other:?} after the command was accepted"),
                ));
            }
        }
        if started.elapsed() >= limit {
            return Err(hard(
                "nvme_sanitize_timeout",
                format!("still in progress after {} s", limit.as_secs()),
            ));
        }
        std::thread::sleep(SANITIZE_POLL);
    }
}

/// One ATA command; `Err` carries what went wrong.
fn ata_cmd(
    file: &File,
    command: u8,
    data: SgData<'_>,
    timeout_ms: u32,
) -> Result<(), (AtaOutcome, String)> {
    let dir = match &data {
        SgData::None => Direction::None,
        SgData::FromDevice(_) => Direction::In,
        SgData::ToDevice(_) => Direction::Out,
    };
    let cdb = ata::ata16_cdb(command, 0, dir);
    match sys::sg_io(file, &cdb, data, timeout_ms) {
        Err(e) => {
            let m = format!("SG_IO for ATA command {command:#04x}: {e}");
            Err((AtaOutcome::Failed(m.clone()), m))
        }
        Ok(r) => match ata::classify(r.status, r.host_status, r.driver_status, &r.sense) {
            AtaOutcome::Ok => Ok(()),
            other => {
                let m = format!("ATA command {command:#04x}: {other:?}");
                Err((other, m))
            }
        },
    }
}

fn ata_identify(file: &File) -> Result<ata::AtaSecurity, PurgeError> {
    let mut buf = vec![0u8; ata::SECTOR];
    ata_cmd(
        file,
        ata::CMD_IDENTIFY,
        SgData::FromDevice(&mut buf),
        ATA_SHORT_TIMEOUT_MS,
    )
    .map_err(|(_, m)| soft("ata_identify_failed", m))?;
    ata::parse_identify(&buf).map_err(|e| soft(e.code(), e.to_string()))
}

fn ata_erase(file: &File, mode: EraseMode) -> Result<(), PurgeError> {
    // Re-read the state right before acting: the plan's facts may be minutes old.
    let before = ata_identify(file)?;
    if let Some(code) = before.erase_refusal() {
        return Err(soft(code, format!("security state now: {before:?}")));
    }
    if mode == EraseMode::Enhanced && !before.enhanced_supported {
        return Err(soft(
            "ata_enhanced_unsupported",
            "enhanced erase not supported".to_owned(),
        ));
    }
    let set = ata::password_block(ata::TEMP_PASSWORD, None);
    match ata_cmd(
        file,
        ata::CMD_SECURITY_SET_PASSWORD,
        SgData::ToDevice(&set),
        ATA_SHORT_TIMEOUT_MS,
    ) {
        Ok(()) => {}
        // Aborted: the password was not set; nothing to undo.
        Err((AtaOutcome::Aborted { .. }, m)) => return Err(soft("ata_set_password_refused", m)),
        Err((_, m)) => return Err(with_cleanup(file, "ata_set_password_failed", m)),
    }
    match ata_erase_with_password(file, mode, &before) {
        Ok(()) => {
            // A completed erase disables security; check, and clean up if it did not.
            match ata_identify(file) {
                Ok(after) if !after.enabled && !after.locked => Ok(()),
                Ok(_) => Err(with_cleanup(
                    file,
                    "ata_erase_left_password",
                    "the erase completed but security is still enabled".to_owned(),
                )),
                Err(e) => Err(with_cleanup(file, "ata_identify_failed", e.message)),
            }
        }
        Err((code, m)) => Err(with_cleanup(file, code, m)),
    }
}

fn ata_erase_with_password(
    file: &File,
    mode: EraseMode,
    before: &ata::AtaSecurity,
) -> Result<(), (&'static str, String)> {
    let now = ata_identify(file).map_err(|e| ("ata_identify_failed", e.message))?;
    if !now.enabled || now.locked {
        return Err((
            "ata_set_password_ineffective",
            format!("after SECURITY SET PASSWORD: {now:?}"),
        ));
    }
    ata_cmd(
        file,
        ata::CMD_SECURITY_ERASE_PREPARE,
        SgData::None,
        ATA_SHORT_TIMEOUT_MS,
    )
    .map_err(|(_, m)| ("ata_erase_prepare_failed", m))?;
    let minutes = match mode {
        EraseMode::Enhanced => before.enhanced_erase_minutes,
        EraseMode::Normal => before.erase_minutes,
    };
    let timeout = minutes.map_or(ATA_ERASE_MAX_MS, |m| {
        // Twice the estimate plus ten minutes, capped.
        m.saturating_mul(2)
            .saturating_add(10)
            .saturating_mul(60_000)
            .min(ATA_ERASE_MAX_MS)
    });
    let erase = ata::password_block(ata::TEMP_PASSWORD, Some(mode));
    ata_cmd(
        file,
        ata::CMD_SECURITY_ERASE_UNIT,
        SgData::ToDevice(&erase),
        timeout,
    )
    .map_err(|(_, m)| ("ata_erase_failed", m))
}

/// Removes the temporary password after a failure; the result is the error to report.
fn with_cleanup(file: &File, code: &'static str, message: String) -> PurgeError {
    match ata_cleanup(file) {
        Ok(()) => soft(code, format!("{message} (temporary password removed)")),
        Err(e) => hard(
            "ata_password_cleanup_failed",
            format!(
                "{code}: {message}; removing the temporary user password failed: {e}. The \
                 drive may lock at its next power cycle; unlock it with the user password {:?}",
                String::from_utf8_lossy(ata::TEMP_PASSWORD)
            ),
        ),
    }
}

fn ata_cleanup(file: &File) -> Result<(), String> {
    let block = ata::password_block(ata::TEMP_PASSWORD, None);
    let state = ata_identify(file).map_err(|e| e.message)?;
    if !state.enabled && !state.locked {
        return Ok(());
    }
    if state.locked {
        ata_cmd(
            file,
            ata::CMD_SECURITY_UNLOCK,
            SgData::ToDevice(&block),
            ATA_SHORT_TIMEOUT_MS,
        )
        .map_err(|(_, m)| m)?;
    }
    ata_cmd(
        file,
        ata::CMD_SECURITY_DISABLE_PASSWORD,
        SgData::ToDevice(&block),
        ATA_SHORT_TIMEOUT_MS,
    )
    .map_err(|(_, m)| m)?;
    let after = ata_identify(file).map_err(|e| e.message)?;
    if after.enabled || after.locked {
        return Err(format!("security still enabled after disable: {after:?}"));
    }
    Ok(())
}
