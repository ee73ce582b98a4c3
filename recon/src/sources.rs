//! Bounded, lossy, never-failing reads from sysfs/procfs trees, plus the pure helpers that turn
//! raw attribute bytes into facts.
//!
//! Every read here returns `Option`: a missing, unreadable or oversized file is an absent fact.
//! Nothing in this module writes, and nothing follows a path outside the tree it was given
//! except through the symlinks the kernel (or a fixture) put there.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Cap for one sysfs attribute or small procfs file. Text attributes are at most one page
/// (4 KiB) in the kernel; anything bigger is not a real attribute and is treated as absent.
pub(crate) const ATTR_CAP: u64 = 64 * 1024;

/// Cap for `/proc/cpuinfo`: about 1.5 KiB per hardware thread, so 4 MiB covers ~2,700 threads.
pub(crate) const CPUINFO_CAP: u64 = 4 * 1024 * 1024;

/// Cap for the raw SMBIOS table. SMBIOS 2.x tables are at most 64 KiB; real 3.x tables are tens
/// of KiB. 1 MiB leaves room without letting a bogus file take memory.
pub(crate) const SMBIOS_CAP: u64 = 1024 * 1024;

/// Cap on how many entries one directory listing yields (a guard against pathological trees).
pub(crate) const DIR_ENTRY_CAP: usize = 4096;

/// Reads at most `cap` bytes of `path`. A file longer than `cap` is treated as absent (a
/// truncated serial or size would be a wrong fact, which is worse than a missing one).
/// Only regular files are read (sysfs and procfs attributes are regular files), so a FIFO or
/// device node planted in a tree cannot block or stream forever.
pub(crate) fn read_bounded(path: &Path, cap: u64) -> Option<Vec<u8>> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let file = File::open(path).ok()?;
    let mut buf = Vec::new();
    // One byte over the cap tells "exactly cap bytes" apart from "more than cap bytes".
    file.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .ok()?;
    if u64::try_from(buf.len()).map_or(true, |n| n > cap) {
        return None;
    }
    Some(buf)
}

/// Reads a text attribute (capped at [`ATTR_CAP`]), decoded lossily, trimmed, empty → `None`.
pub(crate) fn read_attr(path: &Path) -> Option<String> {
    read_bounded(path, ATTR_CAP).and_then(|b| clean_bytes(&b))
}

/// Lossy UTF-8 decode, then [`clean`].
pub fn clean_bytes(raw: &[u8]) -> Option<String> {
    clean(&String::from_utf8_lossy(raw))
}

/// Trims whitespace and NUL padding; an empty result is `None`.
pub fn clean(s: &str) -> Option<String> {
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if t.is_empty() {
        None
    } else {
        Some(t.to_owned())
    }
}

/// Parses a decimal unsigned integer attribute (surrounding whitespace allowed).
pub fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// Parses a decimal attribute that must fit in `u32`.
pub fn parse_u32(s: &str) -> Option<u32> {
    s.trim().parse().ok()
}

/// Parses a `0`/`1` flag attribute. Anything else is not a fact.
pub fn parse_flag(s: &str) -> Option<bool> {
    match s.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Names in a directory, sorted, non-UTF-8 names skipped, at most [`DIR_ENTRY_CAP`].
/// A missing or unreadable directory lists as empty.
pub(crate) fn list_dir(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .take(DIR_ENTRY_CAP)
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// True when `path` exists as anything (a dangling symlink counts: sysfs `device` links do).
pub(crate) fn exists_no_follow(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// The last component of a symlink's target (`device/driver` → `virtio_net`).
pub(crate) fn link_basename(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    let name = target.file_name()?.to_str()?;
    clean(name)
}

/// Resolves `path` (following symlinks) and returns it relative to the resolved `root`, as a
/// `/`-separated string such as `devices/pci0000:00/0000:00:02.0/virtio1/block/vda`.
/// A path that escapes `root`, loops, or does not exist resolves to `None`.
pub(crate) fn resolve_under(root: &Path, path: &Path) -> Option<String> {
    let root = root.canonicalize().ok()?;
    let real = path.canonicalize().ok()?;
    let rel = real.strip_prefix(&root).ok()?;
    let parts: Vec<&str> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some(parts.join("/"))
}

/// Lexically joins a relative symlink target onto the directory holding the link, without
/// touching the file system (`a/b` + `../c` → `a/c`). `None` if it climbs above the start.
pub fn join_link(link_dir: &Path, target: &Path) -> Option<PathBuf> {
    let mut out: Vec<std::ffi::OsString> = link_dir
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_owned()),
            _ => None,
        })
        .collect();
    for c in target.components() {
        match c {
            Component::Normal(s) => out.push(s.to_owned()),
            Component::ParentDir => {
                out.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => out.clear(),
        }
    }
    Some(out.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_trims_and_drops_empty() {
        assert_eq!(clean("  QEMU \n"), Some("QEMU".into()));
        assert_eq!(clean(" \n\t"), None);
        assert_eq!(clean("abc\0\0"), Some("abc".into()));
        assert_eq!(clean(""), None);
    }

    #[test]
    fn clean_bytes_is_lossy() {
        assert_eq!(
            clean_bytes(b"SN\xff\xfe1\n"),
            Some("SN\u{fffd}\u{fffd}1".into())
        );
    }

    #[test]
    fn numbers_and_flags() {
        assert_eq!(parse_u64("2097152\n"), Some(2_097_152));
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_u64("12abc"), None);
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_flag("1\n"), Some(true));
        assert_eq!(parse_flag("0"), Some(false));
        assert_eq!(parse_flag("2"), None);
        assert_eq!(parse_flag("yes"), None);
    }

    #[test]
    fn bounded_reads() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let p = dir.path().join("f");
        let write = |n: usize| std::fs::write(&p, vec![b'7'; n]).unwrap_or_else(|e| panic!("{e}"));
        write(10);
        assert_eq!(read_bounded(&p, 10).map(|b| b.len()), Some(10));
        write(11);
        assert_eq!(read_bounded(&p, 10), None, "one byte over the cap");
        assert_eq!(read_bounded(dir.path(), 10), None, "a directory");
        assert_eq!(read_bounded(&dir.path().join("missing"), 10), None);
        assert_eq!(
            read_bounded(Path::new("/dev/zero"), 10),
            None,
            "not a regular file"
        );
        assert_eq!(read_attr(&p), Some("77777777777".into()));
    }

    #[test]
    fn join_link_is_lexical() {
        assert_eq!(
            join_link(
                Path::new("sys/block"),
                Path::new("../devices/virtual/block/loop0")
            ),
            Some(PathBuf::from("sys/devices/virtual/block/loop0"))
        );
        assert_eq!(join_link(Path::new("a"), Path::new("../../x")), None);
        assert_eq!(
            join_link(Path::new("a/b"), Path::new("/abs/t")),
            Some(PathBuf::from("abs/t"))
        );
    }
}
