//! The framework's error type. Every variant names the failed operation and carries the
//! context a failure report needs (command line, path, log tail); causes stay in `source`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Result with the framework's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while driving a namespace, a VM or the appliance.
///
/// `Debug` prints the same text as `Display` plus the chain of causes, so a test that returns
/// `Result<(), Error>` shows a readable report (console tails with real line breaks).
#[derive(thiserror::Error)]
pub enum Error {
    /// A program could not be started at all.
    #[error("cannot start `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Exit status as text.
        status: String,
        /// Its standard error (trimmed, bounded).
        stderr: String,
    },
    /// A bounded wait ran out.
    #[error("timed out after {:.1} s waiting for {what}\n{detail}", after.as_secs_f64())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
        /// Diagnostics: console or log tail.
        detail: String,
    },
    /// A process we started exited, or a VM reached a dead end, during a wait.
    #[error("{what} ended early: {status}\n{detail}")]
    ExitedEarly {
        /// Which process.
        what: String,
        /// Exit status as text.
        status: String,
        /// Diagnostics: console or log tail.
        detail: String,
    },
    /// A file operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// The operation, e.g. "reading".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error without a path (pipes, anonymous temp files).
    #[error("{op}")]
    IoOther {
        /// The operation.
        op: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Output of a tool could not be decoded.
    #[error("decoding {what}: {text}")]
    Decode {
        /// What was decoded.
        what: String,
        /// The offending text (bounded).
        text: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A test prerequisite is missing and `RACKHAND_VM_TESTS=1` demands the test run.
    #[error("{test}: RACKHAND_VM_TESTS=1 but a prerequisite is missing: {missing}")]
    Prerequisite {
        /// The test.
        test: String,
        /// What is missing.
        missing: String,
    },
    /// The caller asked for something the framework cannot do.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            write!(f, "\ncaused by: {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
