//! Hostile snapshots: each damage is reported with its specific reason code, never a panic.

use std::fs::{self, OpenOptions};

use snapshot_tool::build::sign_dir;
use snapshot_tool::format::{
    ChunkEntry, ChunkError, ChunkKind, ChunkStream, ChunkVerifier, Digest, DigestAlgorithm,
    DigestKind, Geometry, MAX_MANIFEST_LEN, Manifest, PublicKey, SignatureFile, sign_manifest,
};
use snapshot_tool::verify::{VerifyError, verify_dir};

use crate::common::{
    copy_snapshot, fixture, fixture_with, key, other_key, put_u32, put_u64, reseal,
};

fn verify_code(dir: &std::path::Path) -> &'static str {
    let err = verify_dir(dir, &[key().public()], &mut |_| {}).unwrap_err();
    err.code()
}

fn flip_byte(path: &std::path::Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn flipped_byte_in_a_chunk() {
    let f = fixture();
    let entry = f.manifest.chunks()[5];
    flip_byte(&f.dir.join("data.zst"), entry.data_offset + 10);
    let err = verify_dir(&f.dir, &[key().public()], &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), "chunk_digest_mismatch");
    match err {
        VerifyError::BadChunks {
            count,
            total,
            first,
        } => {
            assert_eq!((count, total), (1, 8));
            assert!(matches!(
                first,
                ChunkError::ChunkDigestMismatch {
                    index: 5,
                    which: DigestKind::Compressed,
                    ..
                }
            ));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn every_bad_chunk_is_counted() {
    let f = fixture();
    for index in [0, 6] {
        let entry = f.manifest.chunks()[index];
        flip_byte(&f.dir.join("data.zst"), entry.data_offset + 100);
    }
    match verify_dir(&f.dir, &[key().public()], &mut |_| {}).unwrap_err() {
        VerifyError::BadChunks { count, first, .. } => {
            assert_eq!(count, 2);
            assert!(matches!(
                first,
                ChunkError::ChunkDigestMismatch { index: 0, .. }
            ));
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A frame whose compressed digest is right but whose content is not (a signer that hashed
/// the wrong data): the raw digest catches it.
#[test]
fn raw_digest_mismatch_is_caught_after_decompression() {
    let raw = vec![5u8; 4096];
    let frame = zstd::bulk::compress(&raw, 3).unwrap();
    let entry = ChunkEntry {
        image_offset: 0,
        data_offset: 0,
        raw_len: 4096,
        kind: ChunkKind::Stored {
            compressed_len: frame.len() as u32,
            raw_digest: Digest::sha256(b"something else"),
            compressed_digest: Digest::sha256(&frame),
        },
    };
    let mut v = ChunkVerifier::with_algorithm(DigestAlgorithm::Sha256).unwrap();
    let err = v.verify(0, &entry, &frame).unwrap_err();
    assert_eq!(err.code(), "chunk_digest_mismatch");
    assert!(matches!(
        err,
        ChunkError::ChunkDigestMismatch {
            which: DigestKind::Raw,
            ..
        }
    ));

    // A frame that decompresses to more or fewer bytes than the entry's raw length.
    let mut short = entry;
    short.raw_len = 4095;
    short.kind = ChunkKind::Stored {
        compressed_len: frame.len() as u32,
        raw_digest: Digest::sha256(&raw),
        compressed_digest: Digest::sha256(&frame),
    };
    assert_eq!(
        v.verify(0, &short, &frame).unwrap_err().code(),
        "decompress_failed"
    );
    let mut long = short;
    long.raw_len = 8192;
    assert_eq!(
        v.verify(0, &long, &frame).unwrap_err().code(),
        "raw_length_mismatch"
    );
    // A frame of the wrong length handed over by the caller.
    assert_eq!(
        v.verify(0, &entry, &frame[1..]).unwrap_err().code(),
        "chunk_length_mismatch"
    );
    // Garbage whose digest the (forged) entry matches: zstd rejects it, no panic.
    let garbage = vec![0x28u8; 64];
    let mut forged = entry;
    forged.kind = ChunkKind::Stored {
        compressed_len: 64,
        raw_digest: Digest::sha256(&raw),
        compressed_digest: Digest::sha256(&garbage),
    };
    assert_eq!(
        v.verify(0, &forged, &garbage).unwrap_err().code(),
        "decompress_failed"
    );
}

#[test]
fn wrong_signature_and_wrong_key() {
    let f = fixture();
    // Signed by another key.
    let err = verify_dir(&f.dir, &[other_key().public()], &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), "bad_signature");
    // No key at all.
    let err = verify_dir(&f.dir, &[], &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), "bad_signature");

    // A signature with the right key id but flipped bits.
    let sig_path = f.dir.join("manifest.sig");
    let mut sig = SignatureFile::parse(&fs::read(&sig_path).unwrap()).unwrap();
    sig.signature[3] ^= 1;
    fs::write(&sig_path, sig.to_file()).unwrap();
    assert_eq!(verify_code(&f.dir), "bad_signature");

    // No signature file.
    fs::remove_file(&sig_path).unwrap();
    assert_eq!(verify_code(&f.dir), "unsigned");
    // A garbled signature file.
    fs::write(&sig_path, "rackhand-snapshot-sig v1 zz\n").unwrap();
    assert_eq!(verify_code(&f.dir), "bad_signature_file");
}

#[test]
fn manifest_edit_breaks_the_signature_before_parsing() {
    let f = fixture();
    let path = f.dir.join("manifest.bin");
    let mut bytes = fs::read(&path).unwrap();
    // Even a resealed, structurally valid edit (a digest of chunk 0) fails: the signature is
    // checked over the exact bytes before anything is parsed.
    bytes[88 + 32] ^= 1;
    reseal(&mut bytes);
    Manifest::parse(&bytes).unwrap();
    fs::write(&path, &bytes).unwrap();
    assert_eq!(verify_code(&f.dir), "bad_signature");
    // Garbage instead of a manifest: still the signature that fails first.
    fs::write(&path, b"not a manifest").unwrap();
    assert_eq!(verify_code(&f.dir), "bad_signature");
}

#[test]
fn truncated_and_extended_data_file() {
    let f = fixture();
    let data = f.dir.join("data.zst");
    let len = fs::metadata(&data).unwrap().len();
    let last_stored = f.manifest.chunks()[7];
    let file = OpenOptions::new().write(true).open(&data).unwrap();
    file.set_len(len - 10).unwrap();
    drop(file);
    let err = verify_dir(&f.dir, &[key().public()], &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), "data_truncated");
    assert!(matches!(
        err,
        VerifyError::DataTruncated { first_chunk: 7, .. }
    ));
    assert!(last_stored.data_offset < len - 10);

    // The streaming path (the installer's) says the same about a short body.
    let short = fs::read(&data).unwrap();
    let mut stream = ChunkStream::new(&f.manifest, &short[..]).unwrap();
    let mut codes = Vec::new();
    while let Some(r) = stream.next_chunk() {
        codes.push(r.err().map(|e| e.code()));
    }
    assert_eq!(codes.last(), Some(&Some("data_truncated")));
    assert_eq!(codes.len(), 8);

    let file = OpenOptions::new().write(true).open(&data).unwrap();
    file.set_len(len + 1).unwrap();
    drop(file);
    assert_eq!(verify_code(&f.dir), "data_length_mismatch");
}

/// A correctly signed manifest that claims a larger image (more chunks) than data.zst holds.
#[test]
fn signed_manifest_claiming_more_than_the_file_holds() {
    let f = fixture();
    let m = &f.manifest;
    let g = m.geometry();
    let bigger =
        Geometry::new(g.image_size() + (2 << 20), g.sector_size(), g.chunk_size()).unwrap();
    let mut chunks = m.chunks().to_vec();
    // The old last chunk becomes full-size, then two more stored chunks follow.
    let mut offset = 0;
    for (index, entry) in (0u64..).zip(chunks.iter_mut()) {
        let (_, raw_len) = bigger.chunk_span(index).unwrap();
        entry.raw_len = raw_len;
        entry.data_offset = offset;
        offset += u64::from(entry.compressed_len());
    }
    for index in chunks.len() as u64..bigger.chunk_count() {
        let (image_offset, raw_len) = bigger.chunk_span(index).unwrap();
        chunks.push(ChunkEntry {
            image_offset,
            data_offset: offset,
            raw_len,
            kind: ChunkKind::Stored {
                compressed_len: 1000,
                raw_digest: Digest([1; 32]),
                compressed_digest: Digest([2; 32]),
            },
        });
        offset += 1000;
    }
    let forged =
        Manifest::from_parts(bigger, m.digest_algorithm(), chunks, m.image_digest()).unwrap();
    let bytes = forged.encode();
    fs::write(f.dir.join("manifest.bin"), &bytes).unwrap();
    fs::write(
        f.dir.join("manifest.sig"),
        sign_manifest(&bytes, &key()).to_file(),
    )
    .unwrap();
    let err = verify_dir(&f.dir, &[key().public()], &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), "data_truncated");
}

#[test]
fn sign_refuses_a_damaged_snapshot() {
    let f = fixture();
    let copy = f._tmp.path().join("copy");
    copy_snapshot(&f.dir, &copy);
    // Re-signing an intact snapshot with another key works and changes who verifies it.
    sign_dir(&copy, &other_key(), &mut |_| {}).unwrap();
    assert_eq!(verify_code(&copy), "bad_signature");
    verify_dir(&copy, &[other_key().public()], &mut |_| {}).unwrap();

    let entry = f.manifest.chunks()[0];
    flip_byte(&copy.join("data.zst"), entry.data_offset);
    let before = fs::read(copy.join("manifest.sig")).unwrap();
    let err = sign_dir(&copy, &key(), &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), "chunk_digest_mismatch");
    assert_eq!(fs::read(copy.join("manifest.sig")).unwrap(), before);
}

/// Field edits on a valid manifest, resealed so the checksum passes and the specific check
/// behind it is reached.
#[test]
fn manifest_field_edits_have_specific_codes() {
    let f = fixture();
    let good = f.manifest.encode();
    let edited = |edit: &dyn Fn(&mut Vec<u8>), seal: bool| -> &'static str {
        let mut b = good.clone();
        edit(&mut b);
        if seal {
            reseal(&mut b);
        }
        Manifest::parse(&b).unwrap_err().code()
    };
    let entry = |i: usize| 88 + 96 * i;
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit, bool)> = vec![
        ("bad_magic", Box::new(|b| b[1] = b'X'), false),
        ("unsupported_version", Box::new(|b| put_u32(b, 8, 3)), false),
        ("unsupported_version", Box::new(|b| put_u32(b, 8, 0)), false),
        // Version 2 exists for BLAKE3: a SHA-256 table relabelled version 2 is not canonical.
        (
            "digest_version_mismatch",
            Box::new(|b| put_u32(b, 8, 2)),
            true,
        ),
        (
            "unknown_digest",
            Box::new(|b| {
                put_u32(b, 8, 2);
                put_u32(b, 52, 7);
            }),
            true,
        ),
        ("checksum_mismatch", Box::new(|b| b[20] ^= 1), false),
        (
            "bad_header_length",
            Box::new(|b| put_u32(b, 12, 4096)),
            true,
        ),
        ("bad_entry_length", Box::new(|b| put_u32(b, 48, 64)), true),
        // Version 1 has a reserved zero where version 2 names the algorithm.
        ("reserved_nonzero", Box::new(|b| put_u32(b, 52, 1)), true),
        ("reserved_nonzero", Box::new(|b| put_u32(b, 52, 7)), true),
        ("bad_sector_size", Box::new(|b| put_u32(b, 24, 3)), true),
        ("bad_chunk_size", Box::new(|b| put_u32(b, 28, 0)), true),
        (
            "bad_chunk_size",
            Box::new(|b| put_u32(b, 28, u32::MAX)),
            true,
        ),
        ("bad_image_size", Box::new(|b| put_u64(b, 16, 0)), true),
        (
            "bad_image_size",
            Box::new(|b| put_u64(b, 16, u64::MAX)),
            true,
        ),
        (
            "image_too_large",
            Box::new(|b| put_u64(b, 16, 1 << 63)),
            true,
        ),
        (
            "too_many_chunks",
            Box::new(|b| put_u64(b, 32, u64::MAX)),
            true,
        ),
        (
            "too_many_chunks",
            Box::new(|b| put_u64(b, 16, 32 << 40)),
            true,
        ),
        // More chunks than the image implies.
        (
            "chunk_count_mismatch",
            Box::new(|b| put_u64(b, 32, 9)),
            true,
        ),
        // A larger image (9 chunks) than the table (8 entries) describes.
        (
            "chunk_count_mismatch",
            Box::new(|b| put_u64(b, 16, 9 << 20)),
            true,
        ),
        (
            "size_mismatch",
            Box::new(|b| {
                put_u64(b, 16, 9 << 20);
                put_u64(b, 32, 9);
            }),
            true,
        ),
        (
            "size_mismatch",
            Box::new(|b| b.extend_from_slice(&[0; 96])),
            true,
        ),
        // A smaller declared data file than the frames need.
        (
            "chunk_out_of_bounds",
            Box::new(|b| put_u64(b, 40, 1000)),
            true,
        ),
        (
            "data_length_mismatch",
            Box::new(|b| put_u64(b, 40, u64::MAX)),
            true,
        ),
        (
            "chunk_table_inconsistent",
            Box::new(move |b| put_u64(b, entry(1), 4096)),
            true,
        ),
        (
            "chunk_table_inconsistent",
            Box::new(move |b| put_u32(b, entry(7) + 20, 512)),
            true,
        ),
        (
            "chunk_table_inconsistent",
            Box::new(move |b| put_u32(b, entry(0) + 24, 4)),
            true,
        ),
        (
            "chunk_table_inconsistent",
            Box::new(move |b| put_u32(b, entry(0) + 28, 1)),
            true,
        ),
        // A zero chunk (2) carrying a digest.
        (
            "chunk_table_inconsistent",
            Box::new(move |b| b[entry(2) + 40] = 1),
            true,
        ),
        // Overlap: chunk 3 starts inside chunk 1's frame.
        (
            "chunk_overlap",
            Box::new(move |b| {
                let off = u64::from_le_bytes(b[entry(3) + 8..entry(3) + 16].try_into().unwrap());
                put_u64(b, entry(3) + 8, off - 1);
            }),
            true,
        ),
        (
            "chunk_gap",
            Box::new(move |b| {
                let off = u64::from_le_bytes(b[entry(3) + 8..entry(3) + 16].try_into().unwrap());
                put_u64(b, entry(3) + 8, off + 1);
            }),
            true,
        ),
        (
            "bad_compressed_length",
            Box::new(move |b| put_u32(b, entry(0) + 16, 0)),
            true,
        ),
        (
            "bad_compressed_length",
            Box::new(move |b| put_u32(b, entry(0) + 16, u32::MAX)),
            true,
        ),
    ];
    for (i, (want, edit, seal)) in cases.iter().enumerate() {
        assert_eq!(edited(edit.as_ref(), *seal), *want, "case {i}");
    }
}

#[test]
fn truncated_oversized_and_empty_manifests() {
    let f = fixture();
    let good = f.manifest.encode();
    assert_eq!(
        Manifest::parse(&[]).unwrap_err().code(),
        "manifest_truncated"
    );
    assert_eq!(
        Manifest::parse(&good[..7]).unwrap_err().code(),
        "manifest_truncated"
    );
    assert_eq!(
        Manifest::parse(&good[..100]).unwrap_err().code(),
        "manifest_truncated"
    );
    // Cut at an entry boundary: the last 32 bytes are no longer the checksum.
    assert_eq!(
        Manifest::parse(&good[..88 + 96 * 3 + 32])
            .unwrap_err()
            .code(),
        "checksum_mismatch"
    );
    let mut cut = good[..88 + 96 * 3 + 32].to_vec();
    reseal(&mut cut);
    assert_eq!(Manifest::parse(&cut).unwrap_err().code(), "size_mismatch");
    let mut huge = vec![0u8; MAX_MANIFEST_LEN + 1];
    huge[..12].copy_from_slice(&good[..12]);
    huge[12..88].copy_from_slice(&good[12..88]);
    assert_eq!(
        Manifest::parse(&huge).unwrap_err().code(),
        "manifest_too_large"
    );
}

#[test]
fn key_file_damage() {
    let public = key().public().to_file();
    let mut bad = public.clone().into_bytes();
    bad[40] = b'g';
    assert_eq!(PublicKey::parse(&bad).unwrap_err().code(), "bad_key_file");
    // A key whose hex is fine but which is not a curve point is refused too (or, if it
    // happens to decode, simply does not verify anything).
    let not_point = format!("rackhand-snapshot-pubkey v1 {}\n", "ff".repeat(32));
    if let Ok(k) = PublicKey::parse(not_point.as_bytes()) {
        let sig = sign_manifest(b"x", &key());
        assert!(snapshot_tool::format::verify_signature(b"x", &sig, &k).is_err());
    }
}

/// A BLAKE3 snapshot (format version 2) is checked exactly like a SHA-256 one: a flipped
/// byte in a frame is a compressed-digest mismatch, and the signature still binds the
/// manifest (algorithm field included).
#[test]
fn blake3_snapshot_tampering() {
    let f = fixture_with(DigestAlgorithm::Blake3);
    assert_eq!(f.manifest.format_version(), 2);
    let entry = f.manifest.chunks()[6];
    flip_byte(&f.dir.join("data.zst"), entry.data_offset + 10);
    match verify_dir(&f.dir, &[key().public()], &mut |_| {}).unwrap_err() {
        VerifyError::BadChunks { count, first, .. } => {
            assert_eq!(count, 1);
            assert!(matches!(
                first,
                ChunkError::ChunkDigestMismatch {
                    index: 6,
                    which: DigestKind::Compressed,
                    ..
                }
            ));
        }
        other => panic!("unexpected {other:?}"),
    }

    // Relabelling the manifest as SHA-256 (version 1, id 0, resealed) breaks the signature;
    // without the signature check, every stored chunk then fails its digest.
    let f = fixture_with(DigestAlgorithm::Blake3);
    let mut bytes = f.manifest.encode();
    put_u32(&mut bytes, 8, 1);
    put_u32(&mut bytes, 52, 0);
    reseal(&mut bytes);
    fs::write(f.dir.join("manifest.bin"), &bytes).unwrap();
    assert_eq!(verify_code(&f.dir), "bad_signature");
    let relabelled = Manifest::parse(&bytes).unwrap();
    assert_eq!(relabelled.digest_algorithm(), DigestAlgorithm::Sha256);
    let data = fs::File::open(f.dir.join("data.zst")).unwrap();
    let mut stream = ChunkStream::new(&relabelled, data).unwrap();
    let mut failed = 0;
    while let Some(chunk) = stream.next_chunk() {
        match chunk {
            Ok(c) => assert!(c.zero, "chunk {} passed under the wrong algorithm", c.index),
            Err(e) => {
                assert_eq!(e.code(), "chunk_digest_mismatch");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, relabelled.stored_chunks());
}

/// Both algorithms against published test vectors, so a swapped or misconfigured hash
/// cannot pass as the right one.
#[test]
fn digest_algorithms_match_known_vectors() {
    assert_eq!(
        DigestAlgorithm::Sha256.digest(b"abc").to_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        DigestAlgorithm::Blake3.digest(b"").to_hex(),
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    );
    for alg in DigestAlgorithm::ALL {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = alg.hasher();
        for piece in data.chunks(7_919) {
            h.update(piece);
        }
        assert_eq!(h.finalize(), alg.digest(&data), "{alg}");
        assert_eq!(alg.name().parse::<DigestAlgorithm>().unwrap(), alg);
        assert_eq!(DigestAlgorithm::from_id(alg.id()), Some(alg));
    }
    assert_eq!(
        "md5".parse::<DigestAlgorithm>().unwrap_err().code(),
        "unknown_digest_name"
    );
}
