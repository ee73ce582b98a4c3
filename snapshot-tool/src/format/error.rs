//! Errors of the pure format layer. Every variant has a stable reason code ([`FormatError::code`]
//! and friends) that callers log, report to the appliance and match on in tests; the Display
//! text is for humans and may change.

use super::manifest::Digest;

/// A `manifest.bin` that cannot be trusted. Produced by [`super::Manifest::parse`] and by
/// [`super::Manifest::from_parts`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than the fixed header (or than the magic) needs.
    #[error("manifest is {len} bytes, at least {needed} needed")]
    ManifestTruncated {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// More bytes than any valid manifest can have.
    #[error("manifest is {len} bytes, at most {max} allowed")]
    ManifestTooLarge {
        /// Bytes present.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The first 8 bytes are not the snapshot magic.
    #[error("not a rackhand snapshot manifest (magic {found:02x?})")]
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// A format version this code does not read.
    #[error("manifest format version {found}, this tool reads versions 1 to {newest}")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Newest version supported.
        newest: u32,
    },
    /// The header names a digest algorithm this code does not know.
    #[error("manifest names digest algorithm {id}, this tool knows 0 (sha256) and 1 (blake3)")]
    UnknownDigest {
        /// Algorithm id in the file.
        id: u32,
    },
    /// The digest algorithm is not the one the format version carries (version 1 is
    /// SHA-256 only; version 2 exists for the other algorithms), so the bytes are not the
    /// manifest's one canonical encoding.
    #[error("format version {version} does not carry digest algorithm {algorithm}")]
    DigestVersionMismatch {
        /// Version in the file.
        version: u32,
        /// Algorithm named in the file.
        algorithm: super::DigestAlgorithm,
    },
    /// A digest algorithm name (e.g. `--digest`) that is not `sha256` or `blake3`.
    #[error("unknown digest algorithm {name:?}: expected sha256 or blake3")]
    UnknownDigestName {
        /// The name given.
        name: String,
    },
    /// `header_len` is not the one of this version.
    #[error("header length {found}, expected {expected}")]
    BadHeaderLength {
        /// Value in the file.
        found: u32,
        /// Value expected.
        expected: u32,
    },
    /// `entry_len` is not the one of this version.
    #[error("chunk entry length {found}, expected {expected}")]
    BadEntryLength {
        /// Value in the file.
        found: u32,
        /// Value expected.
        expected: u32,
    },
    /// A reserved field or flag bit is not zero.
    #[error("reserved field {field} is not zero")]
    ReservedNonZero {
        /// Which field.
        field: &'static str,
    },
    /// Sector size not one of 512, 1024, 2048, 4096.
    #[error("sector size {found} is not 512, 1024, 2048 or 4096")]
    BadSectorSize {
        /// Value in the file.
        found: u32,
    },
    /// Chunk size outside 1..=64 MiB or not a multiple of 4096.
    #[error("chunk size {found} is not a multiple of 4096 between 1 MiB and 64 MiB")]
    BadChunkSize {
        /// Value in the file.
        found: u32,
    },
    /// Image size zero or not a whole number of sectors.
    #[error("image size {size} is zero or not a multiple of the sector size {sector_size}")]
    BadImageSize {
        /// Image size.
        size: u64,
        /// Sector size.
        sector_size: u32,
    },
    /// Image larger than the format allows.
    #[error("image size {size} exceeds the maximum {max}")]
    ImageTooLarge {
        /// Image size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// More chunks than the format allows.
    #[error("{count} chunks exceed the maximum {max} (use a larger chunk size)")]
    TooManyChunks {
        /// Chunk count (declared or implied).
        count: u64,
        /// The cap.
        max: u64,
    },
    /// Declared chunk count differs from ceil(image_size / chunk_size).
    #[error("manifest declares {count} chunks, image and chunk size imply {expected}")]
    ChunkCountMismatch {
        /// Declared.
        count: u64,
        /// Implied.
        expected: u64,
    },
    /// The manifest's length differs from what its chunk count implies.
    #[error("manifest is {len} bytes, its chunk count implies {expected}")]
    SizeMismatch {
        /// Bytes present.
        len: usize,
        /// Bytes implied.
        expected: usize,
    },
    /// The trailing SHA-256 does not match the bytes before it.
    #[error("manifest checksum mismatch (corrupted manifest)")]
    ChecksumMismatch,
    /// A chunk entry contradicts the geometry (offset, raw length, zero-chunk fields).
    #[error("chunk {index}: {what}")]
    ChunkTableInconsistent {
        /// Chunk index.
        index: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A chunk's frame starts before the previous one ended.
    #[error(
        "chunk {index}: data offset {data_offset} overlaps the previous chunk (ends at {expected})"
    )]
    ChunkOverlap {
        /// Chunk index.
        index: u64,
        /// Offset declared.
        data_offset: u64,
        /// Where the previous frame ended.
        expected: u64,
    },
    /// A chunk's frame starts after the previous one ended.
    #[error("chunk {index}: data offset {data_offset} leaves a gap after {expected}")]
    ChunkGap {
        /// Chunk index.
        index: u64,
        /// Offset declared.
        data_offset: u64,
        /// Where the previous frame ended.
        expected: u64,
    },
    /// A chunk's frame ends past the end of the data file.
    #[error("chunk {index}: frame ends at {end}, past the data file's {data_len} bytes")]
    ChunkOutOfBounds {
        /// Chunk index.
        index: u64,
        /// End offset of the frame.
        end: u64,
        /// Declared data file length.
        data_len: u64,
    },
    /// A stored chunk with an empty or implausibly large frame.
    #[error("chunk {index}: compressed length {len} outside 1..={max}")]
    BadCompressedLength {
        /// Chunk index.
        index: u64,
        /// Declared length.
        len: u32,
        /// Largest frame zstd can produce for this raw length.
        max: u32,
    },
    /// The frames do not add up to the declared data file length.
    #[error("chunk frames end at {used}, data file is declared as {data_len} bytes")]
    DataLengthMismatch {
        /// Declared data length.
        data_len: u64,
        /// End of the last frame.
        used: u64,
    },
}

impl FormatError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ManifestTruncated { .. } => "manifest_truncated",
            Self::ManifestTooLarge { .. } => "manifest_too_large",
            Self::BadMagic { .. } => "bad_magic",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::UnknownDigest { .. } => "unknown_digest",
            Self::DigestVersionMismatch { .. } => "digest_version_mismatch",
            Self::UnknownDigestName { .. } => "unknown_digest_name",
            Self::BadHeaderLength { .. } => "bad_header_length",
            Self::BadEntryLength { .. } => "bad_entry_length",
            Self::ReservedNonZero { .. } => "reserved_nonzero",
            Self::BadSectorSize { .. } => "bad_sector_size",
            Self::BadChunkSize { .. } => "bad_chunk_size",
            Self::BadImageSize { .. } => "bad_image_size",
            Self::ImageTooLarge { .. } => "image_too_large",
            Self::TooManyChunks { .. } => "too_many_chunks",
            Self::ChunkCountMismatch { .. } => "chunk_count_mismatch",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::ChunkTableInconsistent { .. } => "chunk_table_inconsistent",
            Self::ChunkOverlap { .. } => "chunk_overlap",
            Self::ChunkGap { .. } => "chunk_gap",
            Self::ChunkOutOfBounds { .. } => "chunk_out_of_bounds",
            Self::BadCompressedLength { .. } => "bad_compressed_length",
            Self::DataLengthMismatch { .. } => "data_length_mismatch",
        }
    }
}

/// A signature, key or signature file that cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// `manifest.sig` is malformed.
    #[error("malformed signature file: {what}")]
    BadSignatureFile {
        /// What is wrong.
        what: &'static str,
    },
    /// There is no signature at all.
    #[error("the snapshot is not signed")]
    Unsigned,
    /// A public or secret key file is malformed.
    #[error("malformed key file: {what}")]
    BadKeyFile {
        /// What is wrong.
        what: &'static str,
    },
    /// The signature does not verify: wrong key, tampered manifest or forged signature.
    #[error("signature does not verify: {what} (signed by key {signed_by})")]
    BadSignature {
        /// Why.
        what: &'static str,
        /// Key id named in the signature file.
        signed_by: String,
    },
}

impl SignatureError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::BadSignatureFile { .. } => "bad_signature_file",
            Self::BadKeyFile { .. } => "bad_key_file",
            Self::BadSignature { .. } => "bad_signature",
        }
    }
}

/// A chunk of `data.zst` (or the reassembled image) that does not match the manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The frame or the decompressed bytes hash to something else than the manifest says.
    #[error("chunk {index}: {which} digest is {actual}, manifest says {expected}")]
    ChunkDigestMismatch {
        /// Chunk index.
        index: u64,
        /// Which digest.
        which: super::DigestKind,
        /// From the manifest.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// The caller handed over a frame of the wrong length.
    #[error("chunk {index}: got {actual} compressed bytes, manifest says {expected}")]
    ChunkLengthMismatch {
        /// Chunk index.
        index: u64,
        /// From the manifest.
        expected: u64,
        /// Given.
        actual: u64,
    },
    /// The frame decompressed to a different length than the manifest says.
    #[error("chunk {index}: decompressed to {actual} bytes, manifest says {expected}")]
    RawLengthMismatch {
        /// Chunk index.
        index: u64,
        /// From the manifest.
        expected: u64,
        /// Produced.
        actual: u64,
    },
    /// The caller's output buffer is not exactly the chunk's raw length (a caller bug, not bad
    /// data).
    #[error("chunk {index}: output buffer is {actual} bytes, the chunk is {expected}")]
    BufferLength {
        /// Chunk index.
        index: u64,
        /// The chunk's raw length.
        expected: u64,
        /// The buffer's length.
        actual: u64,
    },
    /// zstd rejected the frame (or it would exceed the chunk's raw length).
    #[error("chunk {index}: zstd decompression failed")]
    Decompress {
        /// Chunk index.
        index: u64,
        /// zstd's error.
        #[source]
        source: std::io::Error,
    },
    /// The zstd decompression context could not be created.
    #[error("cannot create a zstd decompression context")]
    DecoderInit {
        /// zstd's error.
        #[source]
        source: std::io::Error,
    },
    /// The data stream ended inside (or before) a chunk.
    #[error("data ends inside chunk {index} (frame at data offset {data_offset})")]
    DataTruncated {
        /// Chunk index.
        index: u64,
        /// Offset of the chunk's frame in the data file.
        data_offset: u64,
    },
    /// The data stream continues past the last frame.
    #[error("data continues past the last chunk (offset {data_len})")]
    DataTrailing {
        /// Declared data length.
        data_len: u64,
    },
    /// Reading the data stream failed.
    #[error("reading chunk {index} (data offset {data_offset}) failed")]
    Read {
        /// Chunk index.
        index: u64,
        /// Offset of the chunk's frame in the data file.
        data_offset: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A chunk index past the table.
    #[error("chunk {index} does not exist (table has {count})")]
    NoSuchChunk {
        /// Requested index.
        index: u64,
        /// Chunk count.
        count: u64,
    },
    /// Chunks fed to an [`super::ImageVerifier`] out of order or incompletely.
    #[error("expected chunk {expected}, got {found}")]
    OutOfOrder {
        /// Next chunk expected.
        expected: u64,
        /// Chunk given (or the chunk count when finishing early).
        found: u64,
    },
    /// The reassembled image hashes to something else than the manifest says.
    #[error("image digest is {actual}, manifest says {expected}")]
    ImageDigestMismatch {
        /// From the manifest.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
}

impl ChunkError {
    /// Reading chunk `index`'s frame, which starts at `data_offset` in the data file, failed
    /// with `e`: the stream ended early ([`ChunkError::DataTruncated`]) or the read failed.
    pub fn frame_read(index: u64, data_offset: u64, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::DataTruncated { index, data_offset }
        } else {
            Self::Read {
                index,
                data_offset,
                source: e,
            }
        }
    }

    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ChunkDigestMismatch { .. } => "chunk_digest_mismatch",
            Self::ChunkLengthMismatch { .. } => "chunk_length_mismatch",
            Self::RawLengthMismatch { .. } => "raw_length_mismatch",
            Self::BufferLength { .. } => "buffer_length",
            Self::Decompress { .. } => "decompress_failed",
            Self::DecoderInit { .. } => "decoder_init_failed",
            Self::DataTruncated { .. } => "data_truncated",
            Self::DataTrailing { .. } => "data_length_mismatch",
            Self::Read { .. } => "data_read_failed",
            Self::NoSuchChunk { .. } => "no_such_chunk",
            Self::OutOfOrder { .. } => "chunk_out_of_order",
            Self::ImageDigestMismatch { .. } => "image_digest_mismatch",
        }
    }
}
