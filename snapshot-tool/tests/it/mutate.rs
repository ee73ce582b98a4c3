//! Fuzz-style property tests: mutated manifests, signature files, key files and frames never
//! panic, and whatever the parser accepts re-encodes to the same bytes.

use std::sync::OnceLock;

use proptest::prelude::*;
use snapshot_tool::format::{
    ChunkEntry, ChunkKind, ChunkVerifier, Digest, DigestAlgorithm, Manifest, PublicKey, SecretKey,
    SignatureFile,
};

use crate::common::{fixture, fixture_with, reseal};

/// A valid manifest from the shared fixture, built once: SHA-256 (format version 1) or
/// BLAKE3 (version 2).
fn valid_manifest(blake3: bool) -> &'static [u8] {
    static SHA256: OnceLock<Vec<u8>> = OnceLock::new();
    static BLAKE3: OnceLock<Vec<u8>> = OnceLock::new();
    if blake3 {
        BLAKE3.get_or_init(|| fixture_with(DigestAlgorithm::Blake3).manifest.encode())
    } else {
        SHA256.get_or_init(|| fixture().manifest.encode())
    }
}

/// A valid signature file, public key file and secret key file, made once (signing is slow
/// in debug builds).
fn valid_text_files() -> &'static [String; 3] {
    static FILES: OnceLock<[String; 3]> = OnceLock::new();
    FILES.get_or_init(|| {
        let key = SecretKey::from_seed(&[3; 32]);
        let sig = snapshot_tool::format::sign_manifest(b"m", &key).to_file();
        [sig, key.public().to_file(), key.to_file()]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    SetU32 { at: usize, value: u32 },
    SetU64 { at: usize, value: u64 },
    Truncate { len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::from(u32::MAX)),
        Just(1 << 20),
        Just(64 << 20),
        Just(64 << 40),
        Just(1 << 63),
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let len = valid_manifest(false).len();
    prop_oneof![
        (0..len, 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (0..len, any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        // Field-aligned writes hit the header fields and entry fields precisely.
        (0..len / 4, interesting_u64()).prop_map(|(i, v)| Mutation::SetU32 {
            at: i * 4,
            value: v as u32
        }),
        (0..len / 8, interesting_u64())
            .prop_map(|(i, value)| Mutation::SetU64 { at: i * 8, value }),
        (0..len).prop_map(|len| Mutation::Truncate { len }),
        (0..len, proptest::collection::vec(any::<u8>(), 1..200))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (0..len, 1usize..300).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip { at, bit } => {
            if let Some(b) = bytes.get_mut(*at) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Set { at, value } => {
            if let Some(b) = bytes.get_mut(*at) {
                *b = *value;
            }
        }
        Mutation::SetU32 { at, value } => {
            if let Some(s) = bytes.get_mut(*at..*at + 4) {
                s.copy_from_slice(&value.to_le_bytes());
            }
        }
        Mutation::SetU64 { at, value } => {
            if let Some(s) = bytes.get_mut(*at..*at + 8) {
                s.copy_from_slice(&value.to_le_bytes());
            }
        }
        Mutation::Truncate { len } => bytes.truncate(*len),
        Mutation::Insert { at, bytes: new } => {
            let at = (*at).min(bytes.len());
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = (*at).min(bytes.len());
            let end = (at + len).min(bytes.len());
            bytes.drain(at..end);
        }
    }
}

fn check(bytes: &[u8]) {
    match Manifest::parse(bytes) {
        Ok(m) => assert_eq!(m.encode(), bytes, "accepted bytes must be canonical"),
        Err(e) => assert!(!e.code().is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_manifests_never_panic(
        mutations in proptest::collection::vec(mutation(), 1..4),
        seal in any::<bool>(),
        blake3 in any::<bool>(),
    ) {
        let mut bytes = valid_manifest(blake3).to_vec();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        // Resealing gets mutations past the checksum to the checks behind it.
        if seal && bytes.len() >= 32 {
            reseal(&mut bytes);
        }
        check(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&bytes);
        let _ = SignatureFile::parse(&bytes);
        let _ = PublicKey::parse(&bytes);
        let _ = SecretKey::parse(&bytes);
    }

    #[test]
    fn mutated_text_files_never_panic(
        at in 0usize..200,
        value in any::<u8>(),
        cut in 0usize..220,
    ) {
        for text in valid_text_files() {
            let mut bytes = text.clone().into_bytes();
            if let Some(b) = bytes.get_mut(at) {
                *b = value;
            }
            bytes.truncate(cut.max(1));
            let _ = SignatureFile::parse(&bytes);
            let _ = PublicKey::parse(&bytes);
            let _ = SecretKey::parse(&bytes);
        }
    }

    /// Frames whose digest an (attacker-written) entry matches: the C decompressor gets
    /// arbitrary bytes and must fail cleanly, or produce exactly raw_len bytes.
    #[test]
    fn arbitrary_frames_never_panic(
        mut frame in proptest::collection::vec(any::<u8>(), 1..512),
        zstd_magic in any::<bool>(),
        raw_len in 1u32..70_000,
    ) {
        if zstd_magic && frame.len() >= 4 {
            frame[..4].copy_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
        }
        let entry = ChunkEntry {
            image_offset: 0,
            data_offset: 0,
            raw_len,
            kind: ChunkKind::Stored {
                compressed_len: frame.len() as u32,
                raw_digest: Digest::ZERO,
                compressed_digest: Digest::sha256(&frame),
            },
        };
        let mut v = ChunkVerifier::with_algorithm(DigestAlgorithm::Sha256).unwrap();
        match v.verify(0, &entry, &frame) {
            Ok(raw) => prop_assert_eq!(raw.len(), raw_len as usize),
            Err(e) => prop_assert!(matches!(
                e.code(),
                "decompress_failed" | "raw_length_mismatch" | "chunk_digest_mismatch"
            )),
        }
    }
}
