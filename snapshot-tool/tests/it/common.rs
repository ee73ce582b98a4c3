//! Shared fixtures: a synthetic disk image, a key, and a built snapshot in a temp directory.

use std::path::{Path, PathBuf};

use rand::{RngCore as _, SeedableRng as _};
use snapshot_tool::build::{BuildOptions, build_dir};
use snapshot_tool::format::{DigestAlgorithm, Manifest, SecretKey};

/// Chunk size used by the fixtures: the smallest allowed, so images stay small.
pub(crate) const CHUNK: u32 = 1 << 20;

/// A deterministic synthetic image of 7 MiB + 1536 bytes (8 chunks, the last one partial):
/// random, compressible and zero regions, one zero run that is not chunk-aligned.
///
/// chunk 0 random · 1 compressible text · 2 zero · 3 half random, half zero · 4 zero ·
/// 5 compressible · 6 random · 7 (1536 bytes) compressible
pub(crate) fn synthetic_image() -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mib = CHUNK as usize;
    let mut image = vec![0u8; 7 * mib + 1536];
    let text = b"rackhand snapshot test pattern: the quick brown fox jumps over the lazy dog\n";
    let fill_text = |region: &mut [u8], salt: u8| {
        for (i, b) in region.iter_mut().enumerate() {
            *b = text[i % text.len()] ^ (salt & ((i / 4096) as u8 & 1));
        }
    };
    rng.fill_bytes(&mut image[..mib]);
    fill_text(&mut image[mib..2 * mib], 1);
    rng.fill_bytes(&mut image[3 * mib..3 * mib + mib / 2]);
    fill_text(&mut image[5 * mib..6 * mib], 3);
    rng.fill_bytes(&mut image[6 * mib..7 * mib]);
    fill_text(&mut image[7 * mib..], 5);
    image
}

/// A fixed signing key (tests only).
pub(crate) fn key() -> SecretKey {
    SecretKey::from_seed(&[7; 32])
}

/// Another fixed key, never trusted by the fixtures.
pub(crate) fn other_key() -> SecretKey {
    SecretKey::from_seed(&[8; 32])
}

/// Build options for the fixtures.
pub(crate) fn options(threads: usize) -> BuildOptions {
    BuildOptions {
        chunk_size: CHUNK,
        threads,
        ..BuildOptions::default()
    }
}

/// A signed snapshot of [`synthetic_image`] named `snap` in a fresh temp directory.
pub(crate) struct Fixture {
    /// Keeps the directory alive.
    pub(crate) _tmp: tempfile::TempDir,
    /// The snapshot directory.
    pub(crate) dir: PathBuf,
    /// The image it was built from.
    pub(crate) image: Vec<u8>,
    /// Its manifest.
    pub(crate) manifest: Manifest,
}

/// The fixture with SHA-256 digests (the default, format version 1).
pub(crate) fn fixture() -> Fixture {
    fixture_with(DigestAlgorithm::Sha256)
}

/// The fixture with `digest` (BLAKE3 gives a format-version-2 manifest).
pub(crate) fn fixture_with(digest: DigestAlgorithm) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let image = synthetic_image();
    let built = build_dir(
        &image[..],
        image.len() as u64,
        &BuildOptions {
            digest,
            ..options(2)
        },
        tmp.path(),
        "snap",
        Some(&key()),
        &mut |_| {},
    )
    .unwrap();
    Fixture {
        dir: built.dir,
        _tmp: tmp,
        image,
        manifest: built.manifest,
    }
}

/// Recomputes the trailing checksum after a test edited a manifest's bytes.
pub(crate) fn reseal(bytes: &mut [u8]) {
    let body = bytes.len() - 32;
    let digest = snapshot_tool::format::Digest::sha256(&bytes[..body]);
    bytes[body..].copy_from_slice(&digest.0);
}

/// Writes little-endian `value` at `at`.
pub(crate) fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Writes little-endian `value` at `at`.
pub(crate) fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Copies a snapshot directory's three files into `dst` (created).
pub(crate) fn copy_snapshot(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for name in ["manifest.bin", "manifest.sig", "data.zst"] {
        std::fs::copy(src.join(name), dst.join(name)).unwrap();
    }
}
