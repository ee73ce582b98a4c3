//! The declarative archive description: what goes in, validated as it is added.
//!
//! A [`Spec`] is a set of entries keyed by [`ArchivePath`]. Insertion order is irrelevant:
//! the writer emits entries sorted by name, so two specs with the same content produce the
//! same bytes. Missing parent directories are created implicitly (mode 0755); adding a
//! directory explicitly afterwards sets its mode. All owners are root (uid and gid 0).

use std::collections::BTreeMap;

use thiserror::Error;

use crate::path::{ArchivePath, PathError};

/// Largest file the newc format can describe: its size field is 32 bits.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// Largest device major number the kernel's `new_encode_dev` keeps (12 bits).
pub const MAX_DEV_MAJOR: u32 = (1 << 12) - 1;

/// Largest device minor number the kernel's `new_encode_dev` keeps (20 bits).
pub const MAX_DEV_MINOR: u32 = (1 << 20) - 1;

/// Mode bits a spec may set: permissions plus setuid, setgid and sticky.
const PERMISSION_MASK: u32 = 0o7777;

/// Default mode for directories created because a child needs them.
pub const IMPLICIT_DIR_MODE: u32 = 0o755;

/// What an entry is.
#[derive(Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file and its contents.
    File(Vec<u8>),
    /// A symbolic link and its target (stored verbatim; may be absolute).
    Symlink(String),
    /// A character device node.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

impl std::fmt::Debug for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir => f.write_str("Dir"),
            // File contents can be megabytes: show the size only.
            Self::File(data) => write!(f, "File({} bytes)", data.len()),
            Self::Symlink(t) => f.debug_tuple("Symlink").field(t).finish(),
            Self::CharDevice { major, minor } => write!(f, "CharDevice({major}:{minor})"),
        }
    }
}

impl EntryKind {
    /// The `S_IFMT` bits of this kind.
    pub fn file_type_bits(&self) -> u32 {
        match self {
            Self::Dir => 0o040000,
            Self::File(_) => 0o100000,
            Self::Symlink(_) => 0o120000,
            Self::CharDevice { .. } => 0o020000,
        }
    }
}

/// One validated entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits (at most `0o7777`).
    pub permissions: u32,
    /// True if the directory was created only because a child needed it.
    implicit: bool,
}

impl Entry {
    /// The full `st_mode`: file type bits plus permissions.
    pub fn mode(&self) -> u32 {
        self.kind.file_type_bits() | self.permissions
    }
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    /// The name is not a valid archive path.
    #[error("invalid archive path")]
    Path(#[from] PathError),
    /// The name was already added.
    #[error("duplicate archive entry {path}")]
    Duplicate {
        /// The name added twice.
        path: ArchivePath,
    },
    /// An ancestor of the name is not a directory.
    #[error("cannot add {path}: its ancestor {ancestor} is not a directory")]
    ParentNotDirectory {
        /// The name being added.
        path: ArchivePath,
        /// The ancestor that is a file, symlink or device.
        ancestor: ArchivePath,
    },
    /// Mode bits beyond `0o7777` (file type bits come from the entry kind).
    #[error("mode {mode:#o} of {path} has bits outside 0o7777")]
    BadMode {
        /// The name being added.
        path: ArchivePath,
        /// The mode given.
        mode: u32,
    },
    /// The file does not fit the newc 32-bit size field.
    #[error("file {path} is {size} bytes; newc allows at most {MAX_FILE_SIZE}")]
    FileTooLarge {
        /// The name being added.
        path: ArchivePath,
        /// Its size.
        size: u64,
    },
    /// A symlink target that is empty, has a NUL byte or is too long.
    #[error("symlink {path} has an empty, NUL-containing or over-long target")]
    BadSymlinkTarget {
        /// The name being added.
        path: ArchivePath,
    },
    /// Device numbers the kernel cannot represent.
    #[error("device {path} has numbers {major}:{minor} beyond 12-bit major / 20-bit minor")]
    BadDeviceNumber {
        /// The name being added.
        path: ArchivePath,
        /// Major number given.
        major: u32,
        /// Minor number given.
        minor: u32,
    },
}

impl SpecError {
    /// A stable, machine-matchable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Path(e) => e.code(),
            Self::Duplicate { .. } => "duplicate_entry",
            Self::ParentNotDirectory { .. } => "parent_not_directory",
            Self::BadMode { .. } => "bad_mode",
            Self::FileTooLarge { .. } => "file_too_large",
            Self::BadSymlinkTarget { .. } => "bad_symlink_target",
            Self::BadDeviceNumber { .. } => "bad_device_number",
        }
    }
}

/// A validated set of archive entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    entries: BTreeMap<ArchivePath, Entry>,
}

impl Spec {
    /// An empty spec.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory. Refused if it was already added explicitly; a directory created
    /// implicitly for a child takes the given mode.
    pub fn add_dir(&mut self, path: &str, permissions: u32) -> Result<(), SpecError> {
        self.insert(path, permissions, EntryKind::Dir)
    }

    /// Adds a regular file with `data` as its contents.
    pub fn add_file(
        &mut self,
        path: &str,
        permissions: u32,
        data: Vec<u8>,
    ) -> Result<(), SpecError> {
        self.insert(path, permissions, EntryKind::File(data))
    }

    /// Adds a symbolic link (mode 0777, as Linux reports for every symlink).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), SpecError> {
        self.insert(path, 0o777, EntryKind::Symlink(target.to_owned()))
    }

    /// Adds a character device node.
    pub fn add_char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), SpecError> {
        self.insert(path, permissions, EntryKind::CharDevice { major, minor })
    }

    /// The entries in archive order (sorted by name; parents before children).
    pub fn entries(&self) -> impl Iterator<Item = (&ArchivePath, &Entry)> {
        self.entries.iter()
    }

    /// Number of entries, implicit directories included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, path: &str, permissions: u32, kind: EntryKind) -> Result<(), SpecError> {
        let path = ArchivePath::new(path)?;
        validate(&path, permissions, &kind)?;
        // Check everything before changing anything, so a refused entry leaves no trace.
        let ancestors = path.ancestors();
        for ancestor in &ancestors {
            if let Some(e) = self.entries.get(ancestor)
                && e.kind != EntryKind::Dir
            {
                return Err(SpecError::ParentNotDirectory {
                    path,
                    ancestor: ancestor.clone(),
                });
            }
        }
        match self.entries.get(&path) {
            Some(existing) if existing.implicit && kind == EntryKind::Dir => {}
            Some(_) => return Err(SpecError::Duplicate { path }),
            None => {}
        }
        for ancestor in ancestors {
            self.entries.entry(ancestor).or_insert(Entry {
                kind: EntryKind::Dir,
                permissions: IMPLICIT_DIR_MODE,
                implicit: true,
            });
        }
        self.entries.insert(
            path,
            Entry {
                kind,
                permissions,
                implicit: false,
            },
        );
        Ok(())
    }
}

fn validate(path: &ArchivePath, permissions: u32, kind: &EntryKind) -> Result<(), SpecError> {
    if permissions & !PERMISSION_MASK != 0 {
        return Err(SpecError::BadMode {
            path: path.clone(),
            mode: permissions,
        });
    }
    match kind {
        EntryKind::Dir => {}
        EntryKind::File(data) => {
            let size = u64::try_from(data.len()).unwrap_or(u64::MAX);
            if size > MAX_FILE_SIZE {
                return Err(SpecError::FileTooLarge {
                    path: path.clone(),
                    size,
                });
            }
        }
        EntryKind::Symlink(target) => {
            if target.is_empty()
                || target.contains('\0')
                || target.len() > crate::path::MAX_PATH_LEN
            {
                return Err(SpecError::BadSymlinkTarget { path: path.clone() });
            }
        }
        EntryKind::CharDevice { major, minor } => {
            if *major > MAX_DEV_MAJOR || *minor > MAX_DEV_MINOR {
                return Err(SpecError::BadDeviceNumber {
                    path: path.clone(),
                    major: *major,
                    minor: *minor,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &Spec) -> Vec<&str> {
        spec.entries().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn creates_parents_and_sorts() {
        let mut s = Spec::new();
        s.add_file("lib/modules/k/a.ko", 0o644, vec![1]).unwrap();
        s.add_file("init", 0o755, vec![2]).unwrap();
        s.add_char_device("dev/console", 0o600, 5, 1).unwrap();
        assert_eq!(
            names(&s),
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/k",
                "lib/modules/k/a.ko"
            ]
        );
        let (_, lib) = s.entries().find(|(p, _)| p.as_str() == "lib").unwrap();
        assert_eq!(lib.mode(), 0o040755);
    }

    #[test]
    fn explicit_dir_overrides_implicit_mode_once() {
        let mut s = Spec::new();
        s.add_file("tmp/x", 0o644, vec![]).unwrap();
        s.add_dir("tmp", 0o1777).unwrap();
        let (_, tmp) = s.entries().find(|(p, _)| p.as_str() == "tmp").unwrap();
        assert_eq!(tmp.mode(), 0o041777);
        assert_eq!(
            s.add_dir("tmp", 0o755).unwrap_err().code(),
            "duplicate_entry"
        );
    }

    #[test]
    fn hostile_specs_are_refused() {
        let mut s = Spec::new();
        s.add_file("init", 0o755, vec![]).unwrap();
        let cases: Vec<(Result<(), SpecError>, &str)> = vec![
            (
                s.clone().add_file("../etc/shadow", 0o644, vec![]),
                "path_traversal",
            ),
            (s.clone().add_file("/init", 0o755, vec![]), "path_absolute"),
            (s.clone().add_file("init", 0o755, vec![]), "duplicate_entry"),
            (s.clone().add_dir("init", 0o755), "duplicate_entry"),
            (
                s.clone().add_file("init/x", 0o644, vec![]),
                "parent_not_directory",
            ),
            (s.clone().add_file("x", 0o100644, vec![]), "bad_mode"),
            (s.clone().add_symlink("x", ""), "bad_symlink_target"),
            (s.clone().add_symlink("x", "a\0b"), "bad_symlink_target"),
            (
                s.clone().add_char_device("x", 0o600, 4096, 0),
                "bad_device_number",
            ),
            (
                s.clone().add_char_device("x", 0o600, 0, 1 << 20),
                "bad_device_number",
            ),
        ];
        for (res, code) in cases {
            let err = res.unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn refused_entry_leaves_spec_unchanged() {
        let mut s = Spec::new();
        s.add_symlink("bin", "usr/bin").unwrap();
        let before = s.clone();
        let err = s.add_file("bin/sh/x", 0o755, vec![]).unwrap_err();
        assert_eq!(err.code(), "parent_not_directory");
        assert!(err.to_string().contains("bin/sh/x"), "{err}");
        assert_eq!(s, before);
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut a = Spec::new();
        a.add_dir("run", 0o755).unwrap();
        a.add_file("etc/x", 0o644, b"x".to_vec()).unwrap();
        let mut b = Spec::new();
        b.add_file("etc/x", 0o644, b"x".to_vec()).unwrap();
        b.add_dir("run", 0o755).unwrap();
        assert_eq!(a, b);
    }
}
