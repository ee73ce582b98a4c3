//! The real thing, as root: preflight and the writer against a loop device. Skips with a
//! printed reason when not root or when loop devices are unavailable. Every loop device and
//! mount the test makes is undone by a guard, also on failure.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use installer::preflight::{ExistingPartitions, SystemPaths, check};
use installer::{DiskRule, ImageWriter, PartitionReread, TargetDisk, WriteOptions, write_image};

use crate::common::{MIB, build, data, image, load, sha256};

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
            .args(["--find", "--show", "--partscan"])
            .arg(file)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(Self { dev })
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

/// A mount; unmounted on drop.
struct Mount {
    dir: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn target_for(lp: &Loop, size: u64) -> TargetDisk {
    TargetDisk {
        name: lp.name(),
        size_bytes: size,
        logical_block_size: Some(512),
        serial: None,
        wwn: None,
        model: None,
        rule: DiskRule::Name(lp.name()),
    }
}

fn read_device(dev: &Path, len: usize) -> Vec<u8> {
    // O_DIRECT: what is on the device, not what the page cache remembers.
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

#[test]
fn preflight_and_write_on_a_loop_device() {
    if !is_root() {
        eprintln!("skipped: not root (loop devices need root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = image(7 * MIB);
    let snap = build(tmp.path(), "os", &img);
    let manifest = load(&snap);
    let disk_size = 16 * MIB;
    let backing = tmp.path().join("backing.img");
    std::fs::write(&backing, vec![0xEEu8; disk_size]).unwrap();
    let lp = match Loop::attach(&backing) {
        Ok(lp) => lp,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let paths = SystemPaths::live();
    let target = target_for(&lp, disk_size as u64);

    // Too small for an image larger than the device, before anything is opened.
    let err = check(
        &target,
        &paths,
        disk_size as u64 + 512,
        ExistingPartitions::Refuse,
    )
    .unwrap_err();
    assert_eq!(err.code(), "device_too_small");

    let checked = check(
        &target,
        &paths,
        img.len() as u64,
        ExistingPartitions::Refuse,
    )
    .unwrap();
    assert_eq!(checked.size(), disk_size as u64);
    assert_eq!(checked.logical_block_size(), 512);
    assert_eq!(checked.path(), Path::new("/dev").join(lp.name()));

    // While we hold it exclusively, nobody else gets it (not even a second preflight).
    let err = check(
        &target,
        &paths,
        img.len() as u64,
        ExistingPartitions::Refuse,
    )
    .unwrap_err();
    assert_eq!(err.code(), "disk_busy");

    let data_path = snap.join("data.zst");
    let writer = ImageWriter::to_disk(checked, &manifest, WriteOptions::default()).unwrap();
    let report = write_image(
        writer,
        1,
        |at| {
            let mut f = File::open(&data_path)?;
            f.seek(SeekFrom::Start(at.data_offset))?;
            Ok(f)
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(report.partition_table, PartitionReread::Done);
    let on_device = read_device(&lp.dev, disk_size);
    assert_eq!(sha256(&on_device[..img.len()]), sha256(&img));
    assert!(on_device[disk_size - MIB..].iter().all(|&b| b == 0));
    eprintln!(
        "loop device {}: wrote {} bytes, direct I/O {}",
        lp.dev.display(),
        report.bytes_written,
        report.direct_io
    );

    // A tampered snapshot on the same device: refused, and the first MiB is zero again.
    let mut bad = data(&snap);
    let at = manifest.resume_offset(5).unwrap() as usize + 3;
    bad[at] ^= 0x80;
    let checked = check(
        &target,
        &paths,
        img.len() as u64,
        ExistingPartitions::Refuse,
    )
    .unwrap();
    let writer = ImageWriter::to_disk(checked, &manifest, WriteOptions::default()).unwrap();
    let err = write_image(
        writer,
        1,
        |at| Ok(&bad[at.data_offset as usize..]),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(err.code(), "chunk_digest_mismatch");
    let on_device = read_device(&lp.dev, MIB);
    assert!(on_device.iter().all(|&b| b == 0), "first MiB not zero");
}

#[test]
fn a_mounted_loop_device_is_refused() {
    if !is_root() {
        eprintln!("skipped: not root (loop devices and mounts need root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("fs.img");
    std::fs::write(&backing, vec![0u8; 16 * MIB]).unwrap();
    let lp = match Loop::attach(&backing) {
        Ok(lp) => lp,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&lp.dev)
        .status();
    if !mkfs.is_ok_and(|s| s.success()) {
        eprintln!("skipped: mkfs.ext4 unavailable or failed");
        return;
    }
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let mounted = Command::new("mount").arg(&lp.dev).arg(&dir).status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot mount in this environment");
        return;
    }
    let _mount = Mount { dir };
    let err = check(
        &target_for(&lp, 16 * MIB as u64),
        &SystemPaths::live(),
        MIB as u64,
        ExistingPartitions::Overwrite,
    )
    .unwrap_err();
    assert_eq!(err.code(), "disk_mounted", "{err}");
}
