//! `cargo xtask setup`: make a fresh Debian machine able to build and test rackhand.
//!
//! Installs only what is missing. Every package is from Debian's archive; the musl target comes
//! from rustup. `qemu-utils` is pinned to the `qemu-system-x86` version, because apt otherwise
//! replaces a newer preinstalled qemu-img (see shared research, qemu-netboot pitfall 1).

use std::process::Command;

use anyhow::Result;

use crate::util;

/// Debian packages the build and the tests need.
pub(crate) const APT_PACKAGES: &[&str] = &[
    "musl-tools",
    "iproute2",
    "kmod",
    "ipxe",
    "cpio",
    "atftp",
    "tftp-hpa",
    "curl",
    // System tests (tests/): firmware for QEMU VMs. QEMU itself: see `install_qemu`.
    "seabios",
    "ipxe-qemu",
    "ovmf",
    // installer loop-device tests: losetup/mount (mount), mkfs.ext4 (e2fsprogs).
    "mount",
    "e2fsprogs",
    // cargo xtask test-os: MBR boot code + installer, FAT without mounting.
    "syslinux",
    "syslinux-common",
    "mtools",
    "dosfstools",
    // cargo xtask test-os: the UEFI loader (systemd-bootx64.efi) of the test OS. It Breaks
    // other versions of `systemd`, so apt may bring systemd to the same point release.
    "systemd-boot-efi",
];

/// Debian packages only the benchmarks need (`bench boot-services` and `bench install`: the
/// peers they measure).
/// `atftpd` conflicts with `tftpd-hpa`, so [`bench_peers`] unpacks it instead.
pub(crate) const BENCH_PACKAGES: &[&str] = &[
    "kea-dhcp4-server",
    "kea-admin",
    "tftpd-hpa",
    "dnsmasq-base",
    "atftp",
    "curl",
    // cargo xtask bench install: the peers (zstd | dd, qemu-img convert) and mkfs.ext4 -d.
    "zstd",
    "qemu-utils",
    "e2fsprogs",
];

pub(crate) fn run() -> Result<()> {
    apt_install(APT_PACKAGES)?;
    install_qemu()?;
    let targets = util::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .unwrap_or_default();
    if !targets
        .lines()
        .any(|l| l.trim() == "x86_64-unknown-linux-musl")
    {
        util::run(Command::new("rustup").args(["target", "add", "x86_64-unknown-linux-musl"]))?;
    }
    Ok(())
}

/// The boot-services benchmark's peers: [`BENCH_PACKAGES`] with apt (a package's postinst may
/// try to start its service; the benchmark never talks to it), and atftpd unpacked with
/// `apt-get download` + `dpkg -x` into `target/bench-peers/atftpd` (not installed).
pub(crate) fn bench_peers() -> Result<()> {
    apt_install(BENCH_PACKAGES)?;
    let dir = util::workspace_root().join("target/bench-peers");
    if dir.join("atftpd/usr/sbin/atftpd").exists()
        || std::path::Path::new("/usr/sbin/atftpd").exists()
    {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    util::run(
        Command::new("apt-get")
            .current_dir(&dir)
            .args(["download", "atftpd"]),
    )?;
    let deb = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("atftpd_") && n.ends_with(".deb"))
        })
        .ok_or_else(|| {
            anyhow::anyhow!("apt-get download atftpd left no .deb in {}", dir.display())
        })?;
    util::run(
        Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("atftpd")),
    )
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            anyhow::bail!(
                "missing Debian packages {missing:?}; run `cargo xtask setup` as root or install them"
            );
        }
        util::run(Command::new("apt-get").args(["update", "-qq"]))?;
        util::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing),
        )?;
    }
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// QEMU for the system tests (`tests/`): `qemu-system-x86` plus `qemu-utils` (qemu-img) of
/// the *same* version, with `--allow-downgrades`. A plain install would silently remove a
/// newer preinstalled qemu-utils (bookworm-backports' 10.x Breaks qemu-system-common << 8;
/// shared research, qemu-netboot pitfall 1). Does nothing when both are installed.
fn install_qemu() -> Result<()> {
    if dpkg_installed("qemu-system-x86") && dpkg_installed("qemu-utils") {
        return Ok(());
    }
    if !is_root() {
        anyhow::bail!(
            "missing qemu-system-x86 or qemu-utils; run `cargo xtask setup` as root or install them"
        );
    }
    util::run(Command::new("apt-get").args(["update", "-qq"]))?;
    let version = if dpkg_installed("qemu-system-x86") {
        util::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-system-x86"]))?
    } else {
        let policy = util::output(Command::new("apt-cache").args(["policy", "qemu-system-x86"]))?;
        policy
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "(none)")
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("apt has no candidate for qemu-system-x86"))?
    };
    let version = version.trim();
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "--allow-downgrades",
            ])
            .arg(format!("qemu-system-x86={version}"))
            .arg(format!("qemu-utils={version}")),
    )
}
