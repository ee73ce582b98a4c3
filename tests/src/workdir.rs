//! Per-test scratch directories that survive a failing test for inspection.

use std::path::Path;

use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::gate::announce;

/// Keep every work directory, passing or not.
pub const KEEP_ENV: &str = "RACKHAND_KEEP_WORKDIR";

/// A temporary directory named after its test. Removed on drop, unless the test is panicking
/// or `RACKHAND_KEEP_WORKDIR=1`; then its path is printed and it stays.
#[derive(Debug)]
pub struct WorkDir {
    dir: Option<TempDir>,
    test: String,
}

impl WorkDir {
    /// Creates `$TMPDIR/rackhand-<test>-XXXXXX`.
    pub fn new(test: &str) -> Result<Self> {
        let safe: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("rackhand-{safe}-"))
            .tempdir()
            .map_err(|e| Error::io("creating a work dir in", std::env::temp_dir(), e))?;
        Ok(WorkDir {
            dir: Some(dir),
            test: test.to_owned(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let keep = std::thread::panicking() || std::env::var(KEEP_ENV).is_ok_and(|v| v == "1");
        if let Some(dir) = self.dir.take()
            && keep
        {
            let path = dir.keep();
            announce(&format!("{}: logs kept in {}", self.test, path.display()));
        }
    }
}
