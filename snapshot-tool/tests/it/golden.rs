//! Golden files for everything the tool renders: `inspect` text and JSON, and `--help`.
//! Re-bless with `UPDATE_GOLDEN=1 cargo test -p snapshot-tool` and review the diff.

use std::path::PathBuf;

use snapshot_tool::format::{
    ChunkEntry, ChunkKind, Digest, DigestAlgorithm, Geometry, KeyId, Manifest,
};
use snapshot_tool::inspect::{Inspection, SignatureState, render_json, render_text};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `actual` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
pub(crate) fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs (UPDATE_GOLDEN=1 re-blesses):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// A fixed manifest: 10 MiB + 4 KiB image with 4 MiB chunks (3 chunks: stored, zero, a short
/// stored one), fixed digests.
fn sample_inspection(signature: SignatureState) -> Inspection {
    let g = Geometry::new((10 << 20) + 4096, 4096, 4 << 20).unwrap();
    let mut chunks = Vec::new();
    let mut data = 0;
    for (index, len) in [(0u64, Some(1_234_567u32)), (1, None), (2, Some(98_765))] {
        let (image_offset, raw_len) = g.chunk_span(index).unwrap();
        let kind = match len {
            None => ChunkKind::Zero,
            Some(compressed_len) => ChunkKind::Stored {
                compressed_len,
                raw_digest: Digest([0x11 * (index as u8 + 1); 32]),
                compressed_digest: Digest([0xa0 + index as u8; 32]),
            },
        };
        let entry = ChunkEntry {
            image_offset,
            data_offset: data,
            raw_len,
            kind,
        };
        data += u64::from(entry.compressed_len());
        chunks.push(entry);
    }
    let manifest =
        Manifest::from_parts(g, DigestAlgorithm::Sha256, chunks, Digest::sha256(b"image")).unwrap();
    Inspection {
        name: "debian-12".to_string(),
        manifest_len: manifest.encode().len() as u64,
        manifest,
        signature,
    }
}

#[test]
fn inspect_text() {
    let key = SignatureState::Present(KeyId([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]));
    assert_golden("inspect.txt", &render_text(&sample_inspection(key)));
    assert_golden(
        "inspect-unsigned.txt",
        &render_text(&sample_inspection(SignatureState::Missing)),
    );
}

#[test]
fn inspect_json() {
    let key = SignatureState::Present(KeyId([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]));
    let json = render_json(&sample_inspection(key));
    assert_golden("inspect.json", &json);
    // And it is JSON with the documented fields.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["chunk_count"], 3);
    assert_eq!(v["chunks"][1]["kind"], "zero");
    assert_eq!(v["signature"]["status"], "unverified");
    let malformed = render_json(&sample_inspection(SignatureState::Malformed(
        "bad_signature_file",
    )));
    let v: serde_json::Value = serde_json::from_str(&malformed).unwrap();
    assert_eq!(v["signature"]["code"], "bad_signature_file");
}

/// `--help` of the tool and of every subcommand: golden, and no line over 80 columns.
#[cfg(feature = "cli")]
#[test]
fn help_output() {
    let bin = env!("CARGO_BIN_EXE_snapshot-tool");
    let mut all = String::new();
    for args in [
        &["--help"][..],
        &["keygen", "--help"],
        &["build", "--help"],
        &["sign", "--help"],
        &["inspect", "--help"],
        &["verify", "--help"],
    ] {
        let out = std::process::Command::new(bin)
            .args(args)
            .env("COLUMNS", "200")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{args:?}: line over 80 columns: {line:?}"
            );
        }
        all.push_str(&format!("$ snapshot-tool {}\n{text}\n", args.join(" ")));
    }
    assert_golden("help.txt", &all);
}
