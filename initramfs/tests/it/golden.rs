//! The listing of a known spec, checked against `tests/golden/agent-like.listing`.
//! Set `UPDATE_GOLDEN=1` to rewrite the file after an intended change.

use std::path::PathBuf;

use initramfs::{WriteOptions, listing, read_archive, write_archive};

use crate::common::agent_like_spec;

#[test]
fn agent_like_listing_matches_golden() {
    let mut cpio = Vec::new();
    write_archive(
        &agent_like_spec(false).unwrap(),
        WriteOptions { mtime: 0 },
        &mut cpio,
    )
    .unwrap();
    let members = read_archive(&cpio).unwrap();
    let got = listing(&members);

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/agent-like.listing");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert_eq!(got, want, "listing differs from {}", path.display());
}

#[test]
fn reader_sees_fixed_metadata() {
    let mut cpio = Vec::new();
    write_archive(
        &agent_like_spec(false).unwrap(),
        WriteOptions {
            mtime: 1_700_000_000,
        },
        &mut cpio,
    )
    .unwrap();
    let members = read_archive(&cpio).unwrap();
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m.ino as usize, i + 1, "{}", m.name);
        assert_eq!((m.uid, m.gid), (0, 0), "{}", m.name);
        assert_eq!(m.mtime, 1_700_000_000, "{}", m.name);
    }
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    // Every parent directory is present and comes before its children.
    for (i, name) in names.iter().enumerate() {
        if let Some((parent, _)) = name.rsplit_once('/') {
            let j = names.iter().position(|n| *n == parent).expect(parent);
            assert!(j < i, "{parent} after {name}");
        }
    }
}
