//! qcow2 input: converted to a raw temporary file with `qemu-img convert` (qcow2 needs random
//! access to its cluster tables, so it cannot be streamed like a raw image).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::CliError;

/// The first four bytes of every qcow2 file ("QFI\xfb").
pub(crate) const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// A file this process created, removed when dropped.
#[derive(Debug)]
pub(crate) struct TempFile(pub(crate) PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        // Best effort: removing our own temporary file.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A relative path that starts with `-` would be read as an option; anchor it.
fn as_operand(path: &Path) -> PathBuf {
    if path.is_relative() {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    }
}

/// Runs `qemu-img convert -f qcow2 -O raw SRC DST`. The input format is forced, never probed:
/// probing lets a crafted raw image pass itself off as another format.
pub(crate) fn qcow2_to_raw(src: &Path, dst: &Path) -> Result<TempFile, CliError> {
    let guard = TempFile(dst.to_path_buf());
    let output = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
        .arg(as_operand(src))
        .arg(as_operand(dst))
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CliError::QemuImgSpawn { source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(CliError::QemuImgFailed {
            status: output.status.to_string(),
            stderr: stderr.trim().chars().take(2000).collect(),
        });
    }
    Ok(guard)
}
