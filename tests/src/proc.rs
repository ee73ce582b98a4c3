//! Child processes: bounded runs and SIGTERM-then-SIGKILL termination of processes we own.
//!
//! Every process is killed through the [`Child`] handle that started it, never by name, and
//! only before it has been reaped, so its PID cannot have been reused by someone else.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// How long a process gets to exit after SIGTERM before SIGKILL (NOTES.md pitfall 9: a paused
/// QEMU ignores SIGTERM).
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// Most bytes kept from a captured stdout or stderr.
const CAPTURE_CAP: u64 = 4 << 20;

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Polls `f` with a growing interval (5 ms up to `max_step`) until it yields a value or
/// `timeout` has passed.
pub fn poll_until<T>(
    timeout: Duration,
    max_step: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    let mut step = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let spent = start.elapsed();
        if spent >= timeout {
            return None;
        }
        sleep(step.min(timeout - spent));
        step = (step * 2).min(max_step);
    }
}

/// Stops a child we own: SIGTERM, wait up to `grace`, then SIGKILL; always reaps it.
/// Returns its exit status, or `None` if it could not be collected.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    let pid = i32::try_from(child.id()).ok().map(Pid::from_raw);
    if let Some(pid) = pid {
        // The child is not reaped yet, so this PID is still ours.
        let _ = kill(pid, Signal::SIGTERM);
    }
    if let Some(st) = poll_until(grace, Duration::from_millis(100), || {
        child.try_wait().ok().flatten()
    }) {
        return Some(st);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Runs `cmd` to completion, but for at most `timeout` (then SIGKILL). Stdout and stderr are
/// captured through anonymous temporary files, so a chatty program cannot block on a pipe.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let what = describe(cmd);
    let tmp = |op| tempfile::tempfile().map_err(|source| Error::IoOther { op, source });
    let out = tmp("creating a capture file")?;
    let err = tmp("creating a capture file")?;
    let clone = |f: &File| {
        f.try_clone().map_err(|source| Error::IoOther {
            op: "duplicating a capture file",
            source,
        })
    };
    cmd.stdin(Stdio::null())
        .stdout(clone(&out)?)
        .stderr(clone(&err)?);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        command: what.clone(),
        source,
    })?;
    let status = poll_until(timeout, Duration::from_millis(100), || {
        child.try_wait().ok().flatten()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Timeout {
            what: format!("`{what}` to finish"),
            after: timeout,
            detail: String::from_utf8_lossy(&read_capture(err)).into_owned(),
        });
    };
    Ok(Output {
        status,
        stdout: read_capture(out),
        stderr: read_capture(err),
    })
}

/// Runs `cmd` like [`run_bounded`] and fails unless it exits 0; returns its stdout.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let what = describe(cmd);
    let out = run_bounded(cmd, timeout)?;
    if !out.status.success() {
        return Err(Error::CommandFailed {
            command: what,
            status: out.status.to_string(),
            stderr: bounded_text(&out.stderr, 2000),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read_capture(mut f: File) -> Vec<u8> {
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(0)).is_ok() {
        let _ = f.take(CAPTURE_CAP).read_to_end(&mut buf);
    }
    buf
}

/// The last `max` bytes of `bytes` as trimmed text (lossy UTF-8).
pub fn bounded_text(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let tail = bytes.get(start..).unwrap_or_default();
    String::from_utf8_lossy(tail).trim().to_owned()
}

/// True if a process with this PID exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_bounded_captures_and_kills_on_timeout() {
        let out = run_ok(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out, "out\n");

        let err = run_ok(
            Command::new("sh").args(["-c", "echo boom >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("boom") && msg.contains("exit status: 3"),
            "{msg}"
        );

        let t0 = Instant::now();
        let err =
            run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn terminate_escalates_to_sigkill() {
        // A shell that ignores SIGTERM: terminate must still end it, after the grace period.
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"])
            .spawn()
            .unwrap();
        let pid = child.id();
        sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        let st = terminate(&mut child, Duration::from_millis(500)).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(500));
        assert!(!st.success());
        assert!(!pid_alive(pid));
    }

    #[test]
    fn bounded_text_keeps_the_tail() {
        assert_eq!(bounded_text(b"  hello world \n", 7), "world");
        assert_eq!(bounded_text(b"", 7), "");
    }
}
