//! Building twice gives the same bytes; insertion order does not matter; the mtime does.

use initramfs::{WriteOptions, build_zstd};
use sha2::{Digest, Sha256};

use crate::common::agent_like_spec;

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn same_spec_same_digest_whatever_the_insertion_order() {
    let opts = WriteOptions { mtime: 0 };
    let (cpio_a, zst_a) = build_zstd(&agent_like_spec(false).unwrap(), opts).unwrap();
    let (cpio_b, zst_b) = build_zstd(&agent_like_spec(true).unwrap(), opts).unwrap();
    assert_eq!(digest(&cpio_a), digest(&cpio_b));
    assert_eq!(digest(&zst_a), digest(&zst_b));
    assert_eq!(zstd::decode_all(&zst_a[..]).unwrap(), cpio_a);
}

#[test]
fn the_mtime_is_part_of_the_output() {
    let spec = agent_like_spec(false).unwrap();
    let (a, _) = build_zstd(&spec, WriteOptions { mtime: 0 }).unwrap();
    let (b, _) = build_zstd(&spec, WriteOptions { mtime: 1 }).unwrap();
    assert_ne!(digest(&a), digest(&b));
}
