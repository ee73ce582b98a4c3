//! `cargo xtask test-os`: a tiny OS that boots on BIOS and on UEFI machines, as a raw disk
//! image and as a signed snapshot, for the install scenarios.
//!
//! The disk (64 MiB, MBR):
//!
//! ```text
//!  LBA 0      syslinux mbr.bin (BIOS: boots the active partition) + partition table
//!  LBA 2048   partition 1, type 0x0e (FAT16 LBA), active, to the end of the disk:
//!               ldlinux.sys/ldlinux.c32 (`syslinux --install`), syslinux.cfg     BIOS
//!               EFI/BOOT/BOOTX64.EFI (systemd-boot), loader/loader.conf,
//!               loader/entries/test-os.conf                                     UEFI
//!               vmlinuz (Debian's kernel, `crate::kernel`), initrd.img          both
//! ```
//!
//! One partition serves both firmware types. A BIOS runs the MBR code, which chains to
//! syslinux in the active partition. UEFI firmware ignores the MBR code and the partition
//! type: its FAT driver mounts the partition and the boot manager runs the removable-media
//! path `\EFI\BOOT\BOOTX64.EFI`. OVMF does this on an MBR disk (checked by `--boot`), so
//! the disk needs no GPT, no second partition and no type 0xEF.
//!
//! The EFI loader is systemd-boot (Debian `systemd-boot-efi`), chosen as the most robust of
//! the three candidates:
//! - systemd-boot: one 140 KiB PE file, configured by two short text files, no menu with
//!   `timeout 0`, starts the kernel through its EFI stub with the initrd and command line of
//!   its entry; it needs nothing but a FAT filesystem and no NVRAM variable.
//! - a GRUB standalone image (`grub-efi-amd64-bin`, `grub-mkstandalone`) would do as well,
//!   but it is MiBs of modules packed at build time and a second configuration language,
//!   for nothing this disk needs.
//! - the kernel's EFI stub as `BOOTX64.EFI` needs its command line from somewhere: a UEFI
//!   shell running `startup.nsh` exists in OVMF but not on real servers, and a boot entry
//!   with load options would live in NVRAM, not on the disk.
//!
//! The filesystem is built without mounting anything: `mkfs.vfat --offset`, `syslinux
//! --offset --install`, `mmd`/`mcopy -i disk@@offset`. Timestamps come from a fixed
//! `SOURCE_DATE_EPOCH` (mtools), `mkfs.vfat --invariant` and a fixed volume ID, so the image
//! is byte-for-byte reproducible from the same inputs. The initramfs holds `/init`, a static
//! musl C program (`xtask/testos/init.c`) that prints
//! `RACKHAND-TEST-OS booted serial=<DMI serial> snapshot=<name>` on the console and powers off;
//! the snapshot name comes from `rackhand.snapshot=` on the kernel command line, which
//! `syslinux.cfg` and the systemd-boot entry both give ([`kernel_cmdline`]).
//!
//! Outputs:
//! - `target/testos/test-os.img`: the raw disk.
//! - `target/dist/snapshots/test-os/`: the snapshot (`snapshot-tool build --key`), verified
//!   with `snapshot-tool verify` against the trusted keys directory; and
//!   `target/dist/snapshots/test-os-blake3/`, the same disk with `--digest blake3`.
//! - the signing key `target/testos/signing.key` (generated once with `snapshot-tool keygen`)
//!   and, when the trusted keys directory ([`crate::initramfs::keys_dir`], default
//!   `target/dist-keys/`) does not exist, that directory with the test public key, so a
//!   `cargo xtask initramfs` afterwards builds an agent that trusts the test snapshot.
//!
//! `--boot` then boots the raw disk in QEMU (TCG, no network), once with SeaBIOS and once with
//! OVMF, and waits for the marker each time.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use initramfs::{Spec, WriteOptions};

use crate::initramfs::{keys_dir, target_dir, write_atomic};
use crate::{kernel, util};

/// Snapshot name (SHA-256 digests, the default), also the name the test OS prints.
pub(crate) const NAME: &str = "test-os";
/// The same disk as a snapshot with BLAKE3 digests (format version 2).
pub(crate) const NAME_BLAKE3: &str = "test-os-blake3";
/// Disk size.
const DISK_SIZE: u64 = 64 << 20;
/// First sector of the partition (1 MiB alignment).
const PART_START_LBA: u64 = 2048;
/// Sector size.
const SECTOR: u64 = 512;
/// Debian's syslinux MBR boot code (package `syslinux-common`).
const MBR_BIN: &str = "/usr/lib/syslinux/mbr/mbr.bin";
/// Debian's systemd-boot for x86-64 UEFI (package `systemd-boot-efi`).
const SYSTEMD_BOOT_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// The UEFI removable-media boot path for x86-64, where firmware looks without NVRAM entries.
const EFI_FALLBACK_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// OVMF code and variable-store template (package `ovmf`), for `--boot`.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// See [`OVMF_CODE`].
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// File timestamps inside the FAT filesystem (2020-01-01T00:00:00Z), for reproducibility.
const SOURCE_DATE_EPOCH: &str = "1577836800";
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
    let loader_path = work.join("loader.conf");
    write_atomic(&loader_path, loader_conf(NAME).as_bytes())?;
    let entry_path = work.join(format!("{NAME}.conf"));
    write_atomic(&entry_path, loader_entry(NAME).as_bytes())?;
    let efi = Path::new(SYSTEMD_BOOT_EFI);
    if !efi.is_file() {
        bail!("{SYSTEMD_BOOT_EFI} is missing (package systemd-boot-efi; `cargo xtask setup`)");
    }
    let entry_dest = format!("loader/entries/{NAME}.conf");
    let files = [
        (tree.vmlinuz(), "vmlinuz"),
        (initrd_path, "initrd.img"),
        (cfg_path, "syslinux.cfg"),
        (efi.to_path_buf(), EFI_FALLBACK_PATH),
        (loader_path, "loader/loader.conf"),
        (entry_path, entry_dest.as_str()),
    ];

    let disk = work.join(format!("{NAME}.img"));
    build_disk(&disk, &files)?;
    eprintln!(
        "xtask: {} ({} bytes, sha256 {})",
        disk.display(),
        DISK_SIZE,
        file_sha256(&disk)?
    );

    let tool = build_snapshot_tool()?;
    let key = ensure_key(&tool, &work)?;
    let snapshots = target_dir().join("dist").join("snapshots");
    std::fs::create_dir_all(&snapshots)
        .with_context(|| format!("creating {}", snapshots.display()))?;
    let public = PathBuf::from(format!("{}.pub", key.display()));
    for (name, digest) in [(NAME, "sha256"), (NAME_BLAKE3, "blake3")] {
        let out = snapshots.join(name);
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
                .args(["--name", name, "--chunk-size", "4M", "--digest", digest])
                .arg("--key")
                .arg(&key),
        )?;
        util::run(
            Command::new(&tool)
                .arg("--quiet")
                .arg("verify")
                .arg("--pubkey")
                .arg(&public)
                .arg(&out),
        )?;
        eprintln!(
            "xtask: snapshot {} ({digest}) signed with {} ({:.1} s so far)",
            out.display(),
            public.display(),
            started.elapsed().as_secs_f64()
        );
    }

    if boot {
        boot_check(&disk, &work, BootFirmware::Bios)?;
        boot_check(&disk, &work, BootFirmware::Uefi)?;
    }
    Ok(())
}

/// The test OS kernel command line (without `initrd=`): console on the first serial port (the
/// last `console=` is `/dev/console`), and the snapshot name the init prints.
pub(crate) fn kernel_cmdline(snapshot: &str) -> String {
    format!("console=tty0 console=ttyS0,115200 panic=10 rackhand.snapshot={snapshot}")
}

/// `syslinux.cfg` (BIOS): boot the kernel with the initrd at once.
pub(crate) fn syslinux_cfg(snapshot: &str) -> String {
    format!(
        "DEFAULT testos\nPROMPT 0\nTIMEOUT 0\nLABEL testos\n  KERNEL /vmlinuz\n  \
         APPEND initrd=/initrd.img {}\n",
        kernel_cmdline(snapshot)
    )
}

/// systemd-boot's `loader/loader.conf` (UEFI): the one entry, no menu, no editor.
pub(crate) fn loader_conf(snapshot: &str) -> String {
    format!("default {snapshot}.conf\ntimeout 0\neditor no\n")
}

/// systemd-boot's `loader/entries/<snapshot>.conf` (UEFI): the same kernel, initrd and command
/// line as [`syslinux_cfg`]. Paths are relative to the root of the partition.
pub(crate) fn loader_entry(snapshot: &str) -> String {
    format!(
        "title rackhand test OS ({snapshot})\nlinux /vmlinuz\ninitrd /initrd.img\noptions {}\n",
        kernel_cmdline(snapshot)
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

/// Writes the disk image: zeros, MBR code + table, FAT16 with syslinux, then `files` as
/// (source, path inside the partition), creating their directories first.
fn build_disk(disk: &Path, files: &[(PathBuf, &str)]) -> Result<()> {
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
        fixed_time(Command::new("mkfs.vfat"))
            .args([
                "--invariant",
                "-F",
                "16",
                "-n",
                "RHTESTOS",
                "-i",
                "52484f53",
            ])
            .arg("--offset")
            .arg(PART_START_LBA.to_string())
            .arg(&tmp)
            .arg(blocks_kib.to_string())
            .stdout(Stdio::null()),
    )
    .context("mkfs.vfat (package dosfstools)")?;
    util::run(
        fixed_time(Command::new("syslinux"))
            .arg("--offset")
            .arg(offset.to_string())
            .arg("--install")
            .arg(&tmp),
    )
    .context("syslinux --install (package syslinux)")?;
    let image = format!("{}@@{offset}", tmp.display());
    for dir in fat_dirs(files.iter().map(|(_, dest)| *dest)) {
        util::run(
            fixed_time(Command::new("mmd"))
                .args(["-i", &image])
                .arg(format!("::/{dir}")),
        )
        .context("mmd (package mtools)")?;
    }
    for (src, dest) in files {
        util::run(
            fixed_time(Command::new("mcopy"))
                .args(["-o", "-i", &image])
                .arg(src)
                .arg(format!("::/{dest}")),
        )
        .context("mcopy (package mtools)")?;
    }
    std::fs::rename(&tmp, disk).with_context(|| format!("renaming to {}", disk.display()))?;
    Ok(())
}

/// `cmd` with a fixed clock for the timestamps it writes into the filesystem (mtools reads
/// `SOURCE_DATE_EPOCH`; FAT stores local time, so the zone is fixed too).
fn fixed_time(mut cmd: Command) -> Command {
    cmd.env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .env("TZ", "UTC");
    cmd
}

/// Every directory the destination paths need, parents before children, each once. Pure.
pub(crate) fn fat_dirs<'a>(dests: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    for dest in dests {
        let parts: Vec<&str> = dest.split('/').collect();
        for n in 1..parts.len() {
            let dir = parts[..n].join("/");
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// Lowercase hex SHA-256 of a file (for the build log).
fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(crate::initramfs::sha256_hex(&bytes))
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

/// The firmware `--boot` starts the disk with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BootFirmware {
    /// SeaBIOS: MBR code → syslinux.
    Bios,
    /// OVMF: removable-media path → systemd-boot.
    Uefi,
}

/// Boots `disk` in QEMU (TCG, no network, a copy of the disk) with `firmware` and waits for
/// the marker.
fn boot_check(disk: &Path, work: &Path, firmware: BootFirmware) -> Result<()> {
    let tag = match firmware {
        BootFirmware::Bios => "bios",
        BootFirmware::Uefi => "uefi",
    };
    let copy = work.join(format!("boot-check-{tag}.img"));
    std::fs::copy(disk, &copy).with_context(|| format!("copying {}", disk.display()))?;
    let log = work.join(format!("boot-check-{tag}.serial.log"));
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "512",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .args(["-smbios", &format!("type=1,serial={BOOT_SERIAL}")]);
    let vars = work.join("boot-check-OVMF_VARS.fd");
    match firmware {
        BootFirmware::Bios => {
            cmd.arg("-drive")
                .arg(format!("file={},format=raw,if=ide", copy.display()));
        }
        BootFirmware::Uefi => {
            // A fresh variable store: no boot entries, so only the removable-media path
            // `\EFI\BOOT\BOOTX64.EFI` can boot the disk, as on a new machine.
            std::fs::copy(OVMF_VARS, &vars)
                .with_context(|| format!("copying {OVMF_VARS} (package ovmf)"))?;
            cmd.args(["-machine", "q35"])
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ))
                .arg("-drive")
                .arg(format!("file={},format=raw,if=virtio", copy.display()));
        }
    }
    let started = Instant::now();
    let mut child = cmd
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
    let _ = std::fs::remove_file(&vars);
    if !found {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        bail!(
            "testos_boot_failed: {tag}: no {want:?} on the serial console within {} s (qemu {}); \
             last lines:\n{}",
            BOOT_TIMEOUT.as_secs(),
            exited.map_or_else(|| "killed".to_owned(), |s| s.to_string()),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    eprintln!(
        "xtask: test OS booted ({tag}) in {:.1} s and printed {want:?}; qemu {}",
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

    #[test]
    fn bios_and_uefi_boot_the_same_kernel_with_the_same_command_line() {
        let cmdline = kernel_cmdline("test-os");
        assert!(cmdline.ends_with(" rackhand.snapshot=test-os"));
        // The last console= becomes /dev/console, where the init prints the marker.
        assert!(cmdline.contains("console=tty0 console=ttyS0,115200"));
        let append = syslinux_cfg("test-os")
            .lines()
            .find_map(|l| l.trim().strip_prefix("APPEND ").map(str::to_owned))
            .unwrap();
        assert_eq!(append, format!("initrd=/initrd.img {cmdline}"));
        let entry = loader_entry("test-os");
        let lines: Vec<&str> = entry.lines().collect();
        assert!(lines.contains(&"linux /vmlinuz"), "{entry}");
        assert!(lines.contains(&"initrd /initrd.img"), "{entry}");
        assert!(
            lines.contains(&format!("options {cmdline}").as_str()),
            "{entry}"
        );
    }

    #[test]
    fn loader_conf_boots_the_entry_without_a_menu() {
        let conf = loader_conf("test-os");
        let lines: Vec<&str> = conf.lines().collect();
        assert_eq!(lines, ["default test-os.conf", "timeout 0", "editor no"]);
    }

    #[test]
    fn fat_dirs_lists_parents_first_once() {
        let dirs = fat_dirs(
            [
                "vmlinuz",
                EFI_FALLBACK_PATH,
                "loader/loader.conf",
                "loader/entries/test-os.conf",
            ]
            .into_iter(),
        );
        assert_eq!(dirs, ["EFI", "EFI/BOOT", "loader", "loader/entries"]);
        assert!(fat_dirs(["a"].into_iter()).is_empty());
    }
}
