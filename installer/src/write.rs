//! The verified streaming writer: snapshot chunks in, a bootable disk out only if every byte
//! checked out.
//!
//! ```text
//!  data.zst bytes (any Read, one per attempt; read on the caller's thread)
//!      │  decoder threads (one per core, at most 4), chunks in parallel:
//!      │  frame length + digest, zstd into an aligned buffer, raw length + digest
//!      ▼
//!  sequencer thread, strictly in chunk order: chunk 0's first MiB → held-back buffer,
//!      │  every chunk → ImageVerifier (whole-image digest; only with
//!      │  WriteOptions::image_digest)
//!      ▼
//!  writer thread, in chunk order: before the first write, zero the first and last MiB and
//!      │  fsync; zero chunk + ZeroPolicy::SkipKnownZeroed: not written, otherwise pwrite
//!      │  from an aligned buffer (O_DIRECT if allowed) by one of two write lanes (two
//!      │  writes in flight), reported done strictly in chunk order
//!      ▼
//!  finish(): [whole-image digest] → fsync → read back a sample of chunks (page cache
//!      dropped) → write the first MiB → fsync → read back chunk 0 → BLKRRPART
//! ```
//!
//! # What is verified
//!
//! The manifest is signed, and its chunk table tiles the image exactly (checked when it is
//! parsed: every chunk's image offset and raw length follow from the geometry). Every stored
//! chunk's frame and raw digests are checked against that table before the chunk is written;
//! a zero chunk is not stored and is zeros by construction. So every byte that reaches the
//! disk is covered by a signed digest, and recomputing the whole-image digest over all of
//! them (zeros included) adds no integrity; it costs one single-threaded pass over the whole
//! image, the slowest stage of the pipeline. It is therefore off by default
//! ([`WriteOptions::image_digest`]); `snapshot-tool verify` still checks it offline, and
//! [`WriteReport::computed_image_digest`] says whether this install did.
//!
//! The digests are SHA-256 or BLAKE3, as the snapshot's manifest says
//! ([`snapshot_tool::format::DigestAlgorithm`]). With SHA-256, hashing every frame and every
//! raw chunk is most of the writer's CPU time (about 2.2 CPU-seconds for a dense 2 GiB
//! image, against 1 for zstd), so a machine with two cores verifies below its disk's
//! bandwidth; with BLAKE3 it keeps up (`cargo xtask bench install`).
//!
//! # Never a bootable half-image
//!
//! [`ImageWriter`] zeroes the first and the last MiB of the target and syncs right before it
//! writes the first image byte, and never if it writes none: a refusal before that (a bad
//! first chunk, a cut stream, a wrong size) leaves the disk byte-for-byte as it was, and once
//! any image byte is on the disk its old boot loader and partition tables are gone. The
//! first MiB holds the MBR, the primary GPT and the start of the boot area; the last holds
//! the backup GPT that UEFI firmware falls back to when the primary is invalid. The image's
//! own first MiB is written only in [`ImageWriter::finish`], after every chunk verified (and
//! the whole-image digest matched, when asked for), the data was synced and a sample read
//! back correctly. If anything fails after that write (sync, read-back of chunk 0), the first
//! MiB is zeroed again (best effort: if the device fails that write too, it holds the complete
//! image whose every chunk verified). So an interrupted or failed install never leaves a
//! partition table over a partial image.
//!
//! # Resuming
//!
//! A dropped connection ends a [`ImageWriter::feed`] with a resumable error
//! ([`WriteError::is_resumable`]); the next `feed` takes a fresh reader positioned at
//! [`ImageWriter::resume_point`] (an HTTP `Range: bytes=N-` request) and continues at the
//! first chunk not yet written. [`write_image`] wraps this loop with a bounded attempt count.
//! A chunk that fails verification is not resumable: the data source is wrong, not flaky.

use std::io::{self, Read};
use std::path::Path;

use snapshot_tool::format::{
    ChunkError, ChunkKind, ChunkStream, ChunkVerifier, Digest, DigestAlgorithm, ImageVerifier,
    Manifest,
};

use crate::io::DIRECT_ALIGN;
use crate::io::aligned::AlignedBuf;
use crate::io::target::{FdTarget, WriteTarget, read_exact_at, write_all_at};
use crate::preflight::CheckedTarget;

/// Bytes held back and written last: the MBR, the primary GPT (34 sectors of 512 bytes, or 6
/// of 4096) and the 1 MiB alignment gap where BIOS boot loaders live. Every snapshot chunk is
/// at least this large, so the held-back region lies inside chunk 0.
pub const HEAD_LEN: u64 = 1 << 20;

/// Chunks read back after writing when the caller does not say: chunk 0, the last chunk and
/// 14 spread over the image. At the default 4 MiB chunks that is 64 MiB of reads, a few
/// seconds on any disk, enough to catch a target that drops or misplaces writes wholesale
/// (a wrong offset, a lying write cache, a disk that is not really zeroed).
pub const DEFAULT_READBACK_CHUNKS: u32 = 16;

/// What to do with all-zero chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroPolicy {
    /// Write them like any other chunk (the safe default: a disk's old contents are unknown).
    #[default]
    WriteZeros,
    /// Skip them. Only correct after the whole disk was zeroed and that was verified
    /// (`BLKZEROOUT`, or a sanitize with verification); a discard alone does not guarantee
    /// zeros. Read-back samples still check skipped chunks read as zeros.
    SkipKnownZeroed,
}

/// How to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// All-zero chunks.
    pub zero_policy: ZeroPolicy,
    /// Chunks to read back and re-hash after writing (chunk 0 is always among them); at least 1.
    pub readback_chunks: u32,
    /// Also recompute the whole-image digest over every byte (zeros included) and compare it
    /// with the manifest's before the first MiB is released. Off by default: the signed
    /// per-chunk digests already cover every byte written (see the module docs), and this
    /// single-threaded pass is the pipeline's bottleneck. `snapshot-tool verify` checks the
    /// whole-image digest offline.
    pub image_digest: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            zero_policy: ZeroPolicy::WriteZeros,
            readback_chunks: DEFAULT_READBACK_CHUNKS,
            image_digest: false,
        }
    }
}

/// What the writer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Streaming chunks.
    Writing,
    /// Reading back samples.
    Verifying,
    /// Writing the first MiB, syncing, re-reading the partition table.
    Finishing,
}

/// Progress, passed to the caller's callback after every chunk and at each phase change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Chunks verified and written so far.
    pub chunks_done: u64,
    /// Chunks in the image.
    pub chunk_count: u64,
    /// Raw image bytes done (`chunks_done` chunks' worth).
    pub image_bytes_done: u64,
    /// Image size.
    pub image_size: u64,
    /// Bytes of `data.zst` consumed (where a resume would start).
    pub data_offset: u64,
}

/// Where the next attempt must start reading `data.zst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// First chunk not yet written.
    pub chunk: u64,
    /// Its offset in `data.zst` (`Range: bytes=<data_offset>-`); the data length when every
    /// chunk is written.
    pub data_offset: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// Outcome of asking the kernel to re-read the partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionReread {
    /// The target is a file: nothing to re-read.
    NotABlockDevice,
    /// The kernel re-read it.
    Done,
    /// The kernel refused (e.g. `EINVAL` on a loop device without partition scanning, `EBUSY`
    /// if something holds a partition). The image is written and verified; the new table is
    /// read at the next boot.
    Failed {
        /// The errno, when there was one.
        os_error: Option<i32>,
    },
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// The algorithm of every digest the snapshot carries (and of this report's).
    pub digest_algorithm: DigestAlgorithm,
    /// The image's digest as the signed manifest states it. Every chunk written was
    /// verified against the manifest's per-chunk digests.
    pub image_digest: Digest,
    /// The whole-image digest recomputed over the written bytes, when
    /// [`WriteOptions::image_digest`] asked for it (it then equals `image_digest`); `None`
    /// when it was not computed.
    pub computed_image_digest: Option<Digest>,
    /// Image size in bytes.
    pub image_size: u64,
    /// Chunks in the image.
    pub chunks: u64,
    /// Zero chunks not written ([`ZeroPolicy::SkipKnownZeroed`]).
    pub zero_chunks_skipped: u64,
    /// Image bytes written to the target (not counting the initial zeroing).
    pub bytes_written: u64,
    /// Chunks read back and found correct, in order.
    pub readback: Vec<u64>,
    /// Whether the writes bypassed the page cache to the end.
    pub direct_io: bool,
    /// Data attempts made (1 when nothing had to be resumed).
    pub attempts: u32,
    /// The partition-table re-read.
    pub partition_table: PartitionReread,
}

/// Why a write failed. [`WriteError::code`] gives the stable reason code. Whatever the error,
/// the target's first MiB is either untouched (no image byte was written yet) or zero when it
/// is returned, never part of the image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The target is smaller than the image; nothing was written.
    #[error("{target} holds {capacity} bytes, the image needs {image_size}")]
    DeviceTooSmall {
        /// The target.
        target: String,
        /// Its size.
        capacity: u64,
        /// Image size.
        image_size: u64,
    },
    /// The image was built for another logical sector size (its partition table would be
    /// wrong on this device); nothing was written.
    #[error("{target} has {device}-byte logical sectors, the image was built for {image}")]
    SectorSizeMismatch {
        /// The target.
        target: String,
        /// The manifest's sector size.
        image: u32,
        /// The device's.
        device: u32,
    },
    /// The data did not verify, ended early, could not be read, or the whole image hashed
    /// to something else (the code is the format's: `chunk_digest_mismatch`,
    /// `data_truncated`, `image_digest_mismatch` (only with [`WriteOptions::image_digest`]),
    /// ...).
    #[error("snapshot data rejected")]
    Data(#[source] ChunkError),
    /// Opening the data source for an attempt failed.
    #[error("opening the snapshot data at chunk {chunk} (data offset {data_offset}) failed")]
    SourceOpen {
        /// Chunk the attempt would have started at.
        chunk: u64,
        /// Data offset.
        data_offset: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The target stopped accepting bytes.
    #[error("{target} accepted no more bytes at offset {offset}")]
    ShortWrite {
        /// The target.
        target: String,
        /// Where the write stalled.
        offset: u64,
    },
    /// An I/O operation on the target failed.
    #[error("{op} on {target} at offset {offset} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The target.
        target: String,
        /// Where.
        offset: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A chunk read back from the target differs from what was written.
    #[error("{target}: chunk {index} at offset {offset} reads back wrong")]
    ReadbackMismatch {
        /// The target.
        target: String,
        /// Chunk index.
        index: u64,
        /// Its offset.
        offset: u64,
    },
    /// `finish` before every chunk was written.
    #[error("only {next} of {count} chunks were written")]
    Incomplete {
        /// Chunks written.
        next: u64,
        /// Chunks in the image.
        count: u64,
    },
    /// The writer already failed with a non-resumable error.
    #[error("the writer already failed ({code})")]
    AlreadyFailed {
        /// The first failure's code.
        code: &'static str,
    },
}

impl WriteError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DeviceTooSmall { .. } => "device_too_small",
            Self::SectorSizeMismatch { .. } => "sector_size_mismatch",
            Self::Data(e) => e.code(),
            Self::SourceOpen { .. } => "source_open_failed",
            Self::ShortWrite { .. } => "short_write",
            Self::Io { .. } => "io_error",
            Self::ReadbackMismatch { .. } => "readback_mismatch",
            Self::Incomplete { .. } => "incomplete",
            Self::AlreadyFailed { .. } => "writer_failed",
        }
    }

    /// Whether a new attempt with a fresh reader at [`ImageWriter::resume_point`] may
    /// succeed: the data stream was cut or could not be read or opened. Verification, target
    /// and size errors are final.
    pub fn is_resumable(&self) -> bool {
        matches!(
            self,
            Self::SourceOpen { .. }
                | Self::Data(ChunkError::DataTruncated { .. } | ChunkError::Read { .. })
        )
    }
}

/// Writes one verified snapshot to one target. See the module docs.
pub struct ImageWriter<'m> {
    manifest: &'m Manifest,
    target: Box<dyn WriteTarget>,
    options: WriteOptions,
    /// The whole-image hash, only with [`WriteOptions::image_digest`].
    verifier: Option<ImageVerifier>,
    /// Whether the first and last MiB were zeroed and synced (right before the first write).
    ends_cleared: bool,
    next: u64,
    head: AlignedBuf,
    staging: AlignedBuf,
    failed: Option<&'static str>,
    attempts: u32,
    bytes_written: u64,
    zero_chunks_skipped: u64,
}

impl std::fmt::Debug for ImageWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageWriter")
            .field("target", &self.target)
            .field("next", &self.next)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<'m> ImageWriter<'m> {
    /// Prepares to write `manifest`'s image to a disk that passed preflight. Checks size and
    /// sector size; writes nothing (the ends are zeroed right before the first image byte).
    pub fn to_disk(
        target: CheckedTarget,
        manifest: &'m Manifest,
        options: WriteOptions,
    ) -> Result<Self, WriteError> {
        Self::with_target(Box::new(FdTarget::device(target)), manifest, options)
    }

    /// The same for an existing regular file standing in for a disk (its length is the
    /// capacity; it is never grown). For tests and for producing disk images.
    pub fn to_file(
        path: &Path,
        manifest: &'m Manifest,
        options: WriteOptions,
    ) -> Result<Self, WriteError> {
        let target = FdTarget::regular_file(path).map_err(|source| WriteError::Io {
            op: "open",
            target: path.display().to_string(),
            offset: 0,
            source,
        })?;
        Self::with_target(Box::new(target), manifest, options)
    }

    pub(crate) fn with_target(
        target: Box<dyn WriteTarget>,
        manifest: &'m Manifest,
        options: WriteOptions,
    ) -> Result<Self, WriteError> {
        let image_size = manifest.image_size();
        let capacity = target.capacity();
        if capacity < image_size {
            return Err(WriteError::DeviceTooSmall {
                target: target.describe(),
                capacity,
                image_size,
            });
        }
        let sector = manifest.geometry().sector_size();
        if let Some(device) = target.logical_block_size()
            && device != sector
        {
            return Err(WriteError::SectorSizeMismatch {
                target: target.describe(),
                image: sector,
                device,
            });
        }
        // Chunk sizes are capped at 64 MiB by the format, so these fit any usize.
        let chunk_size = manifest.geometry().chunk_size() as usize;
        let head_len = image_size.min(HEAD_LEN) as usize;
        let writer = Self {
            manifest,
            target,
            options,
            verifier: options.image_digest.then(|| ImageVerifier::new(manifest)),
            ends_cleared: false,
            next: 0,
            head: AlignedBuf::zeroed(head_len, DIRECT_ALIGN),
            staging: AlignedBuf::zeroed(chunk_size.max(HEAD_LEN as usize), DIRECT_ALIGN),
            failed: None,
            attempts: 0,
            bytes_written: 0,
            zero_chunks_skipped: 0,
        };
        Ok(writer)
    }

    /// Zeroes the first and the last MiB of the target and syncs, unless the streaming
    /// pipeline already did before its first write (see the module docs).
    fn ensure_ends_cleared(&mut self) -> Result<(), WriteError> {
        if !self.ends_cleared {
            let len = self.target.capacity().min(HEAD_LEN) as usize;
            let zeros = self.staging.fill_zero(len);
            clear_ends(self.target.as_mut(), zeros)?;
            self.ends_cleared = true;
        }
        Ok(())
    }

    fn zero_range(&mut self, offset: u64, len: u64) -> Result<(), WriteError> {
        // `len` is at most HEAD_LEN, which the staging buffer always holds.
        let zeros = self.staging.fill_zero(len as usize);
        write_all_at(self.target.as_mut(), zeros, offset)
            .map_err(|e| target_error("zero", &*self.target, offset, e))
    }

    fn sync(&mut self) -> Result<(), WriteError> {
        self.target
            .sync()
            .map_err(|e| target_error("sync", &*self.target, 0, e))
    }

    /// Where the next attempt must start.
    pub fn resume_point(&self) -> ResumePoint {
        ResumePoint {
            chunk: self.next,
            data_offset: self.data_offset(),
            attempt: self.attempts + 1,
        }
    }

    fn data_offset(&self) -> u64 {
        self.manifest
            .resume_offset(self.next)
            .unwrap_or(self.manifest.data_len())
    }

    /// Whether every chunk has been written.
    pub fn is_complete(&self) -> bool {
        self.next == self.manifest.chunks().len() as u64
    }

    fn progress(&self, phase: Phase) -> Progress {
        progress_at(self.manifest, self.next, phase)
    }

    /// Records a final failure and returns it.
    fn fail(&mut self, e: WriteError) -> WriteError {
        if !e.is_resumable() {
            self.failed.get_or_insert(e.code());
        }
        e
    }

    /// Streams chunks from `reader`, which must be positioned at
    /// [`resume_point`](Self::resume_point)`().data_offset`, until the end of the data. On a
    /// resumable error, call again with a fresh reader; on any other error the writer is
    /// spent.
    ///
    /// Chunks are verified and decompressed on several threads, put back in order (and
    /// hashed into the whole-image digest, when asked for) on another and written on another,
    /// always in chunk order (see `pipeline`); `reader` and `progress` stay on the calling
    /// thread. The first write of a feed that writes anything is preceded by the zeroing of
    /// the target's ends, once per writer.
    pub fn feed<R: Read>(
        &mut self,
        mut reader: R,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), WriteError> {
        if let Some(code) = self.failed {
            return Err(WriteError::AlreadyFailed { code });
        }
        self.attempts = self.attempts.saturating_add(1);
        let manifest = self.manifest;
        let count = manifest.chunks().len() as u64;
        let result = self.pump(&mut reader, progress).and_then(|()| {
            // After the last chunk the stream must end.
            ChunkStream::starting_at(manifest, &mut reader, count)
                .and_then(ChunkStream::expect_end)
                .map_err(WriteError::Data)
        });
        result.map_err(|e| self.fail(e))
    }

    /// Runs the pipeline from chunk `self.next` to the last chunk or the first error.
    fn pump(
        &mut self,
        reader: &mut dyn Read,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), WriteError> {
        let manifest = self.manifest;
        let count = manifest.chunks().len() as u64;
        if self.next >= count {
            return Ok(());
        }
        let chunk_size = manifest.geometry().chunk_size() as usize;
        let workers = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .clamp(1, pipeline::MAX_DECODERS);
        let mut decoders = Vec::with_capacity(workers);
        for _ in 0..workers {
            decoders.push(ChunkVerifier::new(manifest).map_err(WriteError::Data)?);
        }
        let ImageWriter {
            target,
            options,
            verifier,
            ends_cleared,
            next,
            head,
            bytes_written,
            zero_chunks_skipped,
            ..
        } = self;
        pipeline::run(
            pipeline::Stages {
                manifest,
                decoders,
                verifier: verifier.as_mut(),
                head,
                target: target.as_mut(),
                zero_policy: options.zero_policy,
                ends_cleared,
                bytes_written,
                zero_chunks_skipped,
                next,
                chunk_size,
            },
            reader,
            progress,
        )
    }

    /// Completes the install once every chunk is written: the whole-image digest (only with
    /// [`WriteOptions::image_digest`]), the zeroing of the ends if no chunk was written yet,
    /// sync, read-back sample, the held-back first MiB, sync, read-back of chunk 0,
    /// partition-table re-read.
    pub fn finish(
        mut self,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<WriteReport, WriteError> {
        if let Some(code) = self.failed {
            return Err(WriteError::AlreadyFailed { code });
        }
        let count = self.manifest.chunks().len() as u64;
        if self.next != count {
            return Err(WriteError::Incomplete {
                next: self.next,
                count,
            });
        }
        let computed_image_digest = match self.verifier.take() {
            Some(v) => Some(v.finish().map_err(WriteError::Data)?),
            None => None,
        };
        let image_digest = self.manifest.image_digest();
        progress(&self.progress(Phase::Verifying));
        // Nothing written while streaming (the image is only its first MiB, or every other
        // chunk was a skipped zero chunk): the ends are cleared now, before the read-back
        // looks at them and before the head goes out.
        self.ensure_ends_cleared()?;
        self.sync()?;
        self.drop_cache()?;
        let samples = sample_chunks(count, self.options.readback_chunks, &image_digest);
        for &index in samples.iter().filter(|&&i| i != 0) {
            self.read_back(index)?;
        }

        progress(&self.progress(Phase::Finishing));
        if let Err(e) = self.release_head() {
            // Best effort: the disk must not keep a table whose data did not verify.
            let _ = self.zero_range(0, self.head.capacity() as u64);
            let _ = self.target.sync();
            return Err(e);
        }
        let partition_table = match self.target.reread_partitions() {
            None => PartitionReread::NotABlockDevice,
            Some(Ok(())) => PartitionReread::Done,
            Some(Err(e)) => PartitionReread::Failed {
                os_error: e.raw_os_error(),
            },
        };
        Ok(WriteReport {
            digest_algorithm: self.manifest.digest_algorithm(),
            image_digest,
            computed_image_digest,
            image_size: self.manifest.image_size(),
            chunks: count,
            zero_chunks_skipped: self.zero_chunks_skipped,
            bytes_written: self.bytes_written + self.head.capacity() as u64,
            readback: samples,
            direct_io: self.target.is_direct(),
            attempts: self.attempts,
            partition_table,
        })
    }

    fn release_head(&mut self) -> Result<(), WriteError> {
        write_all_at(self.target.as_mut(), self.head.as_slice(), 0)
            .map_err(|e| target_error("write first MiB", &*self.target, 0, e))?;
        self.sync()?;
        self.drop_cache()?;
        self.read_back(0)
    }

    fn drop_cache(&mut self) -> Result<(), WriteError> {
        self.target
            .drop_cache()
            .map_err(|e| target_error("drop cache", &*self.target, 0, e))
    }

    /// Reads chunk `index` back from the target and compares its digest (or zeros).
    fn read_back(&mut self, index: u64) -> Result<(), WriteError> {
        let Some(entry) = self.manifest.chunk(index).copied() else {
            return Ok(());
        };
        let buf = self.staging.resize(entry.raw_len as usize);
        read_exact_at(self.target.as_mut(), buf, entry.image_offset)
            .map_err(|e| target_error("read back", &*self.target, entry.image_offset, e))?;
        let good = match entry.kind {
            ChunkKind::Zero => self.staging.as_slice().iter().all(|&b| b == 0),
            ChunkKind::Stored { raw_digest, .. } => {
                self.manifest
                    .digest_algorithm()
                    .digest(self.staging.as_slice())
                    == raw_digest
            }
        };
        if good {
            Ok(())
        } else {
            Err(WriteError::ReadbackMismatch {
                target: self.target.describe(),
                index,
                offset: entry.image_offset,
            })
        }
    }
}

/// Progress when `next` chunks are done.
fn progress_at(manifest: &Manifest, next: u64, phase: Phase) -> Progress {
    let image_bytes_done = manifest
        .chunk(next)
        .map_or(manifest.image_size(), |c| c.image_offset);
    Progress {
        phase,
        chunks_done: next,
        chunk_count: manifest.chunks().len() as u64,
        image_bytes_done,
        image_size: manifest.image_size(),
        data_offset: manifest.resume_offset(next).unwrap_or(manifest.data_len()),
    }
}

/// The streaming pipeline behind [`ImageWriter::feed`]:
///
/// ```text
///  caller thread         decoders (1 per core, ≤ 4)   sequencer              writer + 2 lanes
///  read frame i ──job──► frame digest, zstd   ──►    reorder by index, ──►  [zero the ends]
///  (reader, progress)    into an aligned buffer,      first MiB → head,      pwrite (O_DIRECT),
///      ▲                 raw digest                   [image digest]         2 in flight
///      └──────────────────────────── done(i): progress, next = i + 1 ◄───────┘
/// ```
///
/// Order and failure semantics are those of a sequential loop: chunks are hashed and
/// handed to the write lanes strictly in index order, and reported done (or failed) in
/// index order whatever order the lanes finish in; the first failing chunk in index order decides the error
/// (a verification failure stops everything after it, the chunks before it are still
/// written); a read failure at chunk `k` lets every chunk before `k` be written so the next
/// attempt resumes exactly at `k`. Memory is bounded: at most [`IN_FLIGHT_BYTES`] worth of
/// chunks (frame plus raw buffer each) are between the reader and the writer, and buffers
/// are recycled.
///
/// [`IN_FLIGHT_BYTES`]: pipeline::IN_FLIGHT_BYTES
mod pipeline {
    use std::collections::{BTreeMap, VecDeque};
    use std::io::Read;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};

    use snapshot_tool::format::{ChunkEntry, ChunkError, ChunkVerifier, ImageVerifier, Manifest};

    use super::{Phase, Progress, WriteError, ZeroPolicy, clear_ends, progress_at, target_error};
    use crate::io::DIRECT_ALIGN;
    use crate::io::aligned::AlignedBuf;
    use crate::io::target::{WriteTarget, write_all_at};

    /// Most decoder threads (beyond that the in-order writer, or the single-threaded image
    /// hash when it is on, is the bound).
    pub(super) const MAX_DECODERS: usize = 4;
    /// Budget for chunks in flight (each holds a frame and a raw buffer of up to a chunk).
    pub(super) const IN_FLIGHT_BYTES: usize = 96 << 20;
    /// Writes in flight at once when the target can be shared ([`WriteTarget::lane`]): a
    /// device fed one O_DIRECT write at a time idles while each completes and the next is
    /// issued; two keep it busy (on this project's 2-core machine, a loop device over a
    /// virtio disk: 2 GiB of `dd` in ~1.25 s at two against ~1.75 s at one; the installer
    /// installed a dense BLAKE3 image in 1.57 s with two lanes, 1.54 s with three, and 1.76 s
    /// writing one chunk at a time).
    pub(super) const WRITE_LANES: usize = 2;
    /// Frames are read in pieces of at most this size; between pieces, chunks that landed
    /// meanwhile are reported (a 4 MiB frame takes seconds on a slow link).
    const READ_PIECE: usize = 256 << 10;

    /// What the pipeline works on: the writer's state, lent for one `feed`.
    pub(super) struct Stages<'a> {
        pub(super) manifest: &'a Manifest,
        pub(super) decoders: Vec<ChunkVerifier>,
        pub(super) verifier: Option<&'a mut ImageVerifier>,
        pub(super) head: &'a mut AlignedBuf,
        pub(super) target: &'a mut dyn WriteTarget,
        pub(super) zero_policy: ZeroPolicy,
        /// Whether the target's ends were already zeroed (set by the first write).
        pub(super) ends_cleared: &'a mut bool,
        pub(super) bytes_written: &'a mut u64,
        pub(super) zero_chunks_skipped: &'a mut u64,
        pub(super) next: &'a mut u64,
        pub(super) chunk_size: usize,
    }

    /// A verified chunk's bytes.
    enum Raw {
        /// Decompressed and verified, in an aligned buffer of exactly `raw_len` bytes.
        Data(AlignedBuf),
        /// An all-zero chunk (not stored): the shared zero buffer stands in for it.
        Zero,
    }

    /// A verified chunk on its way to the writer.
    struct Chunk {
        index: u64,
        entry: ChunkEntry,
        raw: Raw,
    }

    impl Chunk {
        fn bytes<'b>(&'b self, zeros: &'b AlignedBuf) -> &'b [u8] {
            match &self.raw {
                Raw::Data(buf) => buf.as_slice(),
                Raw::Zero => zeros
                    .as_slice()
                    .get(..self.entry.raw_len as usize)
                    .unwrap_or_default(),
            }
        }
    }

    /// A decoder's answer for one chunk.
    type Decoded = (u64, Result<Chunk, ChunkError>);

    /// Buffers shared between stages.
    struct Shared {
        /// Raw buffers returned by the writer.
        pool: Mutex<Vec<AlignedBuf>>,
        /// Zeros, one chunk long (at least [`super::HEAD_LEN`]), for zero chunks and for
        /// clearing the target's ends.
        zeros: AlignedBuf,
        /// Set by a stage that failed: everyone stops taking new work.
        stop: AtomicBool,
        chunk_size: usize,
    }

    impl Shared {
        fn stopped(&self) -> bool {
            self.stop.load(Ordering::Acquire)
        }

        fn halt(&self) {
            self.stop.store(true, Ordering::Release);
        }

        fn buffer(&self) -> AlignedBuf {
            self.pool
                .lock()
                .ok()
                .and_then(|mut p| p.pop())
                .unwrap_or_else(|| AlignedBuf::zeroed(self.chunk_size, DIRECT_ALIGN))
        }

        fn recycle(&self, buf: AlignedBuf) {
            if let Ok(mut p) = self.pool.lock() {
                p.push(buf);
            }
        }
    }

    /// Runs the pipeline (see the module docs) until every chunk from `*next` on is written
    /// or the first error.
    pub(super) fn run(
        st: Stages<'_>,
        reader: &mut dyn Read,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), WriteError> {
        let Stages {
            manifest,
            decoders,
            verifier,
            head,
            target,
            zero_policy,
            ends_cleared,
            bytes_written,
            zero_chunks_skipped,
            next,
            chunk_size,
        } = st;
        let count = manifest.chunks().len() as u64;
        let start = *next;
        let in_flight_max =
            (IN_FLIGHT_BYTES / (2 * chunk_size.max(1))).clamp(2, 2 * decoders.len() + 2);
        let shared = Shared {
            pool: Mutex::new(Vec::new()),
            zeros: AlignedBuf::zeroed(chunk_size.max(super::HEAD_LEN as usize), DIRECT_ALIGN),
            stop: AtomicBool::new(false),
            chunk_size,
        };
        let shared = &shared;
        let (job_tx, job_rx) = channel::<(u64, Vec<u8>)>();
        let job_rx = Mutex::new(job_rx);
        let job_rx = &job_rx;
        let (frame_tx, frame_rx) = channel::<Vec<u8>>();
        let (decoded_tx, decoded_rx) = channel::<Decoded>();
        let (write_tx, write_rx) = channel::<Chunk>();
        let (done_tx, done_rx) = channel::<u64>();

        let describe = target.describe();
        let spawn_failed = |source: std::io::Error| WriteError::Io {
            op: "start a writer thread",
            target: describe.clone(),
            offset: 0,
            source,
        };
        let thread = |name: &str| std::thread::Builder::new().name(name.to_owned());

        // Threads that fail to start end the feed with an error; the ones already running
        // see their channels close and stop.
        std::thread::scope(|s| {
            let mut decoding = 0;
            for decoder in decoders {
                let decoded_tx = decoded_tx.clone();
                let frame_tx = frame_tx.clone();
                let work = move || decode(manifest, decoder, job_rx, decoded_tx, frame_tx, shared);
                match thread("rh-decode").spawn_scoped(s, work) {
                    Ok(_) => decoding += 1,
                    // Fewer decoders only make it slower.
                    Err(_) if decoding > 0 => break,
                    Err(e) => return Err(spawn_failed(e)),
                }
            }
            drop(decoded_tx);
            drop(frame_tx);
            let sequencer = thread("rh-sequence")
                .spawn_scoped(s, move || {
                    sequence(start, decoded_rx, write_tx, verifier, head, shared)
                })
                .map_err(spawn_failed)?;
            // The write lanes, when the target can be shared (none: the writer writes one
            // chunk at a time itself, with the same results).
            let mut lanes = Vec::with_capacity(WRITE_LANES);
            for _ in 0..WRITE_LANES {
                let Some(handle) = target.lane() else { break };
                let (tx, rx) = channel::<Chunk>();
                let (result_tx, result_rx) = channel::<LaneResult>();
                let head = head_len(manifest);
                let work = move || lane(handle, rx, result_tx, head, shared);
                match thread("rh-write-lane").spawn_scoped(s, work) {
                    Ok(_) => lanes.push((tx, result_rx)),
                    Err(_) => break,
                }
            }
            let writer = thread("rh-write")
                .spawn_scoped(s, move || {
                    write(
                        target,
                        write_rx,
                        done_tx,
                        lanes,
                        (zero_policy, head_len(manifest)),
                        (ends_cleared, bytes_written, zero_chunks_skipped),
                        shared,
                    )
                })
                .map_err(spawn_failed)?;

            // The calling thread: read frames in order, keep at most `in_flight_max` chunks
            // between here and the writer, report progress as chunks land (checked between
            // pieces of a frame too, so progress does not wait for a large frame's last byte).
            let mut in_flight = 0usize;
            let mut read_result = Ok(());
            let mut landed = |index: u64, next: &mut u64| {
                *next = index + 1;
                progress(&progress_at(manifest, *next, Phase::Writing));
            };
            'read: for index in start..count {
                while let Ok(i) = done_rx.try_recv() {
                    in_flight -= 1;
                    landed(i, next);
                }
                while in_flight >= in_flight_max {
                    match done_rx.recv() {
                        Ok(i) => {
                            in_flight -= 1;
                            landed(i, next);
                        }
                        Err(_) => break 'read,
                    }
                }
                if shared.stopped() {
                    break;
                }
                let Some(entry) = manifest.chunk(index) else {
                    break;
                };
                let len = entry.compressed_len() as usize;
                let mut frame = frame_rx.try_recv().unwrap_or_default();
                frame.resize(len, 0);
                let mut read = Ok(());
                for piece in frame.chunks_mut(READ_PIECE) {
                    read = reader.read_exact(piece);
                    if read.is_err() {
                        break;
                    }
                    while let Ok(i) = done_rx.try_recv() {
                        in_flight -= 1;
                        landed(i, next);
                    }
                }
                if let Err(e) = read {
                    read_result = Err(ChunkError::frame_read(index, entry.data_offset, e));
                    break;
                }
                if job_tx.send((index, frame)).is_err() {
                    break;
                }
                in_flight += 1;
            }
            drop(job_tx);
            for i in done_rx.iter() {
                landed(i, next);
            }
            let joined = |r: std::thread::Result<Result<(), WriteError>>| {
                r.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            };
            // The first failure in chunk order: the writer's chunk precedes anything the
            // sequencer was still looking at, which precedes the chunk that could not be read.
            joined(writer.join())?;
            joined(sequencer.join())?;
            read_result.map_err(WriteError::Data)
        })?;
        if *next == count {
            Ok(())
        } else {
            Err(WriteError::Incomplete { next: *next, count })
        }
    }

    /// Bytes of chunk 0 held back (the writer's head buffer length).
    fn head_len(manifest: &Manifest) -> usize {
        manifest.image_size().min(super::HEAD_LEN) as usize
    }

    /// A decoder thread: verify and decompress frames, in whatever order they come.
    fn decode(
        manifest: &Manifest,
        mut decoder: ChunkVerifier,
        jobs: &Mutex<Receiver<(u64, Vec<u8>)>>,
        out: Sender<Decoded>,
        frames: Sender<Vec<u8>>,
        shared: &Shared,
    ) {
        loop {
            let job = match jobs.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok((index, frame)) = job else { return };
            if shared.stopped() {
                continue;
            }
            let Some(entry) = manifest.chunk(index).copied() else {
                return;
            };
            let result = if entry.is_zero() && frame.is_empty() {
                Ok(Raw::Zero)
            } else {
                // Decompressed straight into the aligned buffer the writer writes from.
                let mut buf = shared.buffer();
                let out = buf.resize(entry.raw_len as usize);
                match decoder.verify_into(index, &entry, &frame, out) {
                    Ok(()) => Ok(Raw::Data(buf)),
                    Err(e) => {
                        shared.recycle(buf);
                        Err(e)
                    }
                }
            };
            let _ = frames.send(frame);
            let msg = (index, result.map(|raw| Chunk { index, entry, raw }));
            if out.send(msg).is_err() {
                return;
            }
        }
    }

    /// The sequencer thread: put chunks back in order, keep the first MiB, feed the image
    /// digest (when there is one), pass chunks to the writer.
    fn sequence(
        start: u64,
        decoded: Receiver<Decoded>,
        to_writer: Sender<Chunk>,
        mut verifier: Option<&mut ImageVerifier>,
        head: &mut AlignedBuf,
        shared: &Shared,
    ) -> Result<(), WriteError> {
        let mut pending = BTreeMap::new();
        let mut want = start;
        for (index, result) in decoded.iter() {
            pending.insert(index, result);
            while let Some(result) = pending.remove(&want) {
                let chunk = result.map_err(|e| {
                    shared.halt();
                    WriteError::Data(e)
                })?;
                let raw = chunk.bytes(&shared.zeros);
                if want == 0 {
                    head.copy_from(raw.get(..head.capacity()).unwrap_or(raw));
                }
                if let Some(verifier) = verifier.as_deref_mut() {
                    verifier.update(want, raw).map_err(|e| {
                        shared.halt();
                        WriteError::Data(e)
                    })?;
                }
                if to_writer.send(chunk).is_err() {
                    // The writer stopped with its own error.
                    return Ok(());
                }
                want += 1;
            }
        }
        Ok(())
    }

    /// A chunk a lane wrote, and how its write went (bytes written).
    type LaneResult = (Chunk, Result<u64, WriteError>);

    /// A write lane: writes the chunks the writer hands it on its own handle of the target,
    /// one at a time, in the order received, and answers each.
    fn lane(
        mut target: Box<dyn WriteTarget>,
        chunks: Receiver<Chunk>,
        results: Sender<LaneResult>,
        head_len: usize,
        shared: &Shared,
    ) {
        for chunk in chunks.iter() {
            let result = write_chunk(target.as_mut(), &chunk, head_len, shared);
            if results.send((chunk, result)).is_err() {
                return;
            }
        }
    }

    /// Writes a chunk's bytes (chunk 0 without its first MiB) at its offset; returns the
    /// bytes written.
    fn write_chunk(
        target: &mut dyn WriteTarget,
        chunk: &Chunk,
        head_len: usize,
        shared: &Shared,
    ) -> Result<u64, WriteError> {
        let held = if chunk.index == 0 { head_len } else { 0 };
        let raw = chunk.bytes(&shared.zeros);
        let rest = raw.get(held..).unwrap_or_default();
        let offset = chunk.entry.image_offset + held as u64;
        write_all_at(target, rest, offset).map_err(|e| target_error("write", target, offset, e))?;
        Ok(rest.len() as u64)
    }

    /// A chunk between the writer's hands and its report, in chunk order.
    enum Slot {
        /// In lane `n`, being written.
        Lane(usize),
        /// Done (skipped, or written by the writer itself), waiting for the chunks before it.
        Ready(Chunk, u64),
    }

    /// The chunks in flight, oldest first, and where the writer reports them.
    struct InFlight<'a> {
        slots: VecDeque<Slot>,
        lanes: Vec<(Sender<Chunk>, Receiver<LaneResult>)>,
        /// Lanes holding a chunk.
        busy: usize,
        /// The lane the next chunk goes to (lanes are used in turn, so the busy ones are
        /// always the `busy` lanes before this one).
        next_lane: usize,
        done: Sender<u64>,
        bytes_written: &'a mut u64,
        shared: &'a Shared,
    }

    impl InFlight<'_> {
        /// Reports the oldest chunk, waiting for its lane if it is still being written. Its
        /// failure is the error: it precedes every chunk after it. `Ok(false)` when nobody
        /// listens any more.
        fn settle_oldest(&mut self) -> Result<bool, WriteError> {
            let (chunk, written) = match self.slots.pop_front() {
                None => return Ok(true),
                Some(Slot::Ready(chunk, written)) => (chunk, written),
                Some(Slot::Lane(n)) => {
                    self.busy -= 1;
                    let answer = self.lanes.get(n).and_then(|(_, rx)| rx.recv().ok());
                    let Some((chunk, result)) = answer else {
                        return Err(WriteError::Io {
                            op: "write",
                            target: format!("write lane {n}"),
                            offset: 0,
                            source: std::io::Error::other("the write lane stopped"),
                        });
                    };
                    (chunk, result?)
                }
            };
            *self.bytes_written += written;
            let index = chunk.index;
            if let Raw::Data(buf) = chunk.raw {
                self.shared.recycle(buf);
            }
            Ok(self.done.send(index).is_ok())
        }

        /// Reports the chunks at the front that are done.
        fn settle_ready(&mut self) -> Result<bool, WriteError> {
            while matches!(self.slots.front(), Some(Slot::Ready(..))) {
                if !self.settle_oldest()? {
                    return Ok(false);
                }
            }
            Ok(true)
        }

        /// Hands `chunk` to the next lane, first waiting for one to be free.
        fn hand_to_lane(&mut self, chunk: Chunk) -> Result<bool, WriteError> {
            while self.busy == self.lanes.len() {
                if !self.settle_oldest()? {
                    return Ok(false);
                }
            }
            let n = self.next_lane;
            let sent = self
                .lanes
                .get(n)
                .is_some_and(|(tx, _)| tx.send(chunk).is_ok());
            if !sent {
                return Err(WriteError::Io {
                    op: "write",
                    target: format!("write lane {n}"),
                    offset: 0,
                    source: std::io::Error::other("the write lane stopped"),
                });
            }
            self.slots.push_back(Slot::Lane(n));
            self.busy += 1;
            self.next_lane = (n + 1) % self.lanes.len().max(1);
            Ok(true)
        }
    }

    /// The writer thread: write chunks (chunk 0 without its first MiB), skip zero chunks when
    /// allowed, recycle buffers, report each chunk done, strictly in chunk order. Right before
    /// its first write (if any), zero the target's ends and sync, unless an earlier feed did.
    /// With lanes, chunks go to them in turn, so up to [`WRITE_LANES`] writes are in flight;
    /// without, this thread writes each chunk itself.
    fn write(
        target: &mut dyn WriteTarget,
        chunks: Receiver<Chunk>,
        done: Sender<u64>,
        lanes: Vec<(Sender<Chunk>, Receiver<LaneResult>)>,
        (zero_policy, head_len): (ZeroPolicy, usize),
        (ends_cleared, bytes_written, zero_chunks_skipped): (&mut bool, &mut u64, &mut u64),
        shared: &Shared,
    ) -> Result<(), WriteError> {
        let mut flight = InFlight {
            slots: VecDeque::new(),
            lanes,
            busy: 0,
            next_lane: 0,
            done,
            bytes_written,
            shared,
        };
        let result = (|| {
            loop {
                // The next chunk if one is waiting; if none is, report what is in flight
                // first (so progress never lags a slow stream).
                let chunk = match chunks.try_recv() {
                    Ok(chunk) => chunk,
                    Err(TryRecvError::Empty) if !flight.slots.is_empty() => {
                        if !flight.settle_oldest()? {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(TryRecvError::Empty) => match chunks.recv() {
                        Ok(chunk) => chunk,
                        Err(_) => break,
                    },
                    Err(TryRecvError::Disconnected) => break,
                };
                let zero = matches!(chunk.raw, Raw::Zero);
                let going_on = if zero && zero_policy == ZeroPolicy::SkipKnownZeroed {
                    *zero_chunks_skipped += 1;
                    flight.slots.push_back(Slot::Ready(chunk, 0));
                    flight.settle_ready()?
                } else {
                    let held = if chunk.index == 0 { head_len } else { 0 };
                    if chunk.entry.raw_len as usize > held && !*ends_cleared {
                        let len = target.capacity().min(super::HEAD_LEN) as usize;
                        let zeros = shared.zeros.as_slice().get(..len).unwrap_or_default();
                        clear_ends(target, zeros)?;
                        *ends_cleared = true;
                    }
                    if flight.lanes.is_empty() {
                        let written = write_chunk(target, &chunk, head_len, shared)?;
                        flight.slots.push_back(Slot::Ready(chunk, written));
                        flight.settle_ready()?
                    } else {
                        flight.hand_to_lane(chunk)?
                    }
                };
                if !going_on {
                    return Ok(());
                }
            }
            while !flight.slots.is_empty() {
                if !flight.settle_oldest()? {
                    return Ok(());
                }
            }
            Ok(())
        })();
        if result.is_err() {
            shared.halt();
        }
        result
    }
}

/// Zeroes the first and the last `zeros.len()` bytes of `target` (its first and last MiB,
/// or all of a target smaller than that; see the module docs) and syncs.
fn clear_ends(target: &mut dyn WriteTarget, zeros: &[u8]) -> Result<(), WriteError> {
    let capacity = target.capacity();
    let len = zeros.len() as u64;
    let tail = capacity.saturating_sub(len);
    write_all_at(target, zeros, 0).map_err(|e| target_error("zero", target, 0, e))?;
    write_all_at(target, zeros, tail).map_err(|e| target_error("zero", target, tail, e))?;
    target
        .sync()
        .map_err(|e| target_error("sync", target, 0, e))
}

fn target_error(
    op: &'static str,
    target: &dyn WriteTarget,
    offset: u64,
    e: io::Error,
) -> WriteError {
    if e.kind() == io::ErrorKind::WriteZero {
        WriteError::ShortWrite {
            target: target.describe(),
            offset,
        }
    } else {
        WriteError::Io {
            op,
            target: target.describe(),
            offset,
            source: e,
        }
    }
}

/// Which chunks to read back: chunk 0, the last chunk and up to `n - 2` more spread by a
/// generator seeded from the image digest (deterministic for one image, different across
/// images). Sorted, without duplicates, at most `max(n, 1)` and at most `count` entries.
pub fn sample_chunks(count: u64, n: u32, seed: &Digest) -> Vec<u64> {
    if count == 0 {
        return Vec::new();
    }
    let n = u64::from(n.max(1)).min(count);
    if n == count {
        return (0..count).collect();
    }
    let mut picked = std::collections::BTreeSet::from([0, count - 1]);
    let mut state = u64::from_le_bytes(seed.0[..8].try_into().unwrap_or([0; 8]));
    // Bounded: each round either adds an index or not, and there are at most 64·n rounds.
    for _ in 0..64 * n {
        if picked.len() as u64 >= n {
            break;
        }
        // splitmix64: a well-mixed sequence from a single word of state.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        picked.insert(z % count);
    }
    picked.into_iter().take(n as usize).collect()
}

/// Writes the whole image through `writer`, opening the data with `open_at` for each attempt
/// (at most `max_attempts`, at least 1) and resuming after resumable errors, then
/// [`finish`](ImageWriter::finish)es. `open_at` receives where to start (the caller turns it
/// into `Range: bytes=<data_offset>-`).
pub fn write_image<R: Read>(
    mut writer: ImageWriter<'_>,
    max_attempts: u32,
    mut open_at: impl FnMut(ResumePoint) -> io::Result<R>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<WriteReport, WriteError> {
    let max_attempts = max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let at = writer.resume_point();
        let result = match open_at(at) {
            Ok(reader) => writer.feed(reader, progress),
            Err(source) => {
                writer.attempts = writer.attempts.saturating_add(1);
                Err(WriteError::SourceOpen {
                    chunk: at.chunk,
                    data_offset: at.data_offset,
                    source,
                })
            }
        };
        match result {
            Ok(()) => break,
            Err(e) if e.is_resumable() && attempt < max_attempts => {}
            Err(e) => return Err(e),
        }
    }
    writer.finish(progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::fault::{Fault, FaultTarget, MemTarget};
    use proptest::prelude::*;
    use snapshot_tool::build::{BuildOptions, build_stream};
    use snapshot_tool::format::{DigestAlgorithm, Geometry};

    const MIB: usize = 1 << 20;

    /// 4.5 MiB: a recognisable "boot sector" area, random-ish data, a zero chunk (index 2),
    /// and a short last chunk.
    fn image() -> Vec<u8> {
        let mut img: Vec<u8> = (0..(4 * MIB + MIB / 2) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        img[..512].fill(0xB0);
        img[2 * MIB..3 * MIB].fill(0);
        img
    }

    fn snapshot(img: &[u8]) -> (Manifest, Vec<u8>) {
        snapshot_with(img, DigestAlgorithm::Sha256)
    }

    fn snapshot_with(img: &[u8], digest: DigestAlgorithm) -> (Manifest, Vec<u8>) {
        let opts = BuildOptions {
            chunk_size: MIB as u32,
            threads: 1,
            digest,
            ..BuildOptions::default()
        };
        let mut data = Vec::new();
        let m = build_stream(img, img.len() as u64, &opts, &mut data, &mut |_| {}).unwrap();
        (m, data)
    }

    fn all_chunks() -> WriteOptions {
        WriteOptions {
            readback_chunks: u32::MAX,
            ..WriteOptions::default()
        }
    }

    fn head_is_zero(mem: &MemTarget) -> bool {
        mem.bytes()[..MIB].iter().all(|&b| b == 0)
    }

    /// Nothing was written: every byte still holds [`MemTarget`]'s initial 0xEE.
    fn untouched(mem: &MemTarget) -> bool {
        mem.bytes().iter().all(|&b| b == 0xEE)
    }

    /// The image's boot sector (512 × 0xB0) is nowhere in the target's first sector. A
    /// failure while zeroing can leave old bytes (0xEE) or a corrupted zero write (0xFF),
    /// but the image's head is written only after success.
    fn no_image_in_head(mem: &MemTarget) -> bool {
        !mem.bytes()[..512].contains(&0xB0)
    }

    fn no_progress() -> impl FnMut(&Progress) {
        |_| {}
    }

    #[test]
    fn writes_the_image_and_clears_the_tail() {
        let img = image();
        let (m, data) = snapshot(&img);
        assert_eq!(m.zero_chunks(), 1);
        let mem = MemTarget::new(8 * MIB);
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        let mut seen = Vec::new();
        w.feed(&data[..], &mut |p: &Progress| seen.push(*p))
            .unwrap();
        assert!(w.is_complete());
        // Before finish, the first MiB is still zero although chunk 0 was streamed.
        assert!(head_is_zero(&mem));
        let report = w.finish(&mut |p: &Progress| seen.push(*p)).unwrap();
        let bytes = mem.bytes();
        assert_eq!(&bytes[..img.len()], &img[..]);
        // Untouched between the image and the last MiB; last MiB zeroed (old backup GPT).
        assert!(bytes[img.len()..7 * MIB].iter().all(|&b| b == 0xEE));
        assert!(bytes[7 * MIB..].iter().all(|&b| b == 0));
        assert_eq!(report.image_digest, m.image_digest());
        assert_eq!(report.image_digest, Digest::sha256(&img));
        // Off by default: the per-chunk digests covered every byte.
        assert_eq!(report.computed_image_digest, None);
        assert_eq!(report.readback, vec![0, 1, 2, 3, 4]);
        assert_eq!(report.bytes_written, img.len() as u64);
        assert_eq!(report.attempts, 1);
        assert_eq!(report.partition_table, PartitionReread::NotABlockDevice);
        // One progress event per chunk, then the two phases, monotonic.
        let writing: Vec<u64> = seen
            .iter()
            .filter(|p| p.phase == Phase::Writing)
            .map(|p| p.chunks_done)
            .collect();
        assert_eq!(writing, vec![1, 2, 3, 4, 5]);
        let last = seen.last().unwrap();
        assert_eq!(last.phase, Phase::Finishing);
        assert_eq!(last.image_bytes_done, img.len() as u64);
        assert_eq!(last.data_offset, m.data_len());
    }

    /// A BLAKE3 snapshot (format version 2) installs the same way, with the same checks:
    /// chunk digests, the optional whole-image digest and the read-back all use BLAKE3.
    #[test]
    fn blake3_snapshots_install_and_refuse_tampering() {
        let img = image();
        let (m, data) = snapshot_with(&img, DigestAlgorithm::Blake3);
        assert_eq!(m.digest_algorithm(), DigestAlgorithm::Blake3);
        let mem = MemTarget::new(8 * MIB);
        let options = WriteOptions {
            image_digest: true,
            ..all_chunks()
        };
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, options).unwrap();
        w.feed(&data[..], &mut no_progress()).unwrap();
        let report = w.finish(&mut no_progress()).unwrap();
        assert_eq!(&mem.bytes()[..img.len()], &img[..]);
        let b3 = DigestAlgorithm::Blake3.digest(&img);
        assert_eq!(report.image_digest, b3);
        assert_eq!(report.computed_image_digest, Some(b3));
        assert_ne!(b3, Digest::sha256(&img));
        assert_eq!(report.readback, vec![0, 1, 2, 3, 4]);

        let mut bad = data.clone();
        bad[m.resume_offset(3).unwrap() as usize + 10] ^= 0x40;
        let mem = MemTarget::new(8 * MIB);
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        let err = w.feed(&bad[..], &mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "chunk_digest_mismatch");
        assert!(head_is_zero(&mem));
        assert!(no_image_in_head(&mem));
    }

    #[test]
    fn a_tampered_chunk_after_writes_is_refused_and_the_head_stays_zero() {
        let img = image();
        let (m, mut data) = snapshot(&img);
        let at = m.resume_offset(3).unwrap() as usize + 10;
        data[at] ^= 0x40;
        let mem = MemTarget::new(8 * MIB);
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        let err = w.feed(&data[..], &mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "chunk_digest_mismatch");
        assert!(!err.is_resumable());
        // Chunks 1 and 2 were written, so both ends were cleared first; the image's head
        // was held back.
        let bytes = mem.bytes();
        assert!(head_is_zero(&mem));
        assert!(no_image_in_head(&mem));
        assert_eq!(&bytes[MIB..3 * MIB], &img[MIB..3 * MIB]);
        assert!(bytes[3 * MIB..7 * MIB].iter().all(|&b| b == 0xEE));
        assert!(bytes[7 * MIB..].iter().all(|&b| b == 0));
        // The writer is spent: neither feed nor finish go on.
        let err = w.feed(&data[..], &mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "writer_failed");
        let err = w.finish(&mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "writer_failed");
        assert!(head_is_zero(&mem));
    }

    #[test]
    fn a_refusal_before_the_first_write_leaves_the_disk_unchanged() {
        let img = image();
        let (m, data) = snapshot(&img);
        // A flipped byte in chunk 0 (the first stored chunk) and in chunk 1 (chunk 0 is
        // exactly the held-back MiB, so nothing was written before chunk 1 either): refused,
        // and not one byte of the target changed.
        for (chunk, what) in [(0, "chunk 0"), (1, "chunk 1")] {
            let mut bad = data.clone();
            bad[m.resume_offset(chunk).unwrap() as usize + 10] ^= 0x40;
            let mem = MemTarget::new(8 * MIB);
            let target = FaultTarget::new(mem.clone(), vec![]);
            let mut w = ImageWriter::with_target(Box::new(target), &m, all_chunks()).unwrap();
            let err = w.feed(&bad[..], &mut no_progress()).unwrap_err();
            match &err {
                WriteError::Data(ChunkError::ChunkDigestMismatch { index, .. }) => {
                    assert_eq!(*index, chunk, "{what}");
                }
                other => panic!("{what}: unexpected {other:?}"),
            }
            assert!(untouched(&mem), "{what}: the disk changed");
            let err = w.finish(&mut no_progress()).unwrap_err();
            assert_eq!(err.code(), "writer_failed", "{what}");
            assert!(untouched(&mem), "{what}: the disk changed");
        }

        // A stream cut inside chunk 1: nothing written, the disk unchanged; the resume
        // clears the ends before its first write and completes the exact image.
        let mem = MemTarget::new(8 * MIB);
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        let cut = m.resume_offset(1).unwrap() as usize + 10;
        let err = w.feed(&data[..cut], &mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "data_truncated");
        assert_eq!(w.resume_point().chunk, 1);
        assert!(untouched(&mem));
        let at = w.resume_point().data_offset as usize;
        w.feed(&data[at..], &mut no_progress()).unwrap();
        assert!(head_is_zero(&mem));
        w.finish(&mut no_progress()).unwrap();
        let bytes = mem.bytes();
        assert_eq!(&bytes[..img.len()], &img[..]);
        assert!(bytes[7 * MIB..].iter().all(|&b| b == 0));
    }

    #[test]
    fn ends_are_cleared_at_finish_when_streaming_wrote_nothing() {
        // Chunk 0 is the only stored chunk and exactly the held-back MiB; chunks 1 and 2 are
        // zero and skipped on a disk that reads zeros there. The old head and backup-GPT
        // area (0xEE) must still be cleared: the tail by finish, the head by the image.
        let mut img = vec![0u8; 3 * MIB];
        for (i, b) in img[..MIB].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        let (m, data) = snapshot(&img);
        assert_eq!(m.zero_chunks(), 2);
        let mem = MemTarget::new(6 * MIB);
        let mut zeroed = FaultTarget::new(mem.clone(), vec![]);
        write_all_at(&mut zeroed, &vec![0; 4 * MIB], MIB as u64).unwrap();
        let skip = WriteOptions {
            zero_policy: ZeroPolicy::SkipKnownZeroed,
            ..all_chunks()
        };
        let mut w = ImageWriter::with_target(Box::new(zeroed), &m, skip).unwrap();
        w.feed(&data[..], &mut no_progress()).unwrap();
        // Nothing written yet: the old head is still there.
        assert!(mem.bytes()[..MIB].iter().all(|&b| b == 0xEE));
        let report = w.finish(&mut no_progress()).unwrap();
        assert_eq!(report.zero_chunks_skipped, 2);
        let bytes = mem.bytes();
        assert_eq!(&bytes[..img.len()], &img[..]);
        assert!(bytes[5 * MIB..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_truncated_stream_resumes_from_the_last_verified_chunk() {
        let img = image();
        let (m, data) = snapshot(&img);
        let mem = MemTarget::new(6 * MIB);
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        let cut = m.resume_offset(3).unwrap() as usize + 100;
        let err = w.feed(&data[..cut], &mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "data_truncated");
        assert!(err.is_resumable());
        assert!(head_is_zero(&mem));
        let at = w.resume_point();
        assert_eq!(at.chunk, 3);
        assert_eq!(at.data_offset, m.resume_offset(3).unwrap());
        assert_eq!(at.attempt, 2);
        w.feed(&data[at.data_offset as usize..], &mut no_progress())
            .unwrap();
        let report = w.finish(&mut no_progress()).unwrap();
        assert_eq!(report.attempts, 2);
        assert_eq!(&mem.bytes()[..img.len()], &img[..]);
    }

    /// A reader that fails with an I/O error after `limit` bytes (a reset connection).
    struct Cut<'a> {
        data: &'a [u8],
        limit: usize,
    }

    impl Read for Cut<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.limit == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            let n = buf.len().min(self.limit).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.limit -= n;
            Ok(n)
        }
    }

    #[test]
    fn write_image_retries_with_range_offsets() {
        let img = image();
        let (m, data) = snapshot(&img);
        let mem = MemTarget::new(5 * MIB);
        let w =
            ImageWriter::with_target(Box::new(mem.clone()), &m, WriteOptions::default()).unwrap();
        let mut asked = Vec::new();
        let report = write_image(
            w,
            5,
            |at: ResumePoint| {
                asked.push((at.attempt, at.chunk, at.data_offset));
                let rest = &data[at.data_offset as usize..];
                match at.attempt {
                    // First connection dies after 1.5 chunks' worth of frames.
                    1 => Ok(Cut {
                        data: rest,
                        limit: m.resume_offset(1).unwrap() as usize + 50,
                    }),
                    2 => Err(io::Error::new(io::ErrorKind::TimedOut, "no route")),
                    _ => Ok(Cut {
                        data: rest,
                        limit: usize::MAX,
                    }),
                }
            },
            &mut no_progress(),
        )
        .unwrap();
        assert_eq!(
            asked,
            vec![
                (1, 0, 0),
                (2, 1, m.resume_offset(1).unwrap()),
                (3, 1, m.resume_offset(1).unwrap()),
            ]
        );
        assert_eq!(report.attempts, 3);
        assert_eq!(&mem.bytes()[..img.len()], &img[..]);
    }

    #[test]
    fn write_image_gives_up_after_the_attempt_budget() {
        let img = image();
        let (m, data) = snapshot(&img);
        let mem = MemTarget::new(5 * MIB);
        let w =
            ImageWriter::with_target(Box::new(mem.clone()), &m, WriteOptions::default()).unwrap();
        let mut calls = 0;
        let err = write_image(
            w,
            3,
            |at: ResumePoint| {
                calls += 1;
                Ok(&data[at.data_offset as usize..(at.data_offset as usize + 10).min(data.len())])
            },
            &mut no_progress(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "data_truncated");
        assert_eq!(calls, 3);
        // No attempt got as far as a whole chunk: nothing was written.
        assert!(untouched(&mem));
    }

    #[test]
    fn too_small_and_wrong_sector_size_touch_nothing() {
        let img = image();
        let (m, _) = snapshot(&img);
        let mem = MemTarget::new(img.len() - 512);
        let err = ImageWriter::with_target(Box::new(mem.clone()), &m, WriteOptions::default())
            .unwrap_err();
        assert_eq!(err.code(), "device_too_small");
        assert!(mem.bytes().iter().all(|&b| b == 0xEE));

        let mem = MemTarget::with_block_size(8 * MIB, 4096);
        let err = ImageWriter::with_target(Box::new(mem.clone()), &m, WriteOptions::default())
            .unwrap_err();
        assert_eq!(err.code(), "sector_size_mismatch");
        assert!(mem.bytes().iter().all(|&b| b == 0xEE));

        // Exactly the image size fits; the block size matches: partition table re-read.
        let mem = MemTarget::with_block_size(img.len(), 512);
        let (m, data) = snapshot(&img);
        let w =
            ImageWriter::with_target(Box::new(mem.clone()), &m, WriteOptions::default()).unwrap();
        let report = write_image(w, 1, |_| Ok(&data[..]), &mut no_progress()).unwrap();
        assert_eq!(report.partition_table, PartitionReread::Done);
        assert_eq!(mem.bytes(), img);
    }

    /// With [`WriteOptions::image_digest`] on, a manifest whose whole-image digest does not
    /// match its chunks is refused before the head goes out; off, the chunks alone decide.
    #[test]
    fn a_wrong_image_digest_keeps_the_head_zero() {
        let img = image();
        let (good, data) = snapshot(&img);
        let geometry = Geometry::new(
            good.image_size(),
            good.geometry().sector_size(),
            good.geometry().chunk_size(),
        )
        .unwrap();
        let m = Manifest::from_parts(
            geometry,
            good.digest_algorithm(),
            good.chunks().to_vec(),
            Digest([7; 32]),
        )
        .unwrap();
        let digest = WriteOptions {
            image_digest: true,
            ..all_chunks()
        };
        let mem = MemTarget::new(8 * MIB);
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, digest).unwrap();
        w.feed(&data[..], &mut no_progress()).unwrap();
        let err = w.finish(&mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "image_digest_mismatch");
        assert!(head_is_zero(&mem));
        // Every other chunk was written: only the head is withheld.
        assert_eq!(&mem.bytes()[MIB..img.len()], &img[MIB..]);

        // The genuine manifest with the digest on: computed, and equal.
        let mem = MemTarget::new(8 * MIB);
        let w = ImageWriter::with_target(Box::new(mem.clone()), &good, digest).unwrap();
        let report = write_image(w, 1, |_| Ok(&data[..]), &mut no_progress()).unwrap();
        assert_eq!(report.computed_image_digest, Some(Digest::sha256(&img)));
        assert_eq!(&mem.bytes()[..img.len()], &img[..]);

        // Off, the per-chunk digests decide: every chunk verified, so the image is written
        // and the report says the whole-image digest was not computed.
        let mem = MemTarget::new(8 * MIB);
        let w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        let report = write_image(w, 1, |_| Ok(&data[..]), &mut no_progress()).unwrap();
        assert_eq!(report.computed_image_digest, None);
        assert_eq!(&mem.bytes()[..img.len()], &img[..]);
    }

    /// 40 one-MiB chunks: distinct pseudo-random data, every seventh chunk all zero.
    fn many_chunks() -> Vec<u8> {
        let mut img: Vec<u8> = (0..(40 * MIB) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 ^ (i >> 20) as u8)
            .collect();
        for c in (3..40).step_by(7) {
            img[c * MIB..(c + 1) * MIB].fill(0);
        }
        img
    }

    #[test]
    fn the_parallel_pipeline_keeps_chunk_order_semantics() {
        let img = many_chunks();
        let (m, data) = snapshot(&img);
        assert_eq!(m.chunks().len(), 40);

        // Clean: exact image, progress once per chunk, in order.
        let mem = MemTarget::new(48 * MIB);
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        let mut done = Vec::new();
        w.feed(&data[..], &mut |p: &Progress| done.push(p.chunks_done))
            .unwrap();
        assert_eq!(done, (1..=40).collect::<Vec<u64>>());
        w.finish(&mut no_progress()).unwrap();
        assert_eq!(&mem.bytes()[..img.len()], &img[..]);

        // A flipped byte in chunk 16's frame: every chunk before it is written, none after,
        // and the error names chunk 16 even though later chunks were decoded meanwhile.
        let mut bad = data.clone();
        let e16 = *m.chunk(16).unwrap();
        assert!(!e16.is_zero());
        bad[(e16.data_offset + 100) as usize] ^= 1;
        let mem = MemTarget::new(48 * MIB);
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        let err = w.feed(&bad[..], &mut no_progress()).unwrap_err();
        match &err {
            WriteError::Data(ChunkError::ChunkDigestMismatch { index, .. }) => {
                assert_eq!(*index, 16);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!err.is_resumable());
        assert_eq!(w.resume_point().chunk, 16);
        let bytes = mem.bytes();
        assert!(head_is_zero(&mem));
        assert_eq!(&bytes[MIB..16 * MIB], &img[MIB..16 * MIB]);
        assert!(bytes[16 * MIB..40 * MIB].iter().all(|&b| b == 0xEE));
        assert_eq!(
            w.feed(&data[..], &mut no_progress()).unwrap_err().code(),
            "writer_failed"
        );

        // Cut in the middle of chunk 29's frame: exactly chunks 0..29 are done, and a
        // second attempt from the resume offset completes the exact image.
        // The whole-image digest on, so it is carried across the resume.
        let cut = m.resume_offset(29).unwrap() as usize + 10;
        let mem = MemTarget::new(48 * MIB);
        let digest = WriteOptions {
            image_digest: true,
            ..all_chunks()
        };
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, digest).unwrap();
        let err = w.feed(&data[..cut], &mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "data_truncated");
        let at = w.resume_point();
        assert_eq!((at.chunk, at.attempt), (29, 2));
        assert_eq!(&mem.bytes()[MIB..29 * MIB], &img[MIB..29 * MIB]);
        w.feed(&data[at.data_offset as usize..], &mut no_progress())
            .unwrap();
        let report = w.finish(&mut no_progress()).unwrap();
        assert_eq!(report.image_digest, Digest::sha256(&img));
        assert_eq!(report.computed_image_digest, Some(Digest::sha256(&img)));
        assert_eq!(&mem.bytes()[..img.len()], &img[..]);
    }

    /// A reader that hands out at most 16 KiB per call, pausing 2 ms each time (a slow link),
    /// and counts what it handed out.
    struct Slow<'a> {
        data: &'a [u8],
        given: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Read for Slow<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_millis(2));
            let n = buf.len().min(16 << 10).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.given.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            Ok(n)
        }
    }

    #[test]
    fn progress_is_reported_while_a_later_frame_is_still_being_read() {
        let img = many_chunks();
        let (m, data) = snapshot(&img);
        let given = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mem = MemTarget::new(48 * MIB);
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        let mut first: Option<usize> = None;
        let reader = Slow {
            data: &data[..],
            given: given.clone(),
        };
        w.feed(reader, &mut |p: &Progress| {
            if p.chunks_done == 1 {
                first = Some(given.load(std::sync::atomic::Ordering::SeqCst));
            }
        })
        .unwrap();
        // Chunk 0 landed while the reader was still in the frames after it, not once the
        // in-flight window was full: within two frames of chunk 0's end.
        let read_when_reported = first.unwrap();
        let limit = m.resume_offset(3).unwrap() as usize;
        assert!(
            read_when_reported < limit,
            "chunk 0 reported after {read_when_reported} bytes were read (limit {limit})"
        );
    }

    #[test]
    fn a_write_failure_mid_stream_stops_at_that_chunk() {
        let img = many_chunks();
        let (m, data) = snapshot(&img);
        // Calls: zero head, zero tail, then one write per chunk from chunk 1 (chunk 0 is
        // exactly the held-back MiB): the write of chunk 12 fails.
        let mut faults = vec![Fault::Pass; 2 + 11];
        faults.push(Fault::Eio);
        let mem = MemTarget::new(48 * MIB);
        let target = FaultTarget::new(mem.clone(), faults);
        let mut w = ImageWriter::with_target(Box::new(target), &m, all_chunks()).unwrap();
        let err = w.feed(&data[..], &mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "io_error");
        assert_eq!(w.resume_point().chunk, 12);
        let bytes = mem.bytes();
        assert_eq!(&bytes[MIB..12 * MIB], &img[MIB..12 * MIB]);
        assert!(bytes[12 * MIB..40 * MIB].iter().all(|&b| b == 0xEE));
    }

    /// With two writes in flight (the lanes take chunks in turn), a failed write still stops
    /// the install at that chunk, whichever lane wrote it: every chunk before it is on the
    /// disk, the resume point is that chunk, and the head is still held back.
    #[test]
    fn a_write_failure_on_either_lane_stops_at_that_chunk() {
        let img = many_chunks();
        let (m, data) = snapshot(&img);
        for bad in 1..=12u64 {
            let mem = MemTarget::failing_at(48 * MIB, bad * MIB as u64 + 4096);
            let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
            let mut reported = Vec::new();
            let err = w
                .feed(&data[..], &mut |p: &Progress| reported.push(p.chunks_done))
                .unwrap_err();
            assert_eq!(err.code(), "io_error", "chunk {bad}");
            assert_eq!(w.resume_point().chunk, bad, "chunk {bad}");
            assert!(reported.windows(2).all(|p| p[0] < p[1]), "{reported:?}");
            assert!(reported.iter().all(|&n| n <= bad), "{reported:?}");
            let end = bad as usize * MIB;
            let bytes = mem.bytes();
            assert!(bytes[MIB..end] == img[MIB..end], "chunk {bad}");
            assert!(no_image_in_head(&mem), "chunk {bad}");
        }
    }

    #[test]
    fn trailing_data_and_early_finish_are_refused() {
        let img = image();
        let (m, mut data) = snapshot(&img);
        let mem = MemTarget::new(8 * MIB);
        let w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        assert_eq!(
            w.finish(&mut no_progress()).unwrap_err().code(),
            "incomplete"
        );
        data.push(0);
        let mut w = ImageWriter::with_target(Box::new(mem.clone()), &m, all_chunks()).unwrap();
        let err = w.feed(&data[..], &mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "data_length_mismatch");
        assert!(!err.is_resumable());
        assert!(head_is_zero(&mem));
    }

    #[test]
    fn skipping_zero_chunks_needs_a_zeroed_disk() {
        let img = image();
        let (m, data) = snapshot(&img);
        let skip = WriteOptions {
            zero_policy: ZeroPolicy::SkipKnownZeroed,
            readback_chunks: u32::MAX,
            image_digest: false,
        };
        // Old contents (0xEE) where the zero chunk goes: the read-back catches the false claim.
        let mem = MemTarget::new(8 * MIB);
        let w = ImageWriter::with_target(Box::new(mem.clone()), &m, skip).unwrap();
        let err = write_image(w, 1, |_| Ok(&data[..]), &mut no_progress()).unwrap_err();
        assert_eq!(err.code(), "readback_mismatch");
        assert!(head_is_zero(&mem));

        // A really zeroed disk: the chunk is skipped and the result is exact.
        let mem = MemTarget::new(8 * MIB);
        let mut zeroed = FaultTarget::new(mem.clone(), vec![]);
        write_all_at(&mut zeroed, &vec![0; 8 * MIB], 0).unwrap();
        let w = ImageWriter::with_target(Box::new(zeroed), &m, skip).unwrap();
        let report = write_image(w, 1, |_| Ok(&data[..]), &mut no_progress()).unwrap();
        assert_eq!(report.zero_chunks_skipped, 1);
        assert_eq!(report.bytes_written, (img.len() - MIB) as u64);
        assert_eq!(&mem.bytes()[..img.len()], &img[..]);
    }

    #[test]
    fn fault_table() {
        let img = image();
        let (m, data) = snapshot(&img);
        // Calls: 1 = zero head, 2 = zero tail, 3.. = chunk 1..4 writes (chunk 0's rest
        // first), then reads.
        let cases: Vec<(&str, Vec<Fault>, Result<(), &str>)> = vec![
            ("clean", vec![], Ok(())),
            (
                "short writes and interrupts",
                vec![
                    Fault::Short(4096),
                    Fault::Interrupted,
                    Fault::Pass,
                    Fault::Short(1),
                    Fault::WouldBlock,
                    Fault::Short(513),
                ],
                Ok(()),
            ),
            ("EIO zeroing the head", vec![Fault::Eio], Err("io_error")),
            (
                "EIO mid-image",
                vec![
                    Fault::Pass,
                    Fault::Pass,
                    Fault::Pass,
                    Fault::Pass,
                    Fault::Eio,
                ],
                Err("io_error"),
            ),
            (
                "target stops accepting",
                vec![Fault::Pass, Fault::Pass, Fault::Pass, Fault::Zero],
                Err("short_write"),
            ),
            (
                "EINVAL is an I/O error on a target that cannot fall back",
                vec![Fault::Pass, Fault::Pass, Fault::Einval],
                Err("io_error"),
            ),
            (
                "silent corruption is caught by the read-back",
                vec![Fault::Pass, Fault::Pass, Fault::Pass, Fault::Corrupt],
                Err("readback_mismatch"),
            ),
        ];
        for (what, faults, want) in cases {
            let mem = MemTarget::new(6 * MIB);
            let target = FaultTarget::new(mem.clone(), faults);
            let got = ImageWriter::with_target(Box::new(target), &m, all_chunks())
                .and_then(|w| write_image(w, 1, |_| Ok(&data[..]), &mut no_progress()));
            match (got, want) {
                (Ok(_), Ok(())) => assert_eq!(&mem.bytes()[..img.len()], &img[..], "{what}"),
                (Err(e), Err(code)) => {
                    assert_eq!(e.code(), code, "{what}: {e}");
                    assert!(no_image_in_head(&mem), "{what}");
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_failure_after_the_head_was_written_zeroes_it_again() {
        let img = image();
        let (m, data) = snapshot(&img);
        // Corrupt each I/O call in turn; the one that corrupts the head write must be caught
        // by the read-back of chunk 0 and leave the head zeroed again.
        let mut head_corruptions = 0;
        for k in 0..20 {
            let mut faults = vec![Fault::Pass; k];
            faults.push(Fault::Corrupt);
            let mem = MemTarget::new(6 * MIB);
            let target = FaultTarget::new(mem.clone(), faults);
            let w = ImageWriter::with_target(Box::new(target), &m, all_chunks()).unwrap();
            match write_image(w, 1, |_| Ok(&data[..]), &mut no_progress()) {
                Ok(_) => assert_eq!(&mem.bytes()[..img.len()], &img[..], "call {k}"),
                Err(WriteError::ReadbackMismatch { index: 0, .. }) => {
                    head_corruptions += 1;
                    assert!(head_is_zero(&mem), "call {k}");
                }
                Err(e) => {
                    assert_eq!(e.code(), "readback_mismatch", "call {k}");
                    assert!(head_is_zero(&mem), "call {k}");
                }
            }
        }
        assert_eq!(head_corruptions, 1);
    }

    #[test]
    fn tiny_images_hold_back_only_themselves() {
        let img: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8 + 1).collect();
        let (m, data) = snapshot(&img);
        let mem = MemTarget::new(4 * MIB);
        let w =
            ImageWriter::with_target(Box::new(mem.clone()), &m, WriteOptions::default()).unwrap();
        let report = write_image(w, 1, |_| Ok(&data[..]), &mut no_progress()).unwrap();
        assert_eq!(report.readback, vec![0]);
        let bytes = mem.bytes();
        assert_eq!(&bytes[..8192], &img[..]);
        assert!(bytes[8192..MIB].iter().all(|&b| b == 0));
        assert!(bytes[MIB..3 * MIB].iter().all(|&b| b == 0xEE));
    }

    #[test]
    fn samples_are_bounded_sorted_and_include_the_ends() {
        let seed = Digest([3; 32]);
        assert!(sample_chunks(0, 16, &seed).is_empty());
        assert_eq!(sample_chunks(1, 16, &seed), vec![0]);
        assert_eq!(sample_chunks(5, 16, &seed), vec![0, 1, 2, 3, 4]);
        assert_eq!(sample_chunks(5, 0, &seed), vec![0]);
        assert_eq!(sample_chunks(1000, 2, &seed), vec![0, 999]);
        let s = sample_chunks(1000, 16, &seed);
        assert_eq!(s.len(), 16);
        assert_eq!(s.first(), Some(&0));
        assert_eq!(s.last(), Some(&999));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        // Deterministic per image, different across images.
        assert_eq!(s, sample_chunks(1000, 16, &seed));
        assert_ne!(s, sample_chunks(1000, 16, &Digest([4; 32])));
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            6 => Just(Fault::Pass),
            3 => (1usize..8192).prop_map(Fault::Short),
            2 => Just(Fault::Interrupted),
            1 => Just(Fault::WouldBlock),
            1 => Just(Fault::Eio),
            1 => Just(Fault::Zero),
            1 => Just(Fault::Corrupt),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Whatever the target does, the result is either the exact image or a clean failure
        /// with no boot sector on the disk; only benign faults always succeed.
        #[test]
        fn faults_give_the_image_or_a_clean_failure(
            faults in proptest::collection::vec(fault(), 0..40),
        ) {
            let img = image();
            let (m, data) = snapshot(&img);
            let benign = faults.iter().all(|f| matches!(
                f,
                Fault::Pass | Fault::Short(_) | Fault::Interrupted | Fault::WouldBlock
            ));
            let mem = MemTarget::new(6 * MIB);
            let target = FaultTarget::new(mem.clone(), faults);
            let got = ImageWriter::with_target(Box::new(target), &m, all_chunks())
                .and_then(|w| write_image(w, 1, |_| Ok(&data[..]), &mut |_| {}));
            let bytes = mem.bytes();
            match got {
                Ok(report) => {
                    prop_assert_eq!(&bytes[..img.len()], &img[..]);
                    prop_assert_eq!(report.image_digest, Digest::sha256(&img));
                }
                Err(e) => {
                    prop_assert!(!benign, "benign faults failed: {}", e);
                    // The head is released only over a complete, verified body; if a later
                    // step fails and the device also fails the re-zeroing, what remains is
                    // the whole image, never a half one.
                    prop_assert!(
                        no_image_in_head(&mem) || bytes[MIB..img.len()] == img[MIB..],
                        "half image after {}", e
                    );
                }
            }
        }
    }
}
