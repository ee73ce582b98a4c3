//! The binary end to end: keygen → build → inspect → verify → tamper → verify fails with the
//! reason code; qcow2 input through qemu-img; refusals.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::synthetic_image;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snapshot-tool"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should fail with status 1"
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?}: nothing on stdout on failure"
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Borrows owned arguments for [`ok`] and [`fails`].
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_build_verify_tamper() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("release.key");
    let image = tmp.path().join("disk.raw");
    let out = tmp.path().join("snapshots");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(&image, synthetic_image()).unwrap();

    let stdout = ok(&["keygen", "--out", s(&key)]);
    assert!(stdout.contains("key id"));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let public = tmp.path().join("release.key.pub");
    assert!(
        std::fs::read_to_string(&public)
            .unwrap()
            .starts_with("rackhand-snapshot-pubkey v1 ")
    );
    // keygen never overwrites.
    let err = fails(&["keygen", "--out", s(&key)]);
    assert!(err.contains("error[key_exists]"), "{err}");

    // `build` of the image into `out` with 1 MiB chunks, as NAME, with more arguments.
    let build = |name: &str, more: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["build", "--image", s(&image), "--out", s(&out)]
            .into_iter()
            .chain(["--name", name, "--chunk-size", "1M"])
            .map(str::to_owned)
            .collect();
        args.extend(more.iter().map(|a| (*a).to_owned()));
        args
    };

    let stdout = ok(&strs(&build("disk", &["--key", s(&key)])));
    let snap = out.join("disk");
    assert!(
        stdout.contains(&format!("snapshot  {}", snap.display())),
        "{stdout}"
    );
    assert!(stdout.contains("8 (2 zero"), "{stdout}");
    // No leftovers from the temporary build directory.
    let entries: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(entries.len(), 1);
    // A second build of the same name is refused.
    let err = fails(&strs(&build("disk", &[])));
    assert!(err.contains("error[already_exists]"), "{err}");

    let text = ok(&["inspect", s(&snap)]);
    assert!(
        text.contains("chunks         8 (6 stored, 2 zero)"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", "--json", s(&snap)])).unwrap();
    let image_sha = snapshot_tool::format::Digest::sha256(&synthetic_image()).to_hex();
    assert_eq!(json["image_digest"], image_sha.as_str());
    assert_eq!(json["chunks"].as_array().unwrap().len(), 8);

    let report = ok(&["verify", "--pubkey", s(&public), s(&snap)]);
    assert!(report.contains(&format!("sha256 {image_sha}")), "{report}");
    assert!(report.contains("verified"), "{report}");
    // A directory of trusted keys works too.
    let keys = tmp.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(&public, keys.join("release.pub")).unwrap();
    ok(&["verify", "--pubkey", s(&keys), s(&snap)]);

    // The same image with BLAKE3 digests: format version 2, same chunks, verifies.
    ok(&strs(&build(
        "disk-b3",
        &["--digest", "blake3", "--key", s(&key)],
    )));
    let snap_b3 = out.join("disk-b3");
    let json_b3: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", "--json", s(&snap_b3)])).unwrap();
    assert_eq!(json_b3["format_version"], 2);
    assert_eq!(json_b3["digest_algorithm"], "blake3");
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["digest_algorithm"], "sha256");
    let image_b3 = snapshot_tool::format::DigestAlgorithm::Blake3
        .digest(&synthetic_image())
        .to_hex();
    assert_eq!(json_b3["image_digest"], image_b3.as_str());
    assert_eq!(json_b3["stored_chunks"], json["stored_chunks"]);
    let report = ok(&["verify", "--pubkey", s(&public), s(&snap_b3)]);
    assert!(report.contains(&format!("blake3 {image_b3}")), "{report}");
    let text = ok(&["inspect", s(&snap_b3)]);
    assert!(text.contains("rackhand snapshot v2"), "{text}");
    std::fs::remove_dir_all(&snap_b3).unwrap();

    // Tamper with one byte of a stored chunk.
    let frame_offset = json["chunks"][5]["data_offset"].as_u64().unwrap() as usize;
    let data = snap.join("data.zst");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[frame_offset + 7] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let err = fails(&["verify", "--pubkey", s(&public), s(&snap)]);
    assert!(err.contains("error[chunk_digest_mismatch]"), "{err}");
    assert!(err.contains("chunk 5"), "{err}");
    // sign refuses to vouch for it.
    let err = fails(&["sign", "--key", s(&key), s(&snap)]);
    assert!(err.contains("error[chunk_digest_mismatch]"), "{err}");

    // Undo, then a wrong key.
    bytes[frame_offset + 7] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let other = tmp.path().join("other.key");
    ok(&["keygen", "--out", s(&other)]);
    let other_pub = tmp.path().join("other.key.pub");
    let err = fails(&["verify", "--pubkey", s(&other_pub), s(&snap)]);
    assert!(err.contains("error[bad_signature]"), "{err}");
    // Re-signed with the other key, it verifies with that key only.
    ok(&["sign", "--key", s(&other), s(&snap)]);
    ok(&["verify", "--pubkey", s(&other_pub), s(&snap)]);
    let err = fails(&["verify", "--pubkey", s(&public), s(&snap)]);
    assert!(err.contains("error[bad_signature]"), "{err}");

    // Truncated data file.
    std::fs::write(&data, &bytes[..bytes.len() - 1]).unwrap();
    let err = fails(&["verify", "--pubkey", s(&other_pub), s(&snap)]);
    assert!(err.contains("error[data_truncated]"), "{err}");
}

#[test]
fn qcow2_input() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("disk.raw");
    let qcow2 = tmp.path().join("disk.qcow2");
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let image = synthetic_image();
    std::fs::write(&raw, &image).unwrap();
    let status = Command::new("qemu-img")
        .args([
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            s(&raw),
            s(&qcow2),
        ])
        .status()
        .expect("qemu-img (Debian qemu-utils) is needed for this test");
    assert!(status.success());

    // A qcow2 file passed as raw is refused rather than snapshotted as garbage.
    let err = fails(&[
        "build",
        "--image",
        s(&qcow2),
        "--out",
        s(&out),
        "--name",
        "q",
    ]);
    assert!(err.contains("error[image_is_qcow2]"), "{err}");
    let err = fails(&[
        "build",
        "--image",
        s(&raw),
        "--from-qcow2",
        "--out",
        s(&out),
        "--name",
        "q",
    ]);
    assert!(err.contains("error[not_qcow2]"), "{err}");

    ok(&[
        "build",
        "--image",
        s(&qcow2),
        "--from-qcow2",
        "--out",
        s(&out),
        "--name",
        "q",
        "--chunk-size",
        "2M",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", "--json", s(&out.join("q"))])).unwrap();
    let sha = snapshot_tool::format::Digest::sha256(&image).to_hex();
    assert_eq!(json["image_digest"], sha.as_str());
    assert_eq!(json["image_size"], image.len() as u64);
    assert_eq!(json["signature"]["status"], "missing");
    // The temporary raw file is gone.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["q"]);
}

#[test]
fn bad_arguments_have_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("small.raw");
    std::fs::write(&image, vec![1u8; 1000]).unwrap();
    let out = s(tmp.path());
    let err = fails(&["build", "--image", s(&image), "--out", out, "--name", "x"]);
    assert!(err.contains("error[bad_image_size]"), "{err}");
    let err = fails(&[
        "build",
        "--image",
        s(&image),
        "--out",
        out,
        "--name",
        "../x",
    ]);
    assert!(err.contains("error[bad_name]"), "{err}");
    let err = fails(&["inspect", out]);
    assert!(err.contains("error[io_error]"), "{err}");
    // clap rejects a malformed size or digest before anything runs (usage errors exit 2).
    for (flag, value, says) in [
        ("--chunk-size", "lots", "lots"),
        ("--digest", "md5", "expected sha256 or blake3"),
    ] {
        let bad = run(&[
            "build",
            "--image",
            s(&image),
            "--out",
            out,
            "--name",
            "x",
            flag,
            value,
        ]);
        assert_eq!(bad.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(stderr.contains(says), "{flag}: {stderr}");
    }
}
