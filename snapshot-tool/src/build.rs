//! Building a snapshot from a raw image: chunking, zero detection, parallel zstd compression,
//! the manifest, and (optionally) its signature.
//!
//! ```text
//!  image (Read) ──► reader thread ──(index, raw)──► N compression workers ──(index, frame)──►
//!       caller thread: reorders by index, appends frames to data.zst, builds the chunk table
//! ```
//!
//! At most `threads + 2` chunks are in flight at once (a token is taken before a chunk is read
//! and returned after it is written), so memory stays near `(threads + 2) × 2 × chunk_size`
//! whatever the relative speed of reading, compressing and writing. The output depends only on
//! the image, the chunk size, the sector size and the zstd level: no timestamps, no thread
//! order, so rebuilding the same image gives the same bytes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use crate::format::{
    ChunkEntry, ChunkKind, DATA_FILE, DEFAULT_CHUNK_SIZE, DEFAULT_SECTOR_SIZE, Digest,
    DigestAlgorithm, FormatError, Geometry, MANIFEST_FILE, MAX_MANIFEST_LEN, Manifest,
    SIGNATURE_FILE, SecretKey, SignatureError, SignatureFile, sign_manifest,
};
use crate::fsutil::{IoError, read_capped, sync_dir, write_atomic};
use crate::verify::{VerifyError, verify_contents};

/// Default zstd level: zstd's own default (fast, a good ratio), whose 2 MiB window fits
/// inside a default chunk (see the chunk-size reasoning in [`crate::format`]).
pub const DEFAULT_LEVEL: i32 = 3;
/// Highest level accepted. Levels 20–22 ("ultra") need windows larger than a chunk and a lot
/// of memory for no gain on independent chunks.
pub const MAX_LEVEL: i32 = 19;
/// Longest snapshot name.
pub const MAX_NAME_LEN: usize = 64;

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Logical sector size recorded in the manifest.
    pub sector_size: u32,
    /// zstd level, 1..=19.
    pub level: i32,
    /// Compression threads (clamped to 1..=64).
    pub threads: usize,
    /// Hash of every chunk and image digest (SHA-256 by default, giving a format-version-1
    /// manifest; BLAKE3 gives version 2).
    pub digest: DigestAlgorithm,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            sector_size: DEFAULT_SECTOR_SIZE,
            level: DEFAULT_LEVEL,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            digest: DigestAlgorithm::default(),
        }
    }
}

/// Why a build or a signing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The image size, sector size or chunk size is outside the format's caps.
    #[error("invalid snapshot geometry")]
    Geometry(#[source] FormatError),
    /// zstd level outside 1..=19.
    #[error("zstd level {level} is outside 1..={MAX_LEVEL}")]
    BadLevel {
        /// The level asked for.
        level: i32,
    },
    /// Reading the image failed.
    #[error("reading the image at offset {offset} failed")]
    ReadImage {
        /// Offset of the failed read.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The image ended before the announced size.
    #[error("the image ended at offset {offset}, {size} bytes were announced")]
    ImageTruncated {
        /// Where it ended.
        offset: u64,
        /// Announced size.
        size: u64,
    },
    /// The image has more bytes than the announced size.
    #[error("the image is longer than the announced {size} bytes")]
    ImageTooLong {
        /// Announced size.
        size: u64,
    },
    /// zstd failed to compress a chunk.
    #[error("compressing chunk {index} failed")]
    Compress {
        /// Chunk index.
        index: u64,
        /// zstd's error.
        #[source]
        source: io::Error,
    },
    /// Writing the data stream failed.
    #[error("writing the data file failed")]
    WriteData(#[source] io::Error),
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The snapshot name cannot be used as a directory and URL segment.
    #[error("snapshot name {name:?} is invalid: {what}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong.
        what: &'static str,
    },
    /// The output directory already holds a snapshot of that name.
    #[error("{} already exists", path.display())]
    Exists {
        /// The existing path.
        path: PathBuf,
    },
    /// The built or loaded manifest is invalid.
    #[error("invalid manifest")]
    Manifest(#[source] FormatError),
    /// A key file is invalid.
    #[error("invalid key")]
    Key(#[source] SignatureError),
    /// The snapshot to sign does not verify.
    #[error("refusing to sign a snapshot that does not verify")]
    Verify(#[source] VerifyError),
    /// A worker thread panicked (a bug).
    #[error("a build thread panicked")]
    WorkerPanicked,
}

impl BuildError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Geometry(e) | Self::Manifest(e) => e.code(),
            Self::BadLevel { .. } => "bad_level",
            Self::ReadImage { .. } => "image_read_failed",
            Self::ImageTruncated { .. } => "image_truncated",
            Self::ImageTooLong { .. } => "image_too_long",
            Self::Compress { .. } => "compress_failed",
            Self::WriteData(_) => "data_write_failed",
            Self::Io(_) => "io_error",
            Self::BadName { .. } => "bad_name",
            Self::Exists { .. } => "already_exists",
            Self::Key(e) => e.code(),
            Self::Verify(e) => e.code(),
            Self::WorkerPanicked => "internal_error",
        }
    }
}

/// Checks that `name` is usable as a directory name and a URL path segment:
/// 1–64 characters from `A–Z a–z 0–9 . _ -`, not starting with `.` or `-`.
pub fn validate_name(name: &str) -> Result<(), BuildError> {
    let bad = |what| BuildError::BadName {
        name: name.to_string(),
        what,
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(bad("must be 1 to 64 characters"));
    }
    if name.starts_with(['.', '-']) {
        return Err(bad("must not start with '.' or '-'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad("only A-Z a-z 0-9 . _ - are allowed"));
    }
    Ok(())
}

/// What a worker made of one chunk.
enum Compressed {
    Zero,
    Stored {
        frame: Vec<u8>,
        raw_digest: Digest,
        compressed_digest: Digest,
    },
}

type WorkQueue = Arc<Mutex<Receiver<(u64, Vec<u8>)>>>;

/// Compares against this instead of byte by byte: slice equality is a `memcmp`.
const ZERO_PAGE: [u8; 4096] = [0; 4096];

fn is_all_zero(data: &[u8]) -> bool {
    data.chunks(ZERO_PAGE.len())
        .all(|c| ZERO_PAGE.get(..c.len()) == Some(c))
}

/// Builds the data stream and the manifest from `image`, which must yield exactly
/// `image_size` bytes. `progress` is called on the calling thread with the number of raw
/// bytes done so far.
pub fn build_stream<R: Read + Send, W: Write>(
    image: R,
    image_size: u64,
    options: &BuildOptions,
    data: W,
    progress: &mut dyn FnMut(u64),
) -> Result<Manifest, BuildError> {
    let geometry = Geometry::new(image_size, options.sector_size, options.chunk_size)
        .map_err(BuildError::Geometry)?;
    if !(1..=MAX_LEVEL).contains(&options.level) {
        return Err(BuildError::BadLevel {
            level: options.level,
        });
    }
    let threads = options.threads.clamp(1, 64);
    let in_flight = threads + 2;
    let level = options.level;
    let algorithm = options.digest;

    let (token_tx, token_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        // Capacity is `in_flight`, so these never block; the receiver is alive.
        let _ = token_tx.send(());
    }
    let (work_tx, work_rx) = sync_channel::<(u64, Vec<u8>)>(threads);
    let work_rx: WorkQueue = Arc::new(Mutex::new(work_rx));
    let (result_tx, result_rx) = channel::<(u64, Result<Compressed, BuildError>)>();

    std::thread::scope(|scope| {
        let reader =
            scope.spawn(move || read_chunks(image, geometry, algorithm, token_rx, work_tx));
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let queue = Arc::clone(&work_rx);
                let results = result_tx.clone();
                scope.spawn(move || compress_chunks(&queue, &results, level, algorithm))
            })
            .collect();
        // Only the workers hold these now: when they all exit, the reader's sends fail and the
        // writer's receive ends, so no thread can wait forever on a failed peer.
        drop(work_rx);
        drop(result_tx);

        let written = write_in_order(result_rx, token_tx, data, geometry, progress);
        let read = reader.join().map_err(|_| BuildError::WorkerPanicked)?;
        let mut worker_panicked = false;
        for worker in workers {
            worker_panicked |= worker.join().is_err();
        }
        // The reader's failure is the root cause when there is one; then the writer's (which
        // includes compression failures); a worker that vanished without a result is a bug.
        let image_digest = read?;
        let chunks = match written {
            Ok(chunks) => chunks,
            Err(Some(e)) => return Err(e),
            Err(None) => return Err(BuildError::WorkerPanicked),
        };
        if worker_panicked {
            return Err(BuildError::WorkerPanicked);
        }
        Manifest::from_parts(geometry, algorithm, chunks, image_digest)
            .map_err(BuildError::Manifest)
    })
}

/// Fills `buf` from `reader`; returns how many bytes were read (less only at end of input).
fn fill<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The reader thread: reads chunk after chunk (waiting for a token before each), hashes the
/// whole image in order, and queues the chunks for compression.
fn read_chunks<R: Read>(
    mut image: R,
    geometry: Geometry,
    algorithm: DigestAlgorithm,
    tokens: Receiver<()>,
    work: SyncSender<(u64, Vec<u8>)>,
) -> Result<Digest, BuildError> {
    let mut hasher = algorithm.hasher();
    let size = geometry.image_size();
    for index in 0..geometry.chunk_count() {
        let Some((offset, raw_len)) = geometry.chunk_span(index) else {
            break;
        };
        if tokens.recv().is_err() {
            // The writer gave up; its error is the one to report.
            return Ok(Digest::ZERO);
        }
        let mut raw = vec![0u8; raw_len as usize];
        let n = fill(&mut image, &mut raw)
            .map_err(|source| BuildError::ReadImage { offset, source })?;
        if n < raw.len() {
            return Err(BuildError::ImageTruncated {
                offset: offset + n as u64,
                size,
            });
        }
        hasher.update(&raw);
        if work.send((index, raw)).is_err() {
            return Ok(Digest::ZERO);
        }
    }
    let mut probe = [0u8; 1];
    let extra = fill(&mut image, &mut probe).map_err(|source| BuildError::ReadImage {
        offset: size,
        source,
    })?;
    if extra != 0 {
        return Err(BuildError::ImageTooLong { size });
    }
    Ok(hasher.finalize())
}

/// A compression worker: takes chunks off the shared queue until it is closed.
fn compress_chunks(
    queue: &WorkQueue,
    results: &std::sync::mpsc::Sender<(u64, Result<Compressed, BuildError>)>,
    level: i32,
    algorithm: DigestAlgorithm,
) {
    let mut compressor = match zstd::bulk::Compressor::new(level) {
        Ok(c) => c,
        Err(source) => {
            let _ = results.send((0, Err(BuildError::Compress { index: 0, source })));
            return;
        }
    };
    loop {
        // A poisoned lock means another worker panicked; stop, the join reports it.
        let next = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((index, raw)) = next else {
            return; // queue closed: all chunks read (or the reader failed)
        };
        let result = if is_all_zero(&raw) {
            Ok(Compressed::Zero)
        } else {
            compressor
                .compress(&raw)
                .map(|frame| Compressed::Stored {
                    compressed_digest: algorithm.digest(&frame),
                    raw_digest: algorithm.digest(&raw),
                    frame,
                })
                .map_err(|source| BuildError::Compress { index, source })
        };
        if results.send((index, result)).is_err() {
            return; // the writer gave up
        }
    }
}

/// The writer (calling thread): puts frames in index order, appends them to `data`, and
/// builds the chunk table. `Err(None)` means the workers stopped before every chunk arrived
/// (the reader failed or a worker panicked; the caller finds out which).
fn write_in_order<W: Write>(
    results: Receiver<(u64, Result<Compressed, BuildError>)>,
    tokens: SyncSender<()>,
    mut data: W,
    geometry: Geometry,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<ChunkEntry>, Option<BuildError>> {
    let count = geometry.chunk_count();
    let mut pending: BTreeMap<u64, Compressed> = BTreeMap::new();
    let mut chunks: Vec<ChunkEntry> = Vec::with_capacity(count as usize);
    let mut data_offset = 0u64;
    let mut done = 0u64;
    while (chunks.len() as u64) < count {
        let (index, result) = results.recv().map_err(|_| None)?;
        pending.insert(index, result.map_err(Some)?);
        while let Some(compressed) = pending.remove(&(chunks.len() as u64)) {
            let index = chunks.len() as u64;
            let (image_offset, raw_len) = geometry
                .chunk_span(index)
                .ok_or(Some(BuildError::WorkerPanicked))?;
            let kind = match compressed {
                Compressed::Zero => ChunkKind::Zero,
                Compressed::Stored {
                    frame,
                    raw_digest,
                    compressed_digest,
                } => {
                    data.write_all(&frame)
                        .map_err(|e| Some(BuildError::WriteData(e)))?;
                    ChunkKind::Stored {
                        compressed_len: u32::try_from(frame.len())
                            .map_err(|_| Some(BuildError::WorkerPanicked))?,
                        raw_digest,
                        compressed_digest,
                    }
                }
            };
            let entry = ChunkEntry {
                image_offset,
                data_offset,
                raw_len,
                kind,
            };
            data_offset += u64::from(entry.compressed_len());
            chunks.push(entry);
            done += u64::from(raw_len);
            progress(done);
            // The reader may already be finished; a refused token is fine.
            let _ = tokens.send(());
        }
    }
    data.flush().map_err(|e| Some(BuildError::WriteData(e)))?;
    Ok(chunks)
}

/// A built snapshot directory.
#[derive(Debug)]
pub struct Built {
    /// `out_dir/name`.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its signature, when a key was given.
    pub signature: Option<SignatureFile>,
}

/// Removes a half-built directory unless disarmed.
struct PartialDir {
    path: PathBuf,
    armed: bool,
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if self.armed {
            // Best effort cleanup of our own temporary directory.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Builds snapshot `name` in `out_dir` from `image` (exactly `image_size` bytes), signing it
/// with `key` when given. Everything is written into a hidden temporary directory, fsynced,
/// then renamed to `out_dir/name`, so the appliance never serves a half-built snapshot.
pub fn build_dir<R: Read + Send>(
    image: R,
    image_size: u64,
    options: &BuildOptions,
    out_dir: &Path,
    name: &str,
    key: Option<&SecretKey>,
    progress: &mut dyn FnMut(u64),
) -> Result<Built, BuildError> {
    validate_name(name)?;
    let dir = out_dir.join(name);
    if dir.symlink_metadata().is_ok() {
        return Err(BuildError::Exists { path: dir });
    }
    let partial = out_dir.join(format!(".{name}.partial-{}", std::process::id()));
    fs::create_dir(&partial).map_err(|e| IoError::new("create directory", &partial, e))?;
    let mut guard = PartialDir {
        path: partial.clone(),
        armed: true,
    };

    let data_path = partial.join(DATA_FILE);
    let data = File::create(&data_path).map_err(|e| IoError::new("create", &data_path, e))?;
    let manifest = build_stream(image, image_size, options, &data, progress)?;
    data.sync_all()
        .map_err(|e| IoError::new("sync", &data_path, e))?;
    drop(data);

    let manifest_bytes = manifest.encode();
    write_atomic(&partial, MANIFEST_FILE, &manifest_bytes)?;
    let signature = key.map(|k| sign_manifest(&manifest_bytes, k));
    if let Some(sig) = &signature {
        write_atomic(&partial, SIGNATURE_FILE, sig.to_file().as_bytes())?;
    }
    sync_dir(&partial)?;
    if dir.symlink_metadata().is_ok() {
        return Err(BuildError::Exists { path: dir });
    }
    fs::rename(&partial, &dir).map_err(|e| IoError::new("rename into place", &dir, e))?;
    guard.armed = false;
    sync_dir(out_dir)?;
    Ok(Built {
        dir,
        manifest,
        signature,
    })
}

/// Signs the snapshot in `dir` with `key`, replacing any existing `manifest.sig`. The whole
/// snapshot is verified first (every chunk and the image digest): a key vouches only for
/// content that was checked.
pub fn sign_dir(
    dir: &Path,
    key: &SecretKey,
    progress: &mut dyn FnMut(u64),
) -> Result<SignatureFile, BuildError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = read_capped(&manifest_path, MAX_MANIFEST_LEN)?;
    let manifest = Manifest::parse(&bytes).map_err(BuildError::Manifest)?;
    verify_contents(dir, &manifest, progress).map_err(BuildError::Verify)?;
    let signature = sign_manifest(&bytes, key);
    write_atomic(dir, SIGNATURE_FILE, signature.to_file().as_bytes())?;
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["debian-12", "a", "ubuntu_24.04", &"x".repeat(64)] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert_eq!(
                validate_name(bad).unwrap_err().code(),
                "bad_name",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn zero_detection() {
        assert!(is_all_zero(&[]));
        assert!(is_all_zero(&[0; 10000]));
        let mut v = vec![0u8; 10000];
        v[9999] = 1;
        assert!(!is_all_zero(&v));
        v[9999] = 0;
        v[0] = 1;
        assert!(!is_all_zero(&v));
    }

    #[test]
    fn short_and_long_images_are_refused() {
        let opts = BuildOptions {
            chunk_size: 1 << 20,
            threads: 2,
            ..BuildOptions::default()
        };
        let image = vec![1u8; 3 << 20];
        let err =
            build_stream(&image[..(2 << 20)], 3 << 20, &opts, io::sink(), &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), "image_truncated");
        let err = build_stream(&image[..], 2 << 20, &opts, io::sink(), &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), "image_too_long");
        let err = build_stream(&image[..], 1000, &opts, io::sink(), &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), "bad_image_size");
        let bad_level = BuildOptions {
            level: 22,
            ..opts.clone()
        };
        let err =
            build_stream(&image[..], 3 << 20, &bad_level, io::sink(), &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), "bad_level");
    }

    /// A sink that fails after some bytes: the build must stop with the write error, not hang.
    struct FailingSink(usize);

    impl Write for FailingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_failure_stops_all_threads() {
        let opts = BuildOptions {
            chunk_size: 1 << 20,
            threads: 2,
            ..BuildOptions::default()
        };
        // Incompressible-ish data so every chunk is stored.
        let image: Vec<u8> = (0..(16u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let err =
            build_stream(&image[..], 16 << 20, &opts, FailingSink(1000), &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), "data_write_failed");
    }
}
