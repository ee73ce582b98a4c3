//! Finds what system tests left behind: `rh-*` namespaces, `rhtap*` links in the host
//! namespace, and live processes carrying the [`OWNER_ENV`] marker that every namespaced
//! program gets. Used by the `leak-check` binary at the end of CI and by the framework's own
//! tests.

use std::fmt;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{NAME_PREFIX, NETNS_RUN_DIR, OWNER_ENV, TAP_PREFIX, creator_pid};
use crate::proc::{self, pid_alive};

/// Something a test left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leak {
    /// A namespace `rh-*` still registered in `/run/netns`.
    Namespace(String),
    /// A `rhtap*` (or other framework-named) link in the host namespace.
    HostLink(String),
    /// A live process started inside a test namespace.
    Process {
        /// PID.
        pid: u32,
        /// `/proc/PID/comm`.
        comm: String,
        /// The namespace it was started in.
        netns: String,
    },
}

impl Leak {
    /// The namespace this leak belongs to, if any.
    pub fn netns(&self) -> Option<&str> {
        match self {
            Leak::Namespace(n) => Some(n),
            Leak::Process { netns, .. } => Some(netns),
            Leak::HostLink(_) => None,
        }
    }
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leak::Namespace(n) => write!(f, "namespace {n} ({NETNS_RUN_DIR}/{n})"),
            Leak::HostLink(l) => write!(f, "host link {l}"),
            Leak::Process { pid, comm, netns } => {
                write!(f, "process {pid} ({comm}) started in namespace {netns}")
            }
        }
    }
}

/// The value of `OWNER_ENV` in a NUL-separated `/proc/PID/environ`, if it names one of our
/// namespaces. Pure.
pub fn owner_from_environ(environ: &[u8]) -> Option<String> {
    let key = format!("{OWNER_ENV}=");
    environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(key.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| v.starts_with(NAME_PREFIX))
}

/// Every leak on this host.
pub fn scan() -> Vec<Leak> {
    let mut leaks = Vec::new();
    if let Ok(rd) = std::fs::read_dir(NETNS_RUN_DIR) {
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(NAME_PREFIX))
            .collect();
        names.sort();
        leaks.extend(names.into_iter().map(Leak::Namespace));
    }
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        let mut links: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TAP_PREFIX))
            .collect();
        links.sort();
        leaks.extend(links.into_iter().map(Leak::HostLink));
    }
    let me = std::process::id();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        let mut procs: Vec<Leak> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter_map(|pid| {
                let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
                let netns = owner_from_environ(&env)?;
                if !pid_alive(pid) {
                    return None;
                }
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                Some(Leak::Process { pid, comm, netns })
            })
            .collect();
        procs.sort_by_key(|l| match l {
            Leak::Process { pid, .. } => *pid,
            _ => 0,
        });
        leaks.extend(procs);
    }
    leaks
}

/// The leaks that belong to namespace `name`.
pub fn scan_netns(name: &str) -> Vec<Leak> {
    scan()
        .into_iter()
        .filter(|l| l.netns() == Some(name))
        .collect()
}

/// Removes leaks whose creating test process is gone: SIGKILLs marked processes and deletes
/// namespaces. Leaks of a still-running test process are left alone (it may be mid-test).
/// Returns what could not be removed.
pub fn clean(leaks: &[Leak]) -> Vec<String> {
    let orphaned = |ns: &str| creator_pid(ns).is_some_and(|p| !pid_alive(p));
    let mut problems = Vec::new();
    for l in leaks {
        if let Leak::Process { pid, netns, .. } = l
            && orphaned(netns)
            && let Ok(p) = i32::try_from(*pid)
        {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    for l in leaks {
        match l {
            Leak::Namespace(n) if orphaned(n) => {
                let pids = proc::run_ok(
                    Command::new("ip").args(["netns", "pids", n]),
                    Duration::from_secs(20),
                )
                .unwrap_or_default();
                for p in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
                if let Err(e) = proc::run_ok(
                    Command::new("ip").args(["netns", "del", n]),
                    Duration::from_secs(20),
                ) {
                    problems.push(format!("{l}: {e}"));
                }
            }
            Leak::HostLink(name) => problems.push(format!(
                "{l}: not removed automatically (a host link named {name} is unexpected)"
            )),
            _ => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_marker_is_read_from_environ() {
        let env = b"PATH=/bin\0RACKHAND_TEST_NS=rh-12-3\0HOME=/root\0";
        assert_eq!(owner_from_environ(env), Some("rh-12-3".into()));
        assert_eq!(owner_from_environ(b"PATH=/bin\0"), None);
        // A marker that does not name one of our namespaces is not ours.
        assert_eq!(owner_from_environ(b"RACKHAND_TEST_NS=other\0"), None);
        assert_eq!(owner_from_environ(b"XRACKHAND_TEST_NS=rh-1-1\0"), None);
        assert_eq!(owner_from_environ(b""), None);
    }

    #[test]
    fn leaks_display_what_and_where() {
        let l = Leak::Process {
            pid: 42,
            comm: "qemu-system-x86".into(),
            netns: "rh-1-0".into(),
        };
        assert_eq!(
            l.to_string(),
            "process 42 (qemu-system-x86) started in namespace rh-1-0"
        );
        assert_eq!(l.netns(), Some("rh-1-0"));
        assert_eq!(Leak::HostLink("rhtap0".into()).netns(), None);
    }
}
