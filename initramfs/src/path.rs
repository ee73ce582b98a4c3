//! Validated archive paths.
//!
//! An initramfs is unpacked by the kernel into the root of `rootfs`, so every member name is
//! taken relative to `/`. The spec still refuses anything that is not a plain relative path:
//! a name that only works because the unpacker is lenient is a name some other tool (a
//! developer's `cpio -i`, a fuzzer's oracle) will unpack somewhere else.

use std::fmt;

use thiserror::Error;

/// Longest accepted member name in bytes, excluding the NUL the newc format adds.
///
/// The kernel's unpacker refuses names longer than `PATH_MAX` (4096, NUL included).
pub const MAX_PATH_LEN: usize = 4095;

/// A member name: relative, `/`-separated, without `.`, `..` or empty components.
///
/// Ordering is byte-wise, which puts every directory before the entries it contains: a
/// parent's name is a strict prefix of each child's name, and a string sorts before every
/// longer string it prefixes. The archive writer relies on this.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArchivePath(String);

/// Why a string is not a valid [`ArchivePath`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    /// The name is empty.
    #[error("archive path is empty")]
    Empty,
    /// The name starts with `/`.
    #[error("archive path {path:?} is absolute; names are relative to the initramfs root")]
    Absolute {
        /// The offending name.
        path: String,
    },
    /// A component is `..`.
    #[error("archive path {path:?} contains a `..` component")]
    Traversal {
        /// The offending name.
        path: String,
    },
    /// A component is `.` or empty (`a//b`, trailing `/`).
    #[error("archive path {path:?} has an empty or `.` component")]
    NotNormal {
        /// The offending name.
        path: String,
    },
    /// The name contains a NUL byte, which would end it early in the archive.
    #[error("archive path {path:?} contains a NUL byte")]
    Nul {
        /// The offending name.
        path: String,
    },
    /// The name is longer than [`MAX_PATH_LEN`].
    #[error("archive path of {len} bytes is longer than the {MAX_PATH_LEN}-byte limit")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl PathError {
    /// A stable, machine-matchable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "path_empty",
            Self::Absolute { .. } => "path_absolute",
            Self::Traversal { .. } => "path_traversal",
            Self::NotNormal { .. } => "path_not_normal",
            Self::Nul { .. } => "path_nul",
            Self::TooLong { .. } => "path_too_long",
        }
    }
}

impl ArchivePath {
    /// Validates `path`.
    pub fn new(path: &str) -> Result<Self, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong { len: path.len() });
        }
        if path.contains('\0') {
            return Err(PathError::Nul { path: path.into() });
        }
        if path.starts_with('/') {
            return Err(PathError::Absolute { path: path.into() });
        }
        // `..` is checked over all components first so that `a//../b` reports the more
        // serious problem.
        if path.split('/').any(|c| c == "..") {
            return Err(PathError::Traversal { path: path.into() });
        }
        if path.split('/').any(|c| c.is_empty() || c == ".") {
            return Err(PathError::NotNormal { path: path.into() });
        }
        Ok(Self(path.into()))
    }

    /// The name as written into the archive.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The containing directory, or `None` for a top-level name.
    pub fn parent(&self) -> Option<ArchivePath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| ArchivePath(parent.to_owned()))
    }

    /// Every proper ancestor, outermost first (`a/b/c` gives `a`, `a/b`).
    pub fn ancestors(&self) -> Vec<ArchivePath> {
        let mut out = Vec::new();
        for (i, b) in self.0.bytes().enumerate() {
            if b == b'/'
                && let Some(prefix) = self.0.get(..i)
            {
                out.push(ArchivePath(prefix.to_owned()));
            }
        }
        out
    }
}

impl fmt::Display for ArchivePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        for ok in [
            "init",
            "dev/console",
            "lib/modules/6.1.0-56-amd64/modules.dep",
            "a.b/..c",
        ] {
            assert_eq!(ArchivePath::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_hostile_paths_with_stable_codes() {
        let cases = [
            ("", "path_empty"),
            ("/init", "path_absolute"),
            ("//init", "path_absolute"),
            ("..", "path_traversal"),
            ("../etc/passwd", "path_traversal"),
            ("lib/../../etc", "path_traversal"),
            ("a/..", "path_traversal"),
            ("a//b", "path_not_normal"),
            ("a/", "path_not_normal"),
            ("./init", "path_not_normal"),
            ("a/./b", "path_not_normal"),
            ("a\0b", "path_nul"),
        ];
        for (input, code) in cases {
            let err = ArchivePath::new(input).unwrap_err();
            assert_eq!(err.code(), code, "{input:?}: {err}");
        }
        let long = "a".repeat(MAX_PATH_LEN + 1);
        assert_eq!(ArchivePath::new(&long).unwrap_err().code(), "path_too_long");
        assert!(ArchivePath::new(&"a".repeat(MAX_PATH_LEN)).is_ok());
    }

    #[test]
    fn errors_name_the_path() {
        let msg = ArchivePath::new("../x").unwrap_err().to_string();
        assert!(msg.contains("\"../x\""), "{msg}");
    }

    #[test]
    fn ancestors_and_parent() {
        let p = ArchivePath::new("a/b/c").unwrap();
        let names: Vec<String> = p.ancestors().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["a", "a/b"]);
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert!(ArchivePath::new("a").unwrap().parent().is_none());
        assert!(ArchivePath::new("a").unwrap().ancestors().is_empty());
    }

    #[test]
    fn parents_sort_before_children() {
        let mut v: Vec<ArchivePath> = ["a/b", "a-b", "a", "a/b/c", "a.b", "b"]
            .iter()
            .map(|s| ArchivePath::new(s).unwrap())
            .collect();
        v.sort();
        for (i, p) in v.iter().enumerate() {
            for anc in p.ancestors() {
                let j = v.iter().position(|q| *q == anc).unwrap();
                assert!(j < i, "{anc} must precede {p}");
            }
        }
    }
}
