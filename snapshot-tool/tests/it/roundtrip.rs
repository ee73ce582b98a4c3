//! Build → verify → decompress every chunk → reassemble → compare.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};

use snapshot_tool::build::build_stream;
use snapshot_tool::format::{
    ChunkKind, ChunkStream, ChunkVerifier, DigestAlgorithm, ImageVerifier, Manifest, SignatureFile,
    verify_signature,
};
use snapshot_tool::verify::verify_dir;

use crate::common::{CHUNK, fixture_with, key, options, synthetic_image};

#[test]
fn build_verify_reassemble() {
    for alg in DigestAlgorithm::ALL {
        build_verify_reassemble_with(alg);
    }
}

fn build_verify_reassemble_with(alg: DigestAlgorithm) {
    let f = fixture_with(alg);
    let m = &f.manifest;
    assert_eq!(m.digest_algorithm(), alg);
    assert_eq!(m.format_version(), alg.format_version());

    // The table reflects the image: 8 chunks, 7 full and one of 1536 bytes, chunks 2 and 4
    // all zero and not stored, the rest stored; the half-zero chunk 3 is stored.
    assert_eq!(m.image_size(), f.image.len() as u64);
    assert_eq!(m.chunks().len(), 8);
    let zero: Vec<u64> = (0u64..)
        .zip(m.chunks())
        .filter(|(_, c)| c.is_zero())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(zero, [2, 4]);
    assert_eq!(m.chunks()[7].raw_len, 1536);
    // Random chunks barely compress, text compresses a lot.
    assert!(m.chunks()[0].compressed_len() > CHUNK * 99 / 100);
    assert!(m.chunks()[1].compressed_len() < CHUNK / 50);
    assert_eq!(m.image_digest(), alg.digest(&f.image));

    let public = key().public();
    let mut seen = Vec::new();
    let report = verify_dir(&f.dir, std::slice::from_ref(&public), &mut |done| {
        seen.push(done)
    })
    .unwrap();
    assert_eq!(report.key_id, public.id());
    assert_eq!(report.chunk_count, 8);
    assert_eq!(report.zero_chunks, 2);
    assert_eq!(report.digest_algorithm, alg);
    assert_eq!(report.image_digest, alg.digest(&f.image));
    assert_eq!(seen.last(), Some(&(f.image.len() as u64)));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));

    // The signature covers the exact manifest bytes on disk.
    let manifest_bytes = std::fs::read(f.dir.join("manifest.bin")).unwrap();
    let sig = SignatureFile::parse(&std::fs::read(f.dir.join("manifest.sig")).unwrap()).unwrap();
    verify_signature(&manifest_bytes, &sig, &public).unwrap();
    assert_eq!(Manifest::parse(&manifest_bytes).unwrap(), *m);

    // Decompress every chunk through the stream and reassemble the image.
    let data = File::open(f.dir.join("data.zst")).unwrap();
    let mut stream = ChunkStream::new(m, data).unwrap();
    let mut rebuilt = vec![0xAAu8; f.image.len()];
    let mut image_check = ImageVerifier::new(m);
    let mut count = 0;
    while let Some(chunk) = stream.next_chunk() {
        let chunk = chunk.unwrap();
        let at = chunk.image_offset as usize;
        rebuilt[at..at + chunk.raw.len()].copy_from_slice(chunk.raw);
        image_check.update(chunk.index, chunk.raw).unwrap();
        count += 1;
    }
    assert_eq!(count, 8);
    stream.expect_end().unwrap();
    assert_eq!(image_check.finish().unwrap(), alg.digest(&f.image));
    assert!(rebuilt == f.image);

    // Every stored entry carries the algorithm's digests of its raw bytes and of its frame.
    let frames = std::fs::read(f.dir.join("data.zst")).unwrap();
    for c in m.chunks() {
        if let ChunkKind::Stored {
            compressed_len,
            raw_digest,
            compressed_digest,
        } = c.kind
        {
            let at = c.image_offset as usize;
            let frame = &frames[c.data_offset as usize..][..compressed_len as usize];
            assert_eq!(
                raw_digest,
                alg.digest(&f.image[at..at + c.raw_len as usize])
            );
            assert_eq!(compressed_digest, alg.digest(frame));
        }
    }
}

#[test]
fn random_access_and_resume() {
    for alg in DigestAlgorithm::ALL {
        random_access_and_resume_with(alg);
    }
}

fn random_access_and_resume_with(alg: DigestAlgorithm) {
    let f = fixture_with(alg);
    let m = &f.manifest;
    let mut data = File::open(f.dir.join("data.zst")).unwrap();

    // Any single chunk can be fetched by its (offset, length) range and verified alone,
    // straight into a caller's buffer too.
    let mut verifier = ChunkVerifier::new(m).unwrap();
    let mut out = Vec::new();
    for (index, entry) in (0u64..).zip(m.chunks()) {
        let mut frame = vec![0u8; entry.compressed_len() as usize];
        data.seek(SeekFrom::Start(entry.data_offset)).unwrap();
        data.read_exact(&mut frame).unwrap();
        let raw = verifier.verify(index, entry, &frame).unwrap();
        let at = entry.image_offset as usize;
        let expected = &f.image[at..at + entry.raw_len as usize];
        assert!(raw == expected, "chunk {index}");
        out.clear();
        out.resize(entry.raw_len as usize, 0xAA);
        verifier
            .verify_into(index, entry, &frame, &mut out)
            .unwrap();
        assert!(out == expected, "chunk {index} into a buffer");
        let code = verifier
            .verify_into(index, entry, &frame, &mut out[1..])
            .unwrap_err()
            .code();
        assert_eq!(code, "buffer_length");
    }

    // Resuming at chunk 5 from its data offset (what a Range request returns) yields 5..8.
    let offset = m.resume_offset(5).unwrap();
    data.seek(SeekFrom::Start(offset)).unwrap();
    let mut stream = ChunkStream::starting_at(m, &mut data, 5).unwrap();
    let mut indexes = Vec::new();
    while let Some(chunk) = stream.next_chunk() {
        let chunk = chunk.unwrap();
        let at = chunk.image_offset as usize;
        assert!(chunk.raw == &f.image[at..at + chunk.raw.len()]);
        indexes.push(chunk.index);
    }
    assert_eq!(indexes, [5, 6, 7]);
    assert_eq!(
        ChunkStream::starting_at(m, std::io::empty(), 9)
            .unwrap_err()
            .code(),
        "no_such_chunk"
    );
}

#[test]
fn build_is_deterministic_across_thread_counts() {
    let image = synthetic_image();
    let mut one = Vec::new();
    let m1 = build_stream(
        &image[..],
        image.len() as u64,
        &options(1),
        &mut one,
        &mut |_| {},
    )
    .unwrap();
    let mut three = Vec::new();
    let m3 = build_stream(
        &image[..],
        image.len() as u64,
        &options(3),
        &mut three,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(m1.encode(), m3.encode());
    assert!(one == three);
    assert_eq!(one.len() as u64, m1.data_len());
}

#[test]
fn all_zero_image_has_empty_data() {
    let image = vec![0u8; 3 << 20];
    let mut data = Vec::new();
    let m = build_stream(
        &image[..],
        image.len() as u64,
        &options(2),
        &mut data,
        &mut |_| {},
    )
    .unwrap();
    assert!(data.is_empty());
    assert_eq!(m.data_len(), 0);
    assert!(m.chunks().iter().all(|c| c.kind == ChunkKind::Zero));
    let mut stream = ChunkStream::new(&m, &data[..]).unwrap();
    let mut total = 0;
    while let Some(chunk) = stream.next_chunk() {
        let chunk = chunk.unwrap();
        assert!(chunk.zero && chunk.raw.iter().all(|&b| b == 0));
        total += chunk.raw.len();
    }
    assert_eq!(total, image.len());
}
