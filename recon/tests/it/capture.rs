//! The capture tool (`examples/capture_fixture.rs`, compiled in here) reproduces a fixture:
//! capturing a captured tree yields the same report and the same symlink shape.

#[path = "../../examples/capture_fixture.rs"]
mod capture_fixture;

use std::path::Path;

use crate::{fixture, fixture_dir};

fn link(root: &Path, rel: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(root.join(rel)).ok()
}

#[test]
fn recapturing_fixtures_keeps_the_report() {
    for name in ["qemu-q35", "qemu-q35-uefi", "build-host", "qemu-q35-no-dmi"] {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let stats = capture_fixture::capture(&fixture_dir(name), tmp.path())
            .unwrap_or_else(|e| panic!("capture {name}: {e}"));
        assert!(stats.files > 10 && stats.links > 3, "{name}: {stats:?}");
        let again = recon::collect(&recon::Sources::under(tmp.path().to_path_buf()));
        assert_eq!(again, recon::collect(&fixture(name)), "{name}");
    }
}

#[test]
fn capture_keeps_relative_symlinks() {
    let src = fixture_dir("qemu-q35");
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    capture_fixture::capture(&src, tmp.path()).unwrap_or_else(|e| panic!("capture: {e}"));
    for rel in [
        "sys/block/vda",
        "sys/block/nvme0n1",
        "sys/class/net/eth0",
        "sys/class/dmi/id",
        "sys/devices/pci0000:00/0000:00:03.0/virtio1/driver",
    ] {
        let got = link(tmp.path(), rel);
        assert!(
            got.as_ref().is_some_and(|t| t.is_relative()),
            "{rel}: {got:?}"
        );
        assert_eq!(got, link(&src, rel), "{rel}");
    }
    // driver links are kept as names only: their targets are not captured
    assert!(!tmp.path().join("sys/bus").exists());
}
