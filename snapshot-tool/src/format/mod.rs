//! The rackhand OS snapshot format, versions 1 and 2. Pure: byte slices and `Read` only, no paths, no
//! clock, no threads. Shared with the `installer` crate, which streams snapshots onto disks.
//!
//! # What a snapshot is
//!
//! A raw disk image cut into fixed-size chunks. Every chunk that is not entirely zero is
//! compressed on its own into one zstd frame; the frames are concatenated into `data.zst`.
//! All-zero chunks are marked in the manifest and not stored. Because every frame is
//! independent, decompression can run on several cores, and an interrupted download resumes at
//! the start of any chunk with an HTTP `Range: bytes=<data_offset>-` request.
//!
//! A snapshot named `NAME` is a directory (served by the appliance from
//! `ASSETS/snapshots/NAME/`):
//!
//! ```text
//! NAME/
//!   manifest.bin   the manifest below (little-endian, fixed layout, canonical bytes)
//!   manifest.sig   one text line: Ed25519 signature over manifest.bin (see `keys`)
//!   data.zst       the stored chunks' zstd frames, back to back, in chunk order
//! ```
//!
//! # `manifest.bin` layout (all integers little-endian)
//!
//! ```text
//!  offset  size  field
//!  ------  ----  ------------------------------------------------------------------------
//!       0     8  magic  89 'R' 'H' 'S' 'N' 'A' 'P' 0A   (0x89 catches 7-bit transfers,
//!                                                        0A catches newline conversion)
//!       8     4  format_version        1 (SHA-256) or 2 (BLAKE3); see "Digest algorithms"
//!      12     4  header_len            = 88 (checked, so a reader never guesses)
//!      16     8  image_size            bytes; > 0, multiple of sector_size, <= 64 TiB
//!      24     4  sector_size           logical sector: 512, 1024, 2048 or 4096
//!      28     4  chunk_size            1..=64 MiB, multiple of 4096
//!      32     8  chunk_count           = ceil(image_size / chunk_size), <= 2^20
//!      40     8  data_len              exact length of data.zst
//!      48     4  entry_len             = 96
//!      52     4  digest_algorithm      0 = SHA-256 (version 1), 1 = BLAKE3 (version 2)
//!      56    32  image_digest          digest of the whole raw image
//!  +-----------------------------------------------------------------------------------+
//!  |   88    96 × chunk_count   chunk table, entry i at 88 + 96·i:                     |
//!  |        +0     8  image_offset       = i · chunk_size                              |
//!  |        +8     8  data_offset        where the frame starts in data.zst           |
//!  |       +16     4  compressed_len     frame length; 0 for a zero chunk              |
//!  |       +20     4  raw_len            = min(chunk_size, image_size − image_offset)  |
//!  |       +24     4  flags              bit 0 = ZERO (not stored); other bits 0       |
//!  |       +28     4  reserved           = 0                                           |
//!  |       +32    32  raw_digest         digest of the raw chunk; zeros if ZERO        |
//!  |       +64    32  compressed_digest  digest of the frame; zeros if ZERO            |
//!  +-----------------------------------------------------------------------------------+
//!  end−32    32  manifest_sha256       SHA-256 of every byte before it
//! ```
//!
//! Stored chunks are contiguous: chunk i's frame starts where the previous stored chunk's frame
//! ended (a zero chunk's `data_offset` is that same running offset, length 0), the first starts
//! at 0, and the last ends exactly at `data_len`. So there are no gaps, no overlaps and no
//! bytes in `data.zst` that the manifest does not account for.
//!
//! # Digest algorithms
//!
//! Every chunk digest and the image digest of one snapshot use one algorithm, named in the
//! header ([`DigestAlgorithm`]); the trailing `manifest_sha256` is always SHA-256.
//!
//! - **SHA-256** (id 0) is the default and the only algorithm of format version 1, whose header
//!   had a reserved zero where the id now sits: default snapshots are version 1, readable by
//!   every reader ever shipped, and usable where policy demands a FIPS 180-4 hash.
//! - **BLAKE3** (id 1, 256-bit output) needs format version 2. It exists for speed: with
//!   SHA-NI, SHA-256 runs at ~1.4 GB/s per core and BLAKE3 at ~4.9 GB/s (AVX-512), so a
//!   machine with few cores that verifies every frame and every raw chunk is CPU-bound below
//!   its disk's bandwidth with SHA-256 and not with BLAKE3 (`cargo xtask bench install`).
//!
//! The version follows from the algorithm (1 ⇔ SHA-256, 2 ⇔ BLAKE3) and the parser rejects
//! any other pairing, so a manifest still has exactly one encoding. Any other layout change
//! bumps the version again.
//!
//! # Trust order
//!
//! 1. Read `manifest.sig` (≤ 1 KiB) and `manifest.bin` (≤ [`MAX_MANIFEST_LEN`]).
//! 2. [`verify_signature`] over the manifest's exact bytes, before parsing them.
//! 3. [`Manifest::parse`]: magic, version, lengths, caps, the trailing checksum, then every
//!    chunk entry against the geometry. Nothing is allocated from a count before it is checked.
//! 4. Per chunk, [`ChunkVerifier`]: length and digest of the compressed frame (so zstd only
//!    ever sees signed bytes), decompression into a buffer of exactly `raw_len`, digest of the
//!    raw bytes. [`ImageVerifier`] checks the whole-image digest at the end.
//!
//! The per-frame digest is one more field than strictly needed (the raw digest alone detects
//! corruption), but it keeps attacker-controlled bytes away from the C decompressor and lets a
//! downloader reject a bad range before decompressing it.
//!
//! # Why 4 MiB chunks by default
//!
//! zstd at level 3 uses a 2 MiB window on large inputs, so a chunk of twice that loses little
//! ratio against one continuous stream (only matches across a chunk boundary are lost). A 4 MiB
//! chunk is small enough that a decompression worker holds ~8 MiB (frame + raw buffer), that a
//! failed transfer re-fetches at most 4 MiB, and that a 2 GiB image gives 512 chunks to spread
//! over cores; and large enough that the table costs 96 bytes per 4 MiB (0.002 %). With the
//! chunk-count cap of 2^20 it reaches 4 TiB images; larger images need larger chunks.

mod chunk;
mod error;
mod keys;
mod manifest;

pub use chunk::{ChunkStream, ChunkVerifier, DigestKind, ImageVerifier, VerifiedChunk};
pub use error::{ChunkError, FormatError, SignatureError};
pub use keys::{
    KeyId, PublicKey, SecretKey, SignatureFile, sign_manifest, verify_signature,
    verify_signature_any,
};
pub use manifest::{
    ChunkEntry, ChunkKind, Digest, DigestAlgorithm, Geometry, Hasher, Manifest,
    expected_chunk_count,
};

use std::io::Read;

/// The 8 magic bytes that open `manifest.bin`.
pub const MAGIC: [u8; 8] = *b"\x89RHSNAP\n";
/// The newest format version this code reads and writes (it reads every version from 1 on;
/// see "Digest algorithms" for which one a manifest gets). Bump on any layout change.
pub const FORMAT_VERSION: u32 = 2;
/// Length of the fixed header, up to and including `image_digest`.
pub const HEADER_LEN: usize = 88;
/// Length of one chunk-table entry.
pub const ENTRY_LEN: usize = 96;
/// Length of the trailing manifest checksum.
pub const TRAILER_LEN: usize = 32;
/// Smallest chunk size accepted: below this the table overhead and per-frame cost dominate.
pub const MIN_CHUNK_SIZE: u32 = 1 << 20;
/// Largest chunk size accepted: bounds the memory a reader needs per chunk.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Default chunk size (see the module docs for the reasoning).
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// Chunk sizes must be a multiple of this, so every chunk boundary is sector-aligned for any
/// supported sector size (a resumed write never starts mid-sector).
pub const CHUNK_ALIGN: u32 = 4096;
/// Largest image accepted.
pub const MAX_IMAGE_SIZE: u64 = 64 << 40;
/// Largest chunk count accepted: bounds the manifest at ~96 MiB.
pub const MAX_CHUNK_COUNT: u64 = 1 << 20;
/// Largest `manifest.bin` accepted (header + a full table + trailer).
pub const MAX_MANIFEST_LEN: usize =
    HEADER_LEN + ENTRY_LEN * (MAX_CHUNK_COUNT as usize) + TRAILER_LEN;
/// Largest `manifest.sig` (and key file) accepted.
pub const MAX_SIGNATURE_FILE_LEN: usize = 1024;
/// Default logical sector size.
pub const DEFAULT_SECTOR_SIZE: u32 = 512;

/// File name of the manifest inside a snapshot directory.
pub const MANIFEST_FILE: &str = "manifest.bin";
/// File name of the manifest signature inside a snapshot directory.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// File name of the concatenated zstd frames inside a snapshot directory.
pub const DATA_FILE: &str = "data.zst";

/// Reads at most `cap` bytes from `reader`; more than that is an error, not a truncation.
///
/// Used for `manifest.bin` and `manifest.sig`, which are read whole before being verified, so
/// a hostile server cannot make the reader buffer an unbounded body.
pub fn read_capped<R: Read>(reader: R, cap: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(limit).read_to_end(&mut buf)?;
    if buf.len() > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {cap} bytes"),
        ));
    }
    Ok(buf)
}
