//! Serial console capture: QEMU writes the guest's console to a file (`-serial file:`), and
//! tests wait for text to appear in it.
//!
//! With `-nographic`, SeaBIOS, iPXE and OVMF print to the serial port too, so the log shows
//! the whole boot from firmware to agent. Firmware output is full of ANSI escape sequences
//! and carriage returns; [`clean`] removes them before matching and before showing a tail.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::proc::poll_until;

/// Most bytes of a console log read per poll.
const READ_CAP: u64 = 16 << 20;
/// Lines of console shown in a failure message.
pub const TAIL_LINES: usize = 40;

/// A console log file and the instant its machine was started.
#[derive(Debug, Clone)]
pub struct Console {
    path: PathBuf,
    started: Instant,
}

/// Why a wait ended without a match, as reported by the `abort` check of
/// [`Console::wait_for_any_or`].
#[derive(Debug, Clone)]
pub struct Abort {
    /// Who stopped (e.g. "QEMU").
    pub what: String,
    /// Why (e.g. its exit status).
    pub why: String,
}

impl Console {
    /// A console logging to `path`; elapsed times count from `started`.
    pub fn new(path: impl Into<PathBuf>, started: Instant) -> Self {
        Console {
            path: path.into(),
            started,
        }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole log so far, cleaned (see [`clean`]). Empty if the file does not exist yet.
    pub fn text(&self) -> String {
        let mut buf = Vec::new();
        if let Ok(f) = File::open(&self.path) {
            let _ = f.take(READ_CAP).read_to_end(&mut buf);
        }
        clean(&String::from_utf8_lossy(&buf))
    }

    /// The last `n` lines of the cleaned log.
    pub fn tail(&self, n: usize) -> String {
        tail_lines(&self.text(), n)
    }

    /// Waits until `pattern` appears (plain substring of the cleaned log). Returns the time
    /// since the machine started. On timeout the error shows the console tail.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> Result<Duration> {
        self.wait_for_any_or(&[pattern], timeout, || None)
            .map(|(_, t)| t)
    }

    /// Waits until any of `patterns` appears; returns which one and the time since start.
    /// `abort` is polled too: when it returns `Some`, the wait fails at once (e.g. QEMU exited).
    pub fn wait_for_any_or(
        &self,
        patterns: &[&str],
        timeout: Duration,
        mut abort: impl FnMut() -> Option<Abort>,
    ) -> Result<(usize, Duration)> {
        let what = format!("{patterns:?} on the console {}", self.path.display());
        let mut aborted = None;
        let found = poll_until(timeout, Duration::from_millis(200), || {
            let text = self.text();
            if let Some(i) = patterns.iter().position(|p| text.contains(p)) {
                return Some(i);
            }
            aborted = abort();
            aborted.as_ref()?;
            // The writer is gone: look once more at its final output before giving up.
            let text = self.text();
            match patterns.iter().position(|p| text.contains(p)) {
                Some(i) => {
                    aborted = None;
                    Some(i)
                }
                None => Some(usize::MAX),
            }
        });
        let detail = || {
            format!(
                "--- console tail ({}):\n{}",
                self.path.display(),
                self.tail(TAIL_LINES)
            )
        };
        match (found, aborted) {
            (Some(i), None) => Ok((i, self.started.elapsed())),
            (_, Some(a)) => Err(Error::ExitedEarly {
                what: format!("{} (while waiting for {what})", a.what),
                status: a.why,
                detail: detail(),
            }),
            (None, None) => Err(Error::Timeout {
                what,
                after: timeout,
                detail: detail(),
            }),
        }
    }
}

/// Removes ANSI escape sequences (CSI `ESC [ … final`, and two-byte `ESC x`), carriage
/// returns and other control characters except newline and tab.
pub fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: parameters and intermediates, then one final byte in '@'..='~'. Any
                // other escape is two characters long.
                if chars.next() == Some('[') {
                    for p in chars.by_ref() {
                        if ('@'..='~').contains(&p) {
                            break;
                        }
                    }
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The last `n` lines of `text`, blank lines dropped.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines.get(start..).unwrap_or_default().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn clean_strips_escapes_and_carriage_returns() {
        let raw = "\u{1b}[2J\u{1b}[01;01HSeaBIOS (version 1.16)\r\n\u{1b}[1;37miPXE\u{1b}[0m ok\r\n\u{1b}c\u{7}x\ty";
        assert_eq!(clean(raw), "SeaBIOS (version 1.16)\niPXE ok\nx\ty");
        // A truncated sequence at the end of the log is dropped, not kept half.
        assert_eq!(clean("abc\u{1b}[1;3"), "abc");
        assert_eq!(clean("abc\u{1b}"), "abc");
    }

    #[test]
    fn tail_lines_keeps_the_last_non_blank_lines() {
        assert_eq!(tail_lines("a\n\nb\nc\n\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
        assert_eq!(tail_lines("", 5), "");
    }

    #[test]
    fn wait_for_sees_text_written_later_and_times_out_with_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let console = Console::new(&path, Instant::now());
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(150));
                let mut f = File::create(&path).unwrap();
                f.write_all(
                    b"\x1b[1miPXE\x1b[0m initialising\r\nConfiguring (net0 52:54:00:99:00:01)...",
                )
                .unwrap();
            })
        };
        let t = console
            .wait_for(
                "Configuring (net0 52:54:00:99:00:01)",
                Duration::from_secs(10),
            )
            .unwrap();
        assert!(t >= Duration::from_millis(150));
        writer.join().unwrap();

        let err = console
            .wait_for("never printed", Duration::from_millis(200))
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Timeout { .. }));
        assert!(msg.contains("iPXE initialising"), "{msg}");

        let err = console
            .wait_for_any_or(&["never"], Duration::from_secs(10), || {
                Some(Abort {
                    what: "QEMU".into(),
                    why: "exit status: 1".into(),
                })
            })
            .unwrap_err();
        assert!(matches!(err, Error::ExitedEarly { .. }), "{err}");
    }
}
