//! `cargo xtask dist`: everything a deployment needs, in one directory (default
//! `target/dist/`), with a manifest of sizes and digests.
//!
//! - `pxe-server`: the appliance (release build for the host).
//! - `vmlinuz`, `pxeimage.initramfs`: from [`crate::initramfs`].
//! - `undionly.kpxe`, `ipxe.efi`, `snponly.efi`: iPXE from Debian's `ipxe` package.
//! - `manifest.json`: name, size and sha256 of every file above.
//!
//! It fails if `pxeimage` is not static, or if the agent or the initramfs is over budget.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::initramfs::{self as image, sha256_hex, target_dir, write_atomic};
use crate::util;

/// Size budget for the agent binary.
pub(crate) const PXEIMAGE_BUDGET: u64 = 4 << 20;

/// Size budget for the compressed initramfs (it is fetched over HTTP by iPXE on every boot).
pub(crate) const INITRAMFS_BUDGET: u64 = 16 << 20;

/// Where Debian's `ipxe` package installs its binaries.
const IPXE_DIR: &str = "/usr/lib/ipxe";

/// iPXE builds served to firmware: BIOS PXE (UNDI), UEFI (all drivers), UEFI via the
/// firmware's network stack (SNP).
const IPXE_FILES: &[&str] = &["undionly.kpxe", "ipxe.efi", "snponly.efi"];

/// The manifest file name.
pub(crate) const MANIFEST_NAME: &str = "manifest.json";

/// `manifest.json`.
#[derive(Debug, Serialize)]
struct Manifest {
    /// Format version; bump on any change of shape.
    version: u32,
    /// The Debian kernel package the kernel and modules came from.
    kernel: KernelInfo,
    /// Every file of the distribution, sorted by name.
    files: Vec<FileEntry>,
}

#[derive(Debug, Serialize)]
struct KernelInfo {
    package: String,
    version: String,
    release: String,
}

#[derive(Debug, Serialize)]
struct FileEntry {
    name: String,
    size: u64,
    sha256: String,
}

/// Runs `cargo xtask dist [--out DIR] [--agent FILE]`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut out_dir = target_dir().join("dist");
    let mut agent = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out_dir = it.next().context("--out needs a directory")?.into(),
            "--agent" => agent = Some(it.next().context("--agent needs a file")?.into()),
            other => bail!("unknown option {other:?} (expected --out DIR, --agent FILE)"),
        }
    }

    let built = image::build(&image::Options {
        out_dir: out_dir.clone(),
        check_reproducible: false,
        agent,
    })?;

    util::run(util::cargo().current_dir(util::workspace_root()).args([
        "build",
        "--package",
        "pxe-server",
        "--release",
    ]))?;
    let server = target_dir().join("release/pxe-server");
    copy_into(&server, &out_dir)?;
    for f in IPXE_FILES {
        let src = Path::new(IPXE_DIR).join(f);
        if !src.is_file() {
            bail!(
                "ipxe_missing: {} not found; install Debian's ipxe package (`cargo xtask setup`)",
                src.display()
            );
        }
        copy_into(&src, &out_dir)?;
    }

    // Budgets and the static check, on the exact files that ship.
    image::check_static(&built.pxeimage)?;
    let agent_size = file_size(&built.pxeimage)?;
    let initramfs_size = file_size(&built.initramfs)?;
    let over = [
        report("pxeimage", agent_size, PXEIMAGE_BUDGET),
        report(image::INITRAMFS_NAME, initramfs_size, INITRAMFS_BUDGET),
    ];
    if over.iter().any(|ok| !ok) {
        bail!("over_budget: see the sizes above");
    }

    let mut names: Vec<&str> = vec!["pxe-server", image::VMLINUZ_NAME, image::INITRAMFS_NAME];
    names.extend(IPXE_FILES);
    names.sort_unstable();
    let mut files = Vec::new();
    for name in names {
        let path = out_dir.join(name);
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        files.push(FileEntry {
            name: name.to_owned(),
            size: data.len() as u64,
            sha256: sha256_hex(&data),
        });
    }
    let manifest = Manifest {
        version: 1,
        kernel: KernelInfo {
            release: built.kernel.kver().to_owned(),
            package: built.kernel.name,
            version: built.kernel.version,
        },
        files,
    };
    let mut json = serde_json::to_string_pretty(&manifest).context("serialising the manifest")?;
    json.push('\n');
    let manifest_path = out_dir.join(MANIFEST_NAME);
    write_atomic(&manifest_path, json.as_bytes())?;
    for f in &manifest.files {
        println!("{:>10}  {}  {}", f.size, f.sha256, f.name);
    }
    eprintln!("xtask: wrote {}", manifest_path.display());
    Ok(())
}

/// Prints `name`'s size against its budget; returns whether it fits.
fn report(name: &str, size: u64, budget: u64) -> bool {
    let ok = size <= budget;
    eprintln!(
        "xtask: {name}: {size} bytes ({:.2} MiB) of {:.0} MiB budget: {}",
        size as f64 / f64::from(1 << 20),
        budget as f64 / f64::from(1 << 20),
        if ok { "ok" } else { "OVER BUDGET" }
    );
    ok
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .len())
}

/// Copies `src` into `dir` under its own file name, atomically, keeping it executable if
/// it was.
fn copy_into(src: &Path, dir: &Path) -> Result<PathBuf> {
    let name = src
        .file_name()
        .with_context(|| format!("{} has no file name", src.display()))?;
    let dst = dir.join(name);
    let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    write_atomic(&dst, &data)?;
    let perms = std::fs::metadata(src)
        .with_context(|| format!("stat {}", src.display()))?
        .permissions();
    std::fs::set_permissions(&dst, perms).with_context(|| format!("chmod {}", dst.display()))?;
    Ok(dst)
}
