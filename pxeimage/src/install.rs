//! Carrying out an `install` order: fetch a signed snapshot from the appliance and write it to
//! the machine's disk with the [`installer`] crate.
//!
//! ```text
//!  order install {snapshot, url}
//!    │  snapshot_url: url must be /assets/snapshots/NAME/ (relative to the base URL)
//!    ▼
//!  GET manifest.sig (≤ 1 KiB), GET manifest.bin (≤ MAX_MANIFEST_LEN)
//!    │  verify the Ed25519 signature against the keys baked into the initramfs
//!    │  (/etc/rackhand/snapshot-keys/*.pub) BEFORE parsing; no trusted key, no install
//!    ▼
//!  Manifest::parse → select(recon report, DiskRule, image size) → preflight (Overwrite)
//!    ▼
//!  write_image: GET data.zst with `Range: bytes=<resume offset>-`, a few attempts
//!    ▼
//!  finish (read-back, first MiB last) → ResultReport success → reboot
//! ```
//!
//! Any failure becomes a [`InstallError`] whose [`code`](InstallError::code) is the reason code
//! of the layer that refused (`bad_signature`, `no_disk_fits`, `chunk_digest_mismatch`, ...),
//! reported as `outcome: failure`. The appliance keeps the machine in `installing`, so the next
//! poll hands out the order again and the agent starts over from scratch (a fresh writer
//! zeroes the disk's ends again before its first write; nothing is trusted from the failed
//! attempt). A refusal before the first image byte (signature, length, a bad first chunk)
//! leaves the disk unchanged.
//!
//! Every chunk is checked against the signed manifest's per-chunk digests as it streams; the
//! whole-image digest is not recomputed (see [`installer::WriteOptions::image_digest`]), and
//! the result report says so (`image_digest_computed`).
//!
//! The decisions ([`snapshot_url`], [`parse_keys`], [`verify_manifest`], [`check_range`],
//! [`InstallError::code`]) are pure; [`load_keys`], [`HttpSnapshot`] and [`install`] do I/O.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use installer::preflight::{self, ExistingPartitions, PreflightError, SystemPaths};
use installer::{DiskRule, ImageWriter, Phase, Progress, SelectError, WriteError, WriteOptions};
use pxe_api::HardwareReport;
use pxe_api::agent::{Outcome, ProgressReport, ResultReport};
use snapshot_tool::format::{
    DATA_FILE, FormatError, MANIFEST_FILE, MAX_MANIFEST_LEN, MAX_SIGNATURE_FILE_LEN, Manifest,
    PublicKey, SIGNATURE_FILE, SignatureError, SignatureFile, verify_signature_any,
};

use crate::cmdline::{BaseUrl, Token};

/// Where the initramfs holds the trusted snapshot public keys (`*.pub`, snapshot-tool's
/// one-line key format). `cargo xtask initramfs` copies them from its keys directory.
pub const KEYS_DIR: &str = "/etc/rackhand/snapshot-keys";

/// Most key files read from [`KEYS_DIR`] (a deployment has one or a few).
pub const MAX_KEY_FILES: usize = 64;

/// Data attempts per install: the first request plus resumes after cut connections.
pub const DATA_ATTEMPTS: u32 = 5;

/// The path prefix every snapshot URL must have.
pub const SNAPSHOT_PREFIX: &str = "/assets/snapshots/";

/// Longest snapshot name (the same limit as `snapshot-tool build`).
const MAX_NAME_LEN: usize = 64;

/// Why an install failed. [`InstallError::code`] is the reason code reported to the appliance.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The initramfs holds no trusted key: nothing can be verified, so nothing is installed.
    #[error("no trusted snapshot keys in {dir}")]
    NoTrustedKeys {
        /// The keys directory.
        dir: PathBuf,
    },
    /// The keys directory or a key file could not be read.
    #[error("cannot read {path}")]
    KeysUnreadable {
        /// What could not be read.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A key file in the keys directory is malformed (a broken trust anchor is not skipped).
    #[error("trusted key file {path} is malformed")]
    BadTrustedKey {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: SignatureError,
    },
    /// The order's snapshot name or URL is not a snapshot directory on the appliance.
    #[error("snapshot url {url:?} refused: {what}")]
    BadSnapshotUrl {
        /// The URL from the order.
        url: String,
        /// What is wrong.
        what: &'static str,
    },
    /// The request failed before a status arrived (connect, timeout, protocol).
    #[error("GET {url} failed: {detail}")]
    Fetch {
        /// The URL.
        url: String,
        /// What happened.
        detail: String,
    },
    /// The appliance answered with an unexpected status.
    #[error("GET {url}: HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// A manifest or signature body larger than its cap.
    #[error("GET {url}: body larger than {cap} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        cap: usize,
    },
    /// A resumed request was not answered with the requested range.
    #[error("GET {url} from offset {offset}: {what}")]
    RangeRefused {
        /// The URL.
        url: String,
        /// Requested start.
        offset: u64,
        /// What the reply did instead.
        what: String,
    },
    /// The signature does not verify against any trusted key (or there is none).
    #[error("snapshot signature refused")]
    Signature(#[source] SignatureError),
    /// The signed manifest does not parse.
    #[error("snapshot manifest refused")]
    Manifest(#[source] FormatError),
    /// No disk could be chosen.
    #[error("no install disk")]
    Select(#[source] SelectError),
    /// The chosen disk failed the live checks.
    #[error("install disk refused by preflight")]
    Preflight(#[source] PreflightError),
    /// Writing failed.
    #[error("writing the image failed")]
    Write(#[source] WriteError),
    /// `data.zst` on the appliance is not as long as the signed manifest says (truncated,
    /// padded, or a manifest claiming chunks the file does not hold): refused before the disk
    /// is touched.
    #[error("GET {url}: {actual} bytes, the signed manifest says {expected}")]
    DataLengthMismatch {
        /// The data URL.
        url: String,
        /// What the manifest says.
        expected: u64,
        /// What the appliance serves.
        actual: u64,
    },
    /// Re-asked right before the first write, the appliance no longer stands by the order:
    /// nothing was written.
    #[error("order withdrawn before the first write: {why}")]
    OrderWithdrawn {
        /// What the appliance answered.
        why: String,
    },
}

impl InstallError {
    /// The stable reason code: the refusing layer's own code where it has one.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoTrustedKeys { .. } => "no_trusted_keys",
            Self::KeysUnreadable { .. } => "trusted_keys_unreadable",
            Self::BadTrustedKey { .. } => "bad_trusted_key",
            Self::BadSnapshotUrl { .. } => "bad_snapshot_url",
            Self::Fetch { .. } => "fetch_failed",
            Self::HttpStatus { status: 404, .. } => "snapshot_not_found",
            Self::HttpStatus { .. } => "http_status",
            Self::TooLarge { .. } => "response_too_large",
            Self::RangeRefused { .. } => "range_not_honoured",
            Self::DataLengthMismatch { .. } => "data_length_mismatch",
            Self::Signature(e) => e.code(),
            Self::Manifest(e) => e.code(),
            Self::Select(e) => e.code(),
            Self::Preflight(e) => e.code(),
            Self::Write(e) => e.code(),
            Self::OrderWithdrawn { .. } => crate::agent::ORDER_WITHDRAWN,
        }
    }

    /// The message with its cause chain, for the result report and the console.
    pub fn describe(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

/// Checks the order's snapshot name and URL and returns the absolute URL of `file` in the
/// snapshot directory. The URL must be exactly `/assets/snapshots/<snapshot>/`: the order
/// names one snapshot and the agent fetches nothing else from anywhere else.
pub fn snapshot_url(
    base: &BaseUrl,
    snapshot: &str,
    url: &str,
    file: &str,
) -> Result<String, InstallError> {
    let bad = |what| InstallError::BadSnapshotUrl {
        url: url.chars().take(200).collect(),
        what,
    };
    if !valid_name(snapshot) {
        return Err(bad("the snapshot name is not 1-64 of A-Z a-z 0-9 . _ -"));
    }
    let name = url
        .strip_prefix(SNAPSHOT_PREFIX)
        .ok_or_else(|| bad("not under /assets/snapshots/"))?
        .strip_suffix('/')
        .ok_or_else(|| bad("does not end with /"))?;
    if name != snapshot {
        return Err(bad("names another snapshot than the order"));
    }
    Ok(base.join(&format!("{url}{file}")))
}

/// A snapshot name as `snapshot-tool build` accepts it.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses the trusted key files (`(file name, contents)`). Every file must parse: a corrupt
/// trust anchor is an error, not something to skip. Empty input is [`InstallError::NoTrustedKeys`].
pub fn parse_keys(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<Vec<PublicKey>, InstallError> {
    if files.is_empty() {
        return Err(InstallError::NoTrustedKeys {
            dir: dir.to_owned(),
        });
    }
    files
        .iter()
        .map(|(name, bytes)| {
            PublicKey::parse(bytes).map_err(|source| InstallError::BadTrustedKey {
                path: dir.join(name),
                source,
            })
        })
        .collect()
}

/// Reads `dir/*.pub` (sorted, at most [`MAX_KEY_FILES`], each at most
/// [`MAX_SIGNATURE_FILE_LEN`] bytes) and parses them with [`parse_keys`].
pub fn load_keys(dir: &Path) -> Result<Vec<PublicKey>, InstallError> {
    let unreadable = |path: &Path, source| InstallError::KeysUnreadable {
        path: path.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(InstallError::NoTrustedKeys {
                dir: dir.to_owned(),
            });
        }
        Err(e) => return Err(unreadable(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries.take(MAX_KEY_FILES * 4) {
        let entry = entry.map_err(|e| unreadable(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".pub") && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    names.truncate(MAX_KEY_FILES);
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let file = std::fs::File::open(&path).map_err(|e| unreadable(&path, e))?;
        let bytes = snapshot_tool::format::read_capped(file, MAX_SIGNATURE_FILE_LEN)
            .map_err(|e| unreadable(&path, e))?;
        files.push((name, bytes));
    }
    parse_keys(dir, &files)
}

/// Verifies `manifest.sig` over the exact bytes of `manifest.bin` with the trusted keys, and
/// only then parses the manifest.
pub fn verify_manifest(
    sig_bytes: &[u8],
    manifest_bytes: &[u8],
    keys: &[PublicKey],
) -> Result<Manifest, InstallError> {
    if sig_bytes.is_empty() {
        return Err(InstallError::Signature(SignatureError::Unsigned));
    }
    let sig = SignatureFile::parse(sig_bytes).map_err(InstallError::Signature)?;
    verify_signature_any(manifest_bytes, &sig, keys).map_err(InstallError::Signature)?;
    Manifest::parse(manifest_bytes).map_err(InstallError::Manifest)
}

/// Checks the reply to a data request from `offset`: `200` is only right from offset 0; a
/// resume needs `206` with a `Content-Range` starting at `offset`.
pub fn check_range(status: u16, content_range: Option<&str>, offset: u64) -> Result<(), String> {
    match (status, offset) {
        (200, 0) => Ok(()),
        (200, _) => Err("the server ignored the Range header (HTTP 200)".to_owned()),
        (206, _) => {
            let start = content_range
                .and_then(|v| v.trim().strip_prefix("bytes "))
                .and_then(|v| v.split_once('-'))
                .and_then(|(a, _)| a.trim().parse::<u64>().ok());
            match start {
                Some(s) if s == offset => Ok(()),
                Some(s) => Err(format!("the server sent a range starting at {s}")),
                None => Err("HTTP 206 without a usable Content-Range".to_owned()),
            }
        }
        (s, _) => Err(format!("HTTP {s}")),
    }
}

/// The install's progress for the appliance: stage names and percentages.
pub fn progress_report(
    stage: &str,
    percent: Option<u8>,
    message: Option<String>,
) -> ProgressReport {
    ProgressReport {
        order: "install".to_owned(),
        stage: stage.to_owned(),
        percent,
        message,
        bytes_done: None,
        bytes_total: None,
    }
}

/// Percent of the image written, 0–100.
pub fn percent_done(p: &Progress) -> u8 {
    if p.image_size == 0 {
        return 100;
    }
    let pct = u128::from(p.image_bytes_done) * 100 / u128::from(p.image_size);
    u8::try_from(pct.min(100)).unwrap_or(100)
}

/// Where the image goes.
#[derive(Debug)]
pub enum Target<'a> {
    /// A disk chosen from the recon report with a rule, checked on the live system.
    Disk {
        /// The machine's hardware report.
        hardware: &'a HardwareReport,
        /// How to choose.
        rule: DiskRule,
        /// Where sysfs, procfs and /dev are.
        paths: SystemPaths,
    },
    /// An existing regular file standing in for a disk (tests, image production).
    File(PathBuf),
}

/// A snapshot directory on the appliance, fetched with blocking `ureq`.
#[derive(Debug)]
pub struct HttpSnapshot {
    agent: ureq::Agent,
    base: BaseUrl,
    auth: Option<String>,
}

/// Connect timeout for snapshot requests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a status line.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence while reading a body: a stalled transfer becomes a resumable read error.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpSnapshot {
    /// A fetcher for snapshots under `base`; `token` (the boot's bearer token) is sent along.
    pub fn new(base: BaseUrl, token: Option<&Token>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .user_agent(concat!("rackhand-pxeimage/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            base,
            auth: token.map(|t| format!("Bearer {}", t.expose())),
        }
    }

    fn get(
        &self,
        url: &str,
        range_from: Option<u64>,
    ) -> Result<ureq::http::Response<ureq::Body>, InstallError> {
        let mut req = self.agent.get(url);
        if let Some(auth) = &self.auth {
            req = req.header("Authorization", auth);
        }
        if let Some(offset) = range_from {
            req = req.header("Range", &format!("bytes={offset}-"));
        }
        req.call().map_err(|e| InstallError::Fetch {
            url: url.to_owned(),
            detail: e.to_string(),
        })
    }

    /// The length the appliance announces for `url` (`HEAD`), if it announces one.
    pub fn content_length(&self, url: &str) -> Result<Option<u64>, InstallError> {
        let mut req = self.agent.head(url);
        if let Some(auth) = &self.auth {
            req = req.header("Authorization", auth);
        }
        let resp = req.call().map_err(|e| InstallError::Fetch {
            url: url.to_owned(),
            detail: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(InstallError::HttpStatus {
                url: url.to_owned(),
                status,
            });
        }
        Ok(resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()))
    }

    /// GETs `url` whole; more than `cap` bytes is an error.
    pub fn fetch_capped(&self, url: &str, cap: usize) -> Result<Vec<u8>, InstallError> {
        let resp = self.get(url, None)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(InstallError::HttpStatus {
                url: url.to_owned(),
                status,
            });
        }
        let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        snapshot_tool::format::read_capped(reader, cap).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                InstallError::TooLarge {
                    url: url.to_owned(),
                    cap,
                }
            } else {
                InstallError::Fetch {
                    url: url.to_owned(),
                    detail: e.to_string(),
                }
            }
        })
    }

    /// Opens `url` from byte `offset` (a `Range` request unless the offset is 0) and returns
    /// the body as a reader. The writer bounds what it reads by the manifest.
    pub fn open_from(&self, url: &str, offset: u64) -> Result<impl Read + use<>, InstallError> {
        let resp = self.get(url, (offset > 0).then_some(offset))?;
        let status = resp.status().as_u16();
        let content_range = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Err(what) = check_range(status, content_range.as_deref(), offset) {
            return Err(if matches!(status, 200 | 206) {
                InstallError::RangeRefused {
                    url: url.to_owned(),
                    offset,
                    what,
                }
            } else {
                InstallError::HttpStatus {
                    url: url.to_owned(),
                    status,
                }
            });
        }
        Ok(resp.into_body().into_with_config().limit(u64::MAX).reader())
    }
}

/// Pause before data attempt `attempt` (2, 3, …): 1 s doubling to 8 s, so the
/// [`DATA_ATTEMPTS`] attempts ride out about 15 s of outage.
pub fn resume_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(2).min(3))
}

/// What a successful install did, for the result report.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Where the image went (`sda`, or the file).
    pub target: String,
    /// The verified write.
    pub report: installer::WriteReport,
}

/// Runs one install (see the module docs). `progress` receives stage changes and, while
/// writing, every 5 % of the image.
pub fn install(
    http: &HttpSnapshot,
    keys: &[PublicKey],
    snapshot: &str,
    url: &str,
    target: Target<'_>,
    progress: &mut dyn FnMut(ProgressReport),
) -> Result<Installed, InstallError> {
    install_confirmed(http, keys, snapshot, url, target, progress, &mut || Ok(()))
}

/// [`install`], asking `confirm` right before the target is opened for writing (the first
/// bytes written, once the first chunk past the held-back MiB verified, are the zeroed
/// ends); on `Err` nothing is written ([`InstallError::OrderWithdrawn`]).
pub fn install_confirmed(
    http: &HttpSnapshot,
    keys: &[PublicKey],
    snapshot: &str,
    url: &str,
    target: Target<'_>,
    progress: &mut dyn FnMut(ProgressReport),
    confirm: &mut crate::agent::Confirm<'_>,
) -> Result<Installed, InstallError> {
    let sig_url = snapshot_url(&http.base, snapshot, url, SIGNATURE_FILE)?;
    let manifest_url = snapshot_url(&http.base, snapshot, url, MANIFEST_FILE)?;
    let data_url = snapshot_url(&http.base, snapshot, url, DATA_FILE)?;
    if keys.is_empty() {
        return Err(InstallError::NoTrustedKeys {
            dir: PathBuf::from(KEYS_DIR),
        });
    }

    progress(progress_report(
        "fetch-manifest",
        None,
        Some(format!("snapshot {snapshot}")),
    ));
    // Both first: a missing directory is `snapshot_not_found`, a missing signature beside a
    // present manifest is `unsigned` (never "install it anyway").
    let sig = http.fetch_capped(&sig_url, MAX_SIGNATURE_FILE_LEN);
    let manifest_bytes = http.fetch_capped(&manifest_url, MAX_MANIFEST_LEN)?;
    let sig_bytes = match sig {
        Err(InstallError::HttpStatus { status: 404, .. }) => {
            return Err(InstallError::Signature(SignatureError::Unsigned));
        }
        other => other?,
    };
    let manifest = verify_manifest(&sig_bytes, &manifest_bytes, keys)?;
    let image_size = manifest.image_size();
    progress(progress_report(
        "verify-signature",
        None,
        Some(format!(
            "manifest signed by a trusted key; image {image_size} bytes, {} chunks, {} digests",
            manifest.chunks().len(),
            manifest.digest_algorithm()
        )),
    ));

    // A truncated or padded data file, or a manifest claiming chunks the file does not hold,
    // is refused here, before any disk is chosen or touched (a server that announces no
    // length leaves it to the streaming checks).
    if let Some(actual) = http.content_length(&data_url)?
        && actual != manifest.data_len()
    {
        return Err(InstallError::DataLengthMismatch {
            url: data_url,
            expected: manifest.data_len(),
            actual,
        });
    }

    confirm().map_err(|why| InstallError::OrderWithdrawn { why })?;
    let (writer, target_name) = match target {
        Target::Disk {
            hardware,
            rule,
            paths,
        } => {
            let disk =
                installer::select(hardware, &rule, image_size).map_err(InstallError::Select)?;
            progress(progress_report(
                "select-disk",
                None,
                Some(format!(
                    "{} ({} bytes, rule {})",
                    disk.name, disk.size_bytes, disk.rule
                )),
            ));
            let checked =
                preflight::check(&disk, &paths, image_size, ExistingPartitions::Overwrite)
                    .map_err(InstallError::Preflight)?;
            let w = ImageWriter::to_disk(checked, &manifest, WriteOptions::default())
                .map_err(InstallError::Write)?;
            (w, disk.name)
        }
        Target::File(path) => {
            let w = ImageWriter::to_file(&path, &manifest, WriteOptions::default())
                .map_err(InstallError::Write)?;
            (w, path.display().to_string())
        }
    };

    let mut open_error: Option<InstallError> = None;
    let mut last_percent: Option<u8> = None;
    let mut last_phase = Phase::Writing;
    let mut on_progress = |p: &Progress| {
        let pct = percent_done(p);
        if p.phase != last_phase {
            last_phase = p.phase;
            let stage = match p.phase {
                Phase::Writing => "write",
                Phase::Verifying => "verify",
                Phase::Finishing => "finish",
            };
            progress(progress_report(stage, Some(pct), None));
        } else if last_percent
            .is_none_or(|l| pct >= l.saturating_add(5) || (pct == 100 && l != 100))
        {
            last_percent = Some(pct);
            progress(ProgressReport {
                bytes_done: Some(p.image_bytes_done),
                bytes_total: Some(p.image_size),
                ..progress_report(
                    "write",
                    Some(pct),
                    Some(format!("{} of {} chunks", p.chunks_done, p.chunk_count)),
                )
            });
        }
    };
    let result = installer::write_image(
        writer,
        DATA_ATTEMPTS,
        |at| {
            if at.attempt > 1 {
                // A restarting appliance or a flapping link: wait a little before resuming,
                // so that a short outage ends in a resume rather than a failed install. (After
                // a refusal by status or range there is nothing to wait for.)
                if open_error.is_none() {
                    std::thread::sleep(resume_delay(at.attempt));
                }
                crate::warn!(
                    "install: resuming {DATA_FILE} at chunk {} (offset {}), attempt {}",
                    at.chunk,
                    at.data_offset,
                    at.attempt
                );
            }
            http.open_from(&data_url, at.data_offset).map_err(|e| {
                let msg = e.describe();
                // A refusal by status or range is kept to report it with its own code.
                if !matches!(e, InstallError::Fetch { .. }) {
                    open_error = Some(e);
                }
                io::Error::other(msg)
            })
        },
        &mut on_progress,
    );
    match result {
        Ok(report) => Ok(Installed {
            target: target_name,
            report,
        }),
        Err(e @ WriteError::SourceOpen { .. }) => Err(open_error.unwrap_or(InstallError::Write(e))),
        Err(e) => Err(InstallError::Write(e)),
    }
}

/// The result report for an install outcome.
pub fn result_report(snapshot: &str, outcome: &Result<Installed, InstallError>) -> ResultReport {
    match outcome {
        Ok(done) => ResultReport {
            order: "install".to_owned(),
            outcome: Outcome::Success,
            code: None,
            message: Some(format!(
                "snapshot {snapshot} written to {} and verified",
                done.target
            )),
            detail: Some(serde_json::json!({
                "snapshot": snapshot,
                "target": done.target,
                "digest_algorithm": done.report.digest_algorithm.name(),
                "image_digest": done.report.image_digest.to_hex(),
                "image_digest_computed": done.report.computed_image_digest.is_some(),
                "image_size": done.report.image_size,
                "chunks": done.report.chunks,
                "attempts": done.report.attempts,
                "readback_chunks": done.report.readback.len(),
                "direct_io": done.report.direct_io,
            })),
        },
        Err(e) => ResultReport {
            order: "install".to_owned(),
            outcome: Outcome::Failure,
            code: Some(e.code().to_owned()),
            message: Some(e.describe()),
            detail: None,
        },
    }
}

/// The agent's real install executor: keys from [`KEYS_DIR`], the live system, HTTP to the
/// appliance.
#[derive(Debug)]
pub struct LiveInstaller {
    http: HttpSnapshot,
    keys_dir: PathBuf,
    paths: SystemPaths,
}

impl LiveInstaller {
    /// An executor fetching from `base` with the boot's token.
    pub fn new(base: BaseUrl, token: &Token) -> Self {
        Self::with_keys_dir(base, token, PathBuf::from(KEYS_DIR))
    }

    /// The same with the trusted keys read from `keys_dir` (the `agent` debug command and
    /// tests).
    pub fn with_keys_dir(base: BaseUrl, token: &Token, keys_dir: PathBuf) -> Self {
        Self {
            http: HttpSnapshot::new(base, Some(token)),
            keys_dir,
            paths: SystemPaths::live(),
        }
    }
}

impl crate::agent::Executor for LiveInstaller {
    fn install(
        &mut self,
        snapshot: &str,
        url: &str,
        hardware: &HardwareReport,
        progress: &mut dyn FnMut(ProgressReport),
        confirm: &mut crate::agent::Confirm<'_>,
    ) -> ResultReport {
        let outcome = load_keys(&self.keys_dir).and_then(|keys| {
            install_confirmed(
                &self.http,
                &keys,
                snapshot,
                url,
                Target::Disk {
                    hardware,
                    rule: DiskRule::default(),
                    paths: self.paths.clone(),
                },
                progress,
                confirm,
            )
        });
        match &outcome {
            Ok(done) => crate::info!(
                "install: {snapshot} written to {} and verified ({} attempts)",
                done.target,
                done.report.attempts
            ),
            Err(e) => crate::error!("install: [{}] {}", e.code(), e.describe()),
        }
        result_report(snapshot, &outcome)
    }
}

/// An executor that refuses installs (`install_disabled`): for the `agent` debug command,
/// which runs on a machine that did not netboot the agent and whose disks are not ours.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disabled;

impl crate::agent::Executor for Disabled {
    fn install(
        &mut self,
        snapshot: &str,
        _url: &str,
        _hardware: &HardwareReport,
        _progress: &mut dyn FnMut(ProgressReport),
        _confirm: &mut crate::agent::Confirm<'_>,
    ) -> ResultReport {
        crate::warn!("install {snapshot}: refused, this agent is not running as PID 1");
        ResultReport {
            order: "install".to_owned(),
            outcome: Outcome::Failure,
            code: Some("install_disabled".to_owned()),
            message: Some(
                "installs are disabled outside the netbooted agent (not PID 1)".to_owned(),
            ),
            detail: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use snapshot_tool::format::{SecretKey, sign_manifest};

    use super::*;

    fn base() -> BaseUrl {
        BaseUrl {
            host: Ipv4Addr::new(10, 0, 0, 1),
            port: 8080,
            prefix: String::new(),
        }
    }

    #[test]
    fn snapshot_urls_are_built_and_confined() {
        assert_eq!(
            snapshot_url(&base(), "test-os", "/assets/snapshots/test-os/", "data.zst").unwrap(),
            "http://10.0.0.1:8080/assets/snapshots/test-os/data.zst"
        );
        let prefixed = BaseUrl {
            prefix: "/rh".into(),
            ..base()
        };
        assert_eq!(
            snapshot_url(&prefixed, "a", "/assets/snapshots/a/", "manifest.sig").unwrap(),
            "http://10.0.0.1:8080/rh/assets/snapshots/a/manifest.sig"
        );
        let bad = [
            ("test-os", "/assets/snapshots/test-os"),
            ("test-os", "/assets/snapshots/other/"),
            ("test-os", "/assets/snapshots/test-os/../x/"),
            ("test-os", "http://evil/assets/snapshots/test-os/"),
            ("test-os", "/assets/kernels/test-os/"),
            ("../x", "/assets/snapshots/../x/"),
            ("a/b", "/assets/snapshots/a/b/"),
            ("", "/assets/snapshots//"),
            (".hidden", "/assets/snapshots/.hidden/"),
            ("a b", "/assets/snapshots/a b/"),
        ];
        for (name, url) in bad {
            let e = snapshot_url(&base(), name, url, "data.zst").unwrap_err();
            assert_eq!(e.code(), "bad_snapshot_url", "{name} {url}");
        }
        let long = "x".repeat(65);
        let e = snapshot_url(&base(), &long, &format!("/assets/snapshots/{long}/"), "m");
        assert_eq!(e.unwrap_err().code(), "bad_snapshot_url");
    }

    #[test]
    fn keys_load_from_a_directory_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load_keys(&dir.path().join("absent")).unwrap_err().code(),
            "no_trusted_keys"
        );
        assert_eq!(load_keys(dir.path()).unwrap_err().code(), "no_trusted_keys");

        let a = SecretKey::from_seed(&[1; 32]).public();
        let b = SecretKey::from_seed(&[2; 32]).public();
        std::fs::write(dir.path().join("b.pub"), b.to_file()).unwrap();
        std::fs::write(dir.path().join("a.pub"), a.to_file()).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        assert_eq!(load_keys(dir.path()).unwrap(), vec![a, b]);

        std::fs::write(dir.path().join("c.pub"), "rackhand-snapshot-pubkey v1 zz\n").unwrap();
        assert_eq!(load_keys(dir.path()).unwrap_err().code(), "bad_trusted_key");
        std::fs::write(dir.path().join("c.pub"), vec![b'a'; 4096]).unwrap();
        assert_eq!(
            load_keys(dir.path()).unwrap_err().code(),
            "trusted_keys_unreadable"
        );
    }

    #[test]
    fn the_signature_is_checked_before_the_manifest_is_parsed() {
        let key = SecretKey::from_seed(&[7; 32]);
        let keys = vec![key.public()];
        // Garbage manifest, validly signed: signature passes, parsing refuses.
        let garbage = b"not a manifest".to_vec();
        let sig = sign_manifest(&garbage, &key).to_file();
        assert_eq!(
            verify_manifest(sig.as_bytes(), &garbage, &keys)
                .unwrap_err()
                .code(),
            "bad_magic"
        );
        // Garbage manifest, signed by an untrusted key: refused before parsing.
        let other = SecretKey::from_seed(&[8; 32]);
        let sig = sign_manifest(&garbage, &other).to_file();
        assert_eq!(
            verify_manifest(sig.as_bytes(), &garbage, &keys)
                .unwrap_err()
                .code(),
            "bad_signature"
        );
        assert_eq!(
            verify_manifest(b"", &garbage, &keys).unwrap_err().code(),
            "unsigned"
        );
        assert_eq!(
            verify_manifest(b"junk", &garbage, &keys)
                .unwrap_err()
                .code(),
            "bad_signature_file"
        );
    }

    #[test]
    fn range_replies_are_checked() {
        assert_eq!(check_range(200, None, 0), Ok(()));
        assert!(check_range(200, None, 10).is_err());
        assert_eq!(check_range(206, Some("bytes 10-99/100"), 10), Ok(()));
        assert!(check_range(206, Some("bytes 0-99/100"), 10).is_err());
        assert!(check_range(206, None, 10).is_err());
        assert!(check_range(206, Some("bytes x-99/100"), 10).is_err());
        assert!(check_range(416, None, 10).is_err());
    }

    #[test]
    fn error_codes_come_from_the_refusing_layer() {
        let url = String::from("u");
        let cases: Vec<(InstallError, &str)> = vec![
            (
                InstallError::HttpStatus {
                    url: url.clone(),
                    status: 404,
                },
                "snapshot_not_found",
            ),
            (
                InstallError::HttpStatus {
                    url: url.clone(),
                    status: 500,
                },
                "http_status",
            ),
            (
                InstallError::Fetch {
                    url: url.clone(),
                    detail: "x".into(),
                },
                "fetch_failed",
            ),
            (
                InstallError::TooLarge {
                    url: url.clone(),
                    cap: 1,
                },
                "response_too_large",
            ),
            (
                InstallError::RangeRefused {
                    url,
                    offset: 1,
                    what: "x".into(),
                },
                "range_not_honoured",
            ),
            (
                InstallError::Signature(SignatureError::Unsigned),
                "unsigned",
            ),
            (
                InstallError::Select(SelectError::NoDiskFits {
                    image_size: 1,
                    rejected: vec![],
                }),
                "no_disk_fits",
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
            let r = result_report("s", &Err(e));
            assert_eq!(r.outcome, Outcome::Failure);
            assert_eq!(r.code.as_deref(), Some(code));
        }
    }

    #[test]
    fn resume_delays_double_to_a_cap() {
        let d: Vec<u64> = (2..=7).map(|a| resume_delay(a).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 8, 8]);
        let total: u64 = (2..=DATA_ATTEMPTS).map(|a| resume_delay(a).as_secs()).sum();
        assert_eq!(total, 15);
    }

    #[test]
    fn percentages_are_bounded() {
        let p = |done, size| Progress {
            phase: Phase::Writing,
            chunks_done: 0,
            chunk_count: 1,
            image_bytes_done: done,
            image_size: size,
            data_offset: 0,
        };
        assert_eq!(percent_done(&p(0, 100)), 0);
        assert_eq!(percent_done(&p(50, 100)), 50);
        assert_eq!(percent_done(&p(200, 100)), 100);
        assert_eq!(percent_done(&p(0, 0)), 100);
        assert_eq!(percent_done(&p(u64::MAX, u64::MAX)), 100);
    }
}
