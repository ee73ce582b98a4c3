//! Console logging: one line per event on stderr, which is `/dev/console` when the agent runs as
//! PID 1 (the kernel opens it for init, and [`crate::init`] reopens it if that failed).
//!
//! Lines look like `[   12.345] rackhand: WARN registering: HTTP 503`. The timestamp is the
//! time since the agent started. Never log the token.

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static DEBUG: AtomicBool = AtomicBool::new(false);
static START: OnceLock<Instant> = OnceLock::new();

/// Severity of a console line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed that the agent could not work around.
    Error,
    /// The agent recovered or is retrying.
    Warn,
    /// Lifecycle milestones.
    Info,
    /// Details, shown only with `rackhand.debug=1`.
    Debug,
}

/// Turns debug lines on or off.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Starts the clock used for timestamps (the first log line does it otherwise).
pub fn start_clock() {
    START.get_or_init(Instant::now);
}

/// Writes one line. Write errors are ignored: there is nowhere else to report them.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    if level == Level::Debug && !DEBUG.load(Ordering::Relaxed) {
        return;
    }
    let t = START.get_or_init(Instant::now).elapsed();
    let tag = match level {
        Level::Error => "ERROR ",
        Level::Warn => "WARN ",
        Level::Info => "",
        Level::Debug => "debug ",
    };
    let line = format!(
        "[{:5}.{:03}] rackhand: {tag}{args}\n",
        t.as_secs(),
        t.subsec_millis()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Error, format_args!($($t)*)) };
}
/// Logs at warn level.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Warn, format_args!($($t)*)) };
}
/// Logs at info level.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Info, format_args!($($t)*)) };
}
/// Logs at debug level (only with `rackhand.debug=1`).
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Debug, format_args!($($t)*)) };
}
