//! The manifest: types, the strict parser and the canonical encoder (layout in the module docs
//! of [`crate::format`]). `parse(encode(m)) == m` and `encode(parse(b)) == b` for every accepted
//! `b`: there is exactly one byte string per manifest, which is what the signature covers.

use sha2::{Digest as _, Sha256};

use super::{
    CHUNK_ALIGN, ENTRY_LEN, FORMAT_VERSION, FormatError, HEADER_LEN, MAGIC, MAX_CHUNK_COUNT,
    MAX_CHUNK_SIZE, MAX_IMAGE_SIZE, MAX_MANIFEST_LEN, MIN_CHUNK_SIZE, TRAILER_LEN,
};

/// Flag bit 0 of a chunk entry: the chunk is all zeros and has no frame in the data file.
const FLAG_ZERO: u32 = 1;

/// A 32-byte digest: SHA-256 or BLAKE3, as the manifest's [`DigestAlgorithm`] says (key ids and
/// the manifest's trailing checksum are always SHA-256). Displays as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The SHA-256 digest of `data`.
    pub fn sha256(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// The all-zero value used in the unused digest fields of zero chunks.
    pub const ZERO: Self = Self([0; 32]);

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// The hash behind every chunk and image digest of one snapshot (see the format's module docs:
/// version-1 manifests are SHA-256, version 2 names the algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DigestAlgorithm {
    /// SHA-256 (FIPS 180-4): the default, and the only algorithm of format version 1.
    #[default]
    Sha256,
    /// BLAKE3 with 32-byte output: about 3.5x the speed of SHA-256 with SHA-NI on one core,
    /// for machines where verifying at disk speed would otherwise be CPU-bound.
    Blake3,
}

impl DigestAlgorithm {
    /// Every algorithm, in id order.
    pub const ALL: [Self; 2] = [Self::Sha256, Self::Blake3];

    /// The manifest's algorithm id (header offset 52): 0 for SHA-256 (the reserved zero of
    /// version 1), 1 for BLAKE3.
    pub fn id(self) -> u32 {
        match self {
            Self::Sha256 => 0,
            Self::Blake3 => 1,
        }
    }

    /// The algorithm with manifest id `id`.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.id() == id)
    }

    /// The format version that carries this algorithm: 1 for SHA-256 (so every reader since
    /// version 1 reads default snapshots), 2 for BLAKE3.
    pub fn format_version(self) -> u32 {
        match self {
            Self::Sha256 => 1,
            Self::Blake3 => 2,
        }
    }

    /// Lowercase name, as in `snapshot-tool build --digest NAME` and `inspect` output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Blake3 => "blake3",
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Digest {
        match self {
            Self::Sha256 => Digest::sha256(data),
            Self::Blake3 => Digest(*blake3::hash(data).as_bytes()),
        }
    }

    /// An incremental hasher (for the whole-image digest).
    pub fn hasher(self) -> Hasher {
        match self {
            Self::Sha256 => Hasher::Sha256(Sha256::new()),
            Self::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }
}

impl std::fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DigestAlgorithm {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| FormatError::UnknownDigestName { name: s.to_owned() })
    }
}

/// An incremental [`DigestAlgorithm`] hasher.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(Sha256),
    /// BLAKE3 (boxed: its state is ~2 KiB).
    Blake3(Box<blake3::Hasher>),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sha256(_) => "Hasher(sha256)",
            Self::Blake3(_) => "Hasher(blake3)",
        })
    }
}

impl Hasher {
    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The digest of everything added.
    pub fn finalize(self) -> Digest {
        match self {
            Self::Sha256(h) => Digest(h.finalize().into()),
            Self::Blake3(h) => Digest(*h.finalize().as_bytes()),
        }
    }
}

/// Number of chunks an image of `image_size` bytes has with `chunk_size`-byte chunks.
pub fn expected_chunk_count(image_size: u64, chunk_size: u32) -> u64 {
    if chunk_size == 0 {
        return 0;
    }
    image_size.div_ceil(u64::from(chunk_size))
}

/// Largest frame accepted for a chunk of `raw_len` bytes. zstd's worst case
/// (`ZSTD_COMPRESSBOUND`) is `n + n/256 + 64` for the lengths allowed here; this is looser so
/// that a future zstd with slightly different framing still fits, and tight enough that a
/// manifest cannot make a reader allocate more than ~1 % over the chunk size per frame.
fn max_compressed_len(raw_len: u32) -> u32 {
    let bound = u64::from(raw_len) + u64::from(raw_len) / 128 + 1024;
    u32::try_from(bound).unwrap_or(u32::MAX)
}

/// The validated geometry of an image: its size, logical sector size and chunk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    image_size: u64,
    sector_size: u32,
    chunk_size: u32,
}

impl Geometry {
    /// Checks the caps: sector size 512/1024/2048/4096; chunk size a multiple of 4096 in
    /// 1..=64 MiB; image size non-zero, whole sectors, at most 64 TiB and at most 2^20 chunks.
    pub fn new(image_size: u64, sector_size: u32, chunk_size: u32) -> Result<Self, FormatError> {
        if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
            return Err(FormatError::BadSectorSize { found: sector_size });
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
            || !chunk_size.is_multiple_of(CHUNK_ALIGN)
        {
            return Err(FormatError::BadChunkSize { found: chunk_size });
        }
        if image_size == 0 || !image_size.is_multiple_of(u64::from(sector_size)) {
            return Err(FormatError::BadImageSize {
                size: image_size,
                sector_size,
            });
        }
        if image_size > MAX_IMAGE_SIZE {
            return Err(FormatError::ImageTooLarge {
                size: image_size,
                max: MAX_IMAGE_SIZE,
            });
        }
        let count = expected_chunk_count(image_size, chunk_size);
        if count > MAX_CHUNK_COUNT {
            return Err(FormatError::TooManyChunks {
                count,
                max: MAX_CHUNK_COUNT,
            });
        }
        Ok(Self {
            image_size,
            sector_size,
            chunk_size,
        })
    }

    /// Image size in bytes.
    pub fn image_size(&self) -> u64 {
        self.image_size
    }

    /// Logical sector size in bytes.
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// Chunk size in bytes (the last chunk may be shorter).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        expected_chunk_count(self.image_size, self.chunk_size)
    }

    /// Image offset and raw length of chunk `index`, or `None` past the end.
    pub fn chunk_span(&self, index: u64) -> Option<(u64, u32)> {
        let offset = index.checked_mul(u64::from(self.chunk_size))?;
        if offset >= self.image_size {
            return None;
        }
        let remaining = self.image_size - offset;
        let len = remaining.min(u64::from(self.chunk_size));
        Some((offset, u32::try_from(len).ok()?))
    }
}

/// How a chunk is represented in the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// All zeros; no frame in the data file.
    Zero,
    /// One zstd frame in the data file.
    Stored {
        /// Frame length in bytes.
        compressed_len: u32,
        /// Digest of the raw chunk.
        raw_digest: Digest,
        /// Digest of the frame.
        compressed_digest: Digest,
    },
}

/// One row of the chunk table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Offset of the chunk in the raw image.
    pub image_offset: u64,
    /// Offset of the chunk's frame in the data file (for a zero chunk: the running offset).
    pub data_offset: u64,
    /// Raw length of the chunk.
    pub raw_len: u32,
    /// Zero or stored.
    pub kind: ChunkKind,
}

impl ChunkEntry {
    /// Frame length in the data file (0 for a zero chunk).
    pub fn compressed_len(&self) -> u32 {
        match self.kind {
            ChunkKind::Zero => 0,
            ChunkKind::Stored { compressed_len, .. } => compressed_len,
        }
    }

    /// Whether this is a zero chunk.
    pub fn is_zero(&self) -> bool {
        matches!(self.kind, ChunkKind::Zero)
    }
}

/// A validated manifest. Only [`Manifest::parse`] and [`Manifest::from_parts`] create one, and
/// both run every check, so holding a `Manifest` means its table is consistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    geometry: Geometry,
    algorithm: DigestAlgorithm,
    data_len: u64,
    image_digest: Digest,
    chunks: Vec<ChunkEntry>,
}

/// Little-endian field readers over a slice whose length was already checked; a short slice
/// still yields an error rather than a panic.
fn le_u32(bytes: &[u8], at: usize) -> Result<u32, FormatError> {
    bytes
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or(FormatError::ManifestTruncated {
            len: bytes.len(),
            needed: at + 4,
        })
}

fn le_u64(bytes: &[u8], at: usize) -> Result<u64, FormatError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or(FormatError::ManifestTruncated {
            len: bytes.len(),
            needed: at + 8,
        })
}

fn digest_at(bytes: &[u8], at: usize) -> Result<Digest, FormatError> {
    bytes
        .get(at..at + 32)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(Digest)
        .ok_or(FormatError::ManifestTruncated {
            len: bytes.len(),
            needed: at + 32,
        })
}

impl Manifest {
    /// Parses and validates `manifest.bin`. Checks, in order: magic, version, header and entry
    /// lengths, reserved fields, the size cap, the trailing checksum, the geometry caps, the
    /// chunk count against the geometry and against the byte length, then every entry.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let magic: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or(
            FormatError::ManifestTruncated {
                len: bytes.len(),
                needed: HEADER_LEN + TRAILER_LEN,
            },
        )?;
        if magic != MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        let version = le_u32(bytes, 8)?;
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                newest: FORMAT_VERSION,
            });
        }
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            return Err(FormatError::ManifestTruncated {
                len: bytes.len(),
                needed: HEADER_LEN + TRAILER_LEN,
            });
        }
        let header_len = le_u32(bytes, 12)?;
        if header_len as usize != HEADER_LEN {
            return Err(FormatError::BadHeaderLength {
                found: header_len,
                expected: HEADER_LEN as u32,
            });
        }
        let entry_len = le_u32(bytes, 48)?;
        if entry_len as usize != ENTRY_LEN {
            return Err(FormatError::BadEntryLength {
                found: entry_len,
                expected: ENTRY_LEN as u32,
            });
        }
        let algorithm_id = le_u32(bytes, 52)?;
        let algorithm = match DigestAlgorithm::from_id(algorithm_id) {
            // Version 1 has a reserved zero here.
            _ if version == 1 && algorithm_id != 0 => {
                return Err(FormatError::ReservedNonZero {
                    field: "header reserved",
                });
            }
            None => return Err(FormatError::UnknownDigest { id: algorithm_id }),
            Some(a) if a.format_version() != version => {
                return Err(FormatError::DigestVersionMismatch {
                    version,
                    algorithm: a,
                });
            }
            Some(a) => a,
        };
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(FormatError::ManifestTooLarge {
                len: bytes.len(),
                max: MAX_MANIFEST_LEN,
            });
        }
        let body_len = bytes.len() - TRAILER_LEN;
        let (body, trailer) = bytes.split_at(body_len);
        if Digest::sha256(body).0[..] != *trailer {
            return Err(FormatError::ChecksumMismatch);
        }

        let image_size = le_u64(bytes, 16)?;
        let sector_size = le_u32(bytes, 24)?;
        let chunk_size = le_u32(bytes, 28)?;
        let chunk_count = le_u64(bytes, 32)?;
        let data_len = le_u64(bytes, 40)?;
        let image_digest = digest_at(bytes, 56)?;

        if chunk_count > MAX_CHUNK_COUNT {
            return Err(FormatError::TooManyChunks {
                count: chunk_count,
                max: MAX_CHUNK_COUNT,
            });
        }
        let geometry = Geometry::new(image_size, sector_size, chunk_size)?;
        if chunk_count != geometry.chunk_count() {
            return Err(FormatError::ChunkCountMismatch {
                count: chunk_count,
                expected: geometry.chunk_count(),
            });
        }
        // chunk_count <= 2^20, so this cannot overflow.
        let expected_len = HEADER_LEN + ENTRY_LEN * chunk_count as usize + TRAILER_LEN;
        if bytes.len() != expected_len {
            return Err(FormatError::SizeMismatch {
                len: bytes.len(),
                expected: expected_len,
            });
        }

        let mut chunks = Vec::with_capacity(chunk_count as usize);
        for index in 0..chunk_count {
            let at = HEADER_LEN + ENTRY_LEN * index as usize;
            chunks.push(parse_entry(bytes, at, index)?);
        }
        let used = check_entries(&geometry, &chunks, data_len)?;
        if used != data_len {
            return Err(FormatError::DataLengthMismatch { data_len, used });
        }
        Ok(Self {
            geometry,
            algorithm,
            data_len,
            image_digest,
            chunks,
        })
    }

    /// Builds a manifest from its parts (the builder's path), running the same checks as
    /// [`Manifest::parse`]. The data length is where the last frame ends.
    pub fn from_parts(
        geometry: Geometry,
        algorithm: DigestAlgorithm,
        chunks: Vec<ChunkEntry>,
        image_digest: Digest,
    ) -> Result<Self, FormatError> {
        if chunks.len() as u64 != geometry.chunk_count() {
            return Err(FormatError::ChunkCountMismatch {
                count: chunks.len() as u64,
                expected: geometry.chunk_count(),
            });
        }
        let data_len = check_entries(&geometry, &chunks, u64::MAX)?;
        Ok(Self {
            geometry,
            algorithm,
            data_len,
            image_digest,
            chunks,
        })
    }

    /// The canonical bytes of `manifest.bin`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.chunks.len() + TRAILER_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.algorithm.format_version().to_le_bytes());
        out.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        out.extend_from_slice(&self.geometry.image_size.to_le_bytes());
        out.extend_from_slice(&self.geometry.sector_size.to_le_bytes());
        out.extend_from_slice(&self.geometry.chunk_size.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.data_len.to_le_bytes());
        out.extend_from_slice(&(ENTRY_LEN as u32).to_le_bytes());
        out.extend_from_slice(&self.algorithm.id().to_le_bytes());
        out.extend_from_slice(&self.image_digest.0);
        for entry in &self.chunks {
            let (flags, compressed_len, raw_sha, comp_sha) = match entry.kind {
                ChunkKind::Zero => (FLAG_ZERO, 0, Digest::ZERO, Digest::ZERO),
                ChunkKind::Stored {
                    compressed_len,
                    raw_digest,
                    compressed_digest,
                } => (0, compressed_len, raw_digest, compressed_digest),
            };
            out.extend_from_slice(&entry.image_offset.to_le_bytes());
            out.extend_from_slice(&entry.data_offset.to_le_bytes());
            out.extend_from_slice(&compressed_len.to_le_bytes());
            out.extend_from_slice(&entry.raw_len.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&raw_sha.0);
            out.extend_from_slice(&comp_sha.0);
        }
        let checksum = Digest::sha256(&out);
        out.extend_from_slice(&checksum.0);
        out
    }

    /// The image geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Image size in bytes.
    pub fn image_size(&self) -> u64 {
        self.geometry.image_size
    }

    /// The algorithm of every chunk and image digest.
    pub fn digest_algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// The format version of this manifest's encoding (follows from the algorithm).
    pub fn format_version(&self) -> u32 {
        self.algorithm.format_version()
    }

    /// Exact length of the data file.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Digest of the whole raw image.
    pub fn image_digest(&self) -> Digest {
        self.image_digest
    }

    /// The chunk table.
    pub fn chunks(&self) -> &[ChunkEntry] {
        &self.chunks
    }

    /// Entry `index`, if it exists.
    pub fn chunk(&self, index: u64) -> Option<&ChunkEntry> {
        usize::try_from(index).ok().and_then(|i| self.chunks.get(i))
    }

    /// Number of chunks with a frame.
    pub fn stored_chunks(&self) -> u64 {
        self.chunks.iter().filter(|c| !c.is_zero()).count() as u64
    }

    /// Number of all-zero chunks.
    pub fn zero_chunks(&self) -> u64 {
        self.chunks.iter().filter(|c| c.is_zero()).count() as u64
    }

    /// Data-file offset to request (`Range: bytes=N-`) to resume streaming at chunk `index`.
    pub fn resume_offset(&self, index: u64) -> Option<u64> {
        self.chunk(index).map(|c| c.data_offset)
    }
}

fn parse_entry(bytes: &[u8], at: usize, index: u64) -> Result<ChunkEntry, FormatError> {
    let image_offset = le_u64(bytes, at)?;
    let data_offset = le_u64(bytes, at + 8)?;
    let compressed_len = le_u32(bytes, at + 16)?;
    let raw_len = le_u32(bytes, at + 20)?;
    let flags = le_u32(bytes, at + 24)?;
    let reserved = le_u32(bytes, at + 28)?;
    let raw_digest = digest_at(bytes, at + 32)?;
    let compressed_digest = digest_at(bytes, at + 64)?;
    let inconsistent = |what| FormatError::ChunkTableInconsistent { index, what };
    if reserved != 0 {
        return Err(inconsistent("reserved field is not zero"));
    }
    let kind = match flags {
        0 => ChunkKind::Stored {
            compressed_len,
            raw_digest,
            compressed_digest,
        },
        FLAG_ZERO => {
            if compressed_len != 0
                || raw_digest != Digest::ZERO
                || compressed_digest != Digest::ZERO
            {
                return Err(inconsistent("zero chunk carries a frame length or digest"));
            }
            ChunkKind::Zero
        }
        _ => return Err(inconsistent("unknown flag bits")),
    };
    Ok(ChunkEntry {
        image_offset,
        data_offset,
        raw_len,
        kind,
    })
}

/// Checks every entry against the geometry, the contiguity rule and the declared data length;
/// returns where the last frame ends (the data file length the table implies).
fn check_entries(
    geometry: &Geometry,
    chunks: &[ChunkEntry],
    data_len: u64,
) -> Result<u64, FormatError> {
    let mut running: u64 = 0;
    for (index, entry) in (0u64..).zip(chunks) {
        let inconsistent = |what| FormatError::ChunkTableInconsistent { index, what };
        let (offset, raw_len) = geometry
            .chunk_span(index)
            .ok_or(inconsistent("chunk index past the end of the image"))?;
        if entry.image_offset != offset {
            return Err(inconsistent("image offset is not index × chunk size"));
        }
        if entry.raw_len != raw_len {
            return Err(inconsistent("raw length does not match the image geometry"));
        }
        if entry.data_offset < running {
            return Err(FormatError::ChunkOverlap {
                index,
                data_offset: entry.data_offset,
                expected: running,
            });
        }
        if entry.data_offset > running {
            return Err(FormatError::ChunkGap {
                index,
                data_offset: entry.data_offset,
                expected: running,
            });
        }
        if let ChunkKind::Stored { compressed_len, .. } = entry.kind {
            let max = max_compressed_len(raw_len);
            if compressed_len == 0 || compressed_len > max {
                return Err(FormatError::BadCompressedLength {
                    index,
                    len: compressed_len,
                    max,
                });
            }
            let end = running + u64::from(compressed_len);
            if end > data_len {
                return Err(FormatError::ChunkOutOfBounds {
                    index,
                    end,
                    data_len,
                });
            }
            running = end;
        }
    }
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry::new(3 * (1 << 20) + 4096, 512, 1 << 20).unwrap()
    }

    fn sample() -> Manifest {
        let g = geometry();
        let mut chunks = Vec::new();
        let mut data = 0;
        for i in 0..g.chunk_count() {
            let (image_offset, raw_len) = g.chunk_span(i).unwrap();
            let kind = if i == 1 {
                ChunkKind::Zero
            } else {
                ChunkKind::Stored {
                    compressed_len: 100 + i as u32,
                    raw_digest: Digest([i as u8; 32]),
                    compressed_digest: Digest([0xa0 + i as u8; 32]),
                }
            };
            let entry = ChunkEntry {
                image_offset,
                data_offset: data,
                raw_len,
                kind,
            };
            data += u64::from(entry.compressed_len());
            chunks.push(entry);
        }
        Manifest::from_parts(g, DigestAlgorithm::Sha256, chunks, Digest([7; 32])).unwrap()
    }

    #[test]
    fn encode_parse_roundtrip_is_exact() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 4 * ENTRY_LEN + TRAILER_LEN);
        let back = Manifest::parse(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.data_len(), 100 + 102 + 103);
        assert_eq!(back.stored_chunks(), 3);
        assert_eq!(back.zero_chunks(), 1);
        assert_eq!(back.resume_offset(3), Some(202));
        assert_eq!(back.resume_offset(4), None);
    }

    #[test]
    fn geometry_caps() {
        let code = |r: Result<Geometry, FormatError>| r.unwrap_err().code();
        assert_eq!(
            code(Geometry::new(1 << 20, 500, 1 << 20)),
            "bad_sector_size"
        );
        assert_eq!(code(Geometry::new(1 << 20, 512, 4096)), "bad_chunk_size");
        assert_eq!(
            code(Geometry::new(1 << 20, 512, (1 << 20) + 1)),
            "bad_chunk_size"
        );
        assert_eq!(
            code(Geometry::new(1 << 20, 512, 128 << 20)),
            "bad_chunk_size"
        );
        assert_eq!(code(Geometry::new(0, 512, 1 << 20)), "bad_image_size");
        assert_eq!(code(Geometry::new(1000, 512, 1 << 20)), "bad_image_size");
        assert_eq!(
            code(Geometry::new(65 << 40, 512, 64 << 20)),
            "image_too_large"
        );
        assert_eq!(
            code(Geometry::new(2 << 40, 512, 1 << 20)),
            "too_many_chunks"
        );
        let g = Geometry::new(4096 * 3, 4096, 1 << 20).unwrap();
        assert_eq!(g.chunk_count(), 1);
        assert_eq!(g.chunk_span(0), Some((0, 4096 * 3)));
        assert_eq!(g.chunk_span(1), None);
    }

    #[test]
    fn from_parts_rejects_bad_tables() {
        let m = sample();
        let mut chunks = m.chunks().to_vec();
        chunks.pop();
        let err = Manifest::from_parts(
            *m.geometry(),
            m.digest_algorithm(),
            chunks,
            m.image_digest(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "chunk_count_mismatch");

        let mut chunks = m.chunks().to_vec();
        chunks[2].data_offset -= 1;
        let err = Manifest::from_parts(
            *m.geometry(),
            m.digest_algorithm(),
            chunks,
            m.image_digest(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "chunk_overlap");

        let mut chunks = m.chunks().to_vec();
        chunks[3].raw_len += 1;
        let err = Manifest::from_parts(
            *m.geometry(),
            m.digest_algorithm(),
            chunks,
            m.image_digest(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "chunk_table_inconsistent");
    }
}
