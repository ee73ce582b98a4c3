//! A private network namespace per test: a bridge with the appliance's addresses and tap
//! devices for VMs, plus the processes started inside it.
//!
//! ```text
//!  netns rh-<pid>-<n> ──────────────────────────────────────────────
//!    lo up
//!    br0 10.99.0.1/24, fd99::1/64 (nodad) ── rhtap0 ── (a VM NIC)
//!                                          └─ rhtap1 ── …
//! ```
//!
//! The addresses exist only inside the namespace; nothing here touches the host's links.
//! Dropping the [`Netns`] (also while unwinding from a panic) stops every process it started
//! (SIGTERM, at most [`TERM_GRACE`], SIGKILL), kills whatever `ip netns pids` still lists, and
//! deletes the namespace, which destroys the bridge and the taps with it.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::proc::{self, TERM_GRACE};

/// Every namespace this framework creates is named `rh-<test pid>-<counter>`.
pub const NAME_PREFIX: &str = "rh-";
/// Tap devices are named `rhtap<i>` (inside the namespace), so a stray one is recognisable.
pub const TAP_PREFIX: &str = "rhtap";
/// The bridge inside every namespace.
pub const BRIDGE: &str = "br0";
/// The bridge's IPv4 address: the appliance's address.
pub const SERVER_V4: &str = "10.99.0.1";
/// The bridge's IPv4 prefix length.
pub const SERVER_V4_PREFIX: u8 = 24;
/// The bridge's IPv6 address (only so that the link has an IPv6 prefix for router adverts).
pub const SERVER_V6: &str = "fd99::1";
/// Set in the environment of every process started in a namespace (value: the namespace
/// name), so the leak check can find processes the tests started, and only those.
pub const OWNER_ENV: &str = "RACKHAND_TEST_NS";
/// Where `ip netns` keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Proxy variables removed from every namespaced program's environment.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
];

/// Bound for each `ip` call made while setting up or tearing down.
const IP_TIMEOUT: Duration = Duration::from_secs(20);
/// Most taps one namespace may have.
const MAX_TAPS: usize = 8;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Identifies a process started with [`Netns::spawn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcId(usize);

/// A program to run inside a namespace.
#[derive(Debug, Clone)]
pub struct NsCommand {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    log: Option<PathBuf>,
}

impl NsCommand {
    /// A command running `program` (an absolute path is best: `ip netns exec` searches `PATH`).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        NsCommand {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            log: None,
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the program.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// For [`Netns::spawn`]: append the program's stdout and stderr to this file.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// The program and its arguments as given.
    pub fn argv(&self) -> Vec<OsString> {
        let mut v = vec![self.program.clone()];
        v.extend(self.args.iter().cloned());
        v
    }
}

#[derive(Debug)]
struct Tracked {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
}

/// A network namespace owned by one test. See the module documentation.
#[derive(Debug)]
pub struct Netns {
    name: String,
    taps: Vec<String>,
    created: bool,
    procs: Mutex<Vec<Tracked>>,
}

impl Netns {
    /// Creates `rh-<pid>-<n>` with `lo` up, `br0` (10.99.0.1/24, fd99::1/64) and `taps` tap
    /// devices `rhtap0…` enslaved to the bridge. On any failure everything created so far is
    /// removed again.
    pub fn new(taps: usize) -> Result<Netns> {
        if taps > MAX_TAPS {
            return Err(Error::Invalid(format!(
                "{taps} taps requested, at most {MAX_TAPS}"
            )));
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut ns = Netns {
            name: format!("{NAME_PREFIX}{}-{n}", std::process::id()),
            taps: Vec::new(),
            created: false,
            procs: Mutex::new(Vec::new()),
        };
        // From here on, an error return drops `ns`, which tears down what exists.
        ip(&["netns", "add", &ns.name])?;
        ns.created = true;
        let name = ns.name.clone();
        let ipn = |args: &[&str]| {
            let mut v = vec!["-n", name.as_str()];
            v.extend_from_slice(args);
            ip(&v)
        };
        ipn(&["link", "set", "lo", "up"])?;
        ipn(&["link", "add", BRIDGE, "type", "bridge"])?;
        let v4 = format!("{SERVER_V4}/{SERVER_V4_PREFIX}");
        ipn(&["addr", "add", &v4, "dev", BRIDGE])?;
        // No duplicate-address detection: the link-local and fd99::1 are usable at once.
        ns.exec_ok(
            &NsCommand::new("sh").args([
                "-c",
                &format!("echo 0 > /proc/sys/net/ipv6/conf/{BRIDGE}/accept_dad"),
            ]),
            IP_TIMEOUT,
        )?;
        let v6 = format!("{SERVER_V6}/64");
        ipn(&["-6", "addr", "add", &v6, "dev", BRIDGE, "nodad"])?;
        ipn(&["link", "set", BRIDGE, "up"])?;
        for i in 0..taps {
            let tap = format!("{TAP_PREFIX}{i}");
            ipn(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
            ipn(&["link", "set", &tap, "master", BRIDGE, "up"])?;
            ns.taps.push(tap);
        }
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tap device names, in creation order.
    pub fn taps(&self) -> &[String] {
        &self.taps
    }

    /// Tap number `i`.
    pub fn tap(&self, i: usize) -> Result<&str> {
        self.taps
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| Error::Invalid(format!("namespace {} has no tap {i}", self.name)))
    }

    /// Limits what leaves the namespace through `dev` (the bridge or one of its taps; for a
    /// tap, that is what its VM receives) to `kbit` kbit/s with a token bucket (`tc qdisc
    /// replace … tbf`), so that a transfer lasts long enough to be interrupted. Replaces any
    /// earlier limit on `dev`.
    pub fn limit_egress(&self, dev: &str, kbit: u32) -> Result<()> {
        self.check_dev(dev)?;
        if kbit == 0 {
            return Err(Error::Invalid("a rate of 0 kbit/s".into()));
        }
        let rate = format!("{kbit}kbit");
        // A burst of at least one full-size frame, and enough queue for ~0.5 s at the rate.
        self.exec_ok(
            &NsCommand::new("tc").args([
                "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", "16kb",
                "latency", "500ms",
            ]),
            IP_TIMEOUT,
        )
        .map(drop)
    }

    /// Removes a limit set with [`Netns::limit_egress`] (the device's default queueing again).
    pub fn clear_egress_limit(&self, dev: &str) -> Result<()> {
        self.check_dev(dev)?;
        self.exec_ok(
            &NsCommand::new("tc").args(["qdisc", "del", "dev", dev, "root"]),
            IP_TIMEOUT,
        )
        .map(drop)
    }

    /// Aborts every connected TCP socket of the namespace whose local port is `port`
    /// (`ss -K`, which needs `CONFIG_INET_DIAG_DESTROY`): the peer gets a reset. A stopped
    /// server's sockets otherwise outlive it, and the kernel keeps sending what was queued
    /// and closes cleanly, so a client may still receive a whole response "after" the stop.
    /// Returns the sockets aborted (one line each, as `ss` lists them).
    pub fn abort_tcp(&self, port: u16) -> Result<Vec<String>> {
        let filter = format!("( sport = :{port} )");
        let out = self.exec_ok(
            &NsCommand::new("ss").args(["-K", "-t", "-n", "-H", "state", "connected", &filter]),
            IP_TIMEOUT,
        )?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn check_dev(&self, dev: &str) -> Result<()> {
        if dev == BRIDGE || self.taps.iter().any(|t| t == dev) {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{dev} is not a device of namespace {}",
                self.name
            )))
        }
    }

    /// True if a namespace of this name is registered under `/run/netns`.
    pub fn exists(name: &str) -> bool {
        Path::new(NETNS_RUN_DIR).join(name).exists()
    }

    /// `ip netns exec NAME program args…`, with the owner marker in its environment. The
    /// program replaces `ip` (it execs), so the child's PID is the program's own.
    fn command(&self, c: &NsCommand) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(&c.program)
            .args(&c.args)
            .env(OWNER_ENV, &self.name)
            .stdin(Stdio::null());
        // Nothing started here may talk to a proxy: every request stays in the namespace.
        for k in PROXY_VARS {
            cmd.env_remove(k);
        }
        for (k, v) in &c.envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a command inside the namespace to completion, for at most `timeout`.
    pub fn exec(&self, c: &NsCommand, timeout: Duration) -> Result<Output> {
        proc::run_bounded(&mut self.command(c), timeout)
    }

    /// Like [`Netns::exec`], but fails unless the command exits 0; returns its stdout.
    pub fn exec_ok(&self, c: &NsCommand, timeout: Duration) -> Result<String> {
        proc::run_ok(&mut self.command(c), timeout)
    }

    /// Starts a long-running program inside the namespace. Its stdout and stderr go to the
    /// command's log file (or nowhere). The namespace stops it on drop at the latest.
    pub fn spawn(&self, label: &str, c: &NsCommand) -> Result<ProcId> {
        let mut cmd = self.command(c);
        match &c.log {
            Some(path) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::io("opening log", path, e))?;
                let f2 = f
                    .try_clone()
                    .map_err(|e| Error::io("opening log", path, e))?;
                cmd.stdout(f).stderr(f2);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            command: proc::describe(&cmd),
            source,
        })?;
        let mut procs = self.lock();
        procs.push(Tracked {
            label: label.to_owned(),
            child,
            status: None,
        });
        Ok(ProcId(procs.len() - 1))
    }

    /// The PID of a started process.
    pub fn pid(&self, id: ProcId) -> Option<u32> {
        self.lock().get(id.0).map(|t| t.child.id())
    }

    /// The exit status of a started process, if it has exited (it is reaped then).
    pub fn try_wait(&self, id: ProcId) -> Option<ExitStatus> {
        let mut procs = self.lock();
        let t = procs.get_mut(id.0)?;
        if t.status.is_none() {
            t.status = t.child.try_wait().ok().flatten();
        }
        t.status
    }

    /// Stops a started process: SIGTERM, at most [`TERM_GRACE`], then SIGKILL.
    pub fn stop(&self, id: ProcId) -> Option<ExitStatus> {
        let mut procs = self.lock();
        let t = procs.get_mut(id.0)?;
        if t.status.is_none() {
            t.status = proc::terminate(&mut t.child, TERM_GRACE);
        }
        t.status
    }

    /// PIDs of every process whose network namespace is this one (`ip netns pids`).
    pub fn pids_inside(&self) -> Result<Vec<u32>> {
        let out = proc::run_ok(
            Command::new("ip").args(["netns", "pids", &self.name]),
            IP_TIMEOUT,
        )?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Tracked>> {
        // A panic while holding the lock leaves consistent data: keep going.
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The teardown; returns what could not be cleaned up.
    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let procs = self.procs.get_mut().unwrap_or_else(|e| e.into_inner());
        // Newest first: VMs before the server they talk to.
        for t in procs.iter_mut().rev() {
            if t.status.is_none() {
                t.status = proc::terminate(&mut t.child, TERM_GRACE);
                if t.status.is_none() {
                    problems.push(format!("could not stop {} (pid {})", t.label, t.child.id()));
                }
            }
        }
        if !self.created {
            return problems;
        }
        // Anything else still inside was started from a process of ours (pitfall 8).
        let me = std::process::id();
        for _ in 0..20 {
            let pids = match self.pids_inside() {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("listing pids: {e}"));
                    break;
                }
            };
            let pids: Vec<u32> = pids.into_iter().filter(|&p| p != me).collect();
            if pids.iter().all(|&p| !proc::pid_alive(p)) {
                break;
            }
            for p in pids {
                if let Ok(p) = i32::try_from(p) {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            problems.push(format!("deleting namespace: {e}"));
        }
        problems
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let problems = self.teardown();
        if !problems.is_empty() {
            eprintln!("netns {}: cleanup problems: {problems:?}", self.name);
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    proc::run_ok(Command::new("ip").args(args), IP_TIMEOUT).map(|_| ())
}

/// Parses `rh-<pid>-<n>` into the PID of the test process that created the namespace.
pub fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_pid_parses_only_our_names() {
        assert_eq!(creator_pid("rh-1234-0"), Some(1234));
        assert_eq!(creator_pid("rh-1234-17"), Some(1234));
        for bad in [
            "rh-1234",
            "rh--1",
            "nbtest-1234",
            "rh-x-1",
            "rh-12-x",
            "xrh-1-1",
        ] {
            assert_eq!(creator_pid(bad), None, "{bad}");
        }
    }

    #[test]
    fn command_execs_the_program_with_the_owner_marker() {
        let ns = Netns {
            name: "rh-0-0".into(),
            taps: Vec::new(),
            created: false,
            procs: Mutex::new(Vec::new()),
        };
        let c = ns.command(&NsCommand::new("/bin/true").args(["a", "b"]).env("X", "1"));
        assert_eq!(proc::describe(&c), "ip netns exec rh-0-0 /bin/true a b");
        let envs: Vec<_> = c.get_envs().collect();
        assert!(envs.contains(&(OsStr::new(OWNER_ENV), Some(OsStr::new("rh-0-0")))));
        assert!(envs.contains(&(OsStr::new("X"), Some(OsStr::new("1")))));
        assert!(envs.contains(&(OsStr::new("https_proxy"), None)));
    }
}
