//! Installs that must not succeed, and installs that are interrupted.
//!
//! - **Tampered snapshots**: one BIOS machine is told to install a snapshot whose files the
//!   test replaces, attempt by attempt, with tampered copies of the signed test OS (a wrong
//!   signature, a flipped byte inside the first stored chunk, a truncated `data.zst`, a
//!   manifest re-signed with the trusted key that claims more chunks than `data.zst` holds).
//!   Every attempt must be refused with its own reason code, visible in the machine's history
//!   and reason through the operator API; the machine is never `in-use`; the disk's first MiB
//!   (pre-filled with a known pattern) is byte-for-byte unchanged after every refusal: each
//!   comes before the installer writes its first byte (the installer clears the disk's ends
//!   only right before the first image byte).
//! - **Interrupted install**: a machine's install is cut twice, both times as soon as the
//!   host sees the disk's pre-filled first MiB turn to zeros (chunk 0 verified, image bytes
//!   being written, most of `data.zst` still to come through a throttled tap): first by
//!   killing QEMU (a power cut), then by stopping the appliance (and aborting
//!   its leftover TCP connections, which would otherwise deliver what the dead process had
//!   queued) and starting it again on the same data directory 8 s later. The disk's first MiB
//!   is checked throughout: it never holds the image's first MiB before the agent has
//!   announced the verified finish. The agent resumes the stream with a `Range` request; the
//!   install completes, the machine is `in-use` and boots the installed test OS.
//!
//! The appliance refuses a second install order while one is pending (`already_in_state`), so
//! the tamper scenario keeps one order (snapshot [`TAMPERED`]) and swaps the files under it.
//! An attempt is attributed to a variant only if its `fetch-manifest` progress event reached
//! the appliance after the swap; its result is the next install result in the history.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pxe_api::MachineState;
use pxe_api::machine::EventView;
use rackhand_tests::appliance::HTTP_PORT;
use rackhand_tests::gate::{self, announce};
use rackhand_tests::proc::poll_until;
use rackhand_tests::{
    Appliance, ApplianceConfig, DiskFormat, Error, Netns, Result, Vm, VmBuilder, WorkDir, paths,
    test_mac,
};
use snapshot_tool::format::{
    ChunkEntry, ChunkKind, ChunkStream, DATA_FILE, Digest, Geometry, MANIFEST_FILE, Manifest,
    PublicKey, SIGNATURE_FILE, SecretKey, SignatureFile, sign_manifest, verify_signature_any,
};

use crate::support::{REGISTER_TIMEOUT, VM_NEEDS};

/// The snapshot `cargo xtask test-os` builds into `target/dist/snapshots/`.
const SNAPSHOT: &str = "test-os";
/// What the installed test OS prints (see `xtask/testos/init.c`).
const MARKER: &str = "RACKHAND-TEST-OS booted";
/// The snapshot name the tamper scenario orders; its files are swapped per variant.
const TAMPERED: &str = "tampered";
/// What the installer holds back and writes last.
const MIB: usize = 1 << 20;
/// Size of the test machines' disks.
const DISK_BYTES: u64 = 1 << 30;
/// What the throttled tap lets through to the VM while `data.zst` streams (kbit/s): the
/// 8 MiB of test-OS data take ~17 s instead of well under one.
const THROTTLE_KBIT: u32 = 4000;
/// Longest wait for one tampered attempt's result (the appliance holds a failed order back
/// for [`RETRY_ARGS`]' backoff before handing it out again).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// A short retry backoff, and enough attempts for every variant before `broken`.
const RETRY_ARGS: [&str; 6] = [
    "--retry-base-secs",
    "2",
    "--retry-cap-secs",
    "4",
    "--retry-max-attempts",
    "20",
];

fn io_err(op: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::IoOther { op, source }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The signed test-OS snapshot as `cargo xtask test-os` and `cargo xtask dist` left it.
struct TestOs {
    manifest_bytes: Vec<u8>,
    sig_bytes: Vec<u8>,
    data: Vec<u8>,
    manifest: Manifest,
}

impl TestOs {
    fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| Error::io("reading", &p, e))
        };
        let manifest_bytes = read(MANIFEST_FILE)?;
        let manifest = Manifest::parse(&manifest_bytes)
            .map_err(|e| Error::Invalid(format!("test-os manifest: {e}")))?;
        Ok(TestOs {
            sig_bytes: read(SIGNATURE_FILE)?,
            data: read(DATA_FILE)?,
            manifest_bytes,
            manifest,
        })
    }

    /// The image's first MiB (decompressed and verified chunk 0): what a disk must never hold
    /// before the install verified.
    fn image_head(&self) -> Result<Vec<u8>> {
        let mut stream = ChunkStream::new(&self.manifest, self.data.as_slice())
            .map_err(|e| Error::Invalid(format!("test-os data: {e}")))?;
        let chunk = stream
            .next_chunk()
            .ok_or_else(|| Error::Invalid("test-os snapshot has no chunk".into()))?
            .map_err(|e| Error::Invalid(format!("test-os chunk 0: {e}")))?;
        let head = chunk.raw.get(..MIB).unwrap_or(chunk.raw).to_vec();
        if head.iter().all(|&b| b == 0) {
            return Err(Error::Invalid(
                "the test-OS image's first MiB is all zeros".into(),
            ));
        }
        Ok(head)
    }

    /// Stored chunk `n` (0-based among the stored ones).
    fn stored_chunk(&self, n: usize) -> Result<ChunkEntry> {
        self.manifest
            .chunks()
            .iter()
            .filter(|c| !c.is_zero())
            .nth(n)
            .copied()
            .ok_or_else(|| Error::Invalid(format!("test-os has no stored chunk #{n}")))
    }
}

/// The key `cargo xtask test-os` signs with, checked to be one the agent trusts (the public
/// keys baked into the initramfs come from `target/dist-keys/` by default) and to verify the
/// dist snapshot.
fn trusted_signing_key(os: &TestOs) -> Result<SecretKey> {
    let key_path = paths::target_dir().join("testos").join("signing.key");
    let bytes = std::fs::read(&key_path).map_err(|e| Error::io("reading", &key_path, e))?;
    let key = SecretKey::parse(&bytes)
        .map_err(|e| Error::Invalid(format!("{}: {e}", key_path.display())))?;
    let keys_dir = paths::target_dir().join("dist-keys");
    let mut trusted: Vec<PublicKey> = Vec::new();
    for entry in std::fs::read_dir(&keys_dir).map_err(|e| Error::io("listing", &keys_dir, e))? {
        let p = entry
            .map_err(|e| Error::io("listing", &keys_dir, e))?
            .path();
        if p.extension().is_some_and(|x| x == "pub") {
            let b = std::fs::read(&p).map_err(|e| Error::io("reading", &p, e))?;
            if let Ok(k) = PublicKey::parse(&b) {
                trusted.push(k);
            }
        }
    }
    if !trusted.contains(&key.public()) {
        return Err(Error::Invalid(format!(
            "{} is not among the trusted keys in {}",
            key_path.display(),
            keys_dir.display()
        )));
    }
    let sig = SignatureFile::parse(&os.sig_bytes)
        .map_err(|e| Error::Invalid(format!("test-os signature: {e}")))?;
    verify_signature_any(&os.manifest_bytes, &sig, &[key.public()])
        .map_err(|e| Error::Invalid(format!("test-os does not verify with the test key: {e}")))?;
    Ok(key)
}

/// One tampered copy of the test OS and the reason code its install must be refused with.
struct Variant {
    what: &'static str,
    code: &'static str,
    /// Text the result's message must contain as well (when the code alone is generic).
    message: Option<&'static str>,
    /// Refused before the installer writes any byte: the first MiB must be untouched.
    before_write: bool,
    manifest: Vec<u8>,
    sig: Vec<u8>,
    data: Vec<u8>,
}

/// The four tampered copies, in the order they are tried. Each is refused before the installer
/// writes a byte, so the first MiB must still hold the pattern after every one.
///
/// The order also keeps an attempt that was already running while the files were swapped from
/// installing the genuine OS: no two neighbours pair the original, validly signed manifest
/// with the original data (the over-claiming variant, whose data is the original, follows the
/// untrusted-signature one and precedes one whose data is written before its manifest).
fn variants(os: &TestOs, trusted: &SecretKey) -> Result<Vec<Variant>> {
    // (b) Signed by a key the agent does not trust.
    let untrusted = SecretKey::from_seed(&[0x5a; 32]);
    let bad_sig = Variant {
        what: "manifest signed by an untrusted key",
        code: "bad_signature",
        message: None,
        before_write: true,
        manifest: os.manifest_bytes.clone(),
        sig: sign_manifest(&os.manifest_bytes, &untrusted)
            .to_file()
            .into_bytes(),
        data: os.data.clone(),
    };

    // (a) One byte flipped in the middle of the first stored chunk's frame (chunk 0): refused
    // before the installer writes anything, even the zeroing of the disk's ends.
    let c = os.stored_chunk(0)?;
    let at = usize::try_from(c.data_offset + u64::from(c.compressed_len() / 2))
        .map_err(|_| Error::Invalid("offset".into()))?;
    let mut flipped = os.data.clone();
    let byte = flipped
        .get_mut(at)
        .ok_or_else(|| Error::Invalid(format!("data.zst shorter than {at}")))?;
    *byte ^= 0x01;
    let flip = Variant {
        what: "one byte flipped inside the first stored chunk of data.zst",
        code: "chunk_digest_mismatch",
        message: None,
        before_write: true,
        manifest: os.manifest_bytes.clone(),
        sig: os.sig_bytes.clone(),
        data: flipped,
    };

    // (c) data.zst cut in the middle of the last stored chunk's frame.
    let last = os.manifest.stored_chunks().saturating_sub(1);
    let c = os.stored_chunk(usize::try_from(last).unwrap_or(0))?;
    let cut = usize::try_from(c.data_offset + u64::from(c.compressed_len() / 2))
        .map_err(|_| Error::Invalid("offset".into()))?;
    // The agent compares data.zst's length with the signed manifest before it opens the disk.
    let truncated = Variant {
        what: "data.zst truncated inside its last stored chunk",
        code: "data_length_mismatch",
        message: None,
        before_write: true,
        manifest: os.manifest_bytes.clone(),
        sig: os.sig_bytes.clone(),
        data: os.data.get(..cut).unwrap_or_default().to_vec(),
    };

    // (d) A manifest, re-signed with the trusted key, whose image is two chunks larger and
    // whose two extra stored chunks lie beyond the end of the (unchanged) data.zst.
    let g = os.manifest.geometry();
    let extra = 2u64;
    let image_size = g.image_size() + extra * u64::from(g.chunk_size());
    let geometry = Geometry::new(image_size, g.sector_size(), g.chunk_size())
        .map_err(|e| Error::Invalid(format!("geometry: {e}")))?;
    let mut chunks = os.manifest.chunks().to_vec();
    let mut data_offset = os.manifest.data_len();
    for i in 0..extra {
        let index = os.manifest.chunks().len() as u64 + i;
        let compressed_len: u32 = 1 << 20;
        chunks.push(ChunkEntry {
            image_offset: index * u64::from(g.chunk_size()),
            data_offset,
            raw_len: g.chunk_size(),
            kind: ChunkKind::Stored {
                compressed_len,
                raw_digest: Digest::sha256(format!("claimed raw {index}").as_bytes()),
                compressed_digest: Digest::sha256(format!("claimed frame {index}").as_bytes()),
            },
        });
        data_offset += u64::from(compressed_len);
    }
    let claimed = Manifest::from_parts(
        geometry,
        os.manifest.digest_algorithm(),
        chunks,
        os.manifest.image_digest(),
    )
    .map_err(|e| Error::Invalid(format!("over-claiming manifest: {e}")))?;
    if claimed.data_len() <= os.data.len() as u64 {
        return Err(Error::Invalid("the manifest does not over-claim".into()));
    }
    let claimed_bytes = claimed.encode();
    // Refused before the disk is opened: data.zst is shorter than the manifest's data length.
    let over = Variant {
        what: "manifest (validly signed) claiming 2 more chunks than data.zst holds",
        code: "data_length_mismatch",
        message: None,
        before_write: true,
        sig: sign_manifest(&claimed_bytes, trusted)
            .to_file()
            .into_bytes(),
        manifest: claimed_bytes,
        data: os.data.clone(),
    };
    Ok(vec![bad_sig, over, truncated, flip])
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename, so the appliance never
/// serves a half-written file.
fn put(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io("writing", &tmp, e))?;
    let dst = dir.join(name);
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io("renaming to", &dst, e))
}

/// An assets directory for the appliance: the dist files (copied: the appliance refuses
/// symlinks leading out of its assets) and an empty `snapshots/`.
fn assets_copy(dir: &Path) -> Result<PathBuf> {
    let assets = dir.join("assets");
    let snapshots = assets.join("snapshots");
    std::fs::create_dir_all(&snapshots).map_err(|e| Error::io("creating", &snapshots, e))?;
    let dist = paths::dist_dir();
    for entry in std::fs::read_dir(&dist).map_err(|e| Error::io("listing", &dist, e))? {
        let entry = entry.map_err(|e| Error::io("listing", &dist, e))?;
        let src = entry.path();
        let name = entry.file_name();
        // The server binary runs from the dist directory; it is no asset.
        if src.is_file() && name != "pxe-server" {
            let dst = assets.join(&name);
            std::fs::copy(&src, &dst).map_err(|e| Error::io("copying to", &dst, e))?;
        }
    }
    Ok(assets)
}

/// 1 MiB of recognisable non-zero bytes (xorshift), with no boot signature at 510.
fn head_pattern() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v: Vec<u8> = (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0] | 1
        })
        .collect();
    v[510] = 0;
    v[511] = 0;
    v
}

/// A sparse raw disk of `size` bytes whose first MiB is `head`.
fn disk_with_head(path: &Path, size: u64, head: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io("creating", path, e))?;
    f.set_len(size).map_err(|e| Error::io("sizing", path, e))?;
    f.write_all(head)
        .map_err(|e| Error::io("writing", path, e))?;
    f.sync_all().map_err(|e| Error::io("syncing", path, e))
}

/// Writes `head` over the first bytes of the existing disk image at `path` (nothing else
/// changes).
fn put_head(path: &Path, head: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))?;
    f.write_all(head)
        .map_err(|e| Error::io("writing", path, e))?;
    f.sync_all().map_err(|e| Error::io("syncing", path, e))
}

fn read_head(path: &Path) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
    f.seek(SeekFrom::Start(0))
        .map_err(io_err("seeking in the disk"))?;
    let mut buf = vec![0u8; MIB];
    f.read_exact(&mut buf)
        .map_err(|e| Error::io("reading the first MiB of", path, e))?;
    Ok(buf)
}

/// What the first MiB of a disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// The pattern the test wrote.
    Pattern,
    /// Zeros: the installer cleared it before writing any image byte.
    Zeroed,
    /// The image's first MiB.
    Image,
    /// Anything else.
    Other,
}

fn classify(head: &[u8], pattern: &[u8], image: &[u8]) -> (Head, String) {
    let kind = if head == pattern {
        Head::Pattern
    } else if head == image {
        Head::Image
    } else if head.iter().all(|&b| b == 0) {
        Head::Zeroed
    } else {
        Head::Other
    };
    (kind, Digest::sha256(head).to_hex())
}

/// The install result events of a history (agent reports with `order: install`).
fn install_result(e: &EventView) -> Option<(String, Option<String>)> {
    let d = e.detail.as_ref()?;
    if e.actor != "agent" || d.get("order")?.as_str()? != "install" {
        return None;
    }
    let outcome = d.get("outcome")?.as_str()?.to_owned();
    let code = d.get("code").and_then(|c| c.as_str()).map(str::to_owned);
    Some((outcome, code))
}

fn is_fetch_manifest(e: &EventView) -> bool {
    e.kind == "progress"
        && e.detail
            .as_ref()
            .and_then(|d| d.get("stage"))
            .and_then(|s| s.as_str())
            == Some("fetch-manifest")
}

/// The first install attempt that started (its `fetch-manifest` progress reached the
/// appliance) after `since_ms`, and its result, once there is one.
fn attempt_after(
    events: &[EventView],
    since_ms: i64,
) -> Option<(&EventView, String, Option<String>)> {
    let mut sorted: Vec<&EventView> = events.iter().collect();
    sorted.sort_by_key(|e| e.seq);
    let start = sorted
        .iter()
        .position(|e| is_fetch_manifest(e) && e.at_ms > since_ms)?;
    sorted
        .get(start + 1..)?
        .iter()
        .find_map(|e| install_result(e).map(|(o, c)| (*e, o, c)))
}

fn history_text(events: &[EventView]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "#{} {} {} {} {:?}->{:?} reason={:?} detail={}",
                e.seq,
                e.at_ms,
                e.actor,
                e.kind,
                e.from_state,
                e.to_state,
                e.reason,
                e.detail
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// SKIP (or fail under `RACKHAND_VM_TESTS=1`) when the test-OS snapshot was not built.
fn test_os_dir(test: &str) -> Option<PathBuf> {
    let dir = paths::dist_dir().join("snapshots").join(SNAPSHOT);
    if dir.join(MANIFEST_FILE).is_file() {
        return Some(dir);
    }
    let why = format!(
        "{} is missing: run `cargo xtask test-os` then `cargo xtask dist`",
        dir.display()
    );
    assert!(!gate::strict(), "{test}: {why}");
    announce(&format!("SKIP {test}: {why}"));
    None
}

#[test]
fn tampered_snapshots_are_refused_with_their_reason_codes() -> Result<()> {
    let test = "tampered_snapshots_are_refused_with_their_reason_codes";
    if !gate::require(test, VM_NEEDS)? {
        return Ok(());
    }
    let Some(os_dir) = test_os_dir(test) else {
        return Ok(());
    };
    let os = TestOs::load(&os_dir)?;
    let image = os.image_head()?;
    let key = trusted_signing_key(&os)?;
    let variants = variants(&os, &key)?;

    let serial = "RH-TAMPER-0001";
    let dir = WorkDir::new(test)?;
    let assets = assets_copy(dir.path())?;
    let staged = assets.join("snapshots").join(TAMPERED);
    std::fs::create_dir_all(&staged).map_err(|e| Error::io("creating", &staged, e))?;
    // The data first: the agent fetches the signature and the manifest, then the data, so an
    // attempt that got the new signature and manifest also gets the new data (see
    // `variants` for why no mix of two neighbouring variants is installable).
    let stage = |v: &Variant| -> Result<()> {
        put(&staged, DATA_FILE, &v.data)?;
        put(&staged, MANIFEST_FILE, &v.manifest)?;
        put(&staged, SIGNATURE_FILE, &v.sig)
    };
    let pattern = head_pattern();
    let disk = dir.path().join("tamper.disk.img");
    disk_with_head(&disk, DISK_BYTES, &pattern)?;

    let ns = Netns::new(1)?;
    let app = Appliance::start(
        &ns,
        dir.path(),
        &ApplianceConfig::full()
            .assets(&assets)
            .extra_args(RETRY_ARGS),
    )?;
    let machine = |name: &str| -> Result<VmBuilder> {
        Ok(VmBuilder::new(name)
            .nic(ns.tap(0)?, test_mac(0x51, 1))
            .existing_disk(&disk, DiskFormat::Raw, Some("RHTAMPERDISK"))
            .smbios_serial(serial)
            .fail_on("could not load the agent"))
    };

    let vm = machine("tamper-1")?.start(&ns, dir.path())?;
    let (m, _) =
        app.wait_for_machine(serial, MachineState::Available, REGISTER_TIMEOUT, Some(&vm))?;
    let first = variants
        .first()
        .ok_or_else(|| Error::Invalid("no variants".into()))?;
    stage(first)?;
    let ordered_at = now_ms();
    let reply = app.operator_post(
        &format!("/api/v1/machines/{}/install", m.id),
        &serde_json::json!({ "snapshot": TAMPERED }),
    )?;
    assert_eq!(reply.status, 200, "install: {}", reply.body);
    // A second order while this one is pending is refused: hence the swapped files.
    let again = app.operator_post(
        &format!("/api/v1/machines/{}/install", m.id),
        &serde_json::json!({ "snapshot": TAMPERED }),
    )?;
    assert_eq!(again.status, 409, "second install order: {}", again.body);
    assert!(again.body.contains("already_in_state"), "{}", again.body);
    vm.wait_end_of_boot(Duration::from_secs(180))?;
    drop(vm);

    // The install boot: every variant is tried by this one agent, which keeps polling after
    // each refusal.
    let vm = machine("tamper-2")?.start(&ns, dir.path())?;
    let started = Instant::now();
    let mut since = ordered_at;
    let mut seen: Vec<String> = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        if i > 0 {
            stage(v)?;
            since = now_ms();
        }
        let t0 = Instant::now();
        let mut last: Vec<EventView> = Vec::new();
        let found = poll_until(ATTEMPT_TIMEOUT, Duration::from_secs(2), || {
            if vm.try_wait().is_some() {
                // The agent ended its boot: only a delivered successful install does that.
                last = app.history(&m.id).unwrap_or_default();
                return Some(None);
            }
            last = app.history(&m.id).ok()?;
            attempt_after(&last, since).map(|(e, o, c)| Some((e.clone(), o, c)))
        });
        let context = || format!("{}\n{}\n{}", history_text(&last), app.report(), vm.report());
        let Some(Some((event, outcome, code))) = found else {
            panic!(
                "variant {:?}: no install result within {ATTEMPT_TIMEOUT:?}, or QEMU exited (the agent ended its boot)\n{}",
                v.what,
                context()
            );
        };
        assert_eq!(outcome, "failure", "variant {:?}: {}", v.what, context());
        assert_eq!(
            code.as_deref(),
            Some(v.code),
            "variant {:?}: event {event:?}\n{}",
            v.what,
            context()
        );
        if let Some(text) = v.message {
            let msg = event
                .detail
                .as_ref()
                .and_then(|d| d.get("message"))
                .and_then(|m| m.as_str())
                .unwrap_or_default();
            assert!(msg.contains(text), "variant {:?}: message {msg:?}", v.what);
        }
        // The machine's record says why, and it is not in use.
        let now = app.machine(&m.id)?;
        assert_eq!(
            now.state,
            MachineState::Installing,
            "{now:#?}\n{}",
            context()
        );
        assert!(
            now.reason.as_deref().is_some_and(|r| r.contains(v.code)),
            "reason {:?} lacks {}\n{}",
            now.reason,
            v.code,
            context()
        );
        assert!(
            vm.console().text().contains(&format!("[{}]", v.code)),
            "the agent's console does not show [{}]\n{}",
            v.code,
            vm.report()
        );
        let (head, hash) = classify(&read_head(&disk)?, &pattern, &image);
        if v.before_write {
            assert_eq!(
                head,
                Head::Pattern,
                "variant {:?} was refused before writing, but the first MiB changed (sha256 {hash})",
                v.what
            );
        } else {
            // The installer zeroes the first MiB before it writes any image byte (see
            // installer::write): a refusal while streaming leaves zeros, never image bytes.
            assert!(
                matches!(head, Head::Pattern | Head::Zeroed),
                "variant {:?}: first MiB is {head:?} (sha256 {hash})",
                v.what
            );
        }
        seen.push(format!(
            "{} -> {} in {:.1} s (first MiB {head:?})",
            v.what,
            v.code,
            t0.elapsed().as_secs_f64()
        ));
    }
    drop(vm);
    let m = app.machine(&m.id)?;
    assert_ne!(m.state, MachineState::InUse, "{m:#?}");
    // Every variant is refused before the first write: the first MiB never changed.
    let (head, hash) = classify(&read_head(&disk)?, &pattern, &image);
    assert_eq!(head, Head::Pattern, "the first MiB changed (sha256 {hash})");
    announce(&format!(
        "TIMING {test}: {} variants refused in {:.1} s: {}",
        variants.len(),
        started.elapsed().as_secs_f64(),
        seen.join("; ")
    ));
    Ok(())
}

/// The (chunk, offset) of an agent's `install: resuming data.zst at chunk C (offset O), attempt
/// A` console line.
fn parse_resume(line: &str) -> Option<(u64, u64)> {
    let rest = line.split("at chunk ").nth(1)?;
    let (chunk, rest) = rest.split_once(" (offset ")?;
    let (offset, _) = rest.split_once(')')?;
    Some((chunk.trim().parse().ok()?, offset.trim().parse().ok()?))
}

/// Waits for `pattern` on `vm`'s console while checking, every 250 ms, that the disk's first
/// MiB never holds the image's first MiB before the console shows the installer's `finish`
/// stage (printed before the held-back first MiB is written, after every chunk verified).
fn watch_until(
    vm: &Vm<'_>,
    pattern: &str,
    timeout: Duration,
    disk: &Path,
    image: &[u8],
) -> Result<Duration> {
    vm.watch(
        &format!("{pattern:?}"),
        timeout,
        Duration::from_millis(250),
        || {
            // The head first, then the console: an image head seen before "finish" printed is a
            // violation, whatever the interleaving.
            let head = read_head(disk)?;
            let text = vm.console().text();
            if head == image && !text.contains("install: finish") {
                panic!(
                    "the disk's first MiB holds the image before the install verified\n{}",
                    vm.report()
                );
            }
            Ok(text.contains(pattern).then(|| vm.uptime()))
        },
    )
}

/// Waits until the disk's first MiB, which holds `pattern` when the install starts, turns to
/// zeros: the installer verified chunk 0 and is writing image bytes, while the rest of
/// `data.zst` still streams (the console's progress lines lag behind the stream). Checks
/// meanwhile that the first MiB never holds the image before the console shows `finish`.
fn watch_head_zeroed(
    vm: &Vm<'_>,
    timeout: Duration,
    disk: &Path,
    pattern: &[u8],
    image: &[u8],
) -> Result<Duration> {
    let what = "the installer's zeros";
    vm.watch(what, timeout, Duration::from_millis(100), || {
        let (head, hash) = classify(&read_head(disk)?, pattern, image);
        let text = vm.console().text();
        match head {
            Head::Zeroed => return Ok(Some(vm.uptime())),
            Head::Pattern => {}
            other => panic!(
                "the first MiB is {other:?} (sha256 {hash}) before the installer's zeros\n{}",
                vm.report()
            ),
        }
        if text.contains("install: finish") {
            panic!(
                "the install reached finish while the first MiB still held the pattern\n{}",
                vm.report()
            );
        }
        Ok(None)
    })
}

#[test]
fn interrupted_installs_never_boot_a_half_image_and_the_retry_completes() -> Result<()> {
    let test = "interrupted_installs_never_boot_a_half_image_and_the_retry_completes";
    if !gate::require(test, VM_NEEDS)? {
        return Ok(());
    }
    let Some(os_dir) = test_os_dir(test) else {
        return Ok(());
    };
    let os = TestOs::load(&os_dir)?;
    let image = os.image_head()?;
    let serial = "RH-INTERRUPT-0001";
    let dir = WorkDir::new(test)?;
    let pattern = head_pattern();
    let disk = dir.path().join("interrupt.disk.img");
    disk_with_head(&disk, DISK_BYTES, &pattern)?;

    let ns = Netns::new(1)?;
    let tap = ns.tap(0)?.to_owned();
    let cfg = ApplianceConfig::full().extra_args(RETRY_ARGS);
    let app = Appliance::start(&ns, dir.path(), &cfg)?;
    let machine = |name: &str| -> Result<VmBuilder> {
        Ok(VmBuilder::new(name)
            .nic(&tap, test_mac(0x52, 1))
            .existing_disk(&disk, DiskFormat::Raw, Some("RHINTERRUPTDISK"))
            .smbios_serial(serial)
            .fail_on("could not load the agent"))
    };

    let vm = machine("interrupt-1")?.start(&ns, dir.path())?;
    let (m, _) =
        app.wait_for_machine(serial, MachineState::Available, REGISTER_TIMEOUT, Some(&vm))?;
    let reply = app.operator_post(
        &format!("/api/v1/machines/{}/install", m.id),
        &serde_json::json!({ "snapshot": SNAPSHOT }),
    )?;
    assert_eq!(reply.status, 200, "install: {}", reply.body);
    vm.wait_end_of_boot(Duration::from_secs(180))?;
    drop(vm);

    // 1. Power cut mid-stream. The tap is throttled once the agent runs (iPXE has loaded the
    // kernel and initramfs at full speed by then), so the data stream lasts long enough.
    let vm = machine("interrupt-2")?.start(&ns, dir.path())?;
    watch_until(&vm, "starting as PID 1", REGISTER_TIMEOUT, &disk, &image)?;
    ns.limit_egress(&tap, THROTTLE_KBIT)?;
    let cut_at = watch_head_zeroed(&vm, Duration::from_secs(300), &disk, &pattern, &image)?;
    vm.stop();
    let console = vm.console().text();
    assert!(
        !console.contains("install: finish") && !console.contains("installed and verified"),
        "the install finished before the power cut; the throttle did not hold it\n{}",
        vm.report()
    );
    drop(vm);
    let (head, hash) = classify(&read_head(&disk)?, &pattern, &image);
    assert_eq!(
        head,
        Head::Zeroed,
        "after a power cut mid-stream the first MiB must be the installer's zeros (sha256 {hash})"
    );
    let now = app.machine(&m.id)?;
    assert_eq!(now.state, MachineState::Installing, "{now:#?}");

    // 2. Powered on again: the agent starts the install over; this time the appliance is
    // stopped mid-stream and started again on the same data directory. The pattern goes back
    // into the first MiB, so the installer's first write shows again.
    put_head(&disk, &pattern)?;
    ns.clear_egress_limit(&tap)?;
    let vm = machine("interrupt-3")?.start(&ns, dir.path())?;
    watch_until(&vm, "starting as PID 1", REGISTER_TIMEOUT, &disk, &image)?;
    ns.limit_egress(&tap, THROTTLE_KBIT)?;
    let stop_at = watch_head_zeroed(&vm, Duration::from_secs(300), &disk, &pattern, &image)?;
    let outage_started = now_ms();
    app.stop();
    drop(app);
    // The dead process's connections live on in the kernel, which would go on sending what
    // it had queued (up to the rest of data.zst) and close cleanly: the agent could finish
    // during the "outage". Abort them: the agent's stream gets a reset.
    let aborted = ns.abort_tcp(HTTP_PORT)?;
    let stopped = Instant::now();
    let resumes_before = vm.console().text().matches("install: resuming").count();
    // Down for 8 s, while the agent's data attempts and its calls fail; its pauses between
    // data attempts (1, 2, 4, 8 s) put the last one after the restart.
    let down = Duration::from_secs(8);
    while stopped.elapsed() < down {
        // The head first, then the console (see `watch_until`).
        let (head, hash) = classify(&read_head(&disk)?, &pattern, &image);
        let finished = vm.console().text().contains("install: finish");
        assert!(
            head == Head::Zeroed || (head == Head::Image && finished),
            "first MiB during the outage is {head:?} (sha256 {hash}), install finished: {finished}; aborted sockets {aborted:?}\n{}",
            vm.report()
        );
        if let Some(a) = vm.failed() {
            panic!("{}: {} during the outage\n{}", a.what, a.why, vm.report());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let finished_in_outage = vm.console().text().contains("install: finish");
    let app = Appliance::start(&ns, dir.path(), &cfg)?;
    let outage = stopped.elapsed();
    ns.clear_egress_limit(&tap)?;
    let done = watch_until(
        &vm,
        "installed and verified",
        Duration::from_secs(900),
        &disk,
        &image,
    )?;
    vm.wait_end_of_boot(Duration::from_secs(180))?;
    let during = vm.console().text();
    drop(vm);
    let (m, _) =
        app.wait_for_machine(serial, MachineState::InUse, Duration::from_secs(60), None)?;
    assert_eq!(m.snapshot.as_deref(), Some(SNAPSHOT), "{m:#?}");
    let (head, hash) = classify(&read_head(&disk)?, &pattern, &image);
    assert_eq!(head, Head::Image, "installed, sha256 {hash}");

    // What the agent did about the outage, from the history: install results after it.
    let events = app.history(&m.id)?;
    let after: Vec<(String, Option<String>, Option<serde_json::Value>)> = events
        .iter()
        .filter(|e| e.at_ms >= outage_started)
        .filter_map(|e| {
            install_result(e).map(|(o, c)| {
                let attempts = e
                    .detail
                    .as_ref()
                    .and_then(|d| d.get("detail"))
                    .and_then(|d| d.get("attempts"))
                    .cloned();
                (o, c, attempts)
            })
        })
        .collect();
    let Some((last_outcome, _, attempts)) = after.last() else {
        panic!(
            "no install result after the outage\n{}",
            history_text(&events)
        );
    };
    assert_eq!(last_outcome, "success", "{}", history_text(&events));
    let failures: Vec<String> = after
        .iter()
        .filter(|(o, _, _)| o != "success")
        .map(|(o, c, _)| format!("{o}:{}", c.as_deref().unwrap_or("-")))
        .collect();
    let resume_lines: Vec<&str> = during
        .lines()
        .filter(|l| l.contains("install: resuming"))
        .skip(resumes_before)
        .collect();
    let path = if failures.is_empty() {
        format!(
            "resumed within one install (data attempts {attempts:?}; {})",
            resume_lines.last().map_or("no resume line", |l| l.trim())
        )
    } else {
        format!(
            "gave up on the outage ({}), reported it once the appliance was back, and installed again from scratch (data attempts {attempts:?})",
            failures.join(", ")
        )
    };
    announce(&format!(
        "{test}: outage path: {path}; sockets aborted: {}",
        aborted.len()
    ));
    // The outage cut the stream (the agent had not finished), and the agent's paced retries
    // ride it out: the same install resumes with a Range request from a chunk past 0.
    assert!(
        !finished_in_outage,
        "the install finished during the outage: the stream was not cut (aborted {aborted:?})\n{}",
        history_text(&events)
    );
    assert!(
        failures.is_empty(),
        "expected a resume, got: {path}\n{}",
        history_text(&events)
    );
    let resumed_at = resume_lines.last().and_then(|l| parse_resume(l));
    assert!(
        resumed_at.is_some_and(|(chunk, offset)| chunk >= 1 && offset > 0),
        "no resume with a Range request on the console after the outage ({resume_lines:?})\n{during}"
    );
    let resumed_lines = resume_lines.len();

    // 3. In use: the next power-on boots the installed test OS from the disk.
    let vm = machine("interrupt-4")?.start(&ns, dir.path())?;
    let booted = vm.wait_for(MARKER, Duration::from_secs(300))?;
    let console = vm.console().text();
    assert!(
        console.contains(&format!("serial={serial}"))
            && console.contains(&format!("snapshot={SNAPSHOT}")),
        "{}",
        vm.report()
    );
    assert!(
        !console.contains("starting as PID 1"),
        "the agent ran on an in-use machine\n{}",
        vm.report()
    );
    announce(&format!(
        "TIMING {test}: power cut at {:.1} s after power-on (first MiB zeroed); appliance stopped at {:.1} s after power-on (first MiB zeroed), {} socket(s) aborted, down {:.1} s: {path}, {resumed_lines} resume line(s) on the console; install boot -> installed at {:.1} s; installed OS marker {:.1} s after power-on",
        cut_at.as_secs_f64(),
        stop_at.as_secs_f64(),
        aborted.len(),
        outage.as_secs_f64(),
        done.as_secs_f64(),
        booted.as_secs_f64()
    ));
    Ok(())
}
