//! Gating of system tests on what the machine offers.
//!
//! A test that needs root, QEMU or `target/dist` calls [`require`] first. When something is
//! missing it prints a `SKIP` line and passes, unless `RACKHAND_VM_TESTS=1`, in which case it
//! fails: CI sets the variable so that a broken setup cannot hide behind skips.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::paths::{self, Prefer};

/// Set to `1` to turn every skip into a failure.
pub const VM_TESTS_ENV: &str = "RACKHAND_VM_TESTS";

/// Something a system test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root (network namespaces, taps).
    Root,
    /// `ip` from iproute2 and `/dev/net/tun`.
    Iproute,
    /// `qemu-system-x86_64`, `qemu-img`, SeaBIOS and QEMU's iPXE ROM.
    Qemu,
    /// OVMF code and variable store.
    Ovmf,
    /// `curl` (HTTP requests from inside a namespace).
    Curl,
    /// Some `pxe-server` binary (dist, debug or release).
    PxeServer,
    /// The complete `cargo xtask dist` output.
    Dist,
}

impl Need {
    /// What is missing for this need, if anything.
    pub fn missing(self) -> Option<String> {
        let file = |p: &str, pkg: &str| {
            (!Path::new(p).is_file()).then(|| format!("{p} (apt-get install {pkg})"))
        };
        let prog = |p: &str, pkg: &str| {
            paths::which(p)
                .is_none()
                .then(|| format!("`{p}` (apt-get install {pkg})"))
        };
        let all = |v: Vec<Option<String>>| {
            let v: Vec<String> = v.into_iter().flatten().collect();
            (!v.is_empty()).then(|| v.join(", "))
        };
        match self {
            Need::Root => {
                (!nix::unistd::geteuid().is_root()).then(|| "root (namespaces and taps)".into())
            }
            Need::Iproute => all(vec![
                prog("ip", "iproute2"),
                (!Path::new("/dev/net/tun").exists())
                    .then(|| "/dev/net/tun (a kernel with TUN)".to_owned()),
            ]),
            Need::Qemu => all(vec![
                prog("qemu-system-x86_64", "qemu-system-x86"),
                prog("qemu-img", "qemu-utils (same version as qemu-system-x86)"),
                file(paths::SEABIOS, "seabios"),
                file(paths::IPXE_VIRTIO_ROM, "ipxe-qemu"),
            ]),
            Need::Ovmf => all(vec![
                file(paths::OVMF_CODE, "ovmf"),
                file(paths::OVMF_VARS, "ovmf"),
            ]),
            Need::Curl => prog("curl", "curl"),
            Need::PxeServer => paths::locate_pxe_server(Prefer::Debug).is_none().then(|| {
                "a pxe-server binary (run `cargo build -p pxe-server` or `cargo xtask dist`)".into()
            }),
            Need::Dist => {
                let dir = paths::dist_dir();
                let missing = paths::missing_dist_files(&dir);
                (!missing.is_empty()).then(|| {
                    format!(
                        "{} in {} (run `cargo xtask dist`)",
                        missing.join(", "),
                        dir.display()
                    )
                })
            }
        }
    }
}

/// What a gated test does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Everything is there.
    Run,
    /// Something is missing and skipping is allowed.
    Skip(String),
    /// Something is missing and `RACKHAND_VM_TESTS=1`.
    Fail(String),
}

/// The pure decision: `strict` is `RACKHAND_VM_TESTS == "1"`.
pub fn decide(strict: bool, missing: &[String]) -> Decision {
    if missing.is_empty() {
        return Decision::Run;
    }
    let why = missing.join("; ");
    if strict {
        Decision::Fail(why)
    } else {
        Decision::Skip(why)
    }
}

/// True if `RACKHAND_VM_TESTS=1`.
pub fn strict() -> bool {
    std::env::var(VM_TESTS_ENV).is_ok_and(|v| v == "1")
}

/// Checks `needs` for `test`. `Ok(true)`: run. `Ok(false)`: a SKIP line was printed; return
/// early and pass. `Err`: `RACKHAND_VM_TESTS=1` and something is missing.
pub fn require(test: &str, needs: &[Need]) -> Result<bool> {
    let missing: Vec<String> = needs.iter().filter_map(|n| n.missing()).collect();
    match decide(strict(), &missing) {
        Decision::Run => Ok(true),
        Decision::Skip(why) => {
            announce(&format!(
                "SKIP {test}: missing {why} (set {VM_TESTS_ENV}=1 to make this a failure)"
            ));
            Ok(false)
        }
        Decision::Fail(why) => Err(Error::Prerequisite {
            test: test.to_owned(),
            missing: why,
        }),
    }
}

/// Prints a line to the real stderr, past libtest's output capture, so SKIP lines and
/// timings are visible in a plain `cargo test` run.
pub fn announce(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_skips_only_when_not_strict() {
        assert_eq!(decide(false, &[]), Decision::Run);
        assert_eq!(decide(true, &[]), Decision::Run);
        let m = vec!["root".to_owned(), "qemu".to_owned()];
        assert_eq!(decide(false, &m), Decision::Skip("root; qemu".into()));
        assert_eq!(decide(true, &m), Decision::Fail("root; qemu".into()));
    }
}
