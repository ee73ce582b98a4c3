//! Signed snapshots written to a file standing in for a disk, through the public API.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use installer::{ImageWriter, PartitionReread, ResumePoint, WriteOptions, write_image};

use crate::common::{MIB, build, data, disk_file, image, load, sha256};

/// Opens `data.zst` at the resume point, like an HTTP `Range: bytes=N-` request would.
fn open_at(path: &std::path::Path, at: ResumePoint) -> std::io::Result<File> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(at.data_offset))?;
    Ok(f)
}

#[test]
fn a_signed_snapshot_lands_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(9 * MIB + 4096);
    let snap = build(tmp.path(), "os", &img);
    let manifest = load(&snap);
    let disk = disk_file(tmp.path(), 12 * MIB, 0xEE);
    let writer = ImageWriter::to_file(&disk, &manifest, WriteOptions::default()).unwrap();
    let data_path = snap.join("data.zst");
    let mut last = None;
    let report = write_image(writer, 3, |at| open_at(&data_path, at), &mut |p| {
        last = Some(*p)
    })
    .unwrap();
    let written = std::fs::read(&disk).unwrap();
    assert_eq!(written.len(), 12 * MIB, "the file never grows");
    assert_eq!(sha256(&written[..img.len()]), sha256(&img));
    assert_eq!(report.image_digest.to_hex(), sha256(&img));
    assert_eq!(report.chunks, 10);
    assert_eq!(report.attempts, 1);
    assert_eq!(report.partition_table, PartitionReread::NotABlockDevice);
    assert!(report.readback.contains(&0) && report.readback.contains(&9));
    assert_eq!(last.unwrap().chunks_done, 10);
    // The old backup-GPT area at the end was cleared; the gap between was left alone.
    assert!(written[11 * MIB..].iter().all(|&b| b == 0));
    assert!(written[img.len()..11 * MIB].iter().all(|&b| b == 0xEE));
}

#[test]
fn a_tampered_chunk_is_refused_and_the_first_mib_stays_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(5 * MIB);
    let snap = build(tmp.path(), "os", &img);
    let manifest = load(&snap);
    // Flip one byte inside chunk 3's frame on the server side.
    let mut bytes = data(&snap);
    let at = manifest.resume_offset(3).unwrap() as usize + 7;
    bytes[at] ^= 1;
    let disk = disk_file(tmp.path(), 6 * MIB, 0xEE);
    let writer = ImageWriter::to_file(&disk, &manifest, WriteOptions::default()).unwrap();
    let err = write_image(
        writer,
        5,
        |at: ResumePoint| Ok(&bytes[at.data_offset as usize..]),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(err.code(), "chunk_digest_mismatch");
    let written = std::fs::read(&disk).unwrap();
    assert!(written[..MIB].iter().all(|&b| b == 0), "first MiB not zero");
}

#[test]
fn a_truncated_stream_resumes_and_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(6 * MIB);
    let snap = build(tmp.path(), "os", &img);
    let manifest = load(&snap);
    let disk = disk_file(tmp.path(), 6 * MIB, 0x11);
    let data_path = snap.join("data.zst");
    let cut = manifest.resume_offset(4).unwrap() + 123;

    // First attempt: the connection drops inside chunk 4. Check the state it leaves.
    let mut writer = ImageWriter::to_file(&disk, &manifest, WriteOptions::default()).unwrap();
    let first = File::open(&data_path).unwrap().take(cut);
    let err = writer.feed(first, &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), "data_truncated");
    assert!(err.is_resumable());
    let on_disk = std::fs::read(&disk).unwrap();
    assert!(
        on_disk[..MIB].iter().all(|&b| b == 0),
        "bootable half-image"
    );
    let at = writer.resume_point();
    assert_eq!(at.chunk, 4);

    // Second attempt from the resume point.
    let report = write_image(writer, 1, |at| open_at(&data_path, at), &mut |_| {}).unwrap();
    assert_eq!(report.attempts, 2);
    assert_eq!(sha256(&std::fs::read(&disk).unwrap()), sha256(&img));
}

#[test]
fn a_disk_smaller_than_the_image_is_refused_before_any_write() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(4 * MIB);
    let snap = build(tmp.path(), "os", &img);
    let manifest = load(&snap);
    let disk = disk_file(tmp.path(), 4 * MIB - 512, 0xEE);
    let err = ImageWriter::to_file(&disk, &manifest, WriteOptions::default()).unwrap_err();
    assert_eq!(err.code(), "device_too_small");
    let untouched = std::fs::read(&disk).unwrap();
    assert!(untouched.iter().all(|&b| b == 0xEE));
}

#[test]
fn a_missing_target_file_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(MIB);
    let snap = build(tmp.path(), "os", &img);
    let manifest = load(&snap);
    let err = ImageWriter::to_file(&tmp.path().join("nope"), &manifest, WriteOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), "io_error");
}
