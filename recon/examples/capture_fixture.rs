//! Captures a trimmed sysfs/procfs tree for `recon`'s fixture tests.
//!
//! ```text
//! capture_fixture SOURCE_ROOT DEST_DIR      # e.g. capture_fixture / recon/tests/fixtures/mybox
//! ```
//!
//! Copies exactly the files `recon` consults (the lists in `recon::layout`) from
//! `SOURCE_ROOT/{sys,proc}` into `DEST_DIR/{sys,proc}`. Symlinks met on the way
//! (`/sys/block/vda` → `../devices/pci…/block/vda`, `device`, `class/dmi/id`…) are recreated
//! with their original relative targets, and their targets are captured too, so the fixture
//! has the same shape as sysfs. `device/driver` links are kept as (dangling) links: `recon`
//! only reads their names. Git stores no empty directory, so any directory left empty gets a
//! `.keep` file. Unreadable attributes (e.g. `carrier` of a down link) are skipped. The tool
//! only reads under SOURCE_ROOT and writes only under DEST_DIR.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use recon::layout;
use recon::sources::join_link;

/// Largest file copied (the biggest real one is `/proc/cpuinfo` on a large machine).
const FILE_CAP: u64 = 4 * 1024 * 1024;
/// Symlink hops followed for one path before giving up (as the kernel's `MAXSYMLINKS`).
const MAX_HOPS: u32 = 40;

struct Capture {
    src: PathBuf,
    dst: PathBuf,
    files: usize,
    links: usize,
}

fn normal_components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_owned()),
            _ => None,
        })
        .collect()
}

impl Capture {
    /// Recreates `rel` (relative to the roots) in the destination, materialising each symlink
    /// on the way and capturing its target. Returns the resolved real path of `rel`, or `None`
    /// if it does not exist in the source. With `follow_last == false` a final symlink is
    /// recreated but its target is not captured.
    fn materialize(&mut self, rel: &Path, follow_last: bool, hops: u32) -> Option<PathBuf> {
        if hops > MAX_HOPS {
            eprintln!("skip {}: too many symlink hops", rel.display());
            return None;
        }
        let comps = normal_components(rel);
        let mut cur = PathBuf::new();
        for (i, c) in comps.iter().enumerate() {
            let next = cur.join(c);
            let src = self.src.join(&next);
            let meta = src.symlink_metadata().ok()?;
            let last = i + 1 == comps.len();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&src).ok()?;
                if target.is_absolute() {
                    eprintln!("skip {}: absolute symlink target", next.display());
                    return None;
                }
                let dst = self.dst.join(&next);
                if dst.symlink_metadata().is_err() {
                    if let Some(parent) = dst.parent() {
                        fs::create_dir_all(parent).ok()?;
                    }
                    std::os::unix::fs::symlink(&target, &dst).ok()?;
                    self.links += 1;
                }
                if last && !follow_last {
                    return Some(next);
                }
                let resolved = join_link(&cur, &target)?;
                cur = self.materialize(&resolved, true, hops + 1)?;
            } else if meta.is_dir() {
                fs::create_dir_all(self.dst.join(&next)).ok()?;
                cur = next;
            } else {
                self.copy_file(&next)?;
                cur = next;
            }
        }
        Some(cur)
    }

    fn copy_file(&mut self, rel: &Path) -> Option<()> {
        let dst = self.dst.join(rel);
        if dst.symlink_metadata().is_ok() {
            return Some(());
        }
        let mut buf = Vec::new();
        let read =
            fs::File::open(self.src.join(rel)).and_then(|f| f.take(FILE_CAP).read_to_end(&mut buf));
        if let Err(e) = read {
            eprintln!("skip {}: {e}", rel.display());
            return None;
        }
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).ok()?;
        }
        fs::write(&dst, &buf).ok()?;
        self.files += 1;
        Some(())
    }

    fn names(&self, rel: &str) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.src.join(rel)) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    fn grab(&mut self, rel: &str) {
        let _ = self.materialize(Path::new(rel), true, 0);
    }

    fn run(&mut self) {
        for f in layout::PROC_FILES {
            self.grab(&format!("proc/{f}"));
        }
        if self.src.join("sys/firmware").is_dir() {
            let _ = fs::create_dir_all(self.dst.join("sys/firmware"));
        }
        for f in layout::DMI_FIELDS {
            self.grab(&format!("sys/{}/{f}", layout::DMI_ID_DIR));
        }
        self.grab(&format!("sys/{}", layout::SMBIOS_TABLE));
        self.grab(&format!("sys/{}", layout::EFI_MARKER));

        for n in self.names(&format!("sys/{}", layout::NET_DIR)) {
            let base = format!("sys/{}/{n}", layout::NET_DIR);
            self.grab(&base);
            for a in layout::NET_ATTRS {
                self.grab(&format!("{base}/{a}"));
            }
            self.grab(&format!("{base}/device"));
            let _ = self.materialize(Path::new(&format!("{base}/device/driver")), false, 0);
        }

        for n in self.names(&format!("sys/{}", layout::BLOCK_DIR)) {
            let base = format!("sys/{}/{n}", layout::BLOCK_DIR);
            self.grab(&base);
            for a in layout::BLOCK_ATTRS {
                self.grab(&format!("{base}/{a}"));
            }
            self.grab(&format!("{base}/device"));
            for a in layout::BLOCK_DEVICE_ATTRS {
                self.grab(&format!("{base}/device/{a}"));
            }
        }

        let cpu_dir = format!("sys/{}", layout::CPU_DIR);
        for n in self.names(&cpu_dir) {
            if n.strip_prefix("cpu")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            {
                for a in layout::CPU_TOPOLOGY_ATTRS {
                    self.grab(&format!("{cpu_dir}/{n}/{a}"));
                }
            }
        }
    }
}

/// Adds `.keep` to every empty directory under `dir` (not following symlinks).
fn keep_empty_dirs(dir: &Path) -> std::io::Result<()> {
    let mut empty = true;
    for e in fs::read_dir(dir)? {
        let e = e?;
        empty = false;
        if e.file_type()?.is_dir() {
            keep_empty_dirs(&e.path())?;
        }
    }
    if empty {
        fs::write(dir.join(".keep"), b"")?;
    }
    Ok(())
}

/// What one capture copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Regular files copied.
    pub(crate) files: usize,
    /// Symlinks recreated.
    pub(crate) links: usize,
}

/// Captures the files `recon` reads from `src` (a root holding `sys/` and `proc/`) into `dst`.
pub(crate) fn capture(src: &Path, dst: &Path) -> std::io::Result<Stats> {
    fs::create_dir_all(dst)?;
    let mut cap = Capture {
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
        files: 0,
        links: 0,
    };
    cap.run();
    keep_empty_dirs(dst)?;
    Ok(Stats {
        files: cap.files,
        links: cap.links,
    })
}

#[allow(dead_code)] // also compiled into the integration tests, which call `capture` only
fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [src, dst] = args.as_slice() else {
        eprintln!("usage: capture_fixture SOURCE_ROOT DEST_DIR");
        return ExitCode::from(2);
    };
    match capture(src, dst) {
        Ok(stats) => {
            println!(
                "captured {} files and {} symlinks into {}",
                stats.files,
                stats.links,
                dst.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("capture into {} failed: {e}", dst.display());
            ExitCode::FAILURE
        }
    }
}
