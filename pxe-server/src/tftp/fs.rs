//! Read-only file access beneath the TFTP root (I/O).
//!
//! A [`SafePath`] (allow-listed components, see `path`) is joined to the canonical root, the
//! result is canonicalised (resolving every symlink), and it must still lie beneath the root,
//! compared component by component so that `/srv/tftp-private` is not "inside" `/srv/tftp`
//! (tftpy#110). Only then is it opened, with `O_NOFOLLOW` (no symlink swapped in at the last
//! step) and `O_NONBLOCK` (a FIFO cannot hang the open), and the opened descriptor is checked
//! once more: it must be a regular file and, where `/proc` is available, its real path must
//! still lie beneath the root. Nothing outside the root is ever read.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::path::SafePath;

/// Why a file could not be served.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No such file (TFTP ERROR 1).
    #[error("file not found")]
    NotFound,
    /// Refused (TFTP ERROR 2); the reason is stable.
    #[error("access violation: {0}")]
    Denied(&'static str),
    /// Unexpected I/O failure (TFTP ERROR 0).
    #[error("cannot open file")]
    Io(#[source] io::Error),
}

impl OpenError {
    /// Stable reason for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::NotFound => "not_found",
            OpenError::Denied(r) => r,
            OpenError::Io(_) => "open_failed",
        }
    }
}

/// The canonical TFTP root directory.
#[derive(Debug, Clone)]
pub struct Root {
    canonical: PathBuf,
}

/// An opened regular file and its size at open time.
#[derive(Debug)]
pub struct OpenFile {
    /// The file.
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
}

impl Root {
    /// Canonicalises `dir`, which must be a directory.
    pub fn new(dir: &Path) -> io::Result<Root> {
        let canonical = std::fs::canonicalize(dir)?;
        if !std::fs::metadata(&canonical)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("TFTP root {} is not a directory", canonical.display()),
            ));
        }
        Ok(Root { canonical })
    }

    /// The canonical root path.
    pub fn path(&self) -> &Path {
        &self.canonical
    }

    /// Opens `rel` for reading if it resolves to a regular file beneath the root.
    pub fn open(&self, rel: &SafePath) -> Result<OpenFile, OpenError> {
        let mut joined = self.canonical.clone();
        joined.extend(rel.components());
        let resolved = std::fs::canonicalize(&joined).map_err(classify)?;
        if !resolved.starts_with(&self.canonical) {
            return Err(OpenError::Denied("outside_root"));
        }
        // `resolved` has no symlinks left, so this reports on the target itself.
        let meta = std::fs::symlink_metadata(&resolved).map_err(classify)?;
        if !meta.is_file() {
            return Err(OpenError::Denied("not_regular_file"));
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&resolved)
            .map_err(classify)?;
        let meta = file.metadata().map_err(OpenError::Io)?;
        if !meta.is_file() {
            return Err(OpenError::Denied("not_regular_file"));
        }
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if let Ok(real) = std::fs::read_link(fd_path)
            && !real.starts_with(&self.canonical)
        {
            return Err(OpenError::Denied("outside_root"));
        }
        Ok(OpenFile {
            file,
            size: meta.len(),
        })
    }
}

fn classify(e: io::Error) -> OpenError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OpenError::NotFound,
        io::ErrorKind::PermissionDenied => OpenError::Denied("permission_denied"),
        // ELOOP from O_NOFOLLOW: a symlink appeared after canonicalisation.
        _ if e.raw_os_error() == Some(libc::ELOOP) => OpenError::Denied("symlink_race"),
        _ => OpenError::Io(e),
    }
}

/// How much is read from the file at once: a few windows of 1468-byte blocks, so a transfer
/// costs one blocking-pool round trip per ~256 KiB rather than one per block.
const READ_CHUNK: usize = 256 * 1024;

/// Serves byte ranges of an open file from a read-ahead buffer, reading on tokio's blocking
/// pool. The file is expected not to change while it is served; if it shrinks, reads past the
/// new end fail with `UnexpectedEof`.
#[derive(Debug)]
pub struct BlockReader {
    file: Arc<File>,
    start: u64,
    buf: Vec<u8>,
}

impl BlockReader {
    /// Wraps an open file.
    pub fn new(file: File) -> Self {
        BlockReader {
            file: Arc::new(file),
            start: 0,
            buf: Vec::new(),
        }
    }

    fn cached(&self, offset: u64, len: usize) -> bool {
        let end = offset.saturating_add(len as u64);
        let cached_end = self.start.saturating_add(self.buf.len() as u64);
        offset >= self.start && end <= cached_end
    }

    fn slice(&self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let from = usize::try_from(offset.saturating_sub(self.start)).unwrap_or(usize::MAX);
        self.buf
            .get(from..from.saturating_add(len))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while served"))
    }

    /// Returns `len` bytes at `offset`, reading ahead on tokio's blocking pool.
    pub async fn read(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        if !self.cached(offset, len) {
            let file = Arc::clone(&self.file);
            let want = len.max(READ_CHUNK);
            let buf = std::mem::take(&mut self.buf);
            let buf = tokio::task::spawn_blocking(move || fill(&file, buf, offset, want))
                .await
                .map_err(io::Error::other)??;
            self.buf = buf;
            self.start = offset;
        }
        self.slice(offset, len)
    }

    /// [`BlockReader::read`] for a caller that may block (a session on its own thread).
    pub fn read_blocking(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        if !self.cached(offset, len) {
            let buf = std::mem::take(&mut self.buf);
            self.buf = fill(&self.file, buf, offset, len.max(READ_CHUNK))?;
            self.start = offset;
        }
        self.slice(offset, len)
    }
}

/// Reads up to `want` bytes at `offset` into `buf` (reused), stopping early at end of file.
fn fill(file: &File, mut buf: Vec<u8>, offset: u64, want: usize) -> io::Result<Vec<u8>> {
    buf.resize(want, 0);
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..)
        && !rest.is_empty()
    {
        match file.read_at(rest, offset.saturating_add(filled as u64)) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::super::path::sanitize;
    use super::*;

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root_dir = dir.path().join("root");
        let private = dir.path().join("root-private");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::create_dir_all(&private).unwrap();
        std::fs::write(dir.path().join("canary"), b"secret").unwrap();
        std::fs::write(private.join("x"), b"secret").unwrap();
        std::fs::write(root_dir.join("sub/ok"), b"fine").unwrap();
        std::os::unix::fs::symlink(dir.path().join("canary"), root_dir.join("out")).unwrap();
        std::os::unix::fs::symlink("../root-private", root_dir.join("priv")).unwrap();
        std::os::unix::fs::symlink("sub/ok", root_dir.join("inside")).unwrap();
        let root = Root::new(&root_dir).unwrap();
        let open = |p: &str| root.open(&sanitize(p.as_bytes()).unwrap());
        assert_eq!(open("out").unwrap_err().reason(), "outside_root");
        assert_eq!(open("priv/x").unwrap_err().reason(), "outside_root");
        assert_eq!(open("sub").unwrap_err().reason(), "not_regular_file");
        assert_eq!(open("missing").unwrap_err().reason(), "not_found");
        assert_eq!(open("sub/ok/x").unwrap_err().reason(), "not_found");
        assert_eq!(open("inside").unwrap().size, 4);
        assert_eq!(open("/sub/ok").unwrap().size, 4);
    }
}
