//! Request filename sanitisation (pure).
//!
//! A TFTP filename is attacker-controlled bytes (reliability T1). We accept only a strict
//! allow-list and turn it into components that are safe to join to the root:
//!
//! - UTF-8, 1..=[`MAX_NAME_LEN`] bytes, at most [`MAX_COMPONENTS`] components;
//! - one leading `/` is stripped (many PXE ROMs and iPXE send `/ipxe.efi`); a second one is not;
//! - components are separated by `/`, are non-empty, do not start with `.` (this excludes `.`,
//!   `..` and hidden files), and contain only `[A-Za-z0-9._+-]` (this excludes `\`, `%`, NUL,
//!   `:`, spaces and every non-ASCII look-alike).
//!
//! The file module then resolves the result under the root and checks, after symlinks are
//! resolved, that it is still inside (see `fs`).

/// Longest accepted filename in bytes. Boot file names are short; 255 is the usual `NAME_MAX`.
pub const MAX_NAME_LEN: usize = 255;
/// Most path components accepted; boot trees are shallow.
pub const MAX_COMPONENTS: usize = 16;

/// A sanitised relative path: non-empty list of safe components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath(Vec<String>);

impl SafePath {
    /// The components, in order.
    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// The path joined with `/` (for logs).
    pub fn display(&self) -> String {
        self.0.join("/")
    }
}

/// Why a filename was refused. All map to TFTP ERROR 2 (access violation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not UTF-8.
    #[error("filename is not UTF-8")]
    NotUtf8,
    /// Empty (or just "/").
    #[error("empty filename")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("filename too long")]
    TooLong,
    /// More than [`MAX_COMPONENTS`] components.
    #[error("too many path components")]
    TooDeep,
    /// An empty component (`a//b`, `//x`, trailing `/`).
    #[error("empty path component")]
    EmptyComponent,
    /// A component starting with `.` (includes `.` and `..`).
    #[error("path component starts with a dot")]
    DotComponent,
    /// A character outside `[A-Za-z0-9._+-]`.
    #[error("forbidden character in filename")]
    ForbiddenChar,
}

impl PathError {
    /// Stable reason for counters and logs.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotUtf8 => "path_not_utf8",
            PathError::Empty => "path_empty",
            PathError::TooLong => "path_too_long",
            PathError::TooDeep => "path_too_deep",
            PathError::EmptyComponent => "path_empty_component",
            PathError::DotComponent => "path_dot_component",
            PathError::ForbiddenChar => "path_forbidden_char",
        }
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')
}

/// Checks a raw request filename and splits it into safe components.
pub fn sanitize(raw: &[u8]) -> Result<SafePath, PathError> {
    if raw.len() > MAX_NAME_LEN {
        return Err(PathError::TooLong);
    }
    let name = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
    let name = name.strip_prefix('/').unwrap_or(name);
    if name.is_empty() {
        return Err(PathError::Empty);
    }
    let mut parts = Vec::new();
    for comp in name.split('/') {
        if parts.len() == MAX_COMPONENTS {
            return Err(PathError::TooDeep);
        }
        if comp.is_empty() {
            return Err(PathError::EmptyComponent);
        }
        if !comp.chars().all(allowed) {
            return Err(PathError::ForbiddenChar);
        }
        if comp.starts_with('.') {
            return Err(PathError::DotComponent);
        }
        parts.push(comp.to_owned());
    }
    Ok(SafePath(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_boot_names() {
        for (raw, want) in [
            ("ipxe.efi", "ipxe.efi"),
            ("/ipxe.efi", "ipxe.efi"),
            ("undionly.kpxe", "undionly.kpxe"),
            ("efi/x86_64/grub+1.2-x.efi", "efi/x86_64/grub+1.2-x.efi"),
            ("a.b..c", "a.b..c"),
        ] {
            assert_eq!(sanitize(raw.as_bytes()).unwrap().display(), want);
        }
    }

    #[test]
    fn refuses_tricks_with_stable_reasons() {
        let long = "a".repeat(256);
        let deep = vec!["a"; 17].join("/");
        let table: &[(&[u8], &str)] = &[
            (b"", "path_empty"),
            (b"/", "path_empty"),
            (b"//etc/passwd", "path_empty_component"),
            (b"../etc/passwd", "path_dot_component"),
            (b"a/../../b", "path_dot_component"),
            (b"./a", "path_dot_component"),
            (b".hidden", "path_dot_component"),
            (b"a/", "path_empty_component"),
            (b"a//b", "path_empty_component"),
            (b"..\\..\\x", "path_forbidden_char"),
            (b"a\\b", "path_forbidden_char"),
            (b"%2e%2e/x", "path_forbidden_char"),
            (b"a\0b", "path_forbidden_char"),
            (b"C:x", "path_forbidden_char"),
            (b"a b", "path_forbidden_char"),
            (b"\xff\xfe", "path_not_utf8"),
            ("\u{ff0e}\u{ff0e}/x".as_bytes(), "path_forbidden_char"),
            (long.as_bytes(), "path_too_long"),
            (deep.as_bytes(), "path_too_deep"),
        ];
        for (raw, reason) in table {
            assert_eq!(
                sanitize(raw).map_err(PathError::reason),
                Err(*reason),
                "{raw:?}"
            );
        }
    }
}
