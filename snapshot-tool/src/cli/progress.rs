//! Progress on stderr: a redrawn bar on a terminal, a plain line every few seconds otherwise
//! (serial consoles, CI logs and journald do not understand `\r`).

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use crate::inspect::human_bytes;

/// How often the bar is redrawn: fast enough to look live, slow enough to cost nothing.
const BAR_INTERVAL: Duration = Duration::from_millis(100);
/// How often a line is printed when stderr is not a terminal: a log stays readable for an
/// hour-long build (~700 lines) and a stalled job is noticed within seconds.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
const BAR_WIDTH: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bar,
    Lines,
    Quiet,
}

/// A progress reporter for one long operation of `total` bytes.
#[derive(Debug)]
pub(crate) struct Progress {
    label: &'static str,
    total: u64,
    mode: Mode,
    start: Instant,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// A reporter that draws a bar on a terminal, lines otherwise, nothing when `quiet`.
    pub(crate) fn new(label: &'static str, total: u64, quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        };
        Self {
            label,
            total,
            mode,
            start: Instant::now(),
            last: None,
            drawn: false,
        }
    }

    /// Reports `done` bytes of `total`.
    pub(crate) fn update(&mut self, done: u64) {
        let interval = match self.mode {
            Mode::Quiet => return,
            Mode::Bar => BAR_INTERVAL,
            Mode::Lines => LINE_INTERVAL,
        };
        let now = Instant::now();
        let since = self.last.unwrap_or(self.start);
        if now.duration_since(since) < interval && !(self.mode == Mode::Bar && done >= self.total) {
            return;
        }
        self.last = Some(now);
        let percent = done
            .saturating_mul(100)
            .checked_div(self.total)
            .unwrap_or(100);
        let secs = now.duration_since(self.start).as_secs_f64();
        let rate = if secs > 0.0 {
            human_bytes((done as f64 / secs) as u64)
        } else {
            "-".to_string()
        };
        let mut err = std::io::stderr().lock();
        // Progress output is best effort: a closed stderr must not fail the operation.
        let _ = match self.mode {
            Mode::Bar => {
                let filled = (percent as usize * BAR_WIDTH / 100).min(BAR_WIDTH);
                write!(
                    err,
                    "\r{} [{}{}] {percent:>3}% {} / {} {rate}/s   ",
                    self.label,
                    "#".repeat(filled),
                    "-".repeat(BAR_WIDTH - filled),
                    human_bytes(done),
                    human_bytes(self.total)
                )
                .and_then(|()| err.flush())
            }
            Mode::Lines => writeln!(
                err,
                "{}: {percent}% ({} of {}), {rate}/s",
                self.label,
                human_bytes(done),
                human_bytes(self.total)
            ),
            Mode::Quiet => Ok(()),
        };
        self.drawn = true;
    }

    /// Ends the bar's line, or prints a final line.
    pub(crate) fn finish(&mut self) {
        let secs = self.start.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        let _ = match self.mode {
            Mode::Bar if self.drawn => writeln!(err),
            Mode::Lines => writeln!(
                err,
                "{}: done, {} in {secs:.1} s",
                self.label,
                human_bytes(self.total)
            ),
            Mode::Bar | Mode::Quiet => Ok(()),
        };
    }
}
