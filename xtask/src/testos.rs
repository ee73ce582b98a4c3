//! `cargo xtask test-os`: a tiny BIOS-bootable OS, as a raw disk image and as a signed
//! snapshot, for the install scenario.
//!
//! The disk (64 MiB, MBR):
//!
//! ```text
//!  LBA 0      syslinux mbr.bin (boots the active partition) + partition table
//!  LBA 2048   partition 1, type 0x0e (FAT16 LBA), active, to the end of the disk:
//!               ldlinux.sys/ldlinux.c32 (`syslinux --install`), syslinux.cfg,
//!               vmlinuz (Debian's kernel, `crate::kernel`), initrd.img
//! ```
//!
//! The filesystem is built without mounting anything: `mkfs.vfat --offset`, `syslinux
//! --offset --install`, `mcopy -i disk@@offset`. The initramfs holds `/init`, a static musl C
//! program (`xtask/testos/init.c`) that prints
//! `RACKHAND-TEST-OS booted serial=<DMI serial> snapshot=<name>` on the console and powers off;
//! the snapshot name comes from `rackhand.snapshot=` in `syslinux.cfg`.
//!
//! Outputs:
//! - `target/testos/test-os.img`: the raw disk.
//! - `target/dist/snapshots/test-os/`: the snapshot (`snapshot-tool build --key`), verified
//!   with `snapshot-tool verify` against the trusted keys directory.
//! - the signing key `target/testos/signing.key` (generated once with `snapshot-tool keygen`)
//!   and, when the trusted keys directory ([`crate::initramfs::keys_dir`], default
//!   `target/dist-keys/`) does not exist, that directory with the test public key, so a
//!   `cargo xtask initramfs` afterwards builds an agent that trusts the test snapshot.
//!
//! `--boot` then boots the raw disk in QEMU (TCG, no network) and waits for the marker.
//!
//! BIOS only in this version: no EFI system partition.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use initramfs::{Spec, WriteOptions};

use crate::initramfs::{keys_dir, target_dir, write_atomic};
use crate::{kernel, util};

/// Snapshot name.
pub(crate) const NAME: &str = "test-os";
/// Disk size.
const DISK_SIZE: u64 = 64 << 20;
/// First sector of the partition (1 MiB alignment).
const PART_START_LBA: u64 = 2048;
/// Sector size.
const SECTOR: u64 = 512;
/// Debian's syslinux MBR boot code (package `syslinux-common`).
const MBR_BIN: &str = "/usr/lib/syslinux/mbr/mbr.bin";
/// The console marker printed by the test OS.
pub(crate) const MARKER: &str = "RACKHAND-TEST-OS booted";
/// Longest wait for the marker when booting under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// DMI serial given to the QEMU machine by `--boot`.
const BOOT_SERIAL: &str = "RH-TESTOS-0001";

/// Runs `cargo xtask test-os [--boot]`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut boot = false;
    for a in args {
        match a.as_str() {
            "--boot" => boot = true,
            other => bail!("unknown option {other:?} (expected --boot)"),
        }
    }
    let work = target_dir().join("testos");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let started = Instant::now();

    let init = build_init(&work)?;
    let tree = kernel::fetch(&target_dir().join("kernel-cache"))?;
    let initrd = build_initrd(&init)?;
    let initrd_path = work.join("initrd.img");
    write_atomic(&initrd_path, &initrd)?;
    let cfg_path = work.join("syslinux.cfg");
    write_atomic(&cfg_path, syslinux_cfg(NAME).as_bytes())?;

    let disk = work.join(format!("{NAME}.img"));
    build_disk(&disk, &tree.vmlinuz(), &initrd_path, &cfg_path)?;
    eprintln!("xtask: {} ({} bytes)", disk.display(), DISK_SIZE);

    let tool = build_snapshot_tool()?;
    let key = ensure_key(&tool, &work)?;
    let snapshots = target_dir().join("dist").join("snapshots");
    std::fs::create_dir_all(&snapshots)
        .with_context(|| format!("creating {}", snapshots.display()))?;
    let out = snapshots.join(NAME);
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    util::run(
        Command::new(&tool)
            .arg("--quiet")
            .arg("build")
            .arg("--image")
            .arg(&disk)
            .arg("--out")
            .arg(&snapshots)
            .args(["--name", NAME, "--chunk-size", "4M"])
            .arg("--key")
            .arg(&key),
    )?;
    let public = PathBuf::from(format!("{}.pub", key.display()));
    util::run(
        Command::new(&tool)
            .arg("--quiet")
            .arg("verify")
            .arg("--pubkey")
            .arg(&public)
            .arg(&out),
    )?;
    eprintln!(
        "xtask: snapshot {} signed with {} (built in {:.1} s)",
        out.display(),
        public.display(),
        started.elapsed().as_secs_f64()
    );

    if boot {
        boot_check(&disk, &work)?;
    }
    Ok(())
}

/// `syslinux.cfg`: boot the kernel with the initrd at once, console on the first serial port.
pub(crate) fn syslinux_cfg(snapshot: &str) -> String {
    format!(
        "DEFAULT testos\nPROMPT 0\nTIMEOUT 0\nLABEL testos\n  KERNEL /vmlinuz\n  \
         APPEND initrd=/initrd.img console=tty0 console=ttyS0,115200 panic=10 \
         rackhand.snapshot={snapshot}\n"
    )
}

/// Compiles `xtask/testos/init.c` with `musl-gcc -static` and checks it is static.
fn build_init(work: &Path) -> Result<PathBuf> {
    let src = util::workspace_root().join("xtask/testos/init.c");
    let out = work.join("init");
    util::run(
        Command::new("musl-gcc")
            .args(["-static", "-Os", "-s", "-Wall", "-o"])
            .arg(&out)
            .arg(&src),
    )
    .context("compiling the test OS init (is musl-tools installed? `cargo xtask setup`)")?;
    crate::initramfs::check_static(&out)?;
    Ok(out)
}

/// The test OS initramfs: `/init`, `/dev/console`, `/proc`, `/sys`; zstd, mtime 0.
fn build_initrd(init: &Path) -> Result<Vec<u8>> {
    let bin = std::fs::read(init).with_context(|| format!("reading {}", init.display()))?;
    let mut spec = Spec::new();
    spec.add_file("init", 0o755, bin)?;
    spec.add_dir("dev", 0o755)?;
    spec.add_char_device("dev/console", 0o600, 5, 1)?;
    spec.add_dir("proc", 0o555)?;
    spec.add_dir("sys", 0o555)?;
    let (_, compressed) = initramfs::build_zstd(&spec, WriteOptions { mtime: 0 })
        .context("writing the test OS initramfs")?;
    Ok(compressed)
}

/// The 16-byte MBR partition entry for one active partition of `sectors` sectors at
/// `start` (CHS fields set to the LBA-only marker 0xFE/0xFF/0xFF).
pub(crate) fn mbr_entry(start: u64, sectors: u64, kind: u8) -> Result<[u8; 16]> {
    let start = u32::try_from(start).context("partition start beyond 2 TiB")?;
    let sectors = u32::try_from(sectors).context("partition size beyond 2 TiB")?;
    let mut e = [0u8; 16];
    e[0] = 0x80;
    e[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    e[4] = kind;
    e[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&start.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    Ok(e)
}

/// Writes the disk image: zeros, MBR code + table, FAT16 with syslinux, the files.
fn build_disk(disk: &Path, vmlinuz: &Path, initrd: &Path, cfg: &Path) -> Result<()> {
    let tmp = disk.with_extension("img.partial");
    let _ = std::fs::remove_file(&tmp);
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.set_len(DISK_SIZE)?;
    let mut mbr = [0u8; 512];
    let mut code = Vec::new();
    std::fs::File::open(MBR_BIN)
        .with_context(|| format!("opening {MBR_BIN} (package syslinux-common)"))?
        .take(440)
        .read_to_end(&mut code)?;
    mbr[..code.len()].copy_from_slice(&code);
    let sectors = DISK_SIZE / SECTOR - PART_START_LBA;
    mbr[446..462].copy_from_slice(&mbr_entry(PART_START_LBA, sectors, 0x0e)?);
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&mbr)?;
    f.sync_all()?;
    drop(f);

    let offset = PART_START_LBA * SECTOR;
    let blocks_kib = sectors * SECTOR / 1024;
    util::run(
        Command::new("mkfs.vfat")
            .args(["-F", "16", "-n", "RHTESTOS", "-i", "52484f53", "--offset"])
            .arg(PART_START_LBA.to_string())
            .arg(&tmp)
            .arg(blocks_kib.to_string())
            .stdout(Stdio::null()),
    )
    .context("mkfs.vfat (package dosfstools)")?;
    util::run(
        Command::new("syslinux")
            .arg("--offset")
            .arg(offset.to_string())
            .arg("--install")
            .arg(&tmp),
    )
    .context("syslinux --install (package syslinux)")?;
    let image = format!("{}@@{offset}", tmp.display());
    for (src, name) in [
        (vmlinuz, "vmlinuz"),
        (initrd, "initrd.img"),
        (cfg, "syslinux.cfg"),
    ] {
        util::run(
            Command::new("mcopy")
                .args(["-o", "-i", &image])
                .arg(src)
                .arg(format!("::/{name}")),
        )
        .context("mcopy (package mtools)")?;
    }
    std::fs::rename(&tmp, disk).with_context(|| format!("renaming to {}", disk.display()))?;
    Ok(())
}

/// Builds the `snapshot-tool` CLI (debug profile) and returns its path.
fn build_snapshot_tool() -> Result<PathBuf> {
    util::run(util::cargo().current_dir(util::workspace_root()).args([
        "build",
        "--package",
        "snapshot-tool",
        "--bin",
        "snapshot-tool",
    ]))?;
    Ok(target_dir().join("debug").join("snapshot-tool"))
}

/// The test signing key, generated once; seeds the trusted keys directory when it is absent.
fn ensure_key(tool: &Path, work: &Path) -> Result<PathBuf> {
    let key = work.join("signing.key");
    let public = work.join("signing.key.pub");
    if !key.exists() {
        util::run(Command::new(tool).arg("keygen").arg("--out").arg(&key))?;
    }
    let pub_bytes =
        std::fs::read(&public).with_context(|| format!("reading {}", public.display()))?;
    let dir = keys_dir();
    if !dir.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join("rackhand-test.pub"), &pub_bytes)?;
        eprintln!(
            "xtask: created {} with the TEST public key; production deployments put their own \
             public keys there instead",
            dir.display()
        );
    } else {
        let trusted = crate::initramfs::read_public_keys(&dir)?;
        if !trusted.iter().any(|(_, d)| *d == pub_bytes) {
            eprintln!(
                "xtask: warning: {} does not hold the test key {}: agents built with it will \
                 refuse the test snapshot (bad_signature)",
                dir.display(),
                public.display()
            );
        }
    }
    Ok(key)
}

/// Boots `disk` in QEMU (TCG, BIOS, no network, a copy of the disk) and waits for the marker.
fn boot_check(disk: &Path, work: &Path) -> Result<()> {
    let copy = work.join("boot-check.img");
    std::fs::copy(disk, &copy).with_context(|| format!("copying {}", disk.display()))?;
    let log = work.join("boot-check.serial.log");
    let _ = std::fs::remove_file(&log);
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .args(["-smbios", &format!("type=1,serial={BOOT_SERIAL}")])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide", copy.display()))
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(["-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let want = format!("{MARKER} serial={BOOT_SERIAL} snapshot={NAME}");
    let mut found = false;
    let exited = loop {
        let text = std::fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if text.contains(&want) {
            found = true;
        }
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > BOOT_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if exited.is_none() {
        // Our own child, by PID.
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = std::fs::read(&log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    found |= text.contains(&want);
    let _ = std::fs::remove_file(&copy);
    if !found {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        bail!(
            "testos_boot_failed: no {want:?} on the serial console within {} s (qemu {}); last lines:\n{}",
            BOOT_TIMEOUT.as_secs(),
            exited.map_or_else(|| "killed".to_owned(), |s| s.to_string()),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    eprintln!(
        "xtask: test OS booted in {:.1} s and printed {want:?}; qemu {}",
        started.elapsed().as_secs_f64(),
        exited.map_or_else(
            || "killed after the marker".to_owned(),
            |s| format!("exited ({s})")
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbr_entry_is_an_active_lba_partition() {
        let e = mbr_entry(2048, 129_024, 0x0e).unwrap();
        assert_eq!(e[0], 0x80);
        assert_eq!(e[4], 0x0e);
        assert_eq!(u32::from_le_bytes([e[8], e[9], e[10], e[11]]), 2048);
        assert_eq!(u32::from_le_bytes([e[12], e[13], e[14], e[15]]), 129_024);
        assert!(mbr_entry(1 << 33, 1, 0x0e).is_err());
    }

    #[test]
    fn syslinux_cfg_names_the_snapshot() {
        let cfg = syslinux_cfg("test-os");
        assert!(cfg.contains("rackhand.snapshot=test-os"));
        assert!(cfg.contains("initrd=/initrd.img"));
        assert!(cfg.starts_with("DEFAULT testos\n"));
    }
}
