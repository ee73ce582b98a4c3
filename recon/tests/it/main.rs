//! Integration tests of `recon::collect` over the committed fixture trees in `tests/fixtures`
//! (see its README for where each tree came from), and of the capture tool.

mod capture;
mod hostile;
mod machines;

use std::path::PathBuf;

/// Path of a fixture tree.
fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `Sources` rooted at a fixture tree.
fn fixture(name: &str) -> recon::Sources {
    recon::Sources::under(fixture_dir(name))
}
