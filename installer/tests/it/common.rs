//! Building signed snapshots into temporary directories, and reading them back the way the
//! agent will (signature before parsing).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use snapshot_tool::build::{BuildOptions, build_dir};
use snapshot_tool::format::{
    DATA_FILE, MANIFEST_FILE, MAX_MANIFEST_LEN, MAX_SIGNATURE_FILE_LEN, Manifest, PublicKey,
    SIGNATURE_FILE, SecretKey, SignatureFile, read_capped, verify_signature_any,
};

pub(crate) const MIB: usize = 1 << 20;

/// A deterministic image: a 512-byte "boot sector" of 0xB0, pseudo-random data, one all-zero
/// chunk at 2 MiB, and `len` bytes in all.
pub(crate) fn image(len: usize) -> Vec<u8> {
    let mut img: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    img[..512].fill(0xB0);
    if len >= 3 * MIB {
        img[2 * MIB..3 * MIB].fill(0);
    }
    img
}

pub(crate) fn key() -> SecretKey {
    SecretKey::from_seed(&[9; 32])
}

/// Builds and signs snapshot `name` of `img` in `dir` with 1 MiB chunks.
pub(crate) fn build(dir: &Path, name: &str, img: &[u8]) -> PathBuf {
    let opts = BuildOptions {
        chunk_size: MIB as u32,
        threads: 1,
        ..BuildOptions::default()
    };
    let built = build_dir(
        img,
        img.len() as u64,
        &opts,
        dir,
        name,
        Some(&key()),
        &mut |_| {},
    )
    .unwrap();
    built.dir
}

/// The agent's trust order: signature file, manifest bytes, signature check, then parse.
pub(crate) fn load(dir: &Path) -> Manifest {
    let sig = read_capped(
        File::open(dir.join(SIGNATURE_FILE)).unwrap(),
        MAX_SIGNATURE_FILE_LEN,
    )
    .unwrap();
    let sig = SignatureFile::parse(&sig).unwrap();
    let bytes = read_capped(
        File::open(dir.join(MANIFEST_FILE)).unwrap(),
        MAX_MANIFEST_LEN,
    )
    .unwrap();
    let trusted: [PublicKey; 1] = [key().public()];
    verify_signature_any(&bytes, &sig, &trusted).unwrap();
    Manifest::parse(&bytes).unwrap()
}

pub(crate) fn data(dir: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(dir.join(DATA_FILE))
        .unwrap()
        .read_to_end(&mut v)
        .unwrap();
    v
}

/// A file of `len` bytes of `fill`, standing in for a disk.
pub(crate) fn disk_file(dir: &Path, len: usize, fill: u8) -> PathBuf {
    let path = dir.join("disk.img");
    std::fs::write(&path, vec![fill; len]).unwrap();
    path
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    snapshot_tool::format::Digest::sha256(bytes).to_hex()
}
