//! `cargo xtask`: build and test automation for rackhand.
//!
//! Subcommands:
//! - `setup`: install what builds and tests need on a fresh Debian machine (apt packages, the musl
//!   target). Idempotent; skips what is already there.
//! - `ci`: `setup`, then `cargo fmt --check`, `cargo clippy --all-targets -D warnings`, and every
//!   test. `.ci/run` calls exactly this.
//! - `initramfs`: the agent's kernel and initramfs (see `initramfs.rs`).
//! - `dist`: everything a deployment needs, with a manifest (see `dist.rs`).
//! - `test-os`: a tiny OS image, bootable on BIOS (syslinux) and UEFI (systemd-boot), and its
//!   signed snapshots, SHA-256 and BLAKE3 (see `testos.rs`).
//! - `bench api|tftp|boot-services|install`: the benchmarks, printing figures beside their peers.

mod check;
mod demo;
mod dist;
mod elf;
mod initramfs;
mod kernel;
mod setup;
mod testos;
mod util;

use anyhow::{Result, bail};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    match cmd {
        "setup" => setup::run(),
        "ci" => ci(rest),
        "initramfs" => initramfs::run(rest),
        "dist" => dist::run(rest),
        "bench" => bench(rest),
        "demo" => demo::run(rest),
        "test-os" => testos::run(rest),
        "check-workspace" => check::run(),
        "help" | "--help" | "-h" => {
            println!("{}", HELP.trim());
            Ok(())
        }
        other => bail!("unknown subcommand {other:?}\n{}", HELP.trim()),
    }
}

const HELP: &str = "
cargo xtask <command>

  setup    install apt packages and the musl target needed to build and test
  ci       setup, then fmt --check, clippy -D warnings and all tests (what .ci/run runs)
  initramfs [--out DIR] [--agent FILE] [--check-reproducible]
           build pxeimage (musl, static) and write vmlinuz + pxeimage.initramfs
  dist [--out DIR] [--agent FILE]
           initramfs, pxe-server, iPXE binaries and manifest.json in target/dist/
  test-os [--boot]
           a 64 MiB test OS, BIOS (syslinux) and UEFI (systemd-boot) bootable
           (target/testos/test-os.img), and its signed snapshots
           target/dist/snapshots/test-os/ (SHA-256) and test-os-blake3/ (BLAKE3);
           --boot checks it boots under SeaBIOS and OVMF
  check-workspace
           lint inheritance and the allowed dependency edges between crates
  demo     setup, dist, then netboot a QEMU machine from the appliance in a private
           network namespace and show it registering, with a timeline
  bench api|tftp|boot-services|install
           benchmarks (release builds); print figures, assert nothing about speed
           (boot-services: as root; installs its peers with apt first;
           install: as root for a loop device and dropped caches, ~10 min)
";

fn bench(rest: &[String]) -> Result<()> {
    let root = util::workspace_root();
    let which = rest.first().map(String::as_str).unwrap_or("");
    let (package, target) = match which {
        "api" => ("pxe-server", "api"),
        "tftp" => ("pxe-server", "tftp"),
        "boot-services" => {
            // Peers (Kea, perfdhcp, tftpd-hpa, atftpd, dnsmasq) only this benchmark needs.
            setup::bench_peers()?;
            ("pxe-server", "boot_services")
        }
        "install" => {
            // mkfs.ext4 and the version-pinned qemu-img come with setup; zstd with the
            // benchmark packages.
            setup::run()?;
            setup::bench_peers()?;
            ("installer", "install")
        }
        other => {
            bail!("unknown benchmark {other:?}: expected api, tftp, boot-services or install")
        }
    };
    util::run(
        util::cargo()
            .current_dir(&root)
            .args(["bench", "-p", package, "--bench", target]),
    )
}

fn ci(_rest: &[String]) -> Result<()> {
    setup::run()?;
    let root = util::workspace_root();
    util::run(
        util::cargo()
            .current_dir(&root)
            .args(["fmt", "--all", "--check"]),
    )?;
    check::run()?;
    util::run(util::cargo().current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The deployment artefacts the system tests boot (and their size budgets), then proof that
    // the initramfs build is reproducible.
    // The signed test OS snapshot (and its test key, which dist bakes into the initramfs).
    testos::run(&[])?;
    dist::run(&[])?;
    initramfs::run(&[
        "--check-reproducible".to_owned(),
        "--out".to_owned(),
        "target/repro".to_owned(),
    ])?;
    // In CI a system test that cannot run fails instead of skipping.
    let vm_tests = std::env::var("RACKHAND_VM_TESTS").unwrap_or_else(|_| "1".into());
    let test = if util::have("cargo-nextest") {
        vec!["nextest", "run", "--workspace", "--no-fail-fast"]
    } else {
        vec!["test", "--workspace", "--no-fail-fast"]
    };
    let tests = util::run(
        util::cargo()
            .current_dir(&root)
            .env("RACKHAND_VM_TESTS", vm_tests)
            .args(&test),
    );
    // Whatever the outcome, nothing the tests started may be left behind.
    let leaks = util::run(util::cargo().current_dir(&root).args([
        "run",
        "--quiet",
        "-p",
        "rackhand-tests",
        "--bin",
        "leak-check",
    ]));
    tests.and(leaks)
}
