//! Turning frames from `data.zst` into verified raw chunks: one chunk at a time
//! ([`ChunkVerifier`]), as a sequential stream from any `Read` ([`ChunkStream`], which can start
//! at any chunk to resume a download), and the whole-image digest ([`ImageVerifier`]).

use std::io::Read;

use super::{ChunkEntry, ChunkError, ChunkKind, Digest, DigestAlgorithm, Hasher, Manifest};

/// Which of a chunk's two digests failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    /// The digest of the zstd frame as stored in the data file.
    Compressed,
    /// The digest of the decompressed chunk.
    Raw,
}

impl std::fmt::Display for DigestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Compressed => "compressed",
            Self::Raw => "raw",
        })
    }
}

/// Verifies and decompresses one chunk at a time with one snapshot's digest algorithm, reusing
/// one zstd context (and, for [`ChunkVerifier::verify`], one output buffer), so steady-state
/// streaming allocates nothing.
pub struct ChunkVerifier {
    algorithm: DigestAlgorithm,
    decompressor: zstd::bulk::Decompressor<'static>,
    raw: Vec<u8>,
}

impl std::fmt::Debug for ChunkVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkVerifier")
            .field("algorithm", &self.algorithm)
            .field("buffer", &self.raw.len())
            .finish_non_exhaustive()
    }
}

impl ChunkVerifier {
    /// A verifier for `manifest`'s chunks (its digest algorithm), with a fresh zstd context.
    pub fn new(manifest: &Manifest) -> Result<Self, ChunkError> {
        Self::with_algorithm(manifest.digest_algorithm())
    }

    /// A verifier for chunks digested with `algorithm`, with a fresh zstd context.
    pub fn with_algorithm(algorithm: DigestAlgorithm) -> Result<Self, ChunkError> {
        let decompressor =
            zstd::bulk::Decompressor::new().map_err(|source| ChunkError::DecoderInit { source })?;
        Ok(Self {
            algorithm,
            decompressor,
            raw: Vec::new(),
        })
    }

    /// Checks `compressed` (the chunk's bytes from the data file; empty for a zero chunk)
    /// against entry `index` and returns the raw chunk, in a buffer the verifier owns until
    /// the next call. See [`ChunkVerifier::verify_into`].
    pub fn verify(
        &mut self,
        index: u64,
        entry: &ChunkEntry,
        compressed: &[u8],
    ) -> Result<&[u8], ChunkError> {
        // Growing zero-fills only the new tail, shrinking is free: chunks are nearly all the
        // same size, so this is a no-op in the steady state.
        let mut raw = std::mem::take(&mut self.raw);
        raw.resize(entry.raw_len as usize, 0);
        let result = self.verify_into(index, entry, compressed, &mut raw);
        self.raw = raw;
        result.map(|()| self.raw.as_slice())
    }

    /// Checks `compressed` against entry `index` and leaves the raw chunk in `out`, which must
    /// be exactly `raw_len` bytes (a writer passes its aligned I/O buffer, so the chunk is
    /// decompressed where it will be written from, without a copy). Order: frame length,
    /// frame digest, decompression into exactly `raw_len` bytes, raw digest. On an error,
    /// `out` holds unverified bytes and must not be used.
    pub fn verify_into(
        &mut self,
        index: u64,
        entry: &ChunkEntry,
        compressed: &[u8],
        out: &mut [u8],
    ) -> Result<(), ChunkError> {
        let raw_len = entry.raw_len as usize;
        let expected_len = u64::from(entry.compressed_len());
        if compressed.len() as u64 != expected_len {
            return Err(ChunkError::ChunkLengthMismatch {
                index,
                expected: expected_len,
                actual: compressed.len() as u64,
            });
        }
        if out.len() != raw_len {
            return Err(ChunkError::BufferLength {
                index,
                expected: raw_len as u64,
                actual: out.len() as u64,
            });
        }
        match entry.kind {
            ChunkKind::Zero => {
                out.fill(0);
                Ok(())
            }
            ChunkKind::Stored {
                raw_digest,
                compressed_digest,
                ..
            } => {
                let actual = self.algorithm.digest(compressed);
                if actual != compressed_digest {
                    return Err(ChunkError::ChunkDigestMismatch {
                        index,
                        which: DigestKind::Compressed,
                        expected: compressed_digest,
                        actual,
                    });
                }
                let produced = self
                    .decompressor
                    .decompress_to_buffer(compressed, &mut *out)
                    .map_err(|source| ChunkError::Decompress { index, source })?;
                if produced != raw_len {
                    return Err(ChunkError::RawLengthMismatch {
                        index,
                        expected: raw_len as u64,
                        actual: produced as u64,
                    });
                }
                let actual = self.algorithm.digest(out);
                if actual != raw_digest {
                    return Err(ChunkError::ChunkDigestMismatch {
                        index,
                        which: DigestKind::Raw,
                        expected: raw_digest,
                        actual,
                    });
                }
                Ok(())
            }
        }
    }
}

/// Hashes raw chunks fed in order and checks the whole-image digest at the end.
pub struct ImageVerifier {
    hasher: Hasher,
    next: u64,
    count: u64,
    expected: Digest,
}

impl std::fmt::Debug for ImageVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageVerifier")
            .field("next", &self.next)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl ImageVerifier {
    /// Starts at chunk 0 of `manifest`.
    pub fn new(manifest: &Manifest) -> Self {
        Self {
            hasher: manifest.digest_algorithm().hasher(),
            next: 0,
            count: manifest.chunks().len() as u64,
            expected: manifest.image_digest(),
        }
    }

    /// Adds verified chunk `index`; it must be the next one.
    pub fn update(&mut self, index: u64, raw: &[u8]) -> Result<(), ChunkError> {
        if index != self.next {
            return Err(ChunkError::OutOfOrder {
                expected: self.next,
                found: index,
            });
        }
        self.hasher.update(raw);
        self.next += 1;
        Ok(())
    }

    /// Checks that every chunk was seen and the digest matches.
    pub fn finish(self) -> Result<Digest, ChunkError> {
        if self.next != self.count {
            return Err(ChunkError::OutOfOrder {
                expected: self.next,
                found: self.count,
            });
        }
        let actual = self.hasher.finalize();
        if actual != self.expected {
            return Err(ChunkError::ImageDigestMismatch {
                expected: self.expected,
                actual,
            });
        }
        Ok(actual)
    }
}

/// One verified chunk, borrowed from the stream's buffer until the next call.
#[derive(Debug)]
pub struct VerifiedChunk<'a> {
    /// Chunk index.
    pub index: u64,
    /// Where the bytes go in the image.
    pub image_offset: u64,
    /// Whether the chunk is all zeros (a writer may skip it on a pre-zeroed target).
    pub zero: bool,
    /// The raw bytes.
    pub raw: &'a [u8],
}

/// Reads frames from a data stream in chunk order and yields verified raw chunks.
///
/// A digest or decompression failure of one chunk is reported and the stream moves on (the
/// frame's bytes were consumed, so the next chunk is still aligned); a read failure or a
/// truncated stream ends it.
pub struct ChunkStream<'m, R> {
    manifest: &'m Manifest,
    reader: R,
    next: u64,
    ended: bool,
    frame: Vec<u8>,
    verifier: ChunkVerifier,
}

impl<R> std::fmt::Debug for ChunkStream<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream")
            .field("next", &self.next)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<'m, R: Read> ChunkStream<'m, R> {
    /// A stream over the whole data file, `reader` positioned at data offset 0.
    pub fn new(manifest: &'m Manifest, reader: R) -> Result<Self, ChunkError> {
        Self::starting_at(manifest, reader, 0)
    }

    /// A stream starting at chunk `index`, `reader` positioned at
    /// [`Manifest::resume_offset`]`(index)` (e.g. the body of a `Range: bytes=N-` request).
    pub fn starting_at(manifest: &'m Manifest, reader: R, index: u64) -> Result<Self, ChunkError> {
        let count = manifest.chunks().len() as u64;
        if index > count {
            return Err(ChunkError::NoSuchChunk { index, count });
        }
        Ok(Self {
            manifest,
            reader,
            next: index,
            ended: false,
            frame: Vec::new(),
            verifier: ChunkVerifier::new(manifest)?,
        })
    }

    /// Index of the chunk the next call returns.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// The next verified chunk, an error for it, or `None` after the last chunk (or after a
    /// read failure).
    pub fn next_chunk(&mut self) -> Option<Result<VerifiedChunk<'_>, ChunkError>> {
        if self.ended {
            return None;
        }
        let index = self.next;
        let Some(entry) = self.manifest.chunk(index).copied() else {
            self.ended = true;
            return None;
        };
        self.next += 1;
        let len = entry.compressed_len() as usize;
        self.frame.clear();
        if len > 0 {
            self.frame.resize(len, 0);
            if let Err(e) = self.reader.read_exact(&mut self.frame) {
                self.ended = true;
                return Some(Err(ChunkError::frame_read(index, entry.data_offset, e)));
            }
        }
        Some(
            self.verifier
                .verify(index, &entry, &self.frame)
                .map(|raw| VerifiedChunk {
                    index,
                    image_offset: entry.image_offset,
                    zero: entry.is_zero(),
                    raw,
                }),
        )
    }

    /// After the last chunk: checks that the stream has no bytes left.
    pub fn expect_end(mut self) -> Result<(), ChunkError> {
        let mut probe = [0u8; 1];
        // Bounded: a reader that keeps returning `Interrupted` is treated as failed.
        for _ in 0..16 {
            match self.reader.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(ChunkError::DataTrailing {
                        data_len: self.manifest.data_len(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ChunkError::Read {
                        index: self.next,
                        data_offset: self.manifest.data_len(),
                        source,
                    });
                }
            }
        }
        Err(ChunkError::Read {
            index: self.next,
            data_offset: self.manifest.data_len(),
            source: std::io::ErrorKind::Interrupted.into(),
        })
    }
}
