//! The few file operations the snapshot directory needs: capped reads, durable atomic writes.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// An I/O failure with the operation and path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}", path.display())]
pub struct IoError {
    /// What was being done ("read", "create", "rename", ...).
    pub op: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// Wraps `source` with `op` and `path`.
    pub fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reads a whole file of at most `cap` bytes.
pub(crate) fn read_capped(path: &Path, cap: usize) -> Result<Vec<u8>, IoError> {
    let file = File::open(path).map_err(|e| IoError::new("open", path, e))?;
    crate::format::read_capped(file, cap).map_err(|e| IoError::new("read", path, e))
}

/// Writes `bytes` to `dir/name` through a temporary file, fsync and rename, then fsyncs the
/// directory: readers see the old file or the new one, never a partial one.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), IoError> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let target = dir.join(name);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| IoError::new("create", &tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| IoError::new("write", &tmp, e))?;
        file.sync_all().map_err(|e| IoError::new("sync", &tmp, e))?;
        fs::rename(&tmp, &target).map_err(|e| IoError::new("rename into place", &target, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // Best effort: the temporary file is garbage either way.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IoError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IoError::new("sync directory", dir, e))
}
