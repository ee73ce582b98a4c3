//! Where things are: the workspace, `target/`, the `cargo xtask dist` output, binaries and
//! firmware files.

use std::path::{Path, PathBuf};

/// Overrides the dist directory (default `<target>/dist`).
pub const DIST_DIR_ENV: &str = "RACKHAND_DIST_DIR";

/// The files `cargo xtask dist` writes and the end-to-end tests need.
pub const DIST_FILES: &[&str] = &[
    "pxe-server",
    "vmlinuz",
    "pxeimage.initramfs",
    "undionly.kpxe",
    "ipxe.efi",
    "snponly.efi",
    "manifest.json",
];

/// QEMU's iPXE option ROM for virtio-net (Debian `ipxe-qemu`; BIOS and EFI images combined).
pub const IPXE_VIRTIO_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";
/// OVMF code (read-only pflash), Debian `ovmf`.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template; every VM gets its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// SeaBIOS as QEMU loads it (Debian `seabios`).
pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The dist directory: `$RACKHAND_DIST_DIR` or `<target>/dist`.
pub fn dist_dir() -> PathBuf {
    match std::env::var_os(DIST_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => target_dir().join("dist"),
    }
}

/// The dist files that are missing from `dir`.
pub fn missing_dist_files(dir: &Path) -> Vec<&'static str> {
    DIST_FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect()
}

/// Which `pxe-server` build a test wants first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    /// `target/dist/pxe-server` (what is shipped), then debug, then release.
    Dist,
    /// `target/debug/pxe-server` (the freshest host build), then release, then dist.
    Debug,
}

/// Finds a `pxe-server` binary. Returns the path and a note when it is not the preferred one.
pub fn locate_pxe_server(prefer: Prefer) -> Option<(PathBuf, Option<String>)> {
    let t = target_dir();
    let dist = dist_dir().join("pxe-server");
    let debug = t.join("debug/pxe-server");
    let release = t.join("release/pxe-server");
    let order = match prefer {
        Prefer::Dist => [dist, debug, release],
        Prefer::Debug => [debug, release, dist],
    };
    let first = order.first().cloned();
    let found = order.into_iter().find(|p| p.is_file())?;
    let note = match first {
        Some(f) if f != found => Some(format!(
            "{} is missing; using {} instead (run `{}` to test the preferred build)",
            f.display(),
            found.display(),
            match prefer {
                Prefer::Dist => "cargo xtask dist",
                Prefer::Debug => "cargo build -p pxe-server",
            }
        )),
        _ => None,
    };
    Some((found, note))
}

/// Finds `prog` on `PATH`.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dist_files_names_each_absent_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(missing_dist_files(d.path()), DIST_FILES.to_vec());
        for f in DIST_FILES {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        assert!(missing_dist_files(d.path()).is_empty());
        std::fs::remove_file(d.path().join("ipxe.efi")).unwrap();
        assert_eq!(missing_dist_files(d.path()), vec!["ipxe.efi"]);
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_some());
        assert!(which("no-such-program-rackhand").is_none());
    }
}
