//! Full verification of a snapshot directory: signature, manifest, data file length, every
//! chunk, the whole-image digest. Used by `snapshot-tool verify`, by `sign` (which refuses to
//! sign what does not verify) and usable by the appliance when it imports a snapshot.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::format::{
    ChunkError, ChunkStream, DATA_FILE, Digest, DigestAlgorithm, FormatError, ImageVerifier, KeyId,
    MANIFEST_FILE, MAX_MANIFEST_LEN, MAX_SIGNATURE_FILE_LEN, Manifest, PublicKey, SIGNATURE_FILE,
    SignatureError, SignatureFile, verify_signature_any,
};
use crate::fsutil::{IoError, read_capped};

/// Read buffer for the data file. Frames are read whole (4 MiB by default), so this only
/// batches the small reads of the end-of-stream probe; 256 KiB keeps syscalls few without
/// holding much memory.
const READ_BUFFER: usize = 256 << 10;

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The key that signed the manifest.
    pub key_id: KeyId,
    /// Raw image size.
    pub image_size: u64,
    /// Number of chunks.
    pub chunk_count: u64,
    /// Number of all-zero chunks.
    pub zero_chunks: u64,
    /// Length of the data file.
    pub data_len: u64,
    /// The algorithm of every digest.
    pub digest_algorithm: DigestAlgorithm,
    /// The verified digest of the whole image.
    pub image_digest: Digest,
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "signature      ok (key {})", self.key_id)?;
        writeln!(f, "manifest       ok")?;
        writeln!(
            f,
            "chunks         ok ({} chunks, {} zero)",
            self.chunk_count, self.zero_chunks
        )?;
        writeln!(
            f,
            "image          ok ({} bytes, {} {})",
            self.image_size, self.digest_algorithm, self.image_digest
        )
    }
}

/// Why a snapshot did not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A file could not be read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The signature (or signature file) is not acceptable.
    #[error("signature check of {} failed", path.display())]
    Signature {
        /// The signature file.
        path: PathBuf,
        /// Why.
        #[source]
        source: SignatureError,
    },
    /// The manifest is malformed.
    #[error("manifest {} is invalid", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// The data file is shorter than the manifest says.
    #[error(
        "data file {} is {actual} bytes, manifest says {expected} (chunk {first_chunk} onwards missing)",
        path.display()
    )]
    DataTruncated {
        /// The data file.
        path: PathBuf,
        /// Its length.
        actual: u64,
        /// The manifest's data length.
        expected: u64,
        /// First chunk whose frame is not complete.
        first_chunk: u64,
    },
    /// The data file is longer than the manifest says.
    #[error("data file {} is {actual} bytes, manifest says {expected}", path.display())]
    DataTooLong {
        /// The data file.
        path: PathBuf,
        /// Its length.
        actual: u64,
        /// The manifest's data length.
        expected: u64,
    },
    /// One or more chunks do not match the manifest.
    #[error("{count} of {total} chunks failed verification, the first")]
    BadChunks {
        /// Number of bad chunks.
        count: u64,
        /// Number of chunks.
        total: u64,
        /// The first failure.
        #[source]
        first: ChunkError,
    },
    /// Reading the data or checking the image digest failed.
    #[error("data file {} does not verify", path.display())]
    Data {
        /// The data file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ChunkError,
    },
}

impl VerifyError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io(_) => "io_error",
            Self::Signature { source, .. } => source.code(),
            Self::Manifest { source, .. } => source.code(),
            Self::DataTruncated { .. } => "data_truncated",
            Self::DataTooLong { .. } => "data_length_mismatch",
            Self::BadChunks { first, .. } => first.code(),
            Self::Data { source, .. } => source.code(),
        }
    }
}

/// Reads and parses `dir/manifest.bin` (without checking any signature).
pub fn load_manifest(dir: &Path) -> Result<(Vec<u8>, Manifest), VerifyError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = read_capped(&path, MAX_MANIFEST_LEN)?;
    let manifest = Manifest::parse(&bytes).map_err(|source| VerifyError::Manifest {
        path: path.clone(),
        source,
    })?;
    Ok((bytes, manifest))
}

/// Reads and parses `dir/manifest.sig`.
pub fn load_signature(dir: &Path) -> Result<SignatureFile, VerifyError> {
    let path = dir.join(SIGNATURE_FILE);
    let bytes = match read_capped(&path, MAX_SIGNATURE_FILE_LEN) {
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {
            return Err(VerifyError::Signature {
                path,
                source: SignatureError::Unsigned,
            });
        }
        other => other?,
    };
    SignatureFile::parse(&bytes).map_err(|source| VerifyError::Signature { path, source })
}

/// Verifies the snapshot in `dir` against the trusted `keys`: the signature over the exact
/// manifest bytes first, then the manifest, the data file's length, every chunk and the
/// whole-image digest. `progress` gets the raw bytes verified so far.
pub fn verify_dir(
    dir: &Path,
    keys: &[PublicKey],
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, VerifyError> {
    let sig = load_signature(dir)?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = read_capped(&manifest_path, MAX_MANIFEST_LEN)?;
    let key =
        verify_signature_any(&bytes, &sig, keys).map_err(|source| VerifyError::Signature {
            path: dir.join(SIGNATURE_FILE),
            source,
        })?;
    let manifest = Manifest::parse(&bytes).map_err(|source| VerifyError::Manifest {
        path: manifest_path,
        source,
    })?;
    let image_digest = verify_contents(dir, &manifest, progress)?;
    Ok(VerifyReport {
        key_id: key.id(),
        image_size: manifest.image_size(),
        chunk_count: manifest.chunks().len() as u64,
        zero_chunks: manifest.zero_chunks(),
        data_len: manifest.data_len(),
        digest_algorithm: manifest.digest_algorithm(),
        image_digest,
    })
}

/// Verifies `dir/data.zst` against an already trusted `manifest`: its length, then every
/// chunk (all of them, counting failures), then the whole-image digest.
pub fn verify_contents(
    dir: &Path,
    manifest: &Manifest,
    progress: &mut dyn FnMut(u64),
) -> Result<Digest, VerifyError> {
    let path = dir.join(DATA_FILE);
    let file = File::open(&path).map_err(|e| IoError::new("open", &path, e))?;
    let actual = file
        .metadata()
        .map_err(|e| IoError::new("stat", &path, e))?
        .len();
    let expected = manifest.data_len();
    if actual < expected {
        let first_chunk = manifest
            .chunks()
            .iter()
            .position(|c| c.data_offset + u64::from(c.compressed_len()) > actual)
            .unwrap_or(0) as u64;
        return Err(VerifyError::DataTruncated {
            path,
            actual,
            expected,
            first_chunk,
        });
    }
    if actual > expected {
        return Err(VerifyError::DataTooLong {
            path,
            actual,
            expected,
        });
    }

    let data_error = |source| VerifyError::Data {
        path: path.clone(),
        source,
    };
    let mut stream = ChunkStream::new(manifest, BufReader::with_capacity(READ_BUFFER, file))
        .map_err(data_error)?;
    let mut image = ImageVerifier::new(manifest);
    let total = manifest.chunks().len() as u64;
    let mut bad = 0u64;
    let mut first_bad: Option<ChunkError> = None;
    let chunk_size = u64::from(manifest.geometry().chunk_size());
    while let Some(result) = stream.next_chunk() {
        match result {
            Ok(chunk) => {
                if first_bad.is_none() {
                    image.update(chunk.index, chunk.raw).map_err(data_error)?;
                }
            }
            Err(e @ (ChunkError::Read { .. } | ChunkError::DataTruncated { .. })) => {
                // The stream cannot continue past a read failure.
                return Err(data_error(e));
            }
            Err(e) => {
                bad += 1;
                first_bad.get_or_insert(e);
            }
        }
        progress(
            stream
                .next_index()
                .saturating_mul(chunk_size)
                .min(manifest.image_size()),
        );
    }
    if let Some(first) = first_bad {
        return Err(VerifyError::BadChunks {
            count: bad,
            total,
            first,
        });
    }
    stream.expect_end().map_err(data_error)?;
    image.finish().map_err(data_error)
}
