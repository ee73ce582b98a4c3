//! Reproducible newc cpio initramfs assembly.
//!
//! The pieces, each pure (they write to any `impl Write` and open no file):
//!
//! - [`Spec`]: a declarative, validated set of entries (directories, files, symlinks,
//!   character devices). Paths are relative with no `.`/`..`/empty components; duplicates
//!   and entries under non-directories are refused; missing parents are created. Every
//!   refusal has a stable [`SpecError::code`].
//! - [`write_archive`]: the spec as a newc archive. Entries are sorted by name (parents
//!   first), inode numbers are sequential, uid/gid are 0, and every mtime is the one given
//!   (`SOURCE_DATE_EPOCH` or 0), so equal specs give byte-identical archives.
//! - [`compress_zstd`]: a zstd frame the kernel's decompressor accepts (window ≤ 8 MiB,
//!   checked by [`frame_window_size`]).
//! - [`read_archive`] and [`listing`]: a strict reader and a stable text listing, used by
//!   the tests, golden files and `cargo xtask initramfs` to verify what was written.
//!
//! ```
//! use initramfs::{Spec, WriteOptions, write_archive, read_archive};
//! let mut spec = Spec::new();
//! spec.add_file("init", 0o755, b"#!/bin/sh\n".to_vec())?;
//! spec.add_char_device("dev/console", 0o600, 5, 1)?;
//! let mut cpio = Vec::new();
//! write_archive(&spec, WriteOptions { mtime: 0 }, &mut cpio)?;
//! let names: Vec<String> = read_archive(&cpio)?.into_iter().map(|m| m.name).collect();
//! assert_eq!(names, ["dev", "dev/console", "init"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compress;
mod listing;
mod newc;
mod path;
mod read;
mod spec;

pub use compress::{
    FrameError, LEVEL as ZSTD_LEVEL, MAX_WINDOW as ZSTD_MAX_WINDOW, WINDOW_LOG as ZSTD_WINDOW_LOG,
    ZSTD_MAGIC, compress_zstd, frame_window_size,
};
pub use listing::listing;
pub use newc::{HEADER_LEN, MAGIC, TRAILER_NAME, WriteOptions, write_archive};
pub use path::{ArchivePath, MAX_PATH_LEN, PathError};
pub use read::{Member, ReadError, read_archive};
pub use spec::{
    Entry, EntryKind, IMPLICIT_DIR_MODE, MAX_DEV_MAJOR, MAX_DEV_MINOR, MAX_FILE_SIZE, Spec,
    SpecError,
};

/// Writes `spec` as a newc archive and compresses it with [`compress_zstd`].
///
/// Returns `(uncompressed archive, compressed image)`; the first is kept so callers can
/// list or re-read what went in without decompressing.
pub fn build_zstd(spec: &Spec, options: WriteOptions) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut cpio = Vec::new();
    write_archive(spec, options, &mut cpio)?;
    let compressed = compress_zstd(&cpio, Vec::new())?;
    Ok((cpio, compressed))
}
