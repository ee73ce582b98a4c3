//! Wiping through the public API: a file standing in for a disk, and (as root) loop devices
//! pre-filled with a canary pattern, checked afterwards by a full `O_DIRECT` scan. A second
//! loop device that is not in the wipe's disk list must keep its exact contents.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use installer::preflight::{ExistingPartitions, SystemPaths, check};
use installer::wipe::{
    DiskFacts, Method, NistLevel, VerifyOptions, WipeOutcome, WipePhase, execute, execute_file,
    plan, plan_disk,
};
use installer::{DiskRule, TargetDisk};

use crate::common::{MIB, sha256};

/// 4 KiB blocks each starting with a recognisable canary and its block number.
fn canary(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, block) in v.chunks_mut(4096).enumerate() {
        block.fill(0x5A);
        let tag = format!("CANARY{i:010}");
        let n = tag.len().min(block.len());
        block[..n].copy_from_slice(&tag.as_bytes()[..n]);
    }
    v
}

fn canary_blocks(bytes: &[u8]) -> usize {
    bytes
        .chunks(4096)
        .filter(|b| b.windows(6).any(|w| w == b"CANARY") || b.contains(&0x5A))
        .count()
}

fn file_facts(path: &Path) -> DiskFacts {
    DiskFacts {
        name: "file0".into(),
        serial: Some("SER-FILE".into()),
        wwn: None,
        size_bytes: std::fs::metadata(path).unwrap().len(),
        block_device: false,
        discard: false,
        discard_zeroes_proven: false,
        transport: None,
        rotational: None,
        purge: None,
    }
}

#[test]
fn a_file_is_overwritten_verified_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("disk.img");
    // Not a multiple of 4 KiB: the unaligned tail must be cleared too.
    let len = 40 * MIB + 1536;
    std::fs::write(&path, canary(len)).unwrap();
    let p = plan_disk(&file_facts(&path));
    assert_eq!(p.method, Method::Overwrite);
    let mut phases = Vec::new();
    let rec = execute_file(
        &path,
        &p,
        &VerifyOptions {
            samples: 64,
            time_seed: 1_764_000_000,
        },
        &mut |pr| {
            assert!(pr.done <= pr.total);
            if phases.last() != Some(&pr.phase) {
                phases.push(pr.phase);
            }
        },
    );
    assert_eq!(rec.outcome, WipeOutcome::Success, "{rec:?}");
    assert!(rec.verified);
    assert_eq!(rec.code, None);
    assert_eq!(rec.nist_level, NistLevel::Clear);
    assert_eq!(rec.bytes_written, len as u64 + 2 * MIB as u64);
    assert_eq!(rec.blocks_verified, 2 * 16 * 256 + 64);
    assert_eq!(
        phases,
        [WipePhase::Edges, WipePhase::Bulk, WipePhase::Verify]
    );
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after.len(), len, "never grows or shrinks the file");
    assert!(after.iter().all(|&b| b == 0));
    assert_eq!(canary_blocks(&after), 0);

    // The record is what the agent sends as `detail`.
    let json = serde_json::to_value(&rec).unwrap();
    assert_eq!(json["disk"], "file0");
    assert_eq!(json["serial"], "SER-FILE");
    assert_eq!(json["method"], "overwrite");
    assert_eq!(json["nist_level"], "clear");
    assert_eq!(json["outcome"], "success");
    assert_eq!(
        json["not_attempted"],
        serde_json::json!(["nvme_sanitize", "nvme_format", "ata_secure_erase"])
    );
}

#[test]
fn a_file_whose_size_changed_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("disk.img");
    std::fs::write(&path, canary(4 * MIB)).unwrap();
    let mut facts = file_facts(&path);
    facts.size_bytes += 4096;
    let rec = execute_file(
        &path,
        &plan_disk(&facts),
        &VerifyOptions::default(),
        &mut |_| {},
    );
    assert_eq!(rec.outcome, WipeOutcome::Failure);
    assert_eq!(rec.code.as_deref(), Some("identity_changed"));
    assert_eq!(std::fs::read(&path).unwrap(), canary(4 * MIB));
    let rec = execute_file(
        &tmp.path().join("gone.img"),
        &plan_disk(&facts),
        &VerifyOptions::default(),
        &mut |_| {},
    );
    assert_eq!(rec.code.as_deref(), Some("device_gone"));
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A loop device attached to a file; detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn attach(file: &Path) -> Result<Self, String> {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        })
    }

    fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// The whole device, read with O_DIRECT (what is on the medium, not in the page cache).
fn read_device(dev: &Path, len: usize) -> Vec<u8> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(dev)
        .unwrap();
    let mut buf = vec![0u8; len + 4096];
    let start = buf.as_ptr().align_offset(4096);
    let slice = &mut buf[start..start + len];
    f.read_exact(slice).unwrap();
    slice.to_vec()
}

fn wipe_loop(lp: &Loop, size: u64, discard_proven: bool) -> installer::WipeRecord {
    let target = TargetDisk {
        name: lp.name(),
        size_bytes: size,
        logical_block_size: Some(512),
        serial: None,
        wwn: None,
        model: None,
        rule: DiskRule::Name(lp.name()),
    };
    let checked = check(
        &target,
        &SystemPaths::live(),
        0,
        ExistingPartitions::Overwrite,
    )
    .unwrap();
    let facts = DiskFacts {
        name: lp.name(),
        serial: None,
        wwn: None,
        size_bytes: size,
        block_device: true,
        discard: discard_proven,
        discard_zeroes_proven: discard_proven,
        transport: None,
        rotational: None,
        purge: None,
    };
    // Only the disk in the list is planned; the other loop device is never opened.
    let wp = plan(&[facts]);
    assert_eq!(wp.disks.len(), 1);
    execute(
        checked,
        &wp.disks[0],
        &VerifyOptions {
            samples: 128,
            time_seed: 42,
        },
        &mut |_| {},
    )
}

#[test]
fn loop_devices_with_a_canary_are_cleared_and_excluded_ones_untouched() {
    if !is_root() {
        eprintln!("skipped: not root (loop devices need root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let size = 48 * MIB;
    let pattern = canary(size);
    let files: Vec<PathBuf> = ["a.img", "b.img", "keep.img"]
        .iter()
        .map(|n| {
            let p = tmp.path().join(n);
            std::fs::write(&p, &pattern).unwrap();
            p
        })
        .collect();
    let loops: Vec<Loop> = match files.iter().map(|f| Loop::attach(f)).collect() {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let keep_before = sha256(&read_device(&loops[2].dev, size));
    assert_eq!(keep_before, sha256(&pattern));
    assert_eq!(
        canary_blocks(&read_device(&loops[0].dev, size)),
        size / 4096
    );

    // BLKZEROOUT (the generic Clear).
    let rec = wipe_loop(&loops[0], size as u64, false);
    assert_eq!(rec.outcome, WipeOutcome::Success, "{rec:?}");
    assert_eq!(rec.method, Method::Blkzeroout);
    assert!(rec.verified);
    assert_eq!(rec.bytes_zeroed, size as u64);
    assert_eq!(rec.blocks_verified, 2 * 16 * 256 + 128);
    let after = read_device(&loops[0].dev, size);
    assert_eq!(canary_blocks(&after), 0, "full scan found canary blocks");
    assert!(after.iter().all(|&b| b == 0));

    // BLKDISCARD when the caller proves zeros (a loop device punches holes), still verified;
    // whichever method verified, the medium is clean.
    let rec = wipe_loop(&loops[1], size as u64, true);
    assert_eq!(rec.outcome, WipeOutcome::Success, "{rec:?}");
    assert!(rec.verified);
    let after = read_device(&loops[1].dev, size);
    assert_eq!(canary_blocks(&after), 0);
    assert!(after.iter().all(|&b| b == 0));

    // The device that was not in the list is bit-for-bit unchanged.
    assert_eq!(sha256(&read_device(&loops[2].dev, size)), keep_before);
    assert_eq!(sha256(&std::fs::read(&files[2]).unwrap()), keep_before);
}
